//! The online cliff: viewers online at the end of the latest closed row against 60 s
//! earlier. Two conditions: the fall in Poisson units, `z = (N₋₆₀ − N₀)/√N₋₆₀` (normal
//! one-minute changes, arrivals minus departures, have a standard deviation of about
//! 0.55·√N), and the share of viewers gone (in a room of thousands a paid plan's
//! viewers leaving moves `z` past 3 with a fall of a few per cent). The evidence is
//! the smaller of `z` and the fall scaled so that `cliff_min_fall` is the threshold:
//! it reaches the threshold exactly when both conditions hold.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::DetectorConfig;

const LOOKBACK_MS: i64 = 60_000;

/// `online_end` of one row of the online window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Point {
    end: i64,
    version: u64,
    online: u64,
}

/// The last minute or two of `online_end` values, by row end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliffDetector {
    /// Sorted by `end`; ends older than the latest minus two look-backs are dropped.
    points: VecDeque<Point>,
}

/// The cliff's view of the room now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CliffValues {
    /// Online at the end of the latest closed row.
    pub online_end: Option<u64>,
    /// Online 60 s before it (a row ending exactly then).
    pub online_end_60s_ago: Option<u64>,
    /// `(N₋₆₀ − N₀) / √N₋₆₀` once armed: at least `cliff_min_online` viewers 60 s ago
    /// in a session at least `cliff_min_session_minutes` old.
    pub z: Option<f64>,
    /// `min(z, cliff_threshold · fall / cliff_min_fall)` with `fall = 1 − N₀/N₋₆₀`, once armed.
    pub evidence: Option<f64>,
    /// End of the latest closed row.
    pub at_ms: Option<i64>,
}

impl CliffValues {
    /// Whether OnlineViewersCliff holds: the evidence at its threshold.
    pub fn firing(&self, c: &DetectorConfig) -> bool {
        self.evidence.is_some_and(|e| e >= c.cliff_threshold)
    }
}

impl CliffDetector {
    /// A row of the online window (any version, in emission order).
    pub fn on_row(&mut self, end: i64, version: u64, online: u64) {
        let p = Point { end, version, online };
        match self.points.iter().rposition(|q| q.end <= end) {
            Some(i) if self.points[i].end == end => {
                if version >= self.points[i].version {
                    self.points[i] = p;
                }
            }
            Some(i) => self.points.insert(i + 1, p),
            None => self.points.push_front(p),
        }
        let latest = self.points.back().expect("just inserted").end;
        while self.points.front().is_some_and(|q| q.end < latest - 2 * LOOKBACK_MS) {
            self.points.pop_front();
        }
    }

    pub fn values(&self, session_start: i64, c: &DetectorConfig) -> CliffValues {
        let Some(now) = self.points.back() else { return CliffValues::default() };
        let before = self.points.iter().rev().find(|p| p.end == now.end - LOOKBACK_MS);
        let n60 = before.map(|p| p.online);
        let old_enough = now.end - session_start >= i64::from(c.cliff_min_session_minutes) * 60_000;
        let armed = n60.filter(|&n| old_enough && n >= c.cliff_min_online && n > 0).map(|n| n as f64);
        let z = armed.map(|n| (n - now.online as f64) / n.sqrt());
        let evidence = armed.map(|n| {
            let fall = 1.0 - now.online as f64 / n;
            let z = (n - now.online as f64) / n.sqrt();
            z.min(c.cliff_threshold * fall / c.cliff_min_fall)
        });
        CliffValues {
            online_end: Some(now.online),
            online_end_60s_ago: n60,
            z,
            evidence,
            at_ms: Some(now.end),
        }
    }
}
