//! Configuration values that must never be printed: passwords, salts.
//!
//! It lives here because both users reach it without a new dependency: the
//! ClickHouse password (this crate) and the binary's `[privacy] salt` (the
//! `livefunnel` crate, which depends on this one).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What a set secret prints and serializes as.
pub const REDACTED: &str = "[redacted]";

/// A secret string. `Debug`, `Display` and `Serialize` never show it: a set secret
/// reads [`REDACTED`], an empty one `""` (so the defaults, which are empty,
/// serialize unchanged). Only [`Secret::expose`] gives the value, at the one place
/// that hands it to a client library.
///
/// Deserializing the placeholder itself is refused: `check-config` output fed back
/// as a configuration file would otherwise run with the literal password
/// `[redacted]` and fail much later with a confusing authentication error.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: hand it to a client, never to a log line or an error.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.shown(), f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                if v == REDACTED {
                    return Err(E::custom(format!(
                        "is the placeholder {REDACTED} that check-config prints instead of a secret: \
                         set the real value (an environment variable keeps it out of files)"
                    )));
                }
                Ok(Secret(v.to_owned()))
            }
            // An environment variable of digits reaches serde as a number.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `url` with the password of a `user:password@` part replaced by [`REDACTED`], for
/// log lines and errors; any other URL is returned unchanged.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let host = &authority[at + 1..];
            if userinfo.contains(':') {
                format!("{scheme}{user}:{REDACTED}@{host}{tail}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_never_show_the_value() {
        let s = Secret::new("hunter2-pw");
        assert_eq!(format!("{s:?}"), "\"[redacted]\"");
        assert_eq!(s.to_string(), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2-pw");
        let empty = Secret::default();
        assert_eq!((format!("{empty:?}"), empty.to_string()), ("\"\"".into(), String::new()));
        assert_eq!(serde_json::to_string(&empty).unwrap(), "\"\"", "defaults serialize unchanged");
    }

    #[test]
    fn deserializes_plain_strings_and_refuses_the_placeholder() {
        let s: Secret = serde_json::from_str("\"p@ss:word\"").unwrap();
        assert_eq!(s.expose(), "p@ss:word");
        let n: Secret = serde_json::from_str("1234").unwrap();
        assert_eq!(n.expose(), "1234");
        let err = serde_json::from_str::<Secret>("\"[redacted]\"").unwrap_err().to_string();
        assert!(err.contains("check-config") && err.contains("real value"), "{err}");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(redact_url("http://u:pw@ch:8123/x?y"), "http://u:[redacted]@ch:8123/x?y");
        assert_eq!(redact_url("http://u:p@w@ch:8123"), "http://u:[redacted]@ch:8123");
        assert_eq!(redact_url("http://u@ch:8123"), "http://u@ch:8123");
        assert_eq!(redact_url("http://ch:8123/?q=a@b"), "http://ch:8123/?q=a@b");
        assert_eq!(redact_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
    }
}
