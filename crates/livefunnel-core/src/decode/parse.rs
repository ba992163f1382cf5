//! Parsing (reason 2, `malformed_json`): one streaming pass over the message that
//! captures the known fields loosely typed and rejects what is not a JSON object
//! with unique keys and finite numbers.

use rustc_hash::FxHashSet;
use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validate::Shown;
use super::*;

/// Fills `fields` in place: they are a few hundred bytes, not worth moving
/// through serde's layers of `Result`.
pub(super) fn parse<'a>(text: &'a str, fields: &mut Fields<'a>) -> Result<(), Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut duplicate = None;
    let parsed = (&mut de).deserialize_any(TopVisitor { fields, duplicate: &mut duplicate });
    // `end` rejects anything but whitespace after the object.
    parsed.and_then(|()| de.end()).map_err(|err| malformed(&err, duplicate))
}

fn malformed(err: &serde_json::Error, duplicate: Option<String>) -> Rejection {
    let (line, column) = (err.line(), err.column());
    if let Some(key) = duplicate {
        return Rejection::new(
            Reason::MalformedJson,
            format!("duplicate key `{}` at line {line} column {column}", Shown(&key)),
        );
    }
    // serde_json appends the position to its message; it is moved to the front
    // so every malformed detail reads the same way.
    let message = err.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = message.strip_suffix(suffix.as_str()).unwrap_or(&message);
    Rejection::new(Reason::MalformedJson, format!("invalid json at line {line} column {column}: {message}"))
}

/// The top level: must be an object; captures known fields, skips the rest.
struct TopVisitor<'s, 'de> {
    fields: &'s mut Fields<'de>,
    /// The de::Error of a duplicate key loses its structure inside serde_json,
    /// so the key is handed out on the side for a clean detail.
    duplicate: &'s mut Option<String>,
}

impl<'de> Visitor<'de> for TopVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut unknown = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Known(field) => {
                    let slot = &mut self.fields[field as usize];
                    if slot.is_some() {
                        *self.duplicate = Some(field.name().to_owned());
                        return Err(de::Error::custom("duplicate key"));
                    }
                    *slot = Some(map.next_value_seed(RawSeed)?);
                }
                Key::Unknown(key) => {
                    if let Err(key) = unknown.insert(key) {
                        *self.duplicate = Some(key.into_owned());
                        return Err(de::Error::custom("duplicate key"));
                    }
                    map.next_value_seed(Skip)?;
                }
            }
        }
        Ok(())
    }
}

enum Key<'a> {
    Known(Field),
    Unknown(Cow<'a, str>),
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::from_key(v).map_or(Key::Unknown(Cow::Borrowed(v)), Key::Known))
    }

    // An escaped key is compared by its decoded text: `"t\u0073"` is `ts`.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::from_key(v).map_or_else(|| Key::Unknown(Cow::Owned(v.to_owned())), Key::Known))
    }
}

/// Unknown top-level keys seen so far, for duplicate detection. Most events
/// carry none or a few, so a linear scan with no allocation serves them; a
/// set takes over only when a message piles up keys, to stay linear.
#[derive(Default)]
struct KeySet<'a> {
    few: Vec<Cow<'a, str>>,
    many: Option<FxHashSet<Cow<'a, str>>>,
}

impl<'a> KeySet<'a> {
    const FEW: usize = 16;

    /// Gives the key back when it was already present.
    fn insert(&mut self, key: Cow<'a, str>) -> Result<(), Cow<'a, str>> {
        if let Some(many) = &mut self.many {
            if many.contains(&key) {
                return Err(key);
            }
            many.insert(key);
            return Ok(());
        }
        if self.few.contains(&key) {
            return Err(key);
        }
        if self.few.len() < Self::FEW {
            self.few.push(key);
        } else {
            let mut many: FxHashSet<_> = self.few.drain(..).collect();
            many.insert(key);
            self.many = Some(many);
        }
        Ok(())
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Raw::I64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Raw::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        finite(v).map(Raw::F64)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Raw::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip.visit_map(map).map(|()| Raw::Object)
    }
}

/// Skips a value while still parsing its numbers: serde's `IgnoredAny` only
/// checks number syntax, so `1e400` in an unknown field would pass unseen.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        finite(v).map(drop)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    // Nested duplicate keys are not looked for: the contract's duplicate rule
    // is about the event's own fields, and tracking every level costs memory.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// serde_json already refuses numbers that overflow `f64`; this keeps the
/// contract's "not finite" rule independent of that detail.
fn finite<E: de::Error>(v: f64) -> Result<f64, E> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(E::custom("number is not finite"))
    }
}
