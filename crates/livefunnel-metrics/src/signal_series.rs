//! The series of the alert signals ([`crate::signals`]) and detectors
//! ([`crate::detection`]), registered with the room series.

use livefunnel_detectors::DetectorConfig;
use prometheus::{CounterVec, Gauge, GaugeVec, Opts, Registry};

use crate::room::RoomKey;
use crate::signals::{RoomSignals, Series, SeriesLabels, SignalValues, SignalWindows, SERIES_COUNT};

const ROOM: &[&str] = &["org_id", "room_id", "platform"];
const ROOM_WINDOW: &[&str] = &["org_id", "room_id", "platform", "window"];

#[derive(Clone)]
enum Family {
    Gauge(GaugeVec),
    /// Shown at the room's total: created at the total, then increased by the difference.
    Counter(CounterVec),
}

impl Family {
    fn remove(&self, labels: &[&str]) {
        let _ = match self {
            Family::Gauge(g) => g.remove_label_values(labels),
            Family::Counter(c) => c.remove_label_values(labels),
        };
    }
}

/// One vector per [`Series`], in its order, and the detectors' parameters.
#[derive(Clone)]
pub(crate) struct SignalGauges {
    families: Vec<Family>,
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
            let opts = Opts::new(name, help);
            let f = match labels {
                SeriesLabels::RoomCounter => {
                    let c = CounterVec::new(opts, ROOM)?;
                    registry.register(Box::new(c.clone()))?;
                    Family::Counter(c)
                }
                _ => {
                    let label_names = if labels == SeriesLabels::Room { ROOM } else { ROOM_WINDOW };
                    let g = GaugeVec::new(opts, label_names)?;
                    registry.register(Box::new(g.clone()))?;
                    Family::Gauge(g)
                }
            };
            families.push(f);
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
    pub(crate) fn vectors(&self) -> impl Iterator<Item = (&dyn prometheus::core::Collector, bool)> {
        self.families.iter().map(|f| match f {
            Family::Gauge(g) => (g as &dyn prometheus::core::Collector, false),
            Family::Counter(c) => (c as &dyn prometheus::core::Collector, true),
        })
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
            match (&self.families[i], values.0[i]) {
                (Family::Gauge(g), Some(v)) => g.with_label_values(labels).set(v),
                (Family::Counter(c), Some(total)) => match before {
                    Some(b) if total >= b => c.with_label_values(labels).inc_by(total - b),
                    // First shown (or a total that went back, which a counter cannot).
                    _ => {
                        let _ = c.remove_label_values(labels);
                        c.with_label_values(labels).inc_by(total.max(0.0));
                    }
                },
                (f, None) => f.remove(labels),
            }
        }
    }

    /// Removes every signal series of `key`; `windows`: every configured hop/tumble window.
    pub(crate) fn remove(&self, key: &RoomKey, windows: &[String]) {
        let base = [key.org_id.as_str(), key.room_id.as_str(), key.platform.as_str()];
        for (i, s) in Series::ALL.into_iter().enumerate() {
            let f = &self.families[i];
            match s.describe().2 {
                SeriesLabels::Room | SeriesLabels::RoomCounter => f.remove(&base),
                _ => {
                    for w in windows {
                        f.remove(&[base[0], base[1], base[2], w.as_str()]);
                    }
                }
            }
        }
    }
}
