//! One room's detectors: its current session, the parts of its recent minutes as rows
//! bring them (a minute's totals and its paid sources come in separate rows, and
//! later versions correct them), and the detectors fed from them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::cliff::{CliffDetector, CliffValues};
use crate::config::DetectorConfig;
use crate::orders::{MinuteCounts, OrderDetector, PooledDelta, CORRECTABLE_MINUTES};

/// The measures of a minute's row (the `1m` window) the detectors read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteTotals {
    pub orders_paid: u64,
    pub watch_pv: u64,
    pub watch_ms: f64,
    pub gmv_cents: i64,
    /// GMV of orders by viewers who came in through paid sources.
    pub gmv_cents_paid: i64,
}

/// The measures of one paid source's breakdown row of a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidPart {
    pub orders_paid: u64,
    pub watch_pv: u64,
}

/// The paid sources whose viewers are not organic exposure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidSource {
    PaidBoost,
    PaidAds,
}

impl PaidSource {
    /// The source breakdown key (contract §1.3) of a paid source.
    pub fn from_key(key: &str) -> Option<PaidSource> {
        match key {
            "paid_boost" => Some(PaidSource::PaidBoost),
            "paid_ads" => Some(PaidSource::PaidAds),
            _ => None,
        }
    }
}

/// A minute's parts, each the latest version seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Parts {
    end: i64,
    total: Option<(u64, MinuteTotals)>,
    paid: [Option<(u64, PaidPart)>; 2],
    consumed: bool,
    /// Changed since it was consumed.
    changed: bool,
}

impl Parts {
    fn counts(&self) -> MinuteCounts {
        let t = self.total.map(|t| t.1).unwrap_or_default();
        let paid = |f: fn(&PaidPart) -> u64| self.paid.iter().flatten().map(|p| f(&p.1)).sum::<u64>();
        MinuteCounts {
            organic_orders: t.orders_paid.saturating_sub(paid(|p| p.orders_paid)),
            organic_views: t.watch_pv.saturating_sub(paid(|p| p.watch_pv)),
            views: t.watch_pv,
            watch_ms: t.watch_ms,
            organic_gmv_cents: t.gmv_cents.saturating_sub(t.gmv_cents_paid),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    id: String,
    start_ms: i64,
    ended: bool,
}

/// One room's detectors. Serializable: it is part of the partition checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomDetectors {
    session: Option<Session>,
    /// Unconsumed minutes and the last consumed ones, by end.
    minutes: VecDeque<Parts>,
    orders: OrderDetector,
    cliff: CliffDetector,
    /// Counter totals of the pooled detection; they continue across sessions.
    pooled_observed: u64,
    pooled_expected: f64,
    /// Rows arrived since the last [`RoomDetectors::settle`].
    unsettled: bool,
}

/// Every value the detectors show for a room; `None`: no value (NaN on a gauge).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetectorValues {
    /// A session of the room is under way (not ended).
    pub live: bool,
    pub gpm_drop_evidence: Option<f64>,
    pub sales_stall_evidence: Option<f64>,
    pub orders_expected_per_minute: Option<f64>,
    pub gpm_baseline: Option<f64>,
    pub gpm_drop_horizon_seconds: Option<f64>,
    pub drop_orders_observed: Option<f64>,
    pub drop_orders_expected: Option<f64>,
    pub cliff: CliffValues,
    pub pooled_observed: u64,
    pub pooled_expected: f64,
}

/// Which room alerts hold now (before inhibition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Firing {
    pub gpm_drop: bool,
    pub sales_stall: bool,
    pub online_cliff: bool,
}

impl DetectorValues {
    /// The conditions of the shipped rules: evidence at or above its threshold.
    pub fn firing(&self, c: &DetectorConfig) -> Firing {
        if !self.live {
            return Firing::default();
        }
        Firing {
            gpm_drop: self.gpm_drop_evidence.is_some_and(|s| s >= c.gpm_drop_threshold),
            sales_stall: self.sales_stall_evidence.is_some_and(|t| t >= c.sales_stall_threshold),
            online_cliff: self.cliff.firing(c),
        }
    }
}

impl RoomDetectors {
    /// Whether a row of `session_id` starting at `at_ms` belongs to the current session,
    /// starting a new one when it is later. `exact`: `at_ms` is the session's start.
    fn session(&mut self, session_id: &str, at_ms: i64, exact: bool) -> bool {
        match &mut self.session {
            Some(s) if s.id == session_id => {
                if exact {
                    s.start_ms = at_ms;
                }
                true
            }
            // A row of an earlier session (a late correction): its session is over here.
            Some(s) if at_ms < s.start_ms => false,
            _ => {
                let (observed, expected) = (self.pooled_observed, self.pooled_expected);
                *self = RoomDetectors {
                    session: Some(Session { id: session_id.to_owned(), start_ms: at_ms, ended: false }),
                    pooled_observed: observed,
                    pooled_expected: expected,
                    ..RoomDetectors::default()
                };
                true
            }
        }
    }

    /// A session row: its start, and whether it ended.
    pub fn on_session(&mut self, session_id: &str, start_ms: i64, ended: bool) {
        if self.session(session_id, start_ms, true) {
            let s = self.session.as_mut().expect("set above");
            if s.ended != ended {
                s.ended = ended;
                self.unsettled = true;
            }
        }
    }

    /// The parts of the minute ending at `end`: a minute not consumed yet, or one a
    /// correction can still reach (an empty minute, filled in, may get its first row
    /// late); `None` for an older one.
    fn parts(&mut self, end: i64) -> Option<&mut Parts> {
        let last = self.orders.last_end();
        let correctable = |l: i64| end > l - CORRECTABLE_MINUTES as i64 * 60_000;
        if last.is_some_and(|l| end <= l && !correctable(l)) {
            return None;
        }
        let consumed = last.is_some_and(|l| end <= l);
        let i = match self.minutes.iter().rposition(|p| p.end <= end) {
            Some(i) if self.minutes[i].end == end => i,
            Some(i) => {
                self.minutes.insert(i + 1, Parts::empty(end, consumed));
                i + 1
            }
            None => {
                self.minutes.push_front(Parts::empty(end, consumed));
                0
            }
        };
        self.unsettled = true;
        Some(&mut self.minutes[i])
    }

    /// A `1m` window row ending at `end`.
    pub fn on_minute(&mut self, session_id: &str, end: i64, version: u64, totals: MinuteTotals) {
        if !self.session(session_id, end - 60_000, false) {
            return;
        }
        if let Some(p) = self.parts(end) {
            if p.total.is_none_or(|(v, _)| version >= v) {
                p.total = Some((version, totals));
                p.changed |= p.consumed;
            }
        }
    }

    /// A `1m` source breakdown row of a paid source (they carry no session id: they
    /// belong to the minute's window row, emitted just before them).
    pub fn on_paid(&mut self, end: i64, version: u64, source: PaidSource, part: PaidPart) {
        if self.session.is_none() {
            return;
        }
        if let Some(p) = self.parts(end) {
            let slot = &mut p.paid[source as usize];
            if slot.is_none_or(|(v, _)| version >= v) {
                *slot = Some((version, part));
                p.changed |= p.consumed;
            }
        }
    }

    /// A row of the online window: viewers online at its end.
    pub fn on_online(&mut self, session_id: &str, end: i64, version: u64, online_end: u64) {
        if self.session(session_id, end, false) {
            self.cliff.on_row(end, version, online_end);
            self.unsettled = true;
        }
    }

    /// Whether rows arrived since the last [`RoomDetectors::settle`].
    pub fn unsettled(&self) -> bool {
        self.unsettled
    }

    /// Applies what the rows brought: corrections of consumed minutes, then the new
    /// minutes in order. Call once the rows of a batch are in (a minute's window row
    /// and its breakdown rows are emitted together).
    pub fn settle(&mut self, c: &DetectorConfig) {
        self.unsettled = false;
        let Some(start) = self.session.as_ref().map(|s| s.start_ms) else { return };
        let mut gained = PooledDelta::default();
        for p in self.minutes.iter_mut().filter(|p| p.consumed && p.changed) {
            p.changed = false;
            if let Some(d) = self.orders.correct(p.end, &p.counts(), start, c) {
                gained.observed += d.observed;
                gained.expected += d.expected;
            }
        }
        for p in self.minutes.iter_mut().filter(|p| !p.consumed) {
            if p.total.is_none() || self.orders.last_end().is_some_and(|l| p.end <= l) {
                continue;
            }
            p.consumed = true;
            let d = self.orders.consume(p.end, &p.counts(), start, c);
            gained.observed += d.observed;
            gained.expected += d.expected;
        }
        self.pooled_observed += gained.observed;
        self.pooled_expected += gained.expected;
        // Keep the minutes a correction can reach, and those still to come.
        let last = self.orders.last_end().unwrap_or(i64::MIN);
        self.minutes
            .retain(|p| p.end > last || (p.consumed && p.end > last - CORRECTABLE_MINUTES as i64 * 60_000));
    }

    /// The detectors' values now.
    pub fn values(&self, c: &DetectorConfig) -> DetectorValues {
        let mut v = DetectorValues {
            pooled_observed: self.pooled_observed,
            pooled_expected: self.pooled_expected,
            ..DetectorValues::default()
        };
        let Some(s) = self.session.as_ref().filter(|s| !s.ended) else { return v };
        v.live = true;
        let o = &self.orders;
        let f = o.fold();
        if o.armed() {
            v.gpm_drop_evidence = Some(f.s);
            v.sales_stall_evidence = Some(f.t);
            v.drop_orders_observed = Some(f.drop_orders);
            v.drop_orders_expected = Some(f.drop_expected);
        }
        v.orders_expected_per_minute = o.expected_per_minute(c);
        v.gpm_baseline = o.baseline_gpm();
        v.gpm_drop_horizon_seconds = Some(o.horizon_seconds(c));
        v.cliff = self.cliff.values(s.start_ms, c);
        v
    }

    /// Start of the current session (event time), if any.
    pub fn session_start_ms(&self) -> Option<i64> {
        self.session.as_ref().map(|s| s.start_ms)
    }

    /// How many minutes and cliff points are kept (for tests of the bound).
    pub fn kept(&self) -> usize {
        self.minutes.len()
    }
}

impl Parts {
    /// No part yet; `consumed`: a minute the detectors filled in as empty.
    fn empty(end: i64, consumed: bool) -> Parts {
        Parts { end, total: None, paid: [None, None], consumed, changed: false }
    }
}
