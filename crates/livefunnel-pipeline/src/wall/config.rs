//! `[wall]`: the live wall served on `http.listen` (`/`, `/rooms/{id}`, `/api/...`).

use livefunnel_core::ConfigError;
use std::collections::BTreeMap;
use std::path::PathBuf;

use livefunnel_clickhouse::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use livefunnel_core::Duration;

/// Tokens shorter than this are refused: they could be guessed.
const MIN_TOKEN_CHARS: usize = 16;

/// `[wall]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WallConfig {
    /// Serve the wall pages and its JSON API beside `/metrics`.
    pub enabled: bool,
    /// `zh` (Chinese labels) or `en`.
    pub language: String,
    /// IANA time zone the pages show times in.
    pub time_zone: String,
    /// The room directory (TOML or CSV, by extension); `""`: none, ids are shown.
    pub rooms_file: String,
    /// Rooms per wall page; pages turn by themselves every `page_seconds`.
    pub page_size: u32,
    /// How long the wall shows a page before the next one; `"0s"`: it never turns.
    pub page_seconds: Duration,
    /// Sees every room. Set it from the environment (`LIVEFUNNEL_WALL__ADMIN_TOKEN`).
    pub admin_token: Secret,
    /// Per org: `[wall.orgs.<name>]` with `org_id` and `token`. `<name>` is yours to
    /// choose (letters, digits, `_`), so the environment can set it:
    /// `LIVEFUNNEL_WALL__ORGS__<NAME>__ORG_ID` and `LIVEFUNNEL_WALL__ORGS__<NAME>__TOKEN`.
    pub orgs: BTreeMap<String, OrgAccess>,
}

/// `[wall.orgs.<name>]`: the token that shows one org's rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OrgAccess {
    pub org_id: String,
    pub token: Secret,
}

impl Default for WallConfig {
    fn default() -> WallConfig {
        WallConfig {
            enabled: true,
            language: "zh".into(),
            time_zone: "Asia/Shanghai".into(),
            rooms_file: String::new(),
            page_size: 24,
            page_seconds: Duration::from_ms(20_000),
            admin_token: Secret::default(),
            orgs: BTreeMap::new(),
        }
    }
}

impl WallConfig {
    /// The error is `(dotted key, message)`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !matches!(self.language.as_str(), "zh" | "en") {
            return Err(ConfigError::at(
                "wall.language",
                format!("is `{}`: use \"zh\" (Chinese labels) or \"en\"", self.language),
            ));
        }
        if !is_time_zone_name(&self.time_zone) {
            return Err(ConfigError::at(
                "wall.time_zone",
                format!(
                    "`{}` is not a time zone name: use an IANA name like \"Asia/Shanghai\" or \"UTC\"",
                    self.time_zone
                ),
            ));
        }
        if !(1..=500).contains(&self.page_size) {
            return Err(ConfigError::at(
                "wall.page_size",
                format!("is {}: show from 1 to 500 rooms per page, like 24", self.page_size),
            ));
        }
        if self.page_seconds.as_ms() != 0 && self.page_seconds.as_ms() < 5_000 {
            return Err(ConfigError::at(
                "wall.page_seconds",
                "must be at least 5s (a page must be readable), or \"0s\" for pages that never turn".into(),
            ));
        }
        let mut seen: Vec<(&str, String)> = Vec::new();
        if !self.admin_token.is_empty() {
            check_token("wall.admin_token", &self.admin_token)?;
            seen.push((self.admin_token.expose(), "wall.admin_token".into()));
        }
        for (name, org) in &self.orgs {
            let key = |k: &str| format!("wall.orgs.{name}.{k}");
            if org.org_id.trim().is_empty() {
                return Err(ConfigError::at(
                    key("org_id"),
                    "is empty: name the org_id whose rooms this token shows".into(),
                ));
            }
            if org.token.is_empty() {
                return Err(ConfigError::at(
                    key("token"),
                    format!(
                        "is empty: set it from the environment, {}=$(openssl rand -hex 16)",
                        livefunnel_core::env_var_name(&key("token"))
                    ),
                ));
            }
            check_token(&key("token"), &org.token)?;
            if let Some((_, other)) = seen.iter().find(|(t, _)| *t == org.token.expose()) {
                return Err(ConfigError::at(
                    key("token"),
                    format!("is the same as {other}: give each org a token of its own"),
                ));
            }
            seen.push((org.token.expose(), key("token")));
        }
        Ok(())
    }

    /// The room directory's path, when one is set.
    pub fn rooms_path(&self) -> Option<PathBuf> {
        (!self.rooms_file.trim().is_empty()).then(|| PathBuf::from(self.rooms_file.trim()))
    }

    /// Who may look: the configured tokens, hashed.
    pub fn access(&self) -> Access {
        let digest = |s: &Secret| -> [u8; 32] { Sha256::digest(s.expose().as_bytes()).into() };
        Access {
            admin: (!self.admin_token.is_empty()).then(|| digest(&self.admin_token)),
            orgs: self.orgs.values().map(|o| (o.org_id.clone(), digest(&o.token))).collect(),
        }
    }
}

fn check_token(key: &str, token: &Secret) -> Result<(), ConfigError> {
    let t = token.expose();
    if t.chars().count() < MIN_TOKEN_CHARS || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::at(
            key,
            format!(
                "must be at least {MIN_TOKEN_CHARS} characters without spaces: generate one with \
                 `openssl rand -hex 16` and set it from the environment ({})",
                livefunnel_core::env_var_name(key)
            ),
        ));
    }
    Ok(())
}

/// `UTC`, or `Area/Location[/More]` as IANA names are written. The pages format times
/// with the browser's time zone database, which knows every real name.
fn is_time_zone_name(s: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
    };
    s == "UTC" || (s.contains('/') && s.split('/').all(ok_part))
}

/// Who is looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// Every room: the admin token, or a loopback client when no token is configured.
    All,
    /// The rooms of one org.
    Org(String),
}

impl Viewer {
    pub fn sees(&self, org_id: &str) -> bool {
        match self {
            Viewer::All => true,
            Viewer::Org(o) => o == org_id,
        }
    }
}

/// The configured tokens as SHA-256 digests, compared in constant time.
#[derive(Clone, Default)]
pub struct Access {
    admin: Option<[u8; 32]>,
    orgs: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("admin", &self.admin.map(|_| "[redacted]"))
            .field("orgs", &self.orgs.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl Access {
    /// No token configured: the wall answers loopback clients only.
    pub fn is_open(&self) -> bool {
        self.admin.is_none() && self.orgs.is_empty()
    }

    /// The viewer a presented token stands for. Every configured token is compared,
    /// each in constant time over equal-length digests, so the time taken says nothing
    /// about which token, or how much of one, matched.
    pub fn viewer(&self, token: &str) -> Option<Viewer> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        if let Some(admin) = &self.admin {
            if bool::from(admin.ct_eq(&presented)) {
                found = Some(Viewer::All);
            }
        }
        for (org, digest) in &self.orgs {
            if bool::from(digest.ct_eq(&presented)) && found.is_none() {
                found = Some(Viewer::Org(org.clone()));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_org(name: &str, org: &str, token: &str) -> WallConfig {
        let mut c = WallConfig::default();
        c.orgs.insert(name.into(), OrgAccess { org_id: org.into(), token: token.into() });
        c
    }

    #[test]
    fn tokens_map_to_their_viewers_and_nothing_else_does() {
        let mut c = with_org("xm", "org-xingmang", "0123456789abcdef-xm");
        c.admin_token = "0123456789abcdef-admin".into();
        c.check().unwrap();
        let a = c.access();
        assert!(!a.is_open());
        assert_eq!(a.viewer("0123456789abcdef-admin"), Some(Viewer::All));
        assert_eq!(a.viewer("0123456789abcdef-xm"), Some(Viewer::Org("org-xingmang".into())));
        assert_eq!(a.viewer("0123456789abcdef-x"), None);
        assert_eq!(a.viewer(""), None);
        assert!(WallConfig::default().access().is_open());
        let shown = format!("{c:?} {a:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let err = |c: WallConfig| c.check().unwrap_err();
        let ConfigError { key: k, message: m } = err(with_org("xm", "org-xingmang", "short"));
        assert_eq!(k, "wall.orgs.xm.token");
        assert!(m.contains("openssl rand -hex 16") && m.contains("LIVEFUNNEL_WALL__ORGS__XM__TOKEN"), "{m}");
        let ConfigError { key: k, message: _ } = err(with_org("xm", "", "0123456789abcdef"));
        assert_eq!(k, "wall.orgs.xm.org_id");
        let ConfigError { key: k, message: m } = err(with_org("xm", "org-x", ""));
        assert_eq!(k, "wall.orgs.xm.token");
        assert!(m.contains("environment"), "{m}");
        let mut c = with_org("xm", "org-x", "0123456789abcdef");
        c.admin_token = "0123456789abcdef".into();
        let ConfigError { key: k, message: m } = err(c);
        assert_eq!(k, "wall.orgs.xm.token");
        assert!(m.contains("wall.admin_token"), "{m}");
        let c = WallConfig { language: "fr".into(), ..WallConfig::default() };
        assert_eq!(err(c).key, "wall.language");
        let c = WallConfig { time_zone: "Shanghai time".into(), ..WallConfig::default() };
        assert_eq!(err(c).key, "wall.time_zone");
        for tz in ["UTC", "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+8"] {
            let c = WallConfig { time_zone: tz.into(), ..WallConfig::default() };
            c.check().unwrap_or_else(|e| panic!("{tz}: {e:?}"));
        }
        let c = WallConfig { page_size: 0, ..WallConfig::default() };
        assert_eq!(err(c).key, "wall.page_size");
        let c = WallConfig { page_seconds: Duration::from_ms(1_000), ..WallConfig::default() };
        assert_eq!(err(c).key, "wall.page_seconds");
    }
}
