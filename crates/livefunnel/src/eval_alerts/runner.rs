//! One room through the pipeline's own code, at CPU speed: simulator → decode →
//! engine → the tracker's detectors → the alert conditions of the shipped rules, with
//! Alertmanager's inhibition (SalesStall silences GPMDrop of its room).

use std::collections::BTreeMap;

use livefunnel_core::{decode, Engine, EngineConfig, Outcome, Row};
use livefunnel_metrics::{DetectorConfig, DetectorValues, RoomTracker, SignalWindows};
use livefunnel_sim::Simulator;
use serde::Serialize;

use super::plan::RoomSpec;

/// `keep_firing_for` of the shipped room rules: an inhibiting alert stays this long.
pub const KEEP_FIRING_MS: i64 = 5 * 60_000;

/// The alerts, in report order.
pub const ALERTS: [&str; 3] = ["GPMDrop", "SalesStall", "OnlineViewersCliff"];

/// One alert of one room.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Track {
    /// Event time it first held (before inhibition), and first after the onset.
    pub first_ms: Option<i64>,
    pub first_after_onset_ms: Option<i64>,
    /// Whether it held before the onset (a false alarm).
    pub before_onset: bool,
    /// Times it started to hold.
    pub episodes: u32,
    /// Episodes that started while the inhibiting alert was firing.
    pub inhibited: u32,
    #[serde(skip)]
    holding: bool,
    #[serde(skip)]
    last_true_ms: Option<i64>,
}

impl Track {
    fn observe(&mut self, holds: bool, now: i64, onset: Option<i64>, inhibited: bool) {
        if holds {
            if !self.holding {
                self.episodes += 1;
                self.inhibited += u32::from(inhibited);
            }
            self.first_ms.get_or_insert(now);
            match onset {
                Some(o) if now >= o => {
                    self.first_after_onset_ms.get_or_insert(now);
                }
                _ => self.before_onset = true,
            }
            self.last_true_ms = Some(now);
        }
        self.holding = holds;
    }

    /// Firing now, or within `keep_firing_for` of the last time it held.
    fn active(&self, now: i64) -> bool {
        self.last_true_ms.is_some_and(|t| now - t <= KEEP_FIRING_MS)
    }
}

/// What one room did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoomResult {
    pub events: u64,
    /// By [`ALERTS`].
    pub alerts: [Track; 3],
    /// Largest evidence before the onset (the whole session for a normal room).
    pub max_gpm_drop_evidence: f64,
    pub max_sales_stall_evidence: f64,
    pub max_cliff_evidence: f64,
    /// Organic paid orders per minute: the 30 minutes before the onset, or every
    /// minute after the warm-up (minute 40) of a normal room.
    pub measured_orders_per_minute: f64,
    /// Viewers online on average over the 10 minutes before the onset, or after minute
    /// 40 of a normal room.
    pub measured_online: f64,
    /// The detectors' view at the onset (the end for a normal room).
    pub expected_per_minute: Option<f64>,
    pub horizon_seconds: Option<f64>,
    /// `(event-time minute, pooled observed total, pooled expected total)` at each
    /// minute the pooled counters moved.
    #[serde(skip)]
    pub pooled: Vec<(i64, u64, f64)>,
}

/// Volumes measured from the rows: organic orders over one range of event time,
/// viewers online over another.
struct Volume {
    orders: std::ops::Range<i64>,
    online: std::ops::Range<i64>,
    online_window: String,
    /// Latest version per minute end: (version, orders, paid-source orders by source).
    minutes: BTreeMap<i64, (u64, u64, [u64; 2])>,
    /// Latest version per row end of the online window: (version, online_end).
    online_ends: BTreeMap<i64, (u64, u64)>,
}

impl Volume {
    fn on_row(&mut self, row: &Row) {
        match row {
            Row::Window(w) if &*w.window == "1m" && self.orders.contains(&w.window_start) => {
                let e = self.minutes.entry(w.window_end).or_insert((0, 0, [0, 0]));
                if w.version >= e.0 {
                    (e.0, e.1) = (w.version, w.counts.orders_paid);
                }
            }
            Row::Window(w) if *w.window == *self.online_window && self.online.contains(&w.window_end) => {
                let e = self.online_ends.entry(w.window_end).or_insert((0, 0));
                if w.version >= e.0 {
                    *e = (w.version, w.counts.online_end);
                }
            }
            Row::Breakdown(b) if &*b.window == "1m" && self.orders.contains(&b.window_start) => {
                let i = match &*b.key {
                    "paid_boost" => 0,
                    "paid_ads" => 1,
                    _ => return,
                };
                let e = self.minutes.entry(b.window_end).or_insert((0, 0, [0, 0]));
                e.2[i] = e.2[i].max(b.counts.orders_paid);
            }
            _ => {}
        }
    }

    fn orders_per_minute(&self) -> f64 {
        let minutes = ((self.orders.end - self.orders.start) / 60_000).max(1) as f64;
        let organic: u64 = self.minutes.values().map(|(_, o, p)| o.saturating_sub(p[0] + p[1])).sum();
        organic as f64 / minutes
    }

    fn online(&self) -> f64 {
        let n = self.online_ends.len().max(1) as f64;
        self.online_ends.values().map(|(_, o)| *o as f64).sum::<f64>() / n
    }
}

/// One room's run.
struct Run<'a> {
    spec: &'a RoomSpec,
    c: &'a DetectorConfig,
    room_id: String,
    tracker: RoomTracker,
    volume: Volume,
    /// The room's largest accepted `ts`: the event time at which rows are emitted.
    latest: i64,
    at_onset: Option<DetectorValues>,
    last: DetectorValues,
    r: RoomResult,
}

/// Runs one room to the end of its stream.
pub fn run_room(
    spec: &RoomSpec,
    engine: &EngineConfig,
    windows: &SignalWindows,
    c: &DetectorConfig,
) -> RoomResult {
    let mut sim = Simulator::new(spec.params.clone());
    let mut engine = Engine::new(engine.clone());
    let mut tracker = RoomTracker::default();
    tracker.set_signal_windows(windows.clone());
    tracker.set_detectors(Some(c.clone()));
    let (orders, online) = match spec.onset_ms {
        Some(o) => (o - 30 * 60_000..o, o - 10 * 60_000..o),
        None => {
            let warm = spec.profile.start_ms + 40 * 60_000;
            (warm..spec.profile.end_ms, warm..spec.profile.end_ms)
        }
    };
    let volume = Volume {
        orders,
        online,
        online_window: windows.online.as_ref().map_or(String::new(), |w| w.name.clone()),
        minutes: BTreeMap::new(),
        online_ends: BTreeMap::new(),
    };
    let mut run = Run {
        spec,
        c,
        room_id: sim.room_id(0).to_owned(),
        tracker,
        volume,
        latest: i64::MIN,
        at_onset: None,
        last: DetectorValues::default(),
        r: RoomResult::default(),
    };
    let (mut buf, mut rows) = (Vec::new(), Vec::new());
    while sim.next_with_meta(&mut buf).is_some() {
        if let Ok(ev) = decode(&buf) {
            if let Outcome::Accepted { .. } = engine.process(&ev, 0, &mut rows) {
                run.r.events += 1;
                run.latest = run.latest.max(ev.ts);
            }
        }
        buf.clear();
        if !rows.is_empty() {
            run.step(&mut rows);
        }
    }
    engine.finish(&mut rows);
    run.step(&mut rows);
    let mut r = run.r;
    r.measured_orders_per_minute = run.volume.orders_per_minute();
    r.measured_online = run.volume.online();
    let view = run.at_onset.unwrap_or(run.last);
    r.expected_per_minute = view.orders_expected_per_minute;
    r.horizon_seconds = view.gpm_drop_horizon_seconds;
    r
}

impl Run<'_> {
    /// Rows emitted by one event: to the tracker, then the alert conditions.
    fn step(&mut self, rows: &mut Vec<Row>) {
        for row in rows.iter() {
            self.volume.on_row(row);
        }
        self.tracker.on_rows(rows);
        rows.clear();
        let Some(d) = self.tracker.detectors(&self.room_id) else { return };
        let (c, r) = (self.c, &mut self.r);
        let v = d.values(c);
        let now = self.latest;
        let onset = self.spec.onset_ms;
        if onset.is_none_or(|o| now < o) {
            let max = |m: &mut f64, x: Option<f64>| *m = m.max(x.unwrap_or(0.0));
            max(&mut r.max_gpm_drop_evidence, v.gpm_drop_evidence);
            max(&mut r.max_sales_stall_evidence, v.sales_stall_evidence);
            max(&mut r.max_cliff_evidence, v.cliff.evidence);
        } else if self.at_onset.is_none() {
            self.at_onset = Some(self.last);
        }
        self.last = v;
        let f = v.firing(c);
        let stall_active = r.alerts[1].active(now) || f.sales_stall;
        r.alerts[1].observe(f.sales_stall, now, onset, false);
        r.alerts[0].observe(f.gpm_drop, now, onset, stall_active);
        r.alerts[2].observe(f.online_cliff, now, onset, false);
        let minute = now.div_euclid(60_000);
        let (o, e) = (v.pooled_observed, v.pooled_expected);
        match r.pooled.last_mut() {
            Some(last) if last.1 == o && last.2 == e => {}
            Some(last) if last.0 == minute => *last = (minute, o, e),
            _ => r.pooled.push((minute, o, e)),
        }
    }
}
