//! The gauges of the alert signals ([`crate::signals`]), registered with the room series.

use prometheus::{GaugeVec, Opts, Registry};

use crate::room::RoomKey;
use crate::signals::{RoomSignals, Series, SeriesLabels, SignalValues, SignalWindows, SERIES_COUNT};

const ROOM: &[&str] = &["org_id", "room_id", "platform"];
const ROOM_WINDOW: &[&str] = &["org_id", "room_id", "platform", "window"];

/// One gauge vector per [`Series`], in its order.
#[derive(Clone)]
pub(crate) struct SignalGauges {
    gauges: Vec<GaugeVec>,
}

impl SignalGauges {
    pub(crate) fn new(registry: &Registry) -> Result<SignalGauges, prometheus::Error> {
        let mut gauges = Vec::with_capacity(SERIES_COUNT);
        for s in Series::ALL {
            let (name, help, labels) = s.describe();
            let labels = if labels == SeriesLabels::Room { ROOM } else { ROOM_WINDOW };
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            gauges.push(g);
        }
        Ok(SignalGauges { gauges })
    }

    /// The gauge vectors, in the order of [`Series::ALL`] (read by `room_reading.rs`).
    pub(crate) fn gauges(&self) -> &[GaugeVec] {
        &self.gauges
    }

    /// Sets the gauges of `room` whose value differs from what they show, and removes
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
            room.shown[i] = bits;
            let window = match s.describe().2 {
                SeriesLabels::Room => None,
                SeriesLabels::Compare => w.compare.as_ref(),
                SeriesLabels::Online => w.online.as_ref(),
            };
            let with_window;
            let labels: &[&str] = match (s.describe().2, window) {
                (SeriesLabels::Room, _) => &base,
                (_, Some(window)) => {
                    with_window = [base[0], base[1], base[2], window.name.as_str()];
                    &with_window
                }
                // Not configured: such a series never has a value.
                (_, None) => continue,
            };
            match values.0[i] {
                Some(v) => self.gauges[i].with_label_values(labels).set(v),
                None => {
                    let _ = self.gauges[i].remove_label_values(labels);
                }
            }
        }
    }

    /// Removes every signal series of `key`; `windows`: every configured hop/tumble window.
    pub(crate) fn remove(&self, key: &RoomKey, windows: &[String]) {
        let base = [key.org_id.as_str(), key.room_id.as_str(), key.platform.as_str()];
        for (i, s) in Series::ALL.into_iter().enumerate() {
            let g = &self.gauges[i];
            if s.describe().2 == SeriesLabels::Room {
                let _ = g.remove_label_values(&base);
            } else {
                for w in windows {
                    let _ = g.remove_label_values(&[base[0], base[1], base[2], w.as_str()]);
                }
            }
        }
    }
}
