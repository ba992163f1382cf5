//! Per-room series of contract §4.
//!
//! [`RoomMetrics`] holds the registered series, shared by every partition.
//! [`RoomTracker`] is one partition's bookkeeping, one entry per `room_id`: the room's
//! current labels (those of its latest event: when they change, its series move to the
//! new ones), the counter totals (counted by the engine; mirrored here once per room
//! and batch, and saved in the partition's checkpoint), when its session ended (its
//! series go `series_ttl` later, so the series count tracks live rooms, not history),
//! whether it has series (at most `http.max_room_series` rooms of the instance do), and
//! its alert-signal state ([`crate::signals`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use livefunnel_core::{BreakdownKind, Counts, Row, RunningRoom, TouchedRoom};
use serde::{Deserialize, Serialize};

use crate::detection::{self, CheckpointError, MINUTE_WINDOW};
use crate::products::{self, ProductWindow, RoomProducts, TOP_PRODUCTS};
use crate::room_metrics::{RoomGauges, RoomMetrics};
use crate::signals::{RoomSignals, SignalWindows};
use crate::text_family::Value;
use livefunnel_detectors::{DetectorConfig, RoomDetectors};

/// A room's label values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomKey {
    pub org_id: String,
    pub room_id: String,
    pub platform: String,
}

impl RoomKey {
    pub(crate) fn labels(&self) -> [&str; 3] {
        [&self.org_id, &self.room_id, &self.platform]
    }
}

/// The counter values of one room: the engine's [`livefunnel_core::RoomTotals`] as of
/// the room's last touch, kept to render and to save.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterTotals {
    pub watch_entries: u64,
    pub product_clicks: u64,
    pub orders_paid: u64,
    pub gmv_cents: u64,
    pub refund_cents: u64,
    pub comments: u64,
}

impl CounterTotals {
    /// The engine's totals as counter values (money never below zero).
    pub fn of(t: &livefunnel_core::RoomTotals) -> CounterTotals {
        CounterTotals {
            watch_entries: t.watch_entries,
            product_clicks: t.product_clicks,
            orders_paid: t.orders_paid,
            gmv_cents: t.gmv_cents.max(0) as u64,
            refund_cents: t.refund_cents.max(0) as u64,
            comments: t.comments,
        }
    }

    /// The values, in field order (the order of [`RoomMetrics`]' counters).
    pub fn fields(&self) -> [u64; 6] {
        [
            self.watch_entries,
            self.product_clicks,
            self.orders_paid,
            self.gmv_cents,
            self.refund_cents,
            self.comments,
        ]
    }
}

/// One room's bookkeeping inside a partition.
#[derive(Debug, Clone)]
struct Tracked {
    /// The labels its series have (or would have).
    key: RoomKey,
    totals: CounterTotals,
    /// Wall clock (ms) at which the room was first seen not live after being seen;
    /// `None` while live or never observed.
    ended_at_ms: Option<i64>,
    /// Whether it has series in this process (not saved: a new process starts without).
    series: Shown,
    /// Its counter series while shown, in [`CounterTotals`]' order: a touch adds to them
    /// without looking its labels up.
    counters: Option<Box<[Arc<Value>; 6]>>,
    /// Its gauge series while shown, created at the first tick that sets them.
    gauges: RoomGauges,
}

/// Equal content; whether the series are shown is this process's matter.
impl PartialEq for Tracked {
    fn eq(&self, o: &Tracked) -> bool {
        self.key == o.key && self.totals == o.totals && self.ended_at_ms == o.ended_at_ms
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Shown {
    /// Not yet asked for.
    #[default]
    No,
    Yes,
    /// Refused, the cap being reached (counted once); asked again at each sight.
    Refused,
}

impl Tracked {
    fn new(key: RoomKey) -> Tracked {
        Tracked {
            key,
            totals: CounterTotals::default(),
            ended_at_ms: None,
            series: Shown::No,
            counters: None,
            gauges: RoomGauges::default(),
        }
    }

    /// Gives the room its series (its counters at their totals) if the instance has
    /// room for them; `true` when it has them.
    fn show(&mut self, metrics: &RoomMetrics) -> bool {
        match self.series {
            Shown::Yes => return true,
            _ if metrics.admit() => {
                self.series = Shown::Yes;
                self.create_series(metrics);
                return true;
            }
            Shown::No => metrics.dropped(),
            Shown::Refused => {}
        }
        self.series = Shown::Refused;
        false
    }

    /// Removes its series and gives its place back.
    fn hide(&mut self, metrics: &RoomMetrics) {
        if self.series == Shown::Yes {
            metrics.remove(&self.key);
            metrics.release();
        }
        self.series = Shown::No;
        self.counters = None;
        self.gauges = RoomGauges::default();
    }

    /// Creates its counter series at its totals, and keeps them; its gauge series are
    /// found again at the next tick.
    fn create_series(&mut self, metrics: &RoomMetrics) {
        let counters = metrics.counter_series(&self.key);
        for (c, v) in counters.iter().zip(self.totals.fields()) {
            c.inc_by(v as f64);
        }
        self.counters = Some(counters);
        self.gauges = RoomGauges::default();
    }
}

/// One partition's per-room state for the series; serializable into its checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomTracker {
    /// By `room_id`.
    rooms: BTreeMap<String, Tracked>,
    signals: Signals,
    /// By `room_id`: products this session, for the wall (saved after the detectors).
    products: BTreeMap<String, RoomProducts>,
    /// The window whose product rows are summed; `None`: none (configuration).
    product_window: Option<ProductWindow>,
}

/// The alert-signal state of a partition's rooms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Signals {
    /// The windows the rows below belong to.
    windows: SignalWindows,
    /// By `room_id`: rows find their room without building a [`RoomKey`].
    rooms: BTreeMap<String, RoomSignals>,
    /// The alert detectors' parameters; `None`: detectors off (configuration, not state).
    #[serde(skip)]
    detectors: Option<DetectorConfig>,
}

impl Signals {
    fn room_mut(&mut self, room_id: &str) -> &mut RoomSignals {
        room_mut(&mut self.rooms, room_id)
    }
}

/// A room's entry in a per-room map, created empty on first sight.
pub(crate) fn room_mut<'a, T: Default>(rooms: &'a mut BTreeMap<String, T>, room_id: &str) -> &'a mut T {
    // Looked up by `&str` first: the key is allocated once per room, not per row.
    if !rooms.contains_key(room_id) {
        rooms.insert(room_id.to_owned(), T::default());
    }
    rooms.get_mut(room_id).expect("inserted above")
}

/// A room as checkpoints hold it, under its labels (the form of every version).
#[derive(Serialize, Deserialize)]
struct SavedRoom<T> {
    totals: T,
    ended_at_ms: Option<i64>,
}

/// The checkpoint form of [`RoomTracker`] before the detectors, which follow it in a
/// section of their own (`detection::SavedDetectors`). `signals` is last: a checkpoint
/// written before signals existed ends before it (see [`RoomTracker::from_checkpoint`]).
#[derive(Deserialize)]
struct Saved {
    rooms: BTreeMap<RoomKey, SavedRoom<CounterTotals>>,
    signals: Signals,
}

/// The checkpoint form before the signals existed.
#[derive(Deserialize)]
struct SavedV1 {
    rooms: BTreeMap<RoomKey, SavedRoom<CounterTotals>>,
}

/// [`Saved`], written from a tracker without copying it.
#[derive(Serialize)]
struct SavedRef<'a> {
    rooms: RoomsRef<'a>,
    signals: &'a Signals,
    detectors: detection::SavedDetectors<'a>,
}

struct RoomsRef<'a>(&'a BTreeMap<String, Tracked>);

impl Serialize for RoomsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0.values().map(|t| (&t.key, SavedRoom { totals: &t.totals, ended_at_ms: t.ended_at_ms })),
        )
    }
}

impl RoomTracker {
    /// Decodes the tracker saved by [`RoomTracker::to_checkpoint`], or by a version
    /// without detectors or without signals (they start empty then). A decoding error
    /// is permanent; so is detector state of a format this version does not read.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<RoomTracker, CheckpointError> {
        let (rooms, mut signals, rest) = match postcard::take_from_bytes::<Saved>(bytes) {
            Ok((t, rest)) => (t.rooms, t.signals, rest),
            // The old form is a prefix of the new one: it fails only at its end.
            Err(e) => match postcard::from_bytes::<SavedV1>(bytes) {
                Ok(old) => (old.rooms, Signals::default(), &[][..]),
                Err(_) => return Err(e.into()),
            },
        };
        let rest = detection::restore(rest, &mut signals.rooms)?;
        let products = products::restore(rest)?;
        let mut t = RoomTracker { rooms: BTreeMap::new(), signals, products, product_window: None };
        for (key, saved) in rooms {
            t.restore_room(key, saved);
        }
        Ok(t)
    }

    /// A saved room. Versions that kept one entry per label set may have several of
    /// one room: they become one, with the counts of all, live if any is.
    fn restore_room(&mut self, key: RoomKey, saved: SavedRoom<CounterTotals>) {
        let Some(t) = self.rooms.get_mut(&key.room_id) else {
            let mut t = Tracked::new(key.clone());
            t.totals = saved.totals;
            t.ended_at_ms = saved.ended_at_ms;
            self.rooms.insert(key.room_id.clone(), t);
            return;
        };
        let (a, b) = (&mut t.totals, &saved.totals);
        a.watch_entries = a.watch_entries.saturating_add(b.watch_entries);
        a.product_clicks = a.product_clicks.saturating_add(b.product_clicks);
        a.orders_paid = a.orders_paid.saturating_add(b.orders_paid);
        a.gmv_cents = a.gmv_cents.saturating_add(b.gmv_cents);
        a.refund_cents = a.refund_cents.saturating_add(b.refund_cents);
        a.comments = a.comments.saturating_add(b.comments);
        if saved.ended_at_ms.is_none() {
            t.key = key;
        }
        t.ended_at_ms = t.ended_at_ms.zip(saved.ended_at_ms).map(|(x, y)| x.max(y));
    }

    /// The tracker's checkpoint bytes.
    pub fn to_checkpoint(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = postcard::to_stdvec(&SavedRef {
            rooms: RoomsRef(&self.rooms),
            signals: &self.signals,
            detectors: detection::SavedDetectors(&self.signals.rooms),
        })?;
        products::save(&self.products, &mut out)?;
        Ok(out)
    }

    /// Sums the product rows of this window per room and session, for the wall
    /// ([`RoomMetrics::products`]); `None`: off. Sums of another window (a checkpoint
    /// written under another configuration) are dropped.
    pub fn set_product_window(&mut self, w: Option<ProductWindow>) {
        if self.product_window.is_some() && self.product_window != w {
            self.products.clear();
        }
        self.product_window = w;
    }

    /// Turns the alert detectors on with these parameters, or off (`None`). They read
    /// the `1m` window rows with their source breakdowns, and the online window's rows.
    pub fn set_detectors(&mut self, c: Option<DetectorConfig>) {
        self.signals.detectors = c;
    }

    /// A room's detectors, by `room_id`.
    pub fn detectors(&self, room_id: &str) -> Option<&RoomDetectors> {
        self.signals.rooms.get(room_id).map(|r| &r.detect)
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
    /// and the session rows, and with the detectors on, the `1m` window rows and their
    /// paid sources' breakdown rows; every other row is skipped after a name comparison.
    /// Call it with whole batches: a window row and its breakdown rows together.
    pub fn on_rows(&mut self, rows: &[Row]) {
        let Signals { windows, rooms, detectors } = &mut self.signals;
        let (products, product_window) = (&mut self.products, self.product_window.as_ref());
        let compare = windows.compare.as_ref().map(|w| w.name.as_str());
        let online = windows.online.as_ref().map(|w| w.name.as_str());
        let detect = detectors.is_some();
        let mut touched = Vec::new();
        for row in rows {
            match row {
                Row::Window(w) => {
                    let is_compare = compare == Some(&*w.window);
                    let is_online = online == Some(&*w.window);
                    let is_minute = detect && &*w.window == MINUTE_WINDOW;
                    if !is_compare && !is_online && !is_minute {
                        continue;
                    }
                    let room = room_mut(rooms, &w.room_id);
                    if is_compare {
                        room.on_compare_row(w);
                    }
                    if is_online {
                        room.on_online_row(w);
                    }
                    if detect {
                        detection::on_window(room, w, is_minute, is_online, &mut touched);
                    }
                }
                Row::Session(r) => {
                    if product_window.is_some() {
                        room_mut(products, &r.room_id).on_session(r);
                    }
                    let room = room_mut(rooms, &r.room_id);
                    room.on_session_row(r);
                    if detect {
                        detection::on_session(room, r, &mut touched);
                    }
                }
                Row::Breakdown(b) => {
                    if let Some(w) =
                        product_window.filter(|w| b.kind == BreakdownKind::Product && *b.window == *w.name)
                    {
                        room_mut(products, &b.room_id).on_row(b, w);
                    }
                    if detect {
                        detection::on_breakdown(rooms, b, &mut touched);
                    }
                }
            }
        }
        if let Some(c) = detectors {
            detection::settle(rooms, &touched, c);
        }
    }

    /// A room with accepted events since the last call ([`livefunnel_core::Engine::touched`]),
    /// accepted at wall clock `now_ms`: its counters move to the engine's totals. A room
    /// seen for the first time takes the labels of its latest event; later, labels follow
    /// the running values ([`RoomTracker::observe`]).
    pub fn on_touched(&mut self, metrics: &RoomMetrics, r: &TouchedRoom, now_ms: i64) {
        // One map lookup each for a room already known, the common case; looked up by
        // `&str`, so a room's key is built once, not per call.
        match self.signals.rooms.get_mut(&*r.room_id) {
            Some(room) => room.on_accepted(now_ms),
            None => self.signals.room_mut(&r.room_id).on_accepted(now_ms),
        }
        let t = match self.rooms.get_mut(&*r.room_id) {
            Some(t) => t,
            None => {
                let key = RoomKey {
                    org_id: r.identity.org_id.to_string(),
                    room_id: r.room_id.to_string(),
                    platform: r.identity.platform.as_str().to_owned(),
                };
                self.rooms.entry(key.room_id.clone()).or_insert(Tracked::new(key))
            }
        };
        let was = std::mem::replace(&mut t.totals, CounterTotals::of(&r.totals));
        match (&t.series, &t.counters) {
            (Shown::Yes, Some(counters)) => {
                for ((c, now), was) in counters.iter().zip(t.totals.fields()).zip(was.fields()) {
                    // The engine's totals only grow, and totals restored from a version
                    // that counted apart (from the series' start) are never above them:
                    // the guard only keeps a counter from ever going down.
                    if now > was {
                        c.inc_by((now - was) as f64);
                    }
                }
            }
            // Shown with its totals.
            _ => {
                if t.show(metrics) {
                    self.signals.room_mut(&r.room_id).dirty = true;
                }
            }
        }
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

    /// Sets the signal gauges of every room with series whose signals changed since the
    /// last call, and drops the rows they no longer need.
    pub fn publish_signals(&mut self, metrics: &RoomMetrics) {
        let s = &mut self.signals;
        for (room_id, room) in s.rooms.iter_mut() {
            if !room.dirty || self.rooms.get(room_id).is_none_or(|t| t.series != Shown::Yes) {
                continue;
            }
            // Shown once its labels are known (its first running values).
            let Some(key) = room.key.clone() else { continue };
            room.prune(&s.windows);
            let mut values = room.values(&s.windows);
            if let Some(c) = &s.detectors {
                detection::fill(&mut values, &room.detect, c);
            }
            metrics.signals.show(&key, &s.windows, room, &values);
            room.dirty = false;
        }
        for (room_id, p) in self.products.iter_mut().filter(|(_, p)| p.dirty) {
            let Some(t) = self.rooms.get(room_id).filter(|t| t.series == Shown::Yes) else { continue };
            metrics.set_products(&t.key, p.top(TOP_PRODUCTS));
            p.dirty = false;
        }
    }

    /// Sets a room's gauges from its running state: viewers online now, whether a
    /// session is live, and the running counts of each hop or tumble window. `key`
    /// holds the room's labels now: when they changed, its series move to them.
    pub fn observe(
        &mut self,
        metrics: &RoomMetrics,
        key: &RoomKey,
        online: u64,
        live: bool,
        windows: &[(&str, &Counts)],
        now_ms: i64,
    ) {
        if !self.rooms.contains_key(&key.room_id) {
            self.rooms.insert(key.room_id.clone(), Tracked::new(key.clone()));
        }
        let t = self.rooms.get_mut(&key.room_id).expect("inserted above");
        let moved = t.key != *key;
        if moved {
            let shown = t.series == Shown::Yes;
            if shown {
                metrics.remove(&t.key);
            }
            t.key = key.clone();
            if shown {
                t.create_series(metrics);
            }
        }
        t.ended_at_ms = if live { None } else { Some(t.ended_at_ms.unwrap_or(now_ms)) };
        let was_shown = t.series == Shown::Yes;
        if !t.show(metrics) {
            return;
        }
        metrics.set_running(key, &mut t.gauges, online, live, windows);
        if !was_shown || moved {
            self.signals.room_mut(&key.room_id).dirty = true;
            if let Some(p) = self.products.get_mut(&key.room_id) {
                p.dirty = true;
            }
        }
    }

    /// Removes the series of rooms whose session ended `ttl_ms` ago or more.
    /// Returns how many rooms were dropped.
    pub fn expire(&mut self, metrics: &RoomMetrics, now_ms: i64, ttl_ms: i64) -> usize {
        let before = self.rooms.len();
        let signals = &mut self.signals.rooms;
        let products = &mut self.products;
        self.rooms.retain(|room_id, t| {
            let keep = t.ended_at_ms.is_none_or(|e| now_ms.saturating_sub(e) < ttl_ms);
            if !keep {
                t.hide(metrics);
                signals.remove(room_id);
                products.remove(room_id);
            }
            keep
        });
        before - self.rooms.len()
    }

    /// Publishes restored totals and signals (after a restart or a new assignment).
    pub fn publish(&mut self, metrics: &RoomMetrics) {
        for t in self.rooms.values_mut() {
            t.show(metrics);
        }
        for room in self.signals.rooms.values_mut() {
            room.dirty = true;
        }
        for p in self.products.values_mut() {
            p.dirty = true;
        }
        self.publish_signals(metrics);
    }

    /// Removes every series of this partition's rooms and gives their places back
    /// (partition revoked).
    pub fn unpublish(&mut self, metrics: &RoomMetrics) {
        for t in self.rooms.values_mut() {
            t.hide(metrics);
        }
    }

    /// A room's counter totals, when `key` holds its labels now.
    pub fn totals(&self, key: &RoomKey) -> Option<&CounterTotals> {
        self.rooms.get(&key.room_id).filter(|t| t.key == *key).map(|t| &t.totals)
    }

    /// A room's signal state, by `room_id`.
    pub fn signals(&self, room_id: &str) -> Option<&RoomSignals> {
        self.signals.rooms.get(room_id)
    }

    pub fn live_rooms(&self) -> usize {
        self.rooms.values().filter(|t| t.ended_at_ms.is_none()).count()
    }

    /// Rooms by GMV, largest first (for the demo's summary line).
    /// Called on every tick: only the `n` kept are cloned.
    pub fn top_by_gmv(&self, n: usize) -> Vec<(RoomKey, u64)> {
        let order = |a: &(&RoomKey, u64), b: &(&RoomKey, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        let mut top: Vec<(&RoomKey, u64)> = Vec::with_capacity(n.min(self.rooms.len()) + 1);
        for t in self.rooms.values() {
            let c = (&t.key, t.totals.gmv_cents);
            if top.len() == n && top.last().is_none_or(|last| order(&c, last).is_ge()) {
                continue;
            }
            let at = top.partition_point(|x| order(x, &c).is_lt());
            top.insert(at, c);
            top.truncate(n);
        }
        top.into_iter().map(|(k, g)| (k.clone(), g)).collect()
    }
}
