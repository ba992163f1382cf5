//! Checked engine configuration: what the window engine needs, already validated.
//! The binary maps its layered TOML/env configuration into these types.

use std::fmt;

use crate::Duration;

/// One configured window (contract §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSpec {
    /// `hop` (slide < size) or `tumble` (slide == size); both are [start, start + size)
    /// with starts at multiples of `slide_ms` since the epoch.
    Hop {
        size_ms: i64,
        slide_ms: i64,
    },
    Session,
}

impl WindowSpec {
    /// Parses a window name: `1m`, `5m/10s`, `10m/1m`, `90s/30s`, `session`.
    pub fn parse(name: &str) -> Result<WindowSpec, String> {
        let name = name.trim();
        if name == "session" {
            return Ok(WindowSpec::Session);
        }
        let (size, slide) = match name.split_once('/') {
            Some((size, slide)) => (parse_duration_s(size)?, parse_duration_s(slide)?),
            None => {
                let size = parse_duration_s(name)?;
                (size, size)
            }
        };
        if size % slide != 0 {
            return Err(format!("slide {slide}s must divide size {size}s exactly"));
        }
        Ok(WindowSpec::Hop { size_ms: size * 1000, slide_ms: slide * 1000 })
    }

    /// The canonical name (contract §2): size, then `/slide` when they differ,
    /// each in the largest unit that divides it exactly.
    pub fn name(&self) -> String {
        match *self {
            WindowSpec::Session => "session".to_owned(),
            WindowSpec::Hop { size_ms, slide_ms } if size_ms == slide_ms => format_duration_s(size_ms / 1000),
            WindowSpec::Hop { size_ms, slide_ms } => {
                format!("{}/{}", format_duration_s(size_ms / 1000), format_duration_s(slide_ms / 1000))
            }
        }
    }
}

/// `5s`, `10m`, `2h`, or a bare number of seconds ([`Duration::parse_or_seconds`]);
/// whole seconds, at least 1.
fn parse_duration_s(text: &str) -> Result<i64, String> {
    let ms = Duration::parse_or_seconds(text)?.as_ms();
    if ms % 1_000 != 0 {
        return Err(format!(
            "`{}` is not whole seconds: a window size or slide is, like `10s` or `5m`",
            text.trim()
        ));
    }
    let secs = ms / 1_000;
    if !(1..=7 * 24 * 3600).contains(&secs) {
        return Err(format!(
            "`{}` is out of range: a window size or slide is between 1s and 7 days",
            text.trim()
        ));
    }
    Ok(secs)
}

fn format_duration_s(secs: i64) -> String {
    if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// How `ts_out_of_range` is judged (contract §1.4 reason 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// Against the partition's largest accepted `ts`.
    Replay,
    /// Against the wall clock passed to each call.
    Live,
}

/// Validated engine parameters. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    pub idle_grace_ms: i64,
    /// Live mode: a partition that receives nothing for this long advances its
    /// `partition_max_ts` by the wall clock elapsed ([`crate::Engine::tick`]).
    pub idle_timeout_ms: i64,
    pub presence_timeout_ms: i64,
    pub session_idle_timeout_ms: i64,
    pub max_future_skew_ms: i64,
    /// Hop/tumble windows in configured order; `session_rows` says whether `session` was listed.
    pub windows: Vec<WindowSpec>,
    /// The hop/tumble windows that carry source, plan and product breakdown rows;
    /// `None` for the contract's default, `1m` only (when `1m` is configured).
    pub breakdown_windows: Option<Vec<WindowSpec>>,
    /// Distinct counts are exact up to this many values per row.
    pub exact_distinct_limit: usize,
    /// Rooms a partition holds at once, retired ones not counted (§1.4 reason 8): an
    /// event that would create one more is rejected `room_limit`. Also the number of
    /// retired rooms remembered (see `docs/semantics.md`, "Room limit").
    pub max_rooms_per_partition: usize,
    /// Per room and breakdown kind, the keys that get rows of their own; further keys
    /// count under [`OTHER_KEY`] (§3 key cap). At least [`crate::Source::COUNT`].
    pub max_breakdown_keys: usize,
    pub mode: TimeMode,
    /// What the `user_id`s given to the engine are: [`USER_IDS_CLEAR`], or a label of
    /// the pseudonymisation applied before the engine. The engine only records it in
    /// its checkpoints: a state holding ids of one form restored under another would
    /// see every viewer twice in each open window's and session's distinct counts.
    pub user_id_form: String,
}

/// The breakdown key that events beyond the key cap count under (§3).
pub const OTHER_KEY: &str = "__other__";

/// [`EngineConfig::user_id_form`] of ids as they arrive.
pub const USER_IDS_CLEAR: &str = "clear";

/// A configuration value that cannot be used, naming the dotted key
/// (`clickhouse.batch_rows`) and the fix: the one configuration error of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.message)
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), message: message.into() }
    }

    /// As [`ConfigError::new`], with the message a `String` already (so that
    /// `"...".into()` needs no annotation).
    pub fn at(key: impl Into<String>, message: String) -> ConfigError {
        ConfigError { key: key.into(), message }
    }
}

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "LIVEFUNNEL_";
/// Separator between section and key in environment variable names.
pub const ENV_SPLIT: &str = "__";

/// `time.allowed_lateness` → `LIVEFUNNEL_TIME__ALLOWED_LATENESS`: the variable that sets
/// a key, for messages that tell where to set it.
pub fn env_var_name(key: &str) -> String {
    let parts: Vec<String> = key.split('.').map(|p| p.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", parts.join(ENV_SPLIT))
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 120_000,
            idle_grace_ms: 30_000,
            idle_timeout_ms: 30_000,
            presence_timeout_ms: 600_000,
            session_idle_timeout_ms: 1_800_000,
            max_future_skew_ms: 3_600_000,
            windows: ["1m", "5m/10s", "10m/1m", "session"]
                .into_iter()
                .map(|n| WindowSpec::parse(n).expect("default windows parse"))
                .collect(),
            breakdown_windows: None,
            exact_distinct_limit: 100_000,
            max_rooms_per_partition: 50_000,
            max_breakdown_keys: 1_000,
            mode: TimeMode::Replay,
            user_id_form: USER_IDS_CLEAR.to_owned(),
        }
    }
}

impl EngineConfig {
    pub fn hop_windows(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.windows.iter().filter_map(|w| match *w {
            WindowSpec::Hop { size_ms, slide_ms } => Some((size_ms, slide_ms)),
            WindowSpec::Session => None,
        })
    }

    /// Whether the hop/tumble window `w` carries breakdown rows.
    pub fn has_breakdowns(&self, w: &WindowSpec) -> bool {
        match &self.breakdown_windows {
            Some(b) => b.contains(w),
            None => *w == WindowSpec::Hop { size_ms: 60_000, slide_ms: 60_000 },
        }
    }

    /// Whether any window carries breakdown rows (and so the key cap applies).
    pub fn any_breakdowns(&self) -> bool {
        self.windows.iter().any(|w| *w != WindowSpec::Session && self.has_breakdowns(w))
    }

    pub fn session_rows(&self) -> bool {
        self.windows.contains(&WindowSpec::Session)
    }

    /// Checks the relations between parameters that the engine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let non_negative = [
            ("time.out_of_orderness", self.out_of_orderness_ms),
            ("time.allowed_lateness", self.allowed_lateness_ms),
            ("time.idle_grace", self.idle_grace_ms),
            ("time.max_future_skew", self.max_future_skew_ms),
        ];
        for (key, v) in non_negative {
            if v < 0 {
                return Err(ConfigError::new(key, "must not be negative"));
            }
        }
        if self.idle_timeout_ms < 1_000 {
            return Err(ConfigError::new("time.idle_timeout", "must be at least 1s"));
        }
        if self.presence_timeout_ms < 1_000 {
            return Err(ConfigError::new("time.presence_timeout", "must be at least 1s"));
        }
        if self.windows.is_empty() {
            return Err(ConfigError::new(
                "windows.set",
                "lists no window: give at least one, e.g. [\"1m\", \"5m/10s\", \"10m/1m\", \"session\"]",
            ));
        }
        for (i, w) in self.windows.iter().enumerate() {
            if self.windows[..i].contains(w) {
                return Err(ConfigError::new(
                    "windows.set",
                    format!("lists `{}` twice: remove one", w.name()),
                ));
            }
        }
        for w in self.breakdown_windows.iter().flatten() {
            if *w == WindowSpec::Session || !self.windows.contains(w) {
                return Err(ConfigError::new(
                    "windows.breakdowns",
                    format!(
                        "lists `{}`, which is not a hop or tumble window of windows.set: list only those, or leave the key out for all of them",
                        w.name()
                    ),
                ));
            }
        }
        let max_size = self.hop_windows().map(|(size, _)| size).max().unwrap_or(0);
        // Retirement frees a room's windows; it must only happen once none of them can change.
        let needed = max_size + self.out_of_orderness_ms + self.allowed_lateness_ms + self.idle_grace_ms;
        if self.session_idle_timeout_ms < needed {
            return Err(ConfigError::new(
                "time.session_idle_timeout",
                format!(
                    "must be at least the largest window size plus out_of_orderness, allowed_lateness and idle_grace ({}s here): raise it or shrink the windows",
                    needed / 1000
                ),
            ));
        }
        // A timed-out session changes no presence (§2): every viewer must have gone
        // offline by then already.
        if self.presence_timeout_ms > self.session_idle_timeout_ms {
            return Err(ConfigError::new(
                "time.presence_timeout",
                format!(
                    "must not exceed time.session_idle_timeout ({}s): lower it or raise the session timeout",
                    self.session_idle_timeout_ms / 1000
                ),
            ));
        }
        if self.exact_distinct_limit == 0 {
            return Err(ConfigError::new("limits.exact_distinct_limit", "must be at least 1"));
        }
        if self.max_rooms_per_partition == 0 || u32::try_from(self.max_rooms_per_partition).is_err() {
            return Err(ConfigError::new(
                "limits.max_rooms_per_partition",
                "must be between 1 and 4294967295: use e.g. 50000",
            ));
        }
        if self.max_breakdown_keys < crate::event::Source::COUNT {
            return Err(ConfigError::new(
                "limits.max_breakdown_keys",
                format!(
                    "must be at least {}, the number of traffic sources, so every source keeps its own rows: use e.g. 1000",
                    crate::event::Source::COUNT
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_names_round_trip_in_the_largest_unit() {
        for (input, name) in [
            ("1m", "1m"),
            ("60s", "1m"),
            ("5m/10s", "5m/10s"),
            ("10m/1m", "10m/1m"),
            ("90s/30s", "90s/30s"),
            ("600s/60s", "10m/1m"),
            ("1h/1h", "1h"),
            ("session", "session"),
        ] {
            assert_eq!(WindowSpec::parse(input).unwrap().name(), name, "{input}");
        }
    }

    #[test]
    fn window_parse_errors_say_the_fix() {
        assert!(WindowSpec::parse("5m/7s").unwrap_err().contains("divide"));
        assert!(WindowSpec::parse("5x").unwrap_err().contains("unknown unit `x`: use ms, s, m or h"));
        assert!(WindowSpec::parse("1500ms").unwrap_err().contains("not whole seconds"));
        assert_eq!(WindowSpec::parse("60000ms").unwrap().name(), "1m");
        assert!(WindowSpec::parse("0s").unwrap_err().contains("between"));
        assert!(WindowSpec::parse("abc").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn default_config_is_valid_and_short_idle_timeout_is_not() {
        let mut cfg = EngineConfig::default();
        cfg.validate().unwrap();
        cfg.session_idle_timeout_ms = 60_000;
        cfg.presence_timeout_ms = 60_000;
        assert_eq!(cfg.validate().unwrap_err().key, "time.session_idle_timeout");
    }

    #[test]
    fn presence_timeout_may_not_exceed_the_session_idle_timeout() {
        let mut cfg = EngineConfig { presence_timeout_ms: 1_800_000, ..EngineConfig::default() };
        cfg.validate().unwrap();
        cfg.presence_timeout_ms = 1_800_001;
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.key, "time.presence_timeout");
        assert!(err.message.contains("session_idle_timeout (1800s)"), "{err}");
    }

    #[test]
    fn limits_are_checked() {
        let cfg = EngineConfig { max_rooms_per_partition: 0, ..EngineConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().key, "limits.max_rooms_per_partition");
        let cfg = EngineConfig { max_breakdown_keys: 15, ..EngineConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().key, "limits.max_breakdown_keys");
        EngineConfig { max_breakdown_keys: 16, ..EngineConfig::default() }.validate().unwrap();
    }

    #[test]
    fn breakdowns_default_to_the_minute_series_only() {
        let mut cfg = EngineConfig::default();
        assert!(cfg.has_breakdowns(&WindowSpec::parse("1m").unwrap()));
        assert!(!cfg.has_breakdowns(&WindowSpec::parse("5m/10s").unwrap()));
        assert!(!cfg.has_breakdowns(&WindowSpec::parse("10m/1m").unwrap()));
        assert!(cfg.any_breakdowns());
        cfg.windows = vec![WindowSpec::parse("5m/10s").unwrap(), WindowSpec::Session];
        cfg.validate().unwrap();
        assert!(!cfg.any_breakdowns());
    }

    #[test]
    fn breakdown_windows_must_be_configured_hop_windows() {
        let mut cfg = EngineConfig {
            breakdown_windows: Some(vec![WindowSpec::parse("1m").unwrap()]),
            ..Default::default()
        };
        cfg.validate().unwrap();
        assert!(cfg.has_breakdowns(&WindowSpec::parse("1m").unwrap()));
        assert!(!cfg.has_breakdowns(&WindowSpec::parse("5m/10s").unwrap()));
        cfg.breakdown_windows = Some(vec![WindowSpec::parse("2m").unwrap()]);
        assert_eq!(cfg.validate().unwrap_err().key, "windows.breakdowns");
        cfg.breakdown_windows = Some(vec![WindowSpec::Session]);
        assert_eq!(cfg.validate().unwrap_err().key, "windows.breakdowns");
    }
}
