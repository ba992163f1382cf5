//! The one duration type of the workspace: configuration keys, command-line flags and
//! window names all write durations the same way, `<digits><unit>` with unit `ms`,
//! `s`, `m` or `h`, and keep them in milliseconds.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written with a unit (`500ms`, `5s`, `10m`, `1h`), kept in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    ms: i64,
}

impl Duration {
    pub const fn from_ms(ms: i64) -> Duration {
        Duration { ms }
    }

    pub fn as_ms(self) -> i64 {
        self.ms
    }

    /// Milliseconds, a negative duration as zero: for the APIs that count in `u64`.
    pub fn as_unsigned_ms(self) -> u64 {
        self.ms.max(0) as u64
    }

    /// As a `std` duration; a negative one is zero.
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.as_unsigned_ms())
    }

    /// As [`Duration::parse`], but a bare number is seconds: for command-line flags and
    /// window names, where `90` has always meant `90s`.
    pub fn parse_or_seconds(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return Duration::parse(&format!("{t}s"));
        }
        Duration::parse(t)
    }

    /// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "`{text}` is not a duration: write a whole number with a unit ms, s, m or h, like \"90s\""
            ));
        }
        let factor = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => {
                return Err(format!("`{text}` has no unit: write it with ms, s, m or h, like \"{digits}s\""))
            }
            other => {
                return Err(format!(
                    "`{text}` has the unknown unit `{other}`: use ms, s, m or h, like \"90s\""
                ))
            }
        };
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(Duration::from_ms)
            .ok_or_else(|| format!("`{text}` is too large: keep durations below a few years"))
    }
}

impl fmt::Display for Duration {
    /// The largest unit that divides the value exactly: `2m`, `90s`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.ms;
        if ms != 0 && ms % 3_600_000 == 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1_000 == 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit ms, s, m or h, like \"90s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit: write it as a string with ms, s, m or h, like \"{v}s\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit: write it as a string with ms, s, m or h, like \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A [`Duration`] of a key that was once an integer of milliseconds
/// (`batch_interval_ms = 1000`, still read under that name): a bare number is
/// milliseconds; a string needs its unit, as every duration.
struct MsOrUnit(Duration);

impl<'de> Deserialize<'de> for MsOrUnit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MsOrUnit, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MsOrUnit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration string with a unit ms, s, m or h, like \"90s\", or a number of milliseconds",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MsOrUnit, E> {
                Duration::parse(v).map(MsOrUnit).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MsOrUnit, E> {
                i64::try_from(v).map(|ms| MsOrUnit(Duration::from_ms(ms))).map_err(|_| {
                    E::custom(format!("`{v}` ms is too large: keep durations below a few years"))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MsOrUnit, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "`{v}` is negative: a duration is 0 or more, like \"1s\""
                    )));
                }
                Ok(MsOrUnit(Duration::from_ms(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `deserialize_with` for a key that was once an integer of milliseconds ([`MsOrUnit`]).
pub fn ms_or_unit<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    MsOrUnit::deserialize(d).map(|m| m.0)
}

/// [`ms_or_unit`] for an optional key.
pub fn opt_ms_or_unit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<MsOrUnit>::deserialize(d).map(|m| m.map(|m| m.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, ms, shown) in
            [("500ms", 500, "500ms"), ("5s", 5_000, "5s"), ("120s", 120_000, "2m"), ("1h", 3_600_000, "1h")]
        {
            let d = Duration::parse(text).unwrap();
            assert_eq!(d.as_ms(), ms);
            assert_eq!(d.to_string(), shown);
        }
        assert!(Duration::parse("90").unwrap_err().contains("no unit"));
        assert!(Duration::parse("1d").unwrap_err().contains("unknown unit"));
        assert!(Duration::parse("-5s").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn a_bare_number_is_seconds_where_allowed() {
        assert_eq!(Duration::parse_or_seconds("90").unwrap().as_ms(), 90_000);
        assert_eq!(Duration::parse_or_seconds(" 15m ").unwrap().as_ms(), 900_000);
        assert_eq!(Duration::parse_or_seconds("1500ms").unwrap().as_ms(), 1_500);
        assert!(Duration::parse_or_seconds("").unwrap_err().contains("not a duration"));
        assert!(Duration::parse_or_seconds("1d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn configuration_values_need_a_unit() {
        #[derive(Deserialize)]
        struct C {
            d: Duration,
        }
        let c: C = serde_json::from_str(r#"{"d": "90s"}"#).unwrap();
        assert_eq!(c.d.as_ms(), 90_000);
        let e = serde_json::from_str::<C>(r#"{"d": 90}"#).err().unwrap().to_string();
        assert!(e.contains(r#"no unit: write it as a string with ms, s, m or h, like "90s""#), "{e}");
    }

    #[test]
    fn keys_once_in_milliseconds_take_both_forms() {
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "ms_or_unit")]
            d: Duration,
            #[serde(default, deserialize_with = "opt_ms_or_unit")]
            o: Option<Duration>,
        }
        let c: C = serde_json::from_str(r#"{"d": 1500, "o": "2m"}"#).unwrap();
        assert_eq!((c.d.as_ms(), c.o.map(Duration::as_ms)), (1_500, Some(120_000)));
        let c: C = serde_json::from_str(r#"{"d": "1s"}"#).unwrap();
        assert_eq!((c.d.as_ms(), c.o), (1_000, None));
        let e = serde_json::from_str::<C>(r#"{"d": -5}"#).err().unwrap().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = serde_json::from_str::<C>(r#"{"d": "5"}"#).err().unwrap().to_string();
        assert!(e.contains("no unit"), "{e}");
        assert_eq!(Duration::from_ms(-3).as_std(), std::time::Duration::ZERO);
    }
}
