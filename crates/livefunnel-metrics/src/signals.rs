//! Alert signals: per room, the measures of its latest *closed* window of two configured
//! windows, and of its live session, computed in event time from the rows the engine
//! emits. Alert rules are then plain thresholds on gauges, robust to scrape gaps and to
//! accelerated time (docs/metrics.md, docs/semantics.md "Alert signals").
//!
//! [`RoomSignals`] is one room's state and the whole computation; it does no IO, so it
//! is tested with hand-computed values. `RoomTracker` (room.rs) feeds it rows and
//! running values, and puts its [`SignalValues`] on the gauges of `signal_series.rs`.

use livefunnel_core::{Counts, SessionRow, WindowRow, WindowSpec};
use serde::{Deserialize, Serialize};

use crate::room::RoomKey;
pub use crate::series::{Series, SeriesLabels, SignalValues, SERIES_COUNT};

/// A window feeding signals: its canonical name (the `window` label) and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalWindow {
    pub name: String,
    pub size_ms: i64,
}

impl SignalWindow {
    /// The signal window of a configured hop or tumble window; `None` for `session`.
    pub fn from_spec(spec: &WindowSpec) -> Option<SignalWindow> {
        match *spec {
            WindowSpec::Hop { size_ms, .. } => Some(SignalWindow { name: spec.name(), size_ms }),
            WindowSpec::Session => None,
        }
    }
}

/// Which windows the signals read (`[signals]` of the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalWindows {
    /// `signals.compare_window`: the current closed window against the previous one.
    /// `None`: the compare series are not exported.
    pub compare: Option<SignalWindow>,
    /// `signals.online_window`: `livefunnel_room_signal_online_avg`. `None`: not exported.
    pub online: Option<SignalWindow>,
}

/// The measures of one compare-window row that the signals need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Compared {
    watch_pv: u64,
    watch_uv: u64,
    product_click_uv: u64,
    buyer_uv: u64,
    orders_paid: u64,
    gmv_cents: i64,
}

impl Compared {
    fn of(c: &Counts) -> Compared {
        Compared {
            watch_pv: c.watch_pv,
            watch_uv: c.watch_uv,
            product_click_uv: c.product_click_uv,
            buyer_uv: c.buyer_uv,
            orders_paid: c.orders_paid,
            gmv_cents: c.gmv_cents,
        }
    }

    /// gpm, watch_pv, watch_uv, watch_to_pay_rate, product_click_uv, click_to_pay_rate,
    /// orders_paid: the order of the compare series. Ratios by the contract's one formula.
    fn values(&self) -> [f64; 7] {
        let counts = Counts {
            watch_pv: self.watch_pv,
            watch_uv: self.watch_uv,
            product_click_uv: self.product_click_uv,
            buyer_uv: self.buyer_uv,
            orders_paid: self.orders_paid,
            gmv_cents: self.gmv_cents,
            ..Counts::default()
        };
        let r = counts.ratios();
        [
            r.gpm.unwrap_or(f64::NAN),
            self.watch_pv as f64,
            self.watch_uv as f64,
            r.watch_to_pay_rate.unwrap_or(f64::NAN),
            self.product_click_uv as f64,
            r.click_to_pay_rate.unwrap_or(f64::NAN),
            self.orders_paid as f64,
        ]
    }
}

/// The latest version of one window row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Slot<T> {
    end: i64,
    version: u64,
    value: T,
}

/// Keeps the highest version per `end`; `slots` stays sorted by `end`.
fn upsert<T>(slots: &mut Vec<Slot<T>>, slot: Slot<T>) {
    // Rows come out mostly in increasing end order: look from the back.
    match slots.iter().rposition(|s| s.end <= slot.end) {
        Some(i) if slots[i].end == slot.end => {
            if slot.version >= slots[i].version {
                slots[i] = slot;
            }
        }
        Some(i) => slots.insert(i + 1, slot),
        None => slots.insert(0, slot),
    }
}

/// The index of the current closed slot: the largest `end <= latest_ts`.
fn current<T>(slots: &[Slot<T>], latest_ts: i64) -> Option<usize> {
    slots.iter().rposition(|s| s.end <= latest_ts)
}

/// What the signals keep of the room's latest session row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionSnap {
    session_id: String,
    version: u64,
    start_ts: i64,
    end_ts: Option<i64>,
    watch_pv: u64,
    gmv_cents: i64,
}

/// One room's signal state: the closed rows still needed, its latest session row, its
/// running values and when it last received an event. Part of the partition checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomSignals {
    /// The labels the room's series are shown under (from its running values).
    pub(crate) key: Option<RoomKey>,
    /// The room's latest accepted `ts`; `None` until its running values are seen.
    latest_ts: Option<i64>,
    /// Some session of the room is live (running values).
    live: bool,
    /// Wall clock (ms) of the last accepted event of the room.
    last_received_ms: Option<i64>,
    compare: Vec<Slot<Compared>>,
    /// `watch_ms` per online-window row.
    online: Vec<Slot<i128>>,
    session: Option<SessionSnap>,
    /// The room's alert detectors ([`crate::detection`]); saved in a checkpoint
    /// section of their own, so checkpoints from before them still load.
    #[serde(skip)]
    pub(crate) detect: livefunnel_detectors::RoomDetectors,
    /// Changed since its gauges were last set.
    #[serde(skip)]
    pub(crate) dirty: bool,
    /// What the gauges show (`f64::to_bits`), to set only those that change.
    #[serde(skip)]
    pub(crate) shown: [Option<u64>; SERIES_COUNT],
}

/// Equal state; what the gauges show is not state.
impl PartialEq for RoomSignals {
    fn eq(&self, o: &RoomSignals) -> bool {
        self.key == o.key
            && self.latest_ts == o.latest_ts
            && self.live == o.live
            && self.last_received_ms == o.last_received_ms
            && self.compare == o.compare
            && self.online == o.online
            && self.session == o.session
            && self.detect == o.detect
    }
}

impl RoomSignals {
    /// A row of the compare window (any version, in emission order).
    pub fn on_compare_row(&mut self, row: &WindowRow) {
        upsert(
            &mut self.compare,
            Slot { end: row.window_end, version: row.version, value: Compared::of(&row.counts) },
        );
        self.dirty = true;
    }

    /// A row of the online window.
    pub fn on_online_row(&mut self, row: &WindowRow) {
        upsert(
            &mut self.online,
            Slot { end: row.window_end, version: row.version, value: row.counts.watch_ms },
        );
        self.dirty = true;
    }

    /// A session row of the room: kept when it is a newer version of the session held,
    /// or a session that started at or after it.
    pub fn on_session_row(&mut self, row: &SessionRow) {
        let newer = match &self.session {
            None => true,
            Some(s) if s.session_id == *row.session_id => row.version >= s.version,
            Some(s) => row.session_start_ts >= s.start_ts,
        };
        if !newer {
            return;
        }
        let snap = SessionSnap {
            session_id: match self.session.take() {
                // Same session: keep the id's allocation.
                Some(s) if s.session_id == *row.session_id => s.session_id,
                _ => row.session_id.to_string(),
            },
            version: row.version,
            start_ts: row.session_start_ts,
            end_ts: row.session_end_ts,
            watch_pv: row.counts.watch_pv,
            gmv_cents: row.counts.gmv_cents,
        };
        self.session = Some(snap);
        self.dirty = true;
    }

    /// The pipeline accepted an event of the room at wall clock `now_ms`.
    pub fn on_accepted(&mut self, now_ms: i64) {
        if self.last_received_ms != Some(now_ms) {
            self.last_received_ms = Some(now_ms);
            self.dirty = true;
        }
    }

    /// The room's running values: its latest accepted `ts` and whether a session is live.
    pub fn observe(&mut self, latest_ts: i64, live: bool) {
        if self.latest_ts != Some(latest_ts) || self.live != live {
            self.latest_ts = Some(latest_ts);
            self.live = live;
            self.dirty = true;
        }
    }

    /// Every series' value now.
    pub fn values(&self, w: &SignalWindows) -> SignalValues {
        let mut v = [None; SERIES_COUNT];
        if let (Some(cw), Some(latest)) = (&w.compare, self.latest_ts) {
            if let Some(i) = current(&self.compare, latest) {
                let cur = &self.compare[i];
                let prev_end = cur.end.saturating_sub(cw.size_ms);
                let prev =
                    self.compare[..i].iter().rev().find(|s| s.end <= prev_end).filter(|s| s.end == prev_end);
                let c = cur.value.values();
                let p = prev.map_or([f64::NAN; 7], |s| s.value.values());
                for k in 0..7 {
                    v[Series::Gpm as usize + 2 * k] = Some(c[k]);
                    v[Series::Gpm as usize + 2 * k + 1] = Some(p[k]);
                }
                v[Series::WindowEnd as usize] = Some(cur.end as f64 / 1000.0);
            }
        }
        if let (Some(ow), Some(latest)) = (&w.online, self.latest_ts) {
            if let Some(i) = current(&self.online, latest) {
                let watch_seconds = self.online[i].value as f64 / 1000.0;
                v[Series::OnlineAvg as usize] = Some(watch_seconds / (ow.size_ms as f64 / 1000.0));
            }
        }
        if let Some(latest) = self.latest_ts {
            let live = self.session.as_ref().filter(|s| self.live && s.end_ts.is_none());
            let gpm = live.and_then(|s| {
                Counts { watch_pv: s.watch_pv, gmv_cents: s.gmv_cents, ..Counts::default() }.ratios().gpm
            });
            v[Series::SessionGpm as usize] = Some(gpm.unwrap_or(f64::NAN));
            v[Series::SessionAge as usize] =
                Some(live.map_or(f64::NAN, |s| latest.saturating_sub(s.start_ts) as f64 / 1000.0));
        }
        v[Series::LastReceived as usize] = self.last_received_ms.map(|ms| ms as f64 / 1000.0);
        SignalValues(v)
    }

    /// Drops the rows no later value can need: compare rows ending before the previous
    /// window of the current one, online rows before the current one. Rows ending after
    /// the latest `ts` stay (they close when the room moves on).
    pub fn prune(&mut self, w: &SignalWindows) {
        let Some(latest) = self.latest_ts else { return };
        if let Some(cw) = &w.compare {
            if let Some(i) = current(&self.compare, latest) {
                let keep_from = self.compare[i].end.saturating_sub(cw.size_ms);
                let k = self.compare.partition_point(|s| s.end < keep_from);
                self.compare.drain(..k);
            }
        }
        if w.online.is_some() {
            if let Some(i) = current(&self.online, latest) {
                self.online.drain(..i);
            }
        }
    }

    /// Forgets the rows of windows that no longer feed signals (the configuration changed).
    pub fn clear_windows(&mut self, compare: bool, online: bool) {
        if compare {
            self.compare.clear();
        }
        if online {
            self.online.clear();
        }
        self.dirty = true;
    }

    /// How many window rows are kept (for tests of the bound).
    pub fn rows_kept(&self) -> (usize, usize) {
        (self.compare.len(), self.online.len())
    }
}

#[cfg(test)]
#[path = "signals_tests.rs"]
mod tests;
