//! `[detectors]`: the room alert detectors (docs/alerts.md). Their thresholds are
//! exported as `livefunnel_detector_threshold`, which the shipped rules compare with,
//! so rules and configuration cannot drift apart.

use livefunnel_core::ConfigError;
use livefunnel_core::{EngineConfig, WindowSpec};
use livefunnel_metrics::DetectorConfig;
use serde::{Deserialize, Serialize};

use crate::config::Duration;

/// `[detectors]` as written; [`DetectorsConfig::resolve`] gives the detectors' parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// Computes the detectors and exports their series. Needs `1m` in `windows.set`
    /// with source breakdowns; left at its default it turns off without them.
    pub enabled: bool,
    /// ρ₁: the GPM-drop evidence grows while organic conversion is below about 60 % of
    /// the room's baseline (for 1/3); a larger value finds smaller drops, falsely too.
    pub design_ratio: f64,
    /// GPMDrop fires at this evidence (nats): e^threshold minutes between false alarms
    /// at worst for a room that keeps its baseline.
    pub gpm_drop_threshold: f64,
    /// SalesStall fires when the room would have sold this many organic orders since
    /// its last one.
    pub sales_stall_threshold: f64,
    /// Session time not learnt (reservation wave, flash sales, ramp-up); whole minutes.
    pub warmup: Duration,
    /// The per-room detectors arm no earlier than this session time; whole minutes.
    pub arm_after: Duration,
    /// ...and once the baseline holds this many organic orders (weighted).
    pub arm_orders: f64,
    /// Half-life of the baseline.
    pub baseline_half_life: Duration,
    /// Minutes reach the baseline this late; whole minutes.
    pub baseline_delay: Duration,
    /// The baseline stops learning while a drop may be under way, for at most this
    /// long; whole minutes.
    pub max_freeze: Duration,
    /// Time constant of the organic share of recent enters (about a dwell).
    pub exposure_time_constant: Duration,
    /// OnlineViewersCliff: online 60 s ago minus online now, over √(online 60 s ago)...
    pub cliff_threshold: f64,
    /// ...at least this, with at least this share of the viewers gone...
    pub cliff_min_fall: f64,
    /// ...from at least this many viewers online...
    pub cliff_min_online: u64,
    /// ...in a session at least this old; whole minutes.
    pub cliff_min_session_age: Duration,
    /// Org-level alerts on the rooms below the per-room floor: window log-likelihood
    /// ratio of their organic orders against their expectation.
    pub pooled_threshold: f64,
}

fn minutes(d: u32) -> Duration {
    Duration::from_ms(i64::from(d) * 60_000)
}

impl Default for DetectorsConfig {
    fn default() -> DetectorsConfig {
        let d = DetectorConfig::default();
        DetectorsConfig {
            enabled: true,
            design_ratio: d.design_ratio,
            gpm_drop_threshold: d.gpm_drop_threshold,
            sales_stall_threshold: d.sales_stall_threshold,
            warmup: minutes(d.warmup_minutes),
            arm_after: minutes(d.arm_minutes),
            arm_orders: d.arm_orders,
            baseline_half_life: Duration::from_ms((d.baseline_half_life_minutes * 60_000.0) as i64),
            baseline_delay: minutes(d.baseline_delay_minutes),
            max_freeze: minutes(d.max_freeze_minutes),
            exposure_time_constant: Duration::from_ms((d.exposure_minutes * 60_000.0) as i64),
            cliff_threshold: d.cliff_threshold,
            cliff_min_fall: d.cliff_min_fall,
            cliff_min_online: d.cliff_min_online,
            cliff_min_session_age: minutes(d.cliff_min_session_minutes),
            pooled_threshold: d.pooled_threshold,
        }
    }
}

impl DetectorsConfig {
    /// The detectors' parameters; the error is `(dotted key, message)`.
    pub fn parameters(&self) -> Result<DetectorConfig, ConfigError> {
        let whole = |key: &str, d: Duration| -> Result<u32, ConfigError> {
            let ms = d.as_ms();
            if ms % 60_000 != 0 || !(0..=24 * 60 * 60_000).contains(&ms) {
                return Err(ConfigError::at(
                    format!("detectors.{key}"),
                    format!("is {d}: must be whole minutes up to a day, like \"10m\""),
                ));
            }
            Ok((ms / 60_000) as u32)
        };
        let positive_minutes = |key: &str, d: Duration| -> Result<f64, ConfigError> {
            if d.as_ms() <= 0 {
                return Err(ConfigError::at(
                    format!("detectors.{key}"),
                    format!("is {d}: must be positive, like \"60m\""),
                ));
            }
            Ok(d.as_ms() as f64 / 60_000.0)
        };
        let c = DetectorConfig {
            design_ratio: self.design_ratio,
            gpm_drop_threshold: self.gpm_drop_threshold,
            sales_stall_threshold: self.sales_stall_threshold,
            warmup_minutes: whole("warmup", self.warmup)?,
            arm_minutes: whole("arm_after", self.arm_after)?,
            arm_orders: self.arm_orders,
            baseline_half_life_minutes: positive_minutes("baseline_half_life", self.baseline_half_life)?,
            baseline_delay_minutes: whole("baseline_delay", self.baseline_delay)?,
            max_freeze_minutes: whole("max_freeze", self.max_freeze)?,
            exposure_minutes: positive_minutes("exposure_time_constant", self.exposure_time_constant)?,
            cliff_threshold: self.cliff_threshold,
            cliff_min_fall: self.cliff_min_fall,
            cliff_min_online: self.cliff_min_online,
            cliff_min_session_minutes: whole("cliff_min_session_age", self.cliff_min_session_age)?,
            pooled_threshold: self.pooled_threshold,
        };
        c.validate().map_err(|e| {
            // The parameters' names for minute counts are the section's durations.
            let key = match e.key {
                "warmup_minutes" => "warmup",
                "arm_minutes" => "arm_after",
                "baseline_delay_minutes" => "baseline_delay",
                k => k,
            };
            let message = e
                .message
                .replace("warmup_minutes", "warmup")
                .replace("baseline_delay_minutes", "baseline_delay");
            ConfigError::at(format!("detectors.{key}"), message)
        })?;
        Ok(c)
    }

    /// Checks the section against the engine's windows and the online window of
    /// `[signals]` (`online`: its slide, when on). The detectors read the `1m` rows and
    /// their source breakdowns: without them, detectors left enabled by default turn off
    /// (`enabled` becomes false), and detectors enabled by the user are an error.
    pub fn check(
        &mut self,
        engine: &EngineConfig,
        online_slide_ms: Option<i64>,
        set_by_user: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        self.parameters()?;
        let minute = WindowSpec::Hop { size_ms: 60_000, slide_ms: 60_000 };
        if !engine.windows.contains(&minute) || !engine.has_breakdowns(&minute) {
            if !set_by_user("detectors.enabled") {
                self.enabled = false;
                return Ok(());
            }
            return Err(ConfigError::at(
                "detectors.enabled",
                "the detectors read the \"1m\" window and its source breakdowns: add \"1m\" to windows.set \
                 (and to windows.breakdowns when that is set), or set detectors.enabled = false"
                    .into(),
            ));
        }
        if let Some(slide) = online_slide_ms.filter(|s| 60_000 % s != 0) {
            return Err(ConfigError::at(
                "signals.online_window",
                format!(
                    "its slide of {slide} ms does not divide 60 s, which the online cliff detector compares \
                     over: use a window like \"5m/10s\", or set detectors.enabled = false"
                ),
            ));
        }
        Ok(())
    }

    /// The detectors' parameters when they are on (after [`DetectorsConfig::check`]).
    pub fn resolve(&self) -> Option<DetectorConfig> {
        if !self.enabled {
            return None;
        }
        self.parameters().ok()
    }
}

#[cfg(test)]
// figment's Jail returns its large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;
    use livefunnel_core::TimeMode;

    use crate::config::{load, ConfigLoadError, Loaded, Sources};

    fn load_in(jail: &mut Jail, toml: &str) -> Result<Loaded, ConfigLoadError> {
        jail.create_file("livefunnel.toml", toml).expect("write config");
        load(&Sources::cli(Some(&jail.directory().join("livefunnel.toml"))), TimeMode::Live)
    }

    #[test]
    fn the_defaults_are_the_detectors_defaults_and_the_environment_overrides_them() {
        Jail::expect_with(|jail| {
            let loaded = load_in(jail, "").unwrap();
            assert_eq!(
                loaded.config.detectors.resolve(),
                Some(livefunnel_metrics::DetectorConfig::default())
            );
            jail.set_env("LIVEFUNNEL_DETECTORS__GPM_DROP_THRESHOLD", "15.5");
            jail.set_env("LIVEFUNNEL_DETECTORS__WARMUP", "30m");
            let c = load_in(jail, "").unwrap().config.detectors.resolve().expect("on");
            assert_eq!((c.gpm_drop_threshold, c.warmup_minutes), (15.5, 30));
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key_and_the_fix() {
        Jail::expect_with(|jail| {
            for (toml, key, says) in [
                ("gpm_drop_threshold = -1.0", "detectors.gpm_drop_threshold", "positive number, like 15"),
                ("design_ratio = 1.5", "detectors.design_ratio", "below 1"),
                ("warmup = \"90s\"", "detectors.warmup", "whole minutes"),
                ("arm_after = \"30m\"", "detectors.arm_after", "at least warmup + baseline_delay (50)"),
                ("cliff_min_fall = 0.0", "detectors.cliff_min_fall", "like 0.25"),
                ("baseline_half_life = \"0s\"", "detectors.baseline_half_life", "must be positive"),
            ] {
                let err = load_in(jail, &format!("[detectors]\n{toml}\n")).unwrap_err();
                assert_eq!(err.key.as_deref(), Some(key), "{toml}: {err}");
                assert!(err.to_string().contains(says), "{toml}: {err}");
            }
            // Off, its parameters are not looked at.
            let off = load_in(jail, "[detectors]\nenabled = false\ngpm_drop_threshold = -1.0\n").unwrap();
            assert_eq!(off.config.detectors.resolve(), None);
            Ok(())
        });
    }

    #[test]
    fn without_the_minute_window_the_default_turns_off_and_an_explicit_one_is_refused() {
        Jail::expect_with(|jail| {
            let windows = "[windows]\nset = [\"5m/10s\", \"session\"]\n";
            let loaded = load_in(jail, windows).unwrap();
            assert!(!loaded.config.detectors.enabled, "the effective config shows them off");
            let err = load_in(jail, &format!("{windows}[detectors]\nenabled = true\n")).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("detectors.enabled"));
            assert!(err.to_string().contains("add \"1m\" to windows.set"), "{err}");
            let no_breakdowns = "[windows]\nbreakdowns = [\"5m/10s\"]\n[detectors]\nenabled = true\n";
            let err = load_in(jail, no_breakdowns).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("detectors.enabled"), "{err}");
            let odd = "[windows]\nset = [\"1m\", \"7m/42s\", \"session\"]\n[signals]\nonline_window = \"7m/42s\"\ncompare_window = \"\"\n";
            let err = load_in(jail, odd).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("signals.online_window"), "{err}");
            Ok(())
        });
    }
}
