//! The layered configuration of the `livefunnel` binary.
//!
//! Layers, later ones win: built-in defaults → a TOML file (`--config FILE`) →
//! environment variables `LIVEFUNNEL_<SECTION>__<KEY>` (e.g.
//! `LIVEFUNNEL_TIME__ALLOWED_LATENESS=90s`). The result is checked and mapped into
//! [`livefunnel_core::EngineConfig`]; every error names the dotted key
//! (`time.allowed_lateness`), where the value came from when known, and the fix.
//!
//! `livefunnel.example.toml` at the repository root documents every key.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};
pub use livefunnel_core::Duration;

use crate::config_renamed::Renamed;
use livefunnel_core::{ConfigError, EngineConfig, TimeMode, WindowSpec};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use livefunnel_core::{env_var_name, ENV_PREFIX, ENV_SPLIT};
use livefunnel_pipeline::{Settings, SinkKind};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Event-time parameters (contract §1.5, §2).
    pub time: TimeConfig,
    /// Which windows are computed (contract §2).
    pub windows: WindowsConfig,
    /// Memory and accuracy limits (contract §3).
    pub limits: LimitsConfig,
    /// Live pipeline: the input topics and any librdkafka property.
    pub kafka: livefunnel_pipeline::config::KafkaConfig,
    /// Live pipeline: where result rows go (contract §5).
    pub clickhouse: livefunnel_clickhouse::ClickHouseConfig,
    /// Live pipeline: checkpoints of the per-partition state.
    pub checkpoint: livefunnel_pipeline::config::CheckpointConfig,
    /// Live pipeline: the engine threads.
    pub runtime: livefunnel_pipeline::config::RuntimeConfig,
    /// Live pipeline: `/metrics`, `/healthz`, `/readyz`.
    pub http: livefunnel_pipeline::config::HttpConfig,
    /// Live pipeline: the windows behind the alert-signal series.
    pub signals: livefunnel_pipeline::config::SignalsConfig,
    /// Live pipeline and `eval-alerts`: the room alert detectors.
    pub detectors: crate::detectors_config::DetectorsConfig,
    /// `user_id` pseudonymised at ingest (run and replay).
    pub privacy: livefunnel_pipeline::privacy::PrivacyConfig,
    /// Live pipeline: the wall pages and their JSON API on `http.listen`.
    pub wall: livefunnel_pipeline::wall::WallConfig,
    /// How the process logs.
    pub log: crate::logging::LogConfig,
    /// `livefunnel alert-relay`: Alertmanager to WeCom group robots.
    pub alert_relay: crate::alert_relay::AlertRelayConfig,
}

/// `[time]`: watermarks, lateness, presence and retirement. Durations are strings
/// with a unit: `ms`, `s`, `m` or `h` (`500ms`, `5s`, `10m`, `1h`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// How far behind a room's largest `ts` its acceptance watermark trails.
    pub out_of_orderness: Duration,
    /// How far behind the watermark an event is still accepted (a correction).
    pub allowed_lateness: Duration,
    /// How long a quiet room waits for the rest of its partition before its
    /// windows are emitted anyway.
    pub idle_grace: Duration,
    /// Live mode: a partition silent this long (wall clock) advances by the wall clock.
    pub idle_timeout: Duration,
    /// A viewer with no event for this long counts as having left.
    pub presence_timeout: Duration,
    /// A room whose sessions all ended retires after its partition moves this far past it.
    pub session_idle_timeout: Duration,
    /// `ts_out_of_range`: how far ahead (of the wall clock live, of the partition in
    /// replay) an event's `ts` may be.
    pub max_future_skew: Duration,
}

impl Default for TimeConfig {
    fn default() -> TimeConfig {
        TimeConfig {
            out_of_orderness: Duration::from_ms(5_000),
            allowed_lateness: Duration::from_ms(120_000),
            idle_grace: Duration::from_ms(30_000),
            idle_timeout: Duration::from_ms(30_000),
            presence_timeout: Duration::from_ms(600_000),
            session_idle_timeout: Duration::from_ms(1_800_000),
            max_future_skew: Duration::from_ms(3_600_000),
        }
    }
}

/// `[windows]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Window names (`1m`, `5m/10s`, `10m/1m`, `session`), as a list or as one
    /// comma-separated string (`"1m,5m/10s"`, handy in an environment variable).
    pub set: WindowSet,
    /// The hop/tumble windows that carry source, plan and product breakdown rows (the
    /// bulk of the output). Absent: `1m` only (when it is in `set`), as the contract
    /// says; `[]` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdowns: Option<WindowSet>,
}

impl Default for WindowsConfig {
    fn default() -> WindowsConfig {
        WindowsConfig {
            set: WindowSet(["1m", "5m/10s", "10m/1m", "session"].map(String::from).to_vec()),
            breakdowns: None,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Distinct counts are exact up to this many values per row, approximate above.
    pub exact_distinct_limit: u64,
    /// Rooms one input partition holds at once (retired rooms not counted); an event
    /// that would create one more is dead-lettered `room_limit`.
    pub max_rooms_per_partition: u64,
    /// Per room and breakdown kind, the keys (`plan_id`, `product_id`) that get rows of
    /// their own; events of further keys count under `__other__`. At least 16.
    pub max_breakdown_keys: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            exact_distinct_limit: 100_000,
            max_rooms_per_partition: 50_000,
            max_breakdown_keys: 1_000,
        }
    }
}

/// The configured window names, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSet(pub Vec<String>);

impl Serialize for WindowSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for WindowSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WindowSet, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WindowSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of window names like [\"1m\", \"5m/10s\"] or a string \"1m,5m/10s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WindowSet, E> {
                Ok(WindowSet(v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WindowSet, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(WindowSet(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// A configuration that cannot be used: one line naming the key, where the value
/// came from when known, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigLoadError {
    /// The dotted key, when the error is about one (`time.allowed_lateness`).
    pub key: Option<String>,
    pub message: String,
}

/// Where the configuration layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config FILE`); it must exist when given.
    pub file: Option<PathBuf>,
    /// Whether `LIVEFUNNEL_*` environment variables are read.
    pub env: bool,
}

impl Sources {
    /// Defaults, then `file`, then the environment: what the binary uses.
    pub fn cli(file: Option<&Path>) -> Sources {
        Sources { file: file.map(Path::to_owned), env: true }
    }

    /// Defaults, then `file`, no environment: for tests.
    pub fn file_only(file: Option<&Path>) -> Sources {
        Sources { file: file.map(Path::to_owned), env: false }
    }
}

/// A loaded and checked configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration (what `check-config` prints).
    pub config: Config,
    /// The engine parameters derived from it.
    pub engine: EngineConfig,
}

impl Loaded {
    /// The live pipeline's settings, writing its rows to `sink`.
    pub fn pipeline_settings(&self, sink: SinkKind) -> Settings {
        let c = &self.config;
        Settings {
            engine: self.engine.clone(),
            kafka: c.kafka.clone(),
            sink,
            state_dir: c.checkpoint.dir.clone(),
            shared_store: c.checkpoint.kafka_store(&c.kafka.group_id),
            checkpoint_interval_ms: c.checkpoint.interval.as_ms(),
            series_ttl_ms: c.http.series_ttl.as_ms(),
            max_room_series: c.http.max_room_series as usize,
            engine_threads: c.runtime.engine_threads as usize,
            signals: c.signals.resolve(&self.engine.windows),
            detectors: c.detectors.resolve(),
            privacy: c.privacy.hasher(),
            wall: c.wall.clone(),
        }
    }
}

/// Loads, layers, checks and maps the configuration.
pub fn load(sources: &Sources, mode: TimeMode) -> Result<Loaded, ConfigLoadError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = &sources.file {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigLoadError {
                key: None,
                message: format!("config file {}: {e}: check the --config path", path.display()),
            });
        }
        figment = figment.merge(Renamed(Toml::file_exact(path)));
    }
    if sources.env {
        figment = figment.merge(Renamed(Env::prefixed(ENV_PREFIX).split(ENV_SPLIT)));
    }
    let mut config: Config = figment.extract().map_err(|e| from_figment(&e))?;
    config.privacy.check().map_err(|ConfigError { key, message }| {
        let origin = figment.find_metadata(&key).and_then(|md| origin(md, &key));
        keyed(&key, origin, &message)
    })?;
    config.alert_relay.check().map_err(|ConfigError { key, message }| {
        let origin = figment.find_metadata(&key).and_then(|md| origin(md, &key));
        keyed(&key, origin, &message)
    })?;
    let engine = config.engine_config(mode).map_err(|e| {
        let origin = figment.find_metadata(&e.key).and_then(|md| origin(md, &e.key));
        keyed(&e.key, origin, &e.message)
    })?;
    config.check_pipeline().map_err(|ConfigError { key, message }| {
        let origin = figment.find_metadata(&key).and_then(|md| origin(md, &key));
        keyed(&key, origin, &message)
    })?;
    // Only a value someone set must name a configured window: the defaults turn off.
    let set_by_user = |key: &str| figment.find_metadata(key).and_then(|md| origin(md, key)).is_some();
    config.signals.check(&engine.windows, set_by_user).map_err(|ConfigError { key, message }| {
        let origin = figment.find_metadata(&key).and_then(|md| origin(md, &key));
        keyed(&key, origin, &message)
    })?;
    let online_slide = match config.signals.resolve(&engine.windows).online {
        Some(w) => match WindowSpec::parse(&w.name) {
            Ok(WindowSpec::Hop { slide_ms, .. }) => Some(slide_ms),
            _ => None,
        },
        None => None,
    };
    config.detectors.check(&engine, online_slide, set_by_user).map_err(|ConfigError { key, message }| {
        let origin = figment.find_metadata(&key).and_then(|md| origin(md, &key));
        keyed(&key, origin, &message)
    })?;
    Ok(Loaded { config, engine })
}

impl Config {
    /// Maps into the engine's parameters and checks them; errors name the key.
    pub fn engine_config(&self, mode: TimeMode) -> Result<EngineConfig, ConfigError> {
        let t = &self.time;
        let mut windows = Vec::with_capacity(self.windows.set.0.len());
        for name in &self.windows.set.0 {
            let spec = WindowSpec::parse(name).map_err(|m| {
                ConfigError::new(
                    "windows.set",
                    format!("window `{name}`: {m}; valid names look like \"1m\", \"5m/10s\", \"10m/1m\" or \"session\""),
                )
            })?;
            windows.push(spec);
        }
        let breakdown_windows = match &self.windows.breakdowns {
            None => None,
            Some(names) => Some(
                names
                    .0
                    .iter()
                    .map(|name| {
                        WindowSpec::parse(name).map_err(|m| {
                            ConfigError::new("windows.breakdowns", format!("window `{name}`: {m}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if t.idle_timeout.as_ms() < 1_000 {
            return Err(ConfigError::new("time.idle_timeout", "must be at least 1s, like \"30s\""));
        }
        let limit = |key: &str, v: u64, example: &str| {
            usize::try_from(v).map_err(|_| {
                ConfigError::new(
                    format!("limits.{key}"),
                    format!("is too large for this machine: use e.g. {example}"),
                )
            })
        };
        let exact_distinct_limit = limit("exact_distinct_limit", self.limits.exact_distinct_limit, "100000")?;
        let max_rooms_per_partition =
            limit("max_rooms_per_partition", self.limits.max_rooms_per_partition, "50000")?;
        let max_breakdown_keys = limit("max_breakdown_keys", self.limits.max_breakdown_keys, "1000")?;
        let cfg = EngineConfig {
            out_of_orderness_ms: t.out_of_orderness.as_ms(),
            allowed_lateness_ms: t.allowed_lateness.as_ms(),
            idle_grace_ms: t.idle_grace.as_ms(),
            idle_timeout_ms: t.idle_timeout.as_ms(),
            presence_timeout_ms: t.presence_timeout.as_ms(),
            session_idle_timeout_ms: t.session_idle_timeout.as_ms(),
            max_future_skew_ms: t.max_future_skew.as_ms(),
            windows,
            breakdown_windows,
            exact_distinct_limit,
            max_rooms_per_partition,
            max_breakdown_keys,
            mode,
            user_id_form: self.privacy.user_id_form(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the live pipeline's sections; the error is `(dotted key, message)`.
    pub fn check_pipeline(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.clickhouse.validate()?;
        self.checkpoint.validate()?;
        self.runtime.validate()?;
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::at(
                "http.listen",
                format!("`{}` is not an address: write ip:port, like \"127.0.0.1:9464\"", self.http.listen),
            ));
        }
        if self.http.series_ttl.as_ms() < 1_000 {
            return Err(ConfigError::at("http.series_ttl", "must be at least 1s, like \"15m\"".into()));
        }
        self.wall.check()?;
        if !(1..=10_000_000).contains(&self.http.max_room_series) {
            return Err(ConfigError::at(
                "http.max_room_series",
                format!(
                    "is {}: must be from 1 to 10000000 rooms, like 20000 (each room has about 26 series)",
                    self.http.max_room_series
                ),
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serializes to TOML")
    }
}

/// Where a value came from, in words, when figment knows.
fn origin(md: &Metadata, key: &str) -> Option<String> {
    match &md.source {
        Some(Source::File(path)) => Some(format!("in {}", path.display())),
        _ if md.name.contains("environment variable") => {
            Some(format!("from environment variable {}", env_var_name(key)))
        }
        _ => None,
    }
}

/// A parser message (TOML's spans several lines with a caret) as one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && !l.chars().next().is_some_and(|c| c.is_ascii_digit() && l.contains(" |"))
        })
        .collect::<Vec<_>>()
        .join(": ")
}

fn keyed(key: &str, origin: Option<String>, message: &str) -> ConfigLoadError {
    let origin = origin.map(|o| format!(" ({o})")).unwrap_or_default();
    ConfigLoadError { key: Some(key.to_owned()), message: format!("config key `{key}`{origin}: {message}") }
}

fn from_figment(err: &figment::Error) -> ConfigLoadError {
    use figment::error::Kind;
    // figment chains errors; the first one is enough for a one-line message.
    let e = err.clone().into_iter().next().unwrap_or_else(|| err.clone());
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            let expected = if expected.is_empty() {
                "this section takes no keys".to_owned()
            } else {
                format!("known keys here: {}", expected.join(", "))
            };
            format!("unknown key: remove it or fix its spelling ({expected})")
        }
        Kind::Message(m) => one_line(m),
        Kind::InvalidType(actual, expected) => {
            let expected = match expected.as_str() {
                "u64" | "usize" | "u32" => "a whole number, like 100000",
                other => other,
            };
            format!("found {actual}, expected {expected}")
        }
        Kind::InvalidValue(actual, expected) => format!("invalid value {actual}, expected {expected}"),
        other => other.to_string(),
    };
    if path.is_empty() {
        // Not about one key: a file that does not parse, say.
        let origin = e.metadata.as_ref().and_then(|md| match &md.source {
            Some(Source::File(p)) => Some(format!("config file {}: ", p.display())),
            _ => None,
        });
        return ConfigLoadError {
            key: None,
            message: format!("{}{message}", origin.unwrap_or_else(|| "configuration: ".to_owned())),
        };
    }
    let key = path.join(".");
    let origin = e.metadata.as_ref().and_then(|md| origin(md, &key));
    keyed(&key, origin, &message)
}

#[cfg(test)]
// figment's `Jail::expect_with` fixes the closure's `figment::Result` return type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const EXAMPLE: &str = include_str!("../../../livefunnel.example.toml");

    fn load_in(jail: &mut Jail, toml: Option<&str>) -> Result<Loaded, ConfigLoadError> {
        let file = toml.map(|t| {
            jail.create_file("livefunnel.toml", t).expect("write config");
            jail.directory().join("livefunnel.toml")
        });
        load(&Sources::cli(file.as_deref()), TimeMode::Replay)
    }

    #[test]
    fn example_file_equals_the_defaults() {
        Jail::expect_with(|jail| {
            let loaded = load_in(jail, Some(EXAMPLE)).expect("example loads");
            assert_eq!(loaded.config, Config::default());
            assert_eq!(loaded.engine, EngineConfig::default());
            Ok(())
        });
    }

    #[test]
    fn clickhouse_durations_take_a_unit_and_the_old_millisecond_keys() {
        Jail::expect_with(|jail| {
            let toml = "[clickhouse]\nbatch_interval = \"250ms\"\n[clickhouse.retry]\nmax_elapsed = \"2m\"\n";
            let loaded = load_in(jail, Some(toml)).expect("loads");
            assert_eq!(loaded.config.clickhouse.batch_interval.as_ms(), 250);
            assert_eq!(loaded.config.clickhouse.retry.max_elapsed.map(Duration::as_ms), Some(120_000));
            // A file or an environment of before: integers of milliseconds under `_ms`.
            jail.set_env("LIVEFUNNEL_CLICKHOUSE__REQUEST_TIMEOUT_MS", "5000");
            let loaded = load_in(jail, Some("[clickhouse]\nbatch_interval_ms = 200\n")).expect("loads");
            assert_eq!(loaded.config.clickhouse.batch_interval.as_ms(), 200);
            assert_eq!(loaded.config.clickhouse.request_timeout.as_ms(), 5_000);
            let err = load_in(jail, Some("[clickhouse]\nbatch_interval = \"5\"\n")).unwrap_err().to_string();
            assert!(err.contains("clickhouse.batch_interval") && err.contains("no unit"), "{err}");
            let both = "[clickhouse]\nbatch_interval = \"1s\"\nbatch_interval_ms = 1000\n";
            let err = load_in(jail, Some(both)).unwrap_err().to_string();
            assert!(err.contains("same key: keep batch_interval only"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn max_room_series_is_checked_and_named() {
        Jail::expect_with(|jail| {
            let loaded = load_in(jail, Some("[http]\nmax_room_series = 500\n")).expect("loads");
            assert_eq!(loaded.config.http.max_room_series, 500);
            assert_eq!(Config::default().http.max_room_series, 20_000);
            let err = load_in(jail, Some("[http]\nmax_room_series = 0\n")).unwrap_err().to_string();
            assert!(err.contains("http.max_room_series") && err.contains("like 20000"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn engine_threads_are_checked_and_named() {
        Jail::expect_with(|jail| {
            assert_eq!(load_in(jail, None).expect("loads").config.runtime.engine_threads, 0);
            let err = load_in(jail, Some("[runtime]\nengine_threads = 5000\n")).unwrap_err().to_string();
            assert!(err.contains("runtime.engine_threads") && err.contains("0 is one per core"), "{err}");
            jail.set_env("LIVEFUNNEL_RUNTIME__ENGINE_THREADS", "3");
            let loaded = load_in(jail, None).expect("loads");
            let settings = loaded.pipeline_settings(livefunnel_pipeline::SinkKind::Null);
            assert_eq!(settings.engine_threads, 3);
            Ok(())
        });
    }

    #[test]
    fn defaults_map_to_the_engine_defaults() {
        assert_eq!(Config::default().engine_config(TimeMode::Replay).unwrap(), EngineConfig::default());
    }

    #[test]
    fn printed_config_loads_back_unchanged() {
        Jail::expect_with(|jail| {
            let text = Config::default().to_toml();
            assert_eq!(load_in(jail, Some(&text)).unwrap().config, Config::default());
            Ok(())
        });
    }

    #[test]
    fn env_override_wins_over_file() {
        Jail::expect_with(|jail| {
            jail.set_env("LIVEFUNNEL_TIME__ALLOWED_LATENESS", "90s");
            let loaded = load_in(jail, Some("[time]\nallowed_lateness = \"60s\"\nidle_grace = \"10s\"\n"))
                .expect("loads");
            assert_eq!(loaded.engine.allowed_lateness_ms, 90_000);
            assert_eq!(loaded.engine.idle_grace_ms, 10_000, "the file still wins over the defaults");
            Ok(())
        });
    }

    #[test]
    fn window_set_from_env_as_list_or_commas() {
        Jail::expect_with(|jail| {
            jail.set_env("LIVEFUNNEL_WINDOWS__SET", r#"["1m","5m/10s"]"#);
            let loaded = load_in(jail, None).expect("list form loads");
            assert_eq!(loaded.config.windows.set.0, ["1m", "5m/10s"]);
            jail.set_env("LIVEFUNNEL_WINDOWS__SET", "1m, 5m/10s,session");
            let loaded = load_in(jail, None).expect("comma form loads");
            assert_eq!(loaded.config.windows.set.0, ["1m", "5m/10s", "session"]);
            assert_eq!(loaded.engine.windows.len(), 3);
            Ok(())
        });
    }

    #[test]
    fn bad_duration_names_key_file_and_fix() {
        Jail::expect_with(|jail| {
            let err = load_in(jail, Some("[time]\nallowed_lateness = \"2 minutes\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("time.allowed_lateness"));
            assert!(err.message.contains("livefunnel.toml"), "{}", err.message);
            assert!(err.message.contains("\"90s\""), "{}", err.message);
            let err = load_in(jail, Some("[time]\nidle_grace = 30\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("time.idle_grace"));
            assert!(err.message.contains("no unit"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn bad_duration_from_env_names_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("LIVEFUNNEL_TIME__OUT_OF_ORDERNESS", "5x");
            let err = load_in(jail, None).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("time.out_of_orderness"));
            assert!(err.message.contains("LIVEFUNNEL_TIME__OUT_OF_ORDERNESS"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn breakdown_windows_from_env_and_their_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("LIVEFUNNEL_WINDOWS__BREAKDOWNS", "1m,10m/1m");
            let loaded = load_in(jail, None).unwrap();
            let names: Vec<String> =
                loaded.engine.breakdown_windows.unwrap().iter().map(WindowSpec::name).collect();
            assert_eq!(names, ["1m", "10m/1m"]);
            jail.set_env("LIVEFUNNEL_WINDOWS__BREAKDOWNS", "2m");
            let err = load_in(jail, None).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("windows.breakdowns"));
            assert!(err.message.contains("2m") && err.message.contains("windows.set"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn contract_v1_1_limits_and_defaults() {
        Jail::expect_with(|jail| {
            let loaded = load_in(jail, None).unwrap();
            let e = &loaded.engine;
            assert_eq!((e.max_rooms_per_partition, e.max_breakdown_keys), (50_000, 1_000));
            assert!(e.breakdown_windows.is_none() && e.has_breakdowns(&WindowSpec::parse("1m").unwrap()));
            assert!(!e.has_breakdowns(&WindowSpec::parse("5m/10s").unwrap()), "1m only by default");
            jail.set_env("LIVEFUNNEL_LIMITS__MAX_ROOMS_PER_PARTITION", "7");
            jail.set_env("LIVEFUNNEL_LIMITS__MAX_BREAKDOWN_KEYS", "20");
            let e = load_in(jail, None).unwrap().engine;
            assert_eq!((e.max_rooms_per_partition, e.max_breakdown_keys), (7, 20));
            jail.set_env("LIVEFUNNEL_LIMITS__MAX_BREAKDOWN_KEYS", "3");
            let err = load_in(jail, None).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("limits.max_breakdown_keys"));
            assert!(err.message.contains("at least 16"), "{}", err.message);
            jail.set_env("LIVEFUNNEL_LIMITS__MAX_BREAKDOWN_KEYS", "1000");
            let err = load_in(jail, Some("[time]\npresence_timeout = \"31m\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("time.presence_timeout"));
            assert!(err.message.contains("session_idle_timeout"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn bad_window_name_names_key_and_window() {
        Jail::expect_with(|jail| {
            let err = load_in(jail, Some("[windows]\nset = [\"1m\", \"5m/7s\"]\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("windows.set"));
            assert!(err.message.contains("5m/7s") && err.message.contains("divide"), "{}", err.message);
            assert!(err.message.contains("livefunnel.toml"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        Jail::expect_with(|jail| {
            let err = load_in(jail, Some("[time]\nallowed_latenes = \"60s\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("time.allowed_latenes"));
            assert!(err.message.contains("unknown key"), "{}", err.message);
            let err = load_in(jail, Some("[timing]\nx = 1\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("timing"));
            jail.set_env("LIVEFUNNEL_LIMITS__EXACT_LIMIT", "5");
            let err = load_in(jail, None).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("limits.exact_limit"));
            assert!(err.message.contains("LIVEFUNNEL_LIMITS__EXACT_LIMIT"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn the_kafka_checkpoint_store_is_selected_and_checked() {
        Jail::expect_with(|jail| {
            let loaded = load_in(jail, Some("[checkpoint]\nstore = \"kafka\"\n")).unwrap();
            let store = loaded.config.checkpoint.kafka_store("g").expect("the kafka store is selected");
            assert_eq!((store.topic.as_str(), store.group.as_str()), ("livefunnel.checkpoints", "g"));
            assert_eq!(store.chunk_bytes, 512 * 1024);
            assert!(Config::default().checkpoint.kafka_store("g").is_none(), "dir is the default");
            jail.set_env("LIVEFUNNEL_CHECKPOINT__KAFKA__CHUNK_BYTES", "100");
            let err = load_in(jail, Some("[checkpoint]\nstore = \"kafka\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("checkpoint.kafka.chunk_bytes"));
            assert!(err.message.contains("message.max.bytes"), "{}", err.message);
            let err = load_in(jail, Some("[checkpoint]\nstore = \"s3\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("checkpoint.store"));
            Ok(())
        });
    }

    #[test]
    fn relation_error_names_key_and_origin() {
        Jail::expect_with(|jail| {
            let err = load_in(jail, Some("[time]\nsession_idle_timeout = \"2m\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("time.session_idle_timeout"));
            assert!(err.message.contains("at least"), "{}", err.message);
            assert!(err.message.contains("livefunnel.toml"), "{}", err.message);
            jail.set_env("LIVEFUNNEL_TIME__SESSION_IDLE_TIMEOUT", "3m");
            let err = load_in(jail, None).unwrap_err();
            assert!(err.message.contains("LIVEFUNNEL_TIME__SESSION_IDLE_TIMEOUT"), "{}", err.message);
            Ok(())
        });
    }

    fn signal_names(loaded: &Loaded) -> (Option<String>, Option<String>) {
        let w = loaded.config.signals.resolve(&loaded.engine.windows);
        (w.compare.map(|w| w.name), w.online.map(|w| w.name))
    }

    #[test]
    fn signal_windows_default_to_10m_and_5m_and_accept_any_spelling() {
        Jail::expect_with(|jail| {
            let loaded = load_in(jail, None).unwrap();
            assert_eq!(signal_names(&loaded), (Some("10m/1m".into()), Some("5m/10s".into())));
            let w = loaded.config.signals.resolve(&loaded.engine.windows);
            assert_eq!(w.compare.unwrap().size_ms, 600_000);
            assert_eq!(w.online.unwrap().size_ms, 300_000);
            let loaded =
                load_in(jail, Some("[signals]\ncompare_window = \"600s/60s\"\nonline_window = \"1m\"\n"))
                    .unwrap();
            assert_eq!(signal_names(&loaded), (Some("10m/1m".into()), Some("1m".into())));
            let loaded = load_in(jail, Some("[signals]\nonline_window = \"\"\n")).unwrap();
            assert_eq!(signal_names(&loaded), (Some("10m/1m".into()), None), "\"\" turns a signal off");
            Ok(())
        });
    }

    #[test]
    fn a_signal_window_outside_windows_set_names_the_key_and_the_fix() {
        Jail::expect_with(|jail| {
            let err = load_in(jail, Some("[signals]\ncompare_window = \"2m/1m\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("signals.compare_window"));
            for part in ["2m/1m", "windows.set", "livefunnel.toml", "\"10m/1m\"", "turn this signal off"] {
                assert!(err.message.contains(part), "{part}: {}", err.message);
            }
            let err = load_in(jail, Some("[signals]\nonline_window = \"session\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("signals.online_window"));
            assert!(err.message.contains("hop or tumble"), "{}", err.message);
            let err = load_in(jail, Some("[signals]\nonline_window = \"5 minutes\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("signals.online_window"));
            assert!(err.message.contains("5 minutes"), "{}", err.message);
            jail.set_env("LIVEFUNNEL_SIGNALS__ONLINE_WINDOW", "1h");
            let err = load_in(jail, None).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("signals.online_window"));
            assert!(err.message.contains("LIVEFUNNEL_SIGNALS__ONLINE_WINDOW"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn default_signal_windows_turn_off_without_their_windows() {
        Jail::expect_with(|jail| {
            jail.set_env("LIVEFUNNEL_WINDOWS__SET", "1m,session");
            let loaded = load_in(jail, None).expect("defaults need no [signals] section");
            assert_eq!(signal_names(&loaded), (None, None));
            assert_eq!(loaded.config.signals.compare_window, "", "the effective config shows it off");
            // What check-config prints loads back.
            assert_eq!(load_in(jail, Some(&loaded.config.to_toml())).unwrap().config, loaded.config);
            // Set explicitly, the same window is an error.
            let err = load_in(jail, Some("[signals]\ncompare_window = \"10m/1m\"\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("signals.compare_window"));
            assert!(err.message.contains("\"1m\""), "lists the usable windows: {}", err.message);
            jail.set_env("LIVEFUNNEL_SIGNALS__COMPARE_WINDOW", "1m");
            let loaded = load_in(jail, None).unwrap();
            assert_eq!(signal_names(&loaded), (Some("1m".into()), None));
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_named() {
        let err =
            load(&Sources::file_only(Some(Path::new("/nonexistent/lf.toml"))), TimeMode::Replay).unwrap_err();
        assert!(err.message.contains("/nonexistent/lf.toml"), "{}", err.message);
    }

    /// Tokens set in the environment, as the docs say: per org under a name of one's
    /// own; never printed by check-config, whose output is refused until they are set.
    // figment's `Jail::expect_with` fixes the closure's `figment::Result` return type.
    #[allow(clippy::result_large_err)]
    #[test]
    fn tokens_from_the_environment_are_used_and_never_printed() {
        use livefunnel_pipeline::wall::config::Viewer;
        figment::Jail::expect_with(|jail| {
            jail.set_env("LIVEFUNNEL_WALL__ADMIN_TOKEN", "admin-0123456789abcdef");
            jail.set_env("LIVEFUNNEL_WALL__ORGS__XINGMANG__ORG_ID", "org-xingmang");
            jail.set_env("LIVEFUNNEL_WALL__ORGS__XINGMANG__TOKEN", "xingmang-0123456789abcdef");
            let loaded = load(&Sources::cli(None), livefunnel_core::TimeMode::Live).expect("loads");
            let access = loaded.config.wall.access();
            assert_eq!(access.viewer("xingmang-0123456789abcdef"), Some(Viewer::Org("org-xingmang".into())));
            assert_eq!(access.viewer("admin-0123456789abcdef"), Some(Viewer::All));
            let printed = loaded.config.to_toml();
            assert!(!printed.contains("0123456789abcdef") && printed.contains("[redacted]"), "{printed}");
            assert!(!format!("{:?}", loaded.config).contains("0123456789abcdef"));
            jail.clear_env();
            jail.create_file("printed.toml", &printed)?;
            let err = load(
                &Sources::cli(Some(&jail.directory().join("printed.toml"))),
                livefunnel_core::TimeMode::Live,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("wall.") && err.contains("[redacted]"), "{err}");
            jail.set_env("LIVEFUNNEL_WALL__ORGS__XINGMANG__ORG_ID", "org-xingmang");
            jail.set_env("LIVEFUNNEL_WALL__ORGS__XINGMANG__TOKEN", "short");
            let err = load(&Sources::cli(None), livefunnel_core::TimeMode::Live).unwrap_err().to_string();
            assert!(err.contains("wall.orgs.xingmang.token") && !err.contains("short"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_engine_records_the_user_id_form_of_the_privacy_section() {
        use livefunnel_pipeline::privacy::PrivacyConfig;
        let privacy =
            PrivacyConfig { hash_user_ids: true, salt: livefunnel_clickhouse::Secret::new("pepper-xyz") };
        let form = privacy.user_id_form();
        let cfg = Config { privacy, ..Default::default() };
        let engine = cfg.engine_config(TimeMode::Live).unwrap();
        assert_eq!(engine.user_id_form, form, "the engine's checkpoints record it");
        assert_ne!(Config::default().engine_config(TimeMode::Live).unwrap().user_id_form, form);
    }
}
