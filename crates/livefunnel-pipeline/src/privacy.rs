//! `[privacy]`: viewer ids pseudonymised at ingest.
//!
//! With `hash_user_ids = true` every decoded event's `user_id` is replaced by
//! HMAC-SHA256(salt, user_id), as the lowercase hex of its first 16 bytes, before the
//! engine sees it — in `run` (each partition's task) and in `replay` alike, so both
//! compute the same rows for the same configuration. Every distinct count, presence
//! and checkpoint then holds only the pseudonym.
//!
//! Why this shape: a keyed hash (not a bare SHA-256) so ids cannot be recovered by
//! hashing a list of candidate ids without the salt; 128 bits keep collisions (which
//! would merge two viewers in a distinct count) out of reach for any realistic
//! audience, and 32 hex characters fit the contract's 128-byte `user_id` limit.

use livefunnel_core::ConfigError;
use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, Mac};
use livefunnel_clickhouse::Secret;
use livefunnel_core::Event;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// `[privacy]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Replace each `user_id` by a salted hash at ingest.
    pub hash_user_ids: bool,
    /// The HMAC key; required when hashing is on. Never printed. Changing it changes
    /// every pseudonym: viewers of windows before and after count as different.
    pub salt: Secret,
}

impl PrivacyConfig {
    /// The error is `(dotted key, message)`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.hash_user_ids && self.salt.expose().trim().is_empty() {
            return Err(ConfigError::at(
                "privacy.salt",
                "is empty but privacy.hash_user_ids is true: set a long random salt, preferably from \
                 the environment (LIVEFUNNEL_PRIVACY__SALT=$(openssl rand -hex 32)), or turn hashing off"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The hasher when hashing is on.
    pub fn hasher(&self) -> Option<UserIdHasher> {
        self.hash_user_ids.then(|| UserIdHasher::new(&self.salt))
    }

    /// What the engine's user ids are, recorded in its checkpoints so a state is never
    /// restored under another form: `clear`, or `hmac-sha256 salt <fingerprint>`. The
    /// fingerprint is itself a keyed hash, of a fixed text: it tells salts apart
    /// without showing them.
    pub fn user_id_form(&self) -> String {
        match self.hasher() {
            None => livefunnel_core::USER_IDS_CLEAR.to_owned(),
            Some(h) => format!("hmac-sha256 salt {}", &h.hash("livefunnel: salt fingerprint")[..8]),
        }
    }
}

/// Pseudonymises `user_id`s with a keyed hash; see the module documentation.
#[derive(Clone)]
pub struct UserIdHasher {
    /// The HMAC state after the key: cloned per id instead of re-keyed.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for UserIdHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserIdHasher([redacted])")
    }
}

/// Bytes of the HMAC kept: 128 bits.
const KEPT_BYTES: usize = 16;

impl UserIdHasher {
    pub fn new(salt: &Secret) -> UserIdHasher {
        let keyed =
            Hmac::<Sha256>::new_from_slice(salt.expose().as_bytes()).expect("HMAC takes a key of any length");
        UserIdHasher { keyed }
    }

    /// The pseudonym of one id: 32 lowercase hex digits.
    pub fn hash(&self, user_id: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.keyed.clone();
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(2 * KEPT_BYTES);
        for b in &digest[..KEPT_BYTES] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Replaces the event's `user_id`, if any, by its pseudonym.
    pub fn apply(&self, event: &mut Event<'_>) {
        if let Some(id) = event.user_id.as_mut() {
            *id = Cow::Owned(self.hash(id));
        }
    }
}

/// Applies `hasher` when hashing is on: the one call each ingest path makes.
pub fn pseudonymise(hasher: Option<&UserIdHasher>, event: &mut Event<'_>) {
    if let Some(h) = hasher {
        h.apply(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livefunnel_core::EventType;

    #[test]
    fn hash_is_keyed_stable_and_32_hex_digits() {
        let a = UserIdHasher::new(&Secret::new("salt-a"));
        let b = UserIdHasher::new(&Secret::new("salt-b"));
        let h = a.hash("viewer-1");
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{h}");
        assert_eq!(h, a.hash("viewer-1"), "stable");
        assert_ne!(h, a.hash("viewer-2"));
        assert_ne!(h, b.hash("viewer-1"), "the salt matters");
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let rfc = UserIdHasher::new(&Secret::new("Jefe"));
        assert_eq!(rfc.hash("what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn apply_replaces_only_user_id() {
        let h = UserIdHasher::new(&Secret::new("s"));
        let mut e = Event::minimal("e1", EventType::Enter, 1, "room", "sess");
        e.user_id = Some(Cow::Borrowed("viewer-1"));
        pseudonymise(Some(&h), &mut e);
        assert_eq!(e.user_id.as_deref(), Some(h.hash("viewer-1").as_str()));
        assert_eq!((e.room_id.as_ref(), e.event_id.as_ref()), ("room", "e1"));
        let mut none = Event::minimal("e2", EventType::SessionStart, 1, "room", "sess");
        pseudonymise(Some(&h), &mut none);
        assert_eq!(none.user_id, None);
        let mut off = e.clone();
        pseudonymise(None, &mut off);
        assert_eq!(off, e, "off: unchanged");
    }

    #[test]
    fn hashing_needs_a_salt_and_debug_hides_it() {
        let cfg = PrivacyConfig { hash_user_ids: true, salt: Secret::default() };
        let ConfigError { key, message: msg } = cfg.check().unwrap_err();
        assert_eq!(key, "privacy.salt");
        assert!(msg.contains("LIVEFUNNEL_PRIVACY__SALT") && msg.contains("hash_user_ids"), "{msg}");
        assert!(PrivacyConfig::default().check().is_ok(), "off needs no salt");
        let cfg = PrivacyConfig { hash_user_ids: true, salt: Secret::new("pepper-xyz") };
        assert!(cfg.check().is_ok());
        let shown = format!("{cfg:?} {:?}", cfg.hasher().unwrap());
        assert!(!shown.contains("pepper-xyz"), "{shown}");
    }

    #[test]
    fn the_user_id_form_tells_clear_ids_and_salts_apart_without_the_salt() {
        let hashed = |salt: &str| PrivacyConfig { hash_user_ids: true, salt: Secret::new(salt) };
        assert_eq!(PrivacyConfig::default().user_id_form(), "clear");
        let off_with_salt = PrivacyConfig { hash_user_ids: false, salt: Secret::new("pepper-xyz") };
        assert_eq!(off_with_salt.user_id_form(), "clear", "a salt without hashing changes no id");
        let form = hashed("pepper-xyz").user_id_form();
        assert!(
            form.starts_with("hmac-sha256 salt ") && form.len() == "hmac-sha256 salt ".len() + 8,
            "{form}"
        );
        assert!(!form.contains("pepper"), "{form}");
        assert_eq!(form, hashed("pepper-xyz").user_id_form(), "stable across restarts");
        assert_ne!(form, hashed("pepper-xyy").user_id_form());
        // The engine's checkpoints record it: `livefunnel`'s config tests.
    }
}
