//! Per-room series of contract §4.
//!
//! [`RoomMetrics`] holds the registered series, shared by every partition.
//! [`RoomTracker`] is one partition's bookkeeping: the counter totals (saved in the
//! partition's checkpoint, so counters continue across restarts), and when each room's
//! session ended (its series go `series_ttl` later, so the series count tracks live
//! rooms, not history), and each room's alert-signal state ([`crate::signals`]).

use std::collections::BTreeMap;

use livefunnel_core::{Counts, Event, EventType, Row, RunningRoom};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::signal_series::SignalGauges;
use crate::signals::{RoomSignals, SignalWindows};

const ROOM: &[&str] = &["org_id", "room_id", "platform"];
const ROOM_WINDOW: &[&str] = &["org_id", "room_id", "platform", "window"];

/// A room's label values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomKey {
    pub org_id: String,
    pub room_id: String,
    pub platform: String,
}

impl RoomKey {
    fn labels(&self) -> [&str; 3] {
        [&self.org_id, &self.room_id, &self.platform]
    }
}

/// The counter values of one room since its series appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTotals {
    pub watch_entries: u64,
    pub product_clicks: u64,
    pub orders_paid: u64,
    pub gmv_cents: u64,
    pub refund_cents: u64,
    pub comments: u64,
}

#[derive(Clone)]
pub struct RoomMetrics {
    watch_entries: IntCounterVec,
    product_clicks: IntCounterVec,
    orders_paid: IntCounterVec,
    gmv_cents: IntCounterVec,
    refund_cents: IntCounterVec,
    comments: IntCounterVec,
    online_viewers: IntGaugeVec,
    live: IntGaugeVec,
    window_watch_uv: IntGaugeVec,
    window_gpm: GaugeVec,
    window_watch_to_pay_rate: GaugeVec,
    window_product_click_rate: GaugeVec,
    window_avg_watch_seconds: GaugeVec,
    signals: SignalGauges,
    /// The configured hop and tumble window names, for removing a room's series.
    windows: Vec<String>,
}

impl RoomMetrics {
    /// `windows`: the names of the configured hop and tumble windows (`5m/10s`, ...).
    pub fn new(registry: &Registry, windows: Vec<String>) -> Result<RoomMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), ROOM);
        let window = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), ROOM_WINDOW);
        let m = RoomMetrics {
            watch_entries: counter("livefunnel_room_watch_entries_total", "accepted enter events")?,
            product_clicks: counter("livefunnel_room_product_clicks_total", "accepted product_click events")?,
            orders_paid: counter("livefunnel_room_orders_paid_total", "accepted order_paid events")?,
            gmv_cents: counter(
                "livefunnel_room_gmv_cents_total",
                "amount_cents of accepted order_paid events",
            )?,
            refund_cents: counter(
                "livefunnel_room_refund_cents_total",
                "amount_cents of accepted refund events",
            )?,
            comments: counter("livefunnel_room_comments_total", "accepted comment events")?,
            online_viewers: IntGaugeVec::new(
                Opts::new("livefunnel_room_online_viewers", "viewers online at the room's latest event"),
                ROOM,
            )?,
            live: IntGaugeVec::new(Opts::new("livefunnel_room_live", "1 while a session is live"), ROOM)?,
            window_watch_uv: IntGaugeVec::new(
                Opts::new("livefunnel_room_window_watch_uv", "watch_uv of the latest open window"),
                ROOM_WINDOW,
            )?,
            window_gpm: window(
                "livefunnel_room_window_gpm",
                "gpm of the latest open window (NaN: no views)",
            )?,
            window_watch_to_pay_rate: window(
                "livefunnel_room_window_watch_to_pay_rate",
                "watch_to_pay_rate of the latest open window (NaN: no viewers)",
            )?,
            window_product_click_rate: window(
                "livefunnel_room_window_product_click_rate",
                "product_click_rate of the latest open window (NaN: no viewers)",
            )?,
            window_avg_watch_seconds: window(
                "livefunnel_room_window_avg_watch_seconds",
                "avg_watch_seconds of the latest open window (NaN: nobody present)",
            )?,
            signals: SignalGauges::new(registry)?,
            windows,
        };
        for c in
            [&m.watch_entries, &m.product_clicks, &m.orders_paid, &m.gmv_cents, &m.refund_cents, &m.comments]
        {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.online_viewers.clone()))?;
        registry.register(Box::new(m.live.clone()))?;
        registry.register(Box::new(m.window_watch_uv.clone()))?;
        for g in [
            &m.window_gpm,
            &m.window_watch_to_pay_rate,
            &m.window_product_click_rate,
            &m.window_avg_watch_seconds,
        ] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(m)
    }

    /// Adds `d` to the room's counters. `touch_all` creates every counter of the room
    /// (at 0 where `d` is 0), so `increase()` sees each series start; once they
    /// exist, only the counters that move are looked up (six label hashes per event
    /// otherwise).
    fn add(&self, key: &RoomKey, d: &RoomTotals, touch_all: bool) {
        let l = key.labels();
        let pairs = [
            (&self.watch_entries, d.watch_entries),
            (&self.product_clicks, d.product_clicks),
            (&self.orders_paid, d.orders_paid),
            (&self.gmv_cents, d.gmv_cents),
            (&self.refund_cents, d.refund_cents),
            (&self.comments, d.comments),
        ];
        for (c, v) in pairs {
            if touch_all || v > 0 {
                c.with_label_values(&l).inc_by(v);
            }
        }
    }

    fn remove(&self, key: &RoomKey) {
        let l = key.labels();
        for c in [
            &self.watch_entries,
            &self.product_clicks,
            &self.orders_paid,
            &self.gmv_cents,
            &self.refund_cents,
            &self.comments,
        ] {
            let _ = c.remove_label_values(&l);
        }
        let _ = self.online_viewers.remove_label_values(&l);
        let _ = self.live.remove_label_values(&l);
        for w in &self.windows {
            let lw = [l[0], l[1], l[2], w.as_str()];
            let _ = self.window_watch_uv.remove_label_values(&lw);
            for g in [
                &self.window_gpm,
                &self.window_watch_to_pay_rate,
                &self.window_product_click_rate,
                &self.window_avg_watch_seconds,
            ] {
                let _ = g.remove_label_values(&lw);
            }
        }
        self.signals.remove(key, &self.windows);
    }
}

/// One room's bookkeeping inside a partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tracked {
    totals: RoomTotals,
    /// Wall clock (ms) at which the room was first seen not live after being seen;
    /// `None` while live or never observed.
    ended_at_ms: Option<i64>,
}

/// One partition's per-room state for the series; serializable into its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomTracker {
    rooms: BTreeMap<RoomKey, Tracked>,
    /// Last in the encoding: a checkpoint written before signals existed ends before it
    /// (see [`RoomTracker::from_checkpoint`]).
    signals: Signals,
}

/// The alert-signal state of a partition's rooms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Signals {
    /// The windows the rows below belong to.
    windows: SignalWindows,
    /// By `room_id`: rows find their room without building a [`RoomKey`].
    rooms: BTreeMap<String, RoomSignals>,
}

impl Signals {
    fn room_mut(&mut self, room_id: &str) -> &mut RoomSignals {
        room_mut(&mut self.rooms, room_id)
    }
}

fn room_mut<'a>(rooms: &'a mut BTreeMap<String, RoomSignals>, room_id: &str) -> &'a mut RoomSignals {
    // Looked up by `&str` first: the key is allocated once per room, not per row.
    if !rooms.contains_key(room_id) {
        rooms.insert(room_id.to_owned(), RoomSignals::default());
    }
    rooms.get_mut(room_id).expect("inserted above")
}

/// The checkpoint form of [`RoomTracker`] before the signals existed.
#[derive(Deserialize)]
struct RoomTrackerV1 {
    rooms: BTreeMap<RoomKey, Tracked>,
}

impl RoomTracker {
    /// Decodes the tracker saved by [`RoomTracker::to_checkpoint`], or by a version
    /// without signals (they start empty then). A decoding error is permanent.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<RoomTracker, postcard::Error> {
        match postcard::from_bytes::<RoomTracker>(bytes) {
            Ok(t) => Ok(t),
            // The old form is a prefix of the new one: it fails only at its end.
            Err(e) => match postcard::from_bytes::<RoomTrackerV1>(bytes) {
                Ok(old) => Ok(RoomTracker { rooms: old.rooms, signals: Signals::default() }),
                Err(_) => Err(e),
            },
        }
    }

    /// The tracker's checkpoint bytes.
    pub fn to_checkpoint(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Sets which windows feed the signals. Rows kept for another window (a
    /// checkpoint written under another configuration) are dropped.
    pub fn set_signal_windows(&mut self, w: SignalWindows) {
        let s = &mut self.signals;
        let (compare, online) = (s.windows.compare != w.compare, s.windows.online != w.online);
        if compare || online {
            for r in s.rooms.values_mut() {
                r.clear_windows(compare, online);
            }
        }
        s.windows = w;
    }

    /// Feeds the signals with emitted rows: the window rows of the two signal windows
    /// and the session rows; every other row is skipped after a name comparison.
    pub fn on_rows(&mut self, rows: &[Row]) {
        let Signals { windows, rooms } = &mut self.signals;
        let compare = windows.compare.as_ref().map(|w| w.name.as_str());
        let online = windows.online.as_ref().map(|w| w.name.as_str());
        for row in rows {
            match row {
                Row::Window(w) => {
                    let is_compare = compare == Some(&*w.window);
                    let is_online = online == Some(&*w.window);
                    if !is_compare && !is_online {
                        continue;
                    }
                    let room = room_mut(rooms, &w.room_id);
                    if is_compare {
                        room.on_compare_row(w);
                    }
                    if is_online {
                        room.on_online_row(w);
                    }
                }
                Row::Session(r) => room_mut(rooms, &r.room_id).on_session_row(r),
                Row::Breakdown(_) => {}
            }
        }
    }

    /// Counts an accepted event in its room's counters; `now_ms` is the wall clock at
    /// which the pipeline accepted it.
    pub fn on_accepted(&mut self, metrics: &RoomMetrics, ev: &Event<'_>, now_ms: i64) {
        self.signals.room_mut(&ev.room_id).on_accepted(now_ms);
        let mut d = RoomTotals::default();
        match ev.kind {
            EventType::Enter => d.watch_entries = 1,
            EventType::ProductClick => d.product_clicks = 1,
            EventType::OrderPaid => {
                d.orders_paid = 1;
                d.gmv_cents = ev.amount_cents().max(0) as u64;
            }
            EventType::Refund => d.refund_cents = ev.amount_cents().max(0) as u64,
            EventType::Comment => d.comments = 1,
            _ => {}
        }
        let key = RoomKey {
            org_id: ev.org_id().to_owned(),
            room_id: ev.room_id.to_string(),
            platform: ev.platform().as_str().to_owned(),
        };
        let t = match self.rooms.get_mut(&key) {
            Some(t) => t,
            None => self.rooms.entry(key.clone()).or_default(),
        };
        // Counters are created (at 0) until the room has counted something; a room
        // seen only through its running values has none yet either.
        let touch_all = t.totals == RoomTotals::default();
        let tt = &mut t.totals;
        tt.watch_entries += d.watch_entries;
        tt.product_clicks += d.product_clicks;
        tt.orders_paid += d.orders_paid;
        tt.gmv_cents = tt.gmv_cents.saturating_add(d.gmv_cents);
        tt.refund_cents = tt.refund_cents.saturating_add(d.refund_cents);
        tt.comments += d.comments;
        metrics.add(&key, &d, touch_all);
    }

    /// Sets a room's gauges from its running values, and hands them to its signals.
    pub fn observe_running(&mut self, metrics: &RoomMetrics, r: &RunningRoom, now_ms: i64) {
        let key = RoomKey {
            org_id: r.identity.org_id.to_string(),
            room_id: r.room_id.to_string(),
            platform: r.identity.platform.as_str().to_owned(),
        };
        let windows: Vec<(&str, &Counts)> = r.windows.iter().map(|w| (&*w.window, &w.counts)).collect();
        self.observe(metrics, &key, r.online, r.live, &windows, now_ms);
        let room = self.signals.room_mut(&r.room_id);
        room.observe(r.latest_ts, r.live);
        if room.key.as_ref() != Some(&key) {
            // New labels (or a first sight): the series move to them.
            if let Some(old) = room.key.take() {
                metrics.signals.remove(&old, &metrics.windows);
            }
            room.shown = Default::default();
            room.key = Some(key);
            room.dirty = true;
        }
    }

    /// Sets the signal gauges of every room whose signals changed since the last call,
    /// and drops the rows they no longer need.
    pub fn publish_signals(&mut self, metrics: &RoomMetrics) {
        let s = &mut self.signals;
        for room in s.rooms.values_mut() {
            if !room.dirty {
                continue;
            }
            // Shown once its labels are known (its first running values).
            let Some(key) = room.key.clone() else { continue };
            room.prune(&s.windows);
            let values = room.values(&s.windows);
            metrics.signals.show(&key, &s.windows, room, &values);
            room.dirty = false;
        }
    }

    /// Sets a room's gauges from its running state: viewers online now, whether a
    /// session is live, and the running counts of each hop or tumble window.
    pub fn observe(
        &mut self,
        metrics: &RoomMetrics,
        key: &RoomKey,
        online: u64,
        live: bool,
        windows: &[(&str, &Counts)],
        now_ms: i64,
    ) {
        let t = self.rooms.entry(key.clone()).or_default();
        t.ended_at_ms = if live { None } else { Some(t.ended_at_ms.unwrap_or(now_ms)) };
        let l = key.labels();
        metrics.online_viewers.with_label_values(&l).set(online.min(i64::MAX as u64) as i64);
        metrics.live.with_label_values(&l).set(i64::from(live));
        for (name, counts) in windows {
            let lw = [l[0], l[1], l[2], name];
            let r = counts.ratios();
            metrics.window_watch_uv.with_label_values(&lw).set(counts.watch_uv.min(i64::MAX as u64) as i64);
            metrics.window_gpm.with_label_values(&lw).set(r.gpm.unwrap_or(f64::NAN));
            metrics
                .window_watch_to_pay_rate
                .with_label_values(&lw)
                .set(r.watch_to_pay_rate.unwrap_or(f64::NAN));
            metrics
                .window_product_click_rate
                .with_label_values(&lw)
                .set(r.product_click_rate.unwrap_or(f64::NAN));
            metrics
                .window_avg_watch_seconds
                .with_label_values(&lw)
                .set(r.avg_watch_seconds.unwrap_or(f64::NAN));
        }
    }

    /// Removes the series of rooms whose session ended `ttl_ms` ago or more.
    /// Returns how many rooms were dropped.
    pub fn expire(&mut self, metrics: &RoomMetrics, now_ms: i64, ttl_ms: i64) -> usize {
        let before = self.rooms.len();
        let signals = &mut self.signals.rooms;
        self.rooms.retain(|key, t| {
            let keep = t.ended_at_ms.is_none_or(|e| now_ms.saturating_sub(e) < ttl_ms);
            if !keep {
                metrics.remove(key);
                if signals.get(&key.room_id).is_some_and(|s| s.key.as_ref().is_none_or(|k| k == key)) {
                    signals.remove(&key.room_id);
                }
            }
            keep
        });
        before - self.rooms.len()
    }

    /// Publishes restored totals and signals (after a restart or a new assignment).
    pub fn publish(&mut self, metrics: &RoomMetrics) {
        for (key, t) in &self.rooms {
            metrics.add(key, &t.totals, true);
        }
        for room in self.signals.rooms.values_mut() {
            room.dirty = true;
        }
        self.publish_signals(metrics);
    }

    /// Removes every series of this partition's rooms (partition revoked).
    pub fn unpublish(&self, metrics: &RoomMetrics) {
        for key in self.rooms.keys() {
            metrics.remove(key);
        }
    }

    pub fn totals(&self, key: &RoomKey) -> Option<&RoomTotals> {
        self.rooms.get(key).map(|t| &t.totals)
    }

    /// A room's signal state, by `room_id`.
    pub fn signals(&self, room_id: &str) -> Option<&RoomSignals> {
        self.signals.rooms.get(room_id)
    }

    pub fn live_rooms(&self) -> usize {
        self.rooms.values().filter(|t| t.ended_at_ms.is_none()).count()
    }

    /// Rooms by GMV, largest first (for the demo's summary line).
    pub fn top_by_gmv(&self, n: usize) -> Vec<(RoomKey, u64)> {
        let mut v: Vec<_> = self.rooms.iter().map(|(k, t)| (k.clone(), t.totals.gmv_cents)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}
