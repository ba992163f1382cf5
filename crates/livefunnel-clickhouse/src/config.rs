//! `[clickhouse]`: where results go and how they are batched and retried.

use livefunnel_core::duration::{ms_or_unit, opt_ms_or_unit};
use livefunnel_core::Duration;
use serde::{Deserialize, Serialize};

use crate::secret::{redact_url, Secret};

/// The ClickHouse sink's configuration. Every field has a default, so an empty
/// `[clickhouse]` section talks to a local server's `livefunnel` database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://host:8123`. HTTPS is not built in.
    pub url: String,
    /// Database holding livefunnel's tables; created by the migrations. Letters,
    /// digits and `_`, not starting with a digit.
    pub database: String,
    pub user: String,
    /// Also from the environment: `LIVEFUNNEL_CLICKHOUSE__PASSWORD`. Never printed.
    pub password: Secret,
    /// A flush is due once this many rows are buffered (all tables together).
    pub batch_rows: usize,
    /// A flush is due once the oldest buffered row is this old.
    ///
    /// The durations of this section are written with a unit (`"1s"`); their keys
    /// were once integers of milliseconds (`batch_interval_ms = 1000`), and are still
    /// read so.
    #[serde(alias = "batch_interval_ms", deserialize_with = "ms_or_unit")]
    pub batch_interval: Duration,
    /// Limit for one request (a query, or one insert's sending and its answer).
    #[serde(alias = "request_timeout_ms", deserialize_with = "ms_or_unit")]
    pub request_timeout: Duration,
    /// Limit for a migration statement that copies a whole table (moving a table to a
    /// new sort key); it takes as long as the table is big.
    #[serde(alias = "migration_timeout_ms", deserialize_with = "ms_or_unit")]
    pub migration_timeout: Duration,
    /// Compress inserts with LZ4 (ClickHouse's own block format, `decompress=1`).
    pub compression: bool,
    /// Backoff between attempts of a failed insert.
    pub retry: RetryConfig,
    /// How long rows are kept (`crate::retention`).
    pub retention: crate::retention::RetentionConfig,
}

impl Default for ClickHouseConfig {
    fn default() -> ClickHouseConfig {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".to_string(),
            database: "livefunnel".to_string(),
            user: "default".to_string(),
            password: Secret::default(),
            batch_rows: 20_000,
            batch_interval: Duration::from_ms(1_000),
            request_timeout: Duration::from_ms(30_000),
            migration_timeout: Duration::from_ms(3_600_000),
            compression: true,
            retry: RetryConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
        }
    }
}

/// `[clickhouse.retry]`: exponential backoff with full jitter. Only errors a retry
/// can fix (connection refused or reset, timeouts, overload) are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Upper bound of the first wait; it doubles per attempt up to `max_backoff`.
    #[serde(alias = "initial_backoff_ms", deserialize_with = "ms_or_unit")]
    pub initial_backoff: Duration,
    #[serde(alias = "max_backoff_ms", deserialize_with = "ms_or_unit")]
    pub max_backoff: Duration,
    /// Give up a flush after retrying this long; absent means retry until it
    /// succeeds or the caller shuts down. The rows stay buffered either way.
    #[serde(alias = "max_elapsed_ms", deserialize_with = "opt_ms_or_unit")]
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            initial_backoff: Duration::from_ms(100),
            max_backoff: Duration::from_ms(10_000),
            max_elapsed: None,
        }
    }
}

pub use livefunnel_core::ConfigError;

/// `field` is the key below `clickhouse.`, e.g. `retry.max_backoff`.
fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("clickhouse.{field}"), message)
}

impl ClickHouseConfig {
    /// Checks every field; the error names the first bad key and how to fix it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            invalid(
                "url",
                format!(
                    "{:?} is not an http:// URL: use the HTTP interface, e.g. http://127.0.0.1:8123 \
                     (https is not supported by this build)",
                    redact_url(&self.url)
                ),
            )
        })?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if host.is_empty() {
            return Err(invalid(
                "url",
                format!("{:?} has no host: use e.g. http://127.0.0.1:8123", redact_url(&self.url)),
            ));
        }
        if !is_identifier(&self.database) {
            return Err(invalid(
                "database",
                format!(
                    "{:?} is not a plain identifier: use letters, digits and _ (not starting with a digit), \
                     at most 64 bytes, e.g. livefunnel",
                    self.database
                ),
            ));
        }
        if self.user.is_empty() {
            return Err(invalid("user", "is empty: set the ClickHouse user, e.g. default"));
        }
        if self.batch_rows == 0 {
            return Err(invalid("batch_rows", "must be at least 1 (default 20000)"));
        }
        if self.batch_interval.as_ms() < 1 {
            return Err(invalid("batch_interval", "must be at least 1ms (default \"1s\")"));
        }
        if self.request_timeout.as_ms() < 100 {
            return Err(invalid("request_timeout", "must be at least 100ms (default \"30s\")"));
        }
        if self.migration_timeout.as_ms() < 1000 {
            return Err(invalid("migration_timeout", "must be at least 1s (default \"1h\")"));
        }
        let r = &self.retry;
        if r.initial_backoff.as_ms() < 1 {
            return Err(invalid("retry.initial_backoff", "must be at least 1ms (default \"100ms\")"));
        }
        if r.max_backoff.as_ms() < r.initial_backoff.as_ms() {
            return Err(invalid(
                "retry.max_backoff",
                format!(
                    "{} is below retry.initial_backoff ({}): raise it (default \"10s\")",
                    r.max_backoff, r.initial_backoff
                ),
            ));
        }
        if r.max_elapsed.is_some_and(|d| d.as_ms() < 1) {
            return Err(invalid(
                "retry.max_elapsed",
                "must be at least 1ms, or absent to retry until shutdown",
            ));
        }
        Ok(())
    }
}

/// A name that can appear unquoted in SQL, so it can never inject anything.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let cfg = ClickHouseConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.url, "http://127.0.0.1:8123");
        assert_eq!(cfg.database, "livefunnel");
        assert_eq!((cfg.batch_rows, cfg.batch_interval.as_ms()), (20_000, 1_000));
        assert_eq!((cfg.retry.initial_backoff.as_ms(), cfg.retry.max_backoff.as_ms()), (100, 10_000));
    }

    #[test]
    fn deserializes_partial_sections_with_defaults() {
        let cfg: ClickHouseConfig =
            serde_json::from_str(r#"{"database":"lf_test","retry":{"max_backoff":"500ms"}}"#).unwrap();
        assert_eq!(cfg.database, "lf_test");
        assert_eq!(cfg.retry.max_backoff.as_ms(), 500);
        assert_eq!(cfg.retry.initial_backoff.as_ms(), 100);
        // The keys of before, integers of milliseconds, are read as they were.
        let old: ClickHouseConfig = serde_json::from_str(
            r#"{"batch_interval_ms":200,"request_timeout_ms":5000,"retry":{"max_backoff_ms":500,"max_elapsed_ms":60000}}"#,
        )
        .unwrap();
        assert_eq!((old.batch_interval.as_ms(), old.request_timeout.as_ms()), (200, 5_000));
        assert_eq!(
            (old.retry.max_backoff.as_ms(), old.retry.max_elapsed.map(Duration::as_ms)),
            (500, Some(60_000))
        );
        assert_eq!(cfg.batch_rows, 20_000);
        assert!(serde_json::from_str::<ClickHouseConfig>(r#"{"batch_row":1}"#).is_err(), "typos are refused");
    }

    #[test]
    fn validation_names_the_field_and_the_fix() {
        let check = |edit: fn(&mut ClickHouseConfig), field: &str, hint: &str| {
            let mut cfg = ClickHouseConfig::default();
            edit(&mut cfg);
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.key, format!("clickhouse.{field}"));
            let text = err.to_string();
            assert!(text.starts_with(&format!("config key `clickhouse.{field}`: ")), "{text}");
            assert!(text.contains(hint), "{text}");
        };
        check(|c| c.url = "https://ch:8443".into(), "url", "http://127.0.0.1:8123");
        check(|c| c.url = "http://".into(), "url", "no host");
        check(|c| c.database = "live-funnel".into(), "database", "letters, digits and _");
        check(|c| c.database = "1db".into(), "database", "not starting with a digit");
        check(|c| c.database = "a`; DROP".into(), "database", "identifier");
        check(|c| c.user = String::new(), "user", "default");
        check(|c| c.url = "https://u:pw-in-url@ch:8443".into(), "url", "u:[redacted]@ch");
        let mut cfg = ClickHouseConfig { url: "http://u:pw-in-url@".into(), ..ClickHouseConfig::default() };
        assert!(!cfg.validate().unwrap_err().to_string().contains("pw-in-url"));
        cfg.url = "ftp://u:pw-in-url@ch".into();
        assert!(!cfg.validate().unwrap_err().to_string().contains("pw-in-url"));
        check(|c| c.batch_rows = 0, "batch_rows", "at least 1");
        check(|c| c.batch_interval = Duration::from_ms(0), "batch_interval", "at least 1ms");
        check(|c| c.request_timeout = Duration::from_ms(5), "request_timeout", "at least 100ms");
        check(|c| c.migration_timeout = Duration::from_ms(5), "migration_timeout", "at least 1s");
        check(|c| c.retry.initial_backoff = Duration::from_ms(0), "retry.initial_backoff", "at least 1ms");
        check(
            |c| c.retry.max_backoff = Duration::from_ms(50),
            "retry.max_backoff",
            "below retry.initial_backoff",
        );
        check(|c| c.retry.max_elapsed = Some(Duration::from_ms(0)), "retry.max_elapsed", "absent");
    }
}
