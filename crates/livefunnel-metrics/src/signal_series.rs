//! The series of the alert signals ([`crate::signals`]) and detectors
//! ([`crate::detection`]), registered with the room series.

use livefunnel_detectors::DetectorConfig;
use std::sync::Arc;

use prometheus::{Gauge, GaugeVec, Opts, Registry};

use crate::room::RoomKey;
use crate::signals::{RoomSignals, Series, SeriesLabels, SignalValues, SignalWindows, SERIES_COUNT};
use crate::text_family::{Kind, TextFamily};

const ROOM: &[&str] = &["org_id", "room_id", "platform"];
const ROOM_WINDOW: &[&str] = &["org_id", "room_id", "platform", "window"];

/// One family per [`Series`], in its order (rendered with the room series, not
/// registered), and the detectors' parameters (registered).
#[derive(Clone)]
pub(crate) struct SignalGauges {
    families: Vec<Arc<TextFamily>>,
    /// `livefunnel_detector_threshold{detector}`: what the rules compare evidence with.
    thresholds: GaugeVec,
    design_ratio: Gauge,
    /// The exported configuration, for readers of the values (the wall), shared by clones.
    config: std::sync::Arc<std::sync::OnceLock<DetectorConfig>>,
}

impl SignalGauges {
    pub(crate) fn new(registry: &Registry) -> Result<SignalGauges, prometheus::Error> {
        let mut families = Vec::with_capacity(SERIES_COUNT);
        for s in Series::ALL {
            let (name, help, labels) = s.describe();
            let f = match labels {
                // Shown at the room's total: created at the total, then set to each new one.
                SeriesLabels::RoomCounter => TextFamily::new(name, help, Kind::Counter, ROOM),
                SeriesLabels::Room => TextFamily::new(name, help, Kind::Gauge, ROOM),
                _ => TextFamily::new(name, help, Kind::Gauge, ROOM_WINDOW),
            };
            families.push(Arc::new(f));
        }
        let thresholds = GaugeVec::new(
            Opts::new(
                "livefunnel_detector_threshold",
                "the [detectors] thresholds the alert rules compare with: gpm_drop, sales_stall, online_cliff \
                 (evidence), online_cliff_fall (share of online lost in 60 s), pooled (org window log-likelihood \
                 ratio)",
            ),
            &["detector"],
        )?;
        let design_ratio = Gauge::new(
            "livefunnel_detector_design_ratio",
            "detectors.design_ratio: the conversion ratio the GPM-drop and pooled tests are tuned to find",
        )?;
        registry.register(Box::new(thresholds.clone()))?;
        registry.register(Box::new(design_ratio.clone()))?;
        Ok(SignalGauges { families, thresholds, design_ratio, config: Default::default() })
    }

    /// Each series' vector, in the order of [`Series::ALL`], and whether it is a counter
    /// (read by `room_reading.rs`).
    pub(crate) fn families(&self) -> impl Iterator<Item = &TextFamily> {
        self.families.iter().map(|f| &**f)
    }

    /// Exports the detectors' thresholds (once, at start-up).
    pub(crate) fn export_config(&self, c: &DetectorConfig) {
        for (name, v) in [
            ("gpm_drop", c.gpm_drop_threshold),
            ("sales_stall", c.sales_stall_threshold),
            ("online_cliff", c.cliff_threshold),
            ("online_cliff_fall", c.cliff_min_fall),
            ("pooled", c.pooled_threshold),
        ] {
            self.thresholds.with_label_values(&[name]).set(v);
        }
        self.design_ratio.set(c.design_ratio);
        let _ = self.config.set(c.clone());
    }

    /// The configuration [`Self::export_config`] exported, if the detectors are on.
    pub(crate) fn config(&self) -> Option<&DetectorConfig> {
        self.config.get()
    }

    /// Sets the series of `room` whose value differs from what they show, and removes
    /// those that no longer have a value.
    pub(crate) fn show(
        &self,
        key: &RoomKey,
        w: &SignalWindows,
        room: &mut RoomSignals,
        values: &SignalValues,
    ) {
        let base = [key.org_id.as_str(), key.room_id.as_str(), key.platform.as_str()];
        for (i, s) in Series::ALL.into_iter().enumerate() {
            let bits = values.0[i].map(f64::to_bits);
            if bits == room.shown[i] {
                continue;
            }
            let before = room.shown[i].map(f64::from_bits);
            room.shown[i] = bits;
            let window = match s.describe().2 {
                SeriesLabels::Room | SeriesLabels::RoomCounter => None,
                SeriesLabels::Compare => w.compare.as_ref(),
                SeriesLabels::Online => w.online.as_ref(),
            };
            let with_window;
            let labels: &[&str] = match (s.describe().2, window) {
                (SeriesLabels::Room | SeriesLabels::RoomCounter, _) => &base,
                (_, Some(window)) => {
                    with_window = [base[0], base[1], base[2], window.name.as_str()];
                    &with_window
                }
                // Not configured: such a series never has a value.
                (_, None) => continue,
            };
            let f = &self.families[i];
            match (f.kind(), values.0[i]) {
                (Kind::Gauge, Some(v)) => f.with_label_values(labels).set(v),
                (Kind::Counter, Some(total)) => match before {
                    Some(b) if total >= b => f.with_label_values(labels).set(total),
                    // First shown (or a total that went back, which a counter cannot):
                    // a new series, which `increase()` sees start.
                    _ => {
                        f.remove_label_values(labels);
                        f.with_label_values(labels).set(total.max(0.0));
                    }
                },
                (_, None) => {
                    f.remove_label_values(labels);
                }
            }
        }
    }

    /// Removes every signal series of `key`; `windows`: every configured hop/tumble window.
    pub(crate) fn remove(&self, key: &RoomKey, windows: &[String]) {
        let base = [key.org_id.as_str(), key.room_id.as_str(), key.platform.as_str()];
        for (i, s) in Series::ALL.into_iter().enumerate() {
            let f = &self.families[i];
            match s.describe().2 {
                SeriesLabels::Room | SeriesLabels::RoomCounter => {
                    f.remove_label_values(&base);
                }
                _ => {
                    for w in windows {
                        f.remove_label_values(&[base[0], base[1], base[2], w.as_str()]);
                    }
                }
            }
        }
    }
}
