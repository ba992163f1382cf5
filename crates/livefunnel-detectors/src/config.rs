//! The detectors' parameters (`[detectors]` of the configuration), checked.

use serde::{Deserialize, Serialize};

/// Every parameter of the detectors. [`DetectorConfig::default`] holds the values the
/// shipped rules and `docs/alerts.md` were measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// ρ₁: the conversion ratio (of the baseline) the GPM-drop CUSUM is designed to
    /// detect. Evidence grows while conversion is below about `1 - (1 - ρ₁) / -ln ρ₁`
    /// of the baseline (0.6 for 1/3) and falls otherwise.
    pub design_ratio: f64,
    /// `livefunnel_room_signal_gpm_drop_evidence` at or above this fires GPMDrop (nats).
    pub gpm_drop_threshold: f64,
    /// `livefunnel_room_signal_sales_stall_evidence` at or above this fires SalesStall
    /// (expected organic orders since the last one).
    pub sales_stall_threshold: f64,
    /// Session minutes before this are not learnt (reservation wave, flash sales, ramp-up).
    pub warmup_minutes: u32,
    /// The per-room detectors arm no earlier than this session minute...
    pub arm_minutes: u32,
    /// ...and only once the baseline holds this many (weighted) organic orders.
    pub arm_orders: f64,
    /// Half-life of the baseline (EWMA of organic orders and exposure), minutes.
    pub baseline_half_life_minutes: f64,
    /// Minutes enter the baseline this late, so the start of a drop is not learnt.
    pub baseline_delay_minutes: u32,
    /// The baseline stops learning while the evidence is above half the threshold,
    /// for at most this many consecutive minutes (then a lasting new level is learnt).
    pub max_freeze_minutes: u32,
    /// Time constant of the organic share of recent enters, minutes (about a dwell).
    pub exposure_minutes: f64,
    /// OnlineViewersCliff: `(N₋₆₀ − N₀) / √N₋₆₀` at or above this...
    pub cliff_threshold: f64,
    /// ...and online fell by at least this share within 60 s...
    pub cliff_min_fall: f64,
    /// ...from at least this many viewers online...
    pub cliff_min_online: u64,
    /// ...in a session at least this many minutes old.
    pub cliff_min_session_minutes: u32,
    /// Org-level (pooled) alerts: window log-likelihood ratio at or above this (nats).
    pub pooled_threshold: f64,
}

impl Default for DetectorConfig {
    fn default() -> DetectorConfig {
        DetectorConfig {
            design_ratio: 1.0 / 3.0,
            gpm_drop_threshold: 15.0,
            sales_stall_threshold: 16.0,
            warmup_minutes: 40,
            arm_minutes: 50,
            arm_orders: 30.0,
            baseline_half_life_minutes: 60.0,
            baseline_delay_minutes: 10,
            max_freeze_minutes: 30,
            exposure_minutes: 6.0,
            cliff_threshold: 3.0,
            cliff_min_fall: 0.25,
            cliff_min_online: 30,
            cliff_min_session_minutes: 10,
            pooled_threshold: 16.0,
        }
    }
}

/// A parameter that cannot be used: its key (without the section) and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: &'static str,
    pub message: String,
}

impl DetectorConfig {
    /// Checks every parameter; the error names the first bad key and how to fix it.
    pub fn validate(&self) -> Result<(), ParamError> {
        let err = |key: &'static str, message: String| Err(ParamError { key, message });
        let positive = |key: &'static str, v: f64, example: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                err(key, format!("is {v}: must be a positive number, like {example}"))
            }
        };
        if !(self.design_ratio > 0.0 && self.design_ratio < 1.0) {
            return err(
                "design_ratio",
                format!(
                    "is {}: must be above 0 and below 1 (the share of the baseline's conversion the \
                     detector is tuned to find), like 0.333",
                    self.design_ratio
                ),
            );
        }
        positive("gpm_drop_threshold", self.gpm_drop_threshold, "15")?;
        positive("sales_stall_threshold", self.sales_stall_threshold, "16")?;
        positive("arm_orders", self.arm_orders, "30")?;
        positive("baseline_half_life_minutes", self.baseline_half_life_minutes, "60")?;
        positive("exposure_minutes", self.exposure_minutes, "6")?;
        positive("cliff_threshold", self.cliff_threshold, "3")?;
        positive("pooled_threshold", self.pooled_threshold, "16")?;
        if !(self.cliff_min_fall > 0.0 && self.cliff_min_fall < 1.0) {
            return err(
                "cliff_min_fall",
                format!("is {}: must be a share above 0 and below 1, like 0.25", self.cliff_min_fall),
            );
        }
        if self.arm_minutes < self.warmup_minutes + self.baseline_delay_minutes {
            return err(
                "arm_minutes",
                format!(
                    "is {}: must be at least warmup_minutes + baseline_delay_minutes ({}), when the first \
                     minute after the warm-up reaches the baseline",
                    self.arm_minutes,
                    self.warmup_minutes + self.baseline_delay_minutes
                ),
            );
        }
        if self.baseline_delay_minutes > 60 {
            return err(
                "baseline_delay_minutes",
                format!("is {}: must be at most 60, like 10", self.baseline_delay_minutes),
            );
        }
        Ok(())
    }

    /// ln ρ₁ (negative).
    pub fn ln_ratio(&self) -> f64 {
        self.design_ratio.ln()
    }

    /// Evidence per expected order while conversion is `rho` of the baseline:
    /// `(1 − ρ₁) + ρ·ln ρ₁`; detection takes about `threshold / (drift · orders/min)` minutes.
    pub fn drift(&self, rho: f64) -> f64 {
        (1.0 - self.design_ratio) + rho * self.ln_ratio()
    }

    /// The GPM-drop evidence never exceeds this, so a recovery shows within minutes.
    pub fn evidence_cap(&self) -> f64 {
        2.0 * self.gpm_drop_threshold
    }
}
