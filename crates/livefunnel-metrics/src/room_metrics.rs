//! The registered per-room series of contract §4, shared by every partition of an
//! instance, and the instance's budget of rooms with series (`http.max_room_series`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use livefunnel_core::Counts;
use prometheus::{IntCounter, IntGauge, Registry};

use crate::products::ProductLine;
use crate::room::RoomKey;
use crate::room_reading::Running;
use crate::signal_series::SignalGauges;
use crate::text_family::{Kind, TextFamily, Value};

const ROOM: &[&str] = &["org_id", "room_id", "platform"];
const ROOM_WINDOW: &[&str] = &["org_id", "room_id", "platform", "window"];

/// A room's labels and its top products, as last published.
type Products = (RoomKey, Arc<[ProductLine]>);

/// A shown room's gauge series, kept by its tracker entry: a tick sets them without
/// looking their labels up. Emptied whenever the room's series are removed.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomGauges {
    /// `livefunnel_room_online_viewers` and `livefunnel_room_live`.
    room: Option<[Arc<Value>; 2]>,
    /// Per window, in the order `set_running` received them: its name and its five
    /// `livefunnel_room_window_*` gauges.
    windows: Vec<(Box<str>, [Arc<Value>; 5])>,
}

/// The default of `http.max_room_series`.
pub const DEFAULT_MAX_ROOMS: usize = 20_000;

/// The room series are [`TextFamily`]s, not registered vectors: `/metrics` renders
/// them after the registry ([`crate::render_all`]), without `gather()`'s copies.
#[derive(Clone)]
pub struct RoomMetrics {
    watch_entries: Arc<TextFamily>,
    product_clicks: Arc<TextFamily>,
    orders_paid: Arc<TextFamily>,
    gmv_cents: Arc<TextFamily>,
    refund_cents: Arc<TextFamily>,
    comments: Arc<TextFamily>,
    online_viewers: Arc<TextFamily>,
    live: Arc<TextFamily>,
    window_watch_uv: Arc<TextFamily>,
    window_gpm: Arc<TextFamily>,
    window_watch_to_pay_rate: Arc<TextFamily>,
    window_product_click_rate: Arc<TextFamily>,
    window_avg_watch_seconds: Arc<TextFamily>,
    pub(crate) signals: SignalGauges,
    /// The configured hop and tumble window names, for removing a room's series.
    pub(crate) windows: Vec<String>,
    /// Rooms with series on this instance, at most `max`.
    budget: Arc<Budget>,
    rooms_with_series: IntGauge,
    series_dropped: IntCounter,
    /// By `room_id`: what [`RoomMetrics::set_running`] last received, for
    /// [`RoomMetrics::read`]; removed with the room's series.
    pub(crate) running: Arc<Mutex<HashMap<String, Running>>>,
    /// By `room_id`: the room's top products this session, for the wall; removed with
    /// the room's series.
    products: Arc<Mutex<HashMap<String, Products>>>,
    /// Bytes the room series took at the last render.
    last_render_len: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl RoomMetrics {
    /// `windows`: the names of the configured hop and tumble windows (`5m/10s`, ...).
    pub fn new(registry: &Registry, windows: Vec<String>) -> Result<RoomMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| Arc::new(TextFamily::new(name, help, Kind::Counter, ROOM));
        let window = |name: &str, help: &str| Arc::new(TextFamily::new(name, help, Kind::Gauge, ROOM_WINDOW));
        let gauge = |name: &str, help: &str| Arc::new(TextFamily::new(name, help, Kind::Gauge, ROOM));
        let m = RoomMetrics {
            watch_entries: counter("livefunnel_room_watch_entries_total", "accepted enter events"),
            product_clicks: counter("livefunnel_room_product_clicks_total", "accepted product_click events"),
            orders_paid: counter("livefunnel_room_orders_paid_total", "accepted order_paid events"),
            gmv_cents: counter(
                "livefunnel_room_gmv_cents_total",
                "amount_cents of accepted order_paid events",
            ),
            refund_cents: counter(
                "livefunnel_room_refund_cents_total",
                "amount_cents of accepted refund events",
            ),
            comments: counter("livefunnel_room_comments_total", "accepted comment events"),
            online_viewers: gauge(
                "livefunnel_room_online_viewers",
                "viewers online at the room's latest event",
            ),
            live: gauge("livefunnel_room_live", "1 while a session is live"),
            window_watch_uv: window("livefunnel_room_window_watch_uv", "watch_uv of the latest open window"),
            window_gpm: window("livefunnel_room_window_gpm", "gpm of the latest open window (NaN: no views)"),
            window_watch_to_pay_rate: window(
                "livefunnel_room_window_watch_to_pay_rate",
                "watch_to_pay_rate of the latest open window (NaN: no viewers)",
            ),
            window_product_click_rate: window(
                "livefunnel_room_window_product_click_rate",
                "product_click_rate of the latest open window (NaN: no viewers)",
            ),
            window_avg_watch_seconds: window(
                "livefunnel_room_window_avg_watch_seconds",
                "avg_watch_seconds of the latest open window (NaN: nobody present)",
            ),
            signals: SignalGauges::new(registry)?,
            windows,
            budget: Arc::new(Budget { used: AtomicUsize::new(0), max: DEFAULT_MAX_ROOMS }),
            rooms_with_series: IntGauge::new(
                "livefunnel_rooms_with_series",
                "rooms whose series this instance exports (at most http.max_room_series)",
            )?,
            series_dropped: IntCounter::new(
                "livefunnel_room_series_dropped_total",
                "rooms left without series because http.max_room_series rooms had theirs",
            )?,
            running: Arc::default(),
            products: Arc::default(),
            last_render_len: Arc::default(),
        };
        registry.register(Box::new(m.rooms_with_series.clone()))?;
        registry.register(Box::new(m.series_dropped.clone()))?;
        Ok(m)
    }

    /// Every room family, and the signal families, in name order.
    fn families(&self) -> Vec<&TextFamily> {
        let mut all: Vec<&TextFamily> = [
            &self.watch_entries,
            &self.product_clicks,
            &self.orders_paid,
            &self.gmv_cents,
            &self.refund_cents,
            &self.comments,
            &self.online_viewers,
            &self.live,
            &self.window_watch_uv,
            &self.window_gpm,
            &self.window_watch_to_pay_rate,
            &self.window_product_click_rate,
            &self.window_avg_watch_seconds,
        ]
        .into_iter()
        .map(|f| &**f)
        .chain(self.signals.families())
        .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Appends the room series in the text format.
    pub fn render_into(&self, out: &mut String) {
        let start = out.len();
        for f in self.families() {
            f.render_into(out);
        }
        self.last_render_len.store(out.len() - start, Ordering::Relaxed);
    }

    /// Bytes the room series took at the last render, 0 before the first.
    pub fn last_render_len(&self) -> usize {
        self.last_render_len.load(Ordering::Relaxed)
    }

    /// Exports the detectors' thresholds and design ratio, which the shipped rules
    /// compare the evidence series with (call once, when the detectors are on).
    pub fn export_detector_config(&self, c: &livefunnel_detectors::DetectorConfig) {
        self.signals.export_config(c);
    }

    /// The detectors' configuration as exported, `None` while the detectors are off:
    /// what the wall compares the evidence series with, as the rules do.
    pub fn detector_config(&self) -> Option<&livefunnel_detectors::DetectorConfig> {
        self.signals.config()
    }

    /// At most `max` rooms with series on this instance (call before sharing).
    pub fn with_max_rooms(mut self, max: usize) -> RoomMetrics {
        debug_assert_eq!(self.budget.used.load(Ordering::Relaxed), 0, "set before any room is shown");
        self.budget = Arc::new(Budget { used: AtomicUsize::new(0), max });
        self
    }

    /// Takes a place for a room's series; `false` when every place is taken.
    pub(crate) fn admit(&self) -> bool {
        let b = &self.budget;
        let taken =
            b.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < b.max).then_some(n + 1));
        if taken.is_ok() {
            self.rooms_with_series.inc();
        }
        taken.is_ok()
    }

    /// Gives a room's place back (its series are removed).
    pub(crate) fn release(&self) {
        let previous = self.budget.used.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(previous > 0, "released more places than taken");
        self.rooms_with_series.dec();
    }

    /// A room refused its series.
    pub(crate) fn dropped(&self) {
        self.series_dropped.inc();
    }

    /// The room's counter series, created at 0 where missing, in the order of
    /// [`CounterTotals`](crate::CounterTotals)' fields: the tracker keeps them and adds
    /// what the engine's totals grew by to them.
    pub(crate) fn counter_series(&self, key: &RoomKey) -> Box<[Arc<Value>; 6]> {
        let l = key.labels();
        Box::new(self.counters().map(|c| c.with_label_values(&l)))
    }

    /// The counter vectors, in the order of [`CounterTotals`](crate::CounterTotals)' fields.
    pub(crate) fn counters(&self) -> [&TextFamily; 6] {
        [
            &*self.watch_entries,
            &*self.product_clicks,
            &*self.orders_paid,
            &*self.gmv_cents,
            &*self.refund_cents,
            &*self.comments,
        ]
    }

    /// Sets a room's gauges: viewers online, live, the running counts of each window.
    /// `gauges` keeps the room's gauge series between calls, so that a tick looks no
    /// labels up; it must be emptied whenever the room's series are removed.
    pub(crate) fn set_running(
        &self,
        key: &RoomKey,
        gauges: &mut RoomGauges,
        online: u64,
        live: bool,
        windows: &[(&str, &Counts)],
    ) {
        self.keep_running(key, online, live, windows);
        let l = key.labels();
        let [online_viewers, is_live] = gauges.room.get_or_insert_with(|| {
            [self.online_viewers.with_label_values(&l), self.live.with_label_values(&l)]
        });
        online_viewers.set(online.min(i64::MAX as u64) as i64 as f64);
        is_live.set(f64::from(u8::from(live)));
        for (i, (name, counts)) in windows.iter().enumerate() {
            if gauges.windows.get(i).is_none_or(|(n, _)| **n != **name) {
                let lw = [l[0], l[1], l[2], name];
                let series = self.window_families().map(|f| f.with_label_values(&lw));
                gauges.windows.truncate(i);
                gauges.windows.push(((*name).into(), series));
            }
            let [watch_uv, gpm, watch_to_pay_rate, product_click_rate, avg_watch_seconds] =
                &gauges.windows[i].1;
            let r = counts.ratios();
            watch_uv.set(counts.watch_uv.min(i64::MAX as u64) as i64 as f64);
            gpm.set(r.gpm.unwrap_or(f64::NAN));
            watch_to_pay_rate.set(r.watch_to_pay_rate.unwrap_or(f64::NAN));
            product_click_rate.set(r.product_click_rate.unwrap_or(f64::NAN));
            avg_watch_seconds.set(r.avg_watch_seconds.unwrap_or(f64::NAN));
        }
    }

    /// The window gauge families, in the order of [`RoomGauges`]' window series.
    fn window_families(&self) -> [&TextFamily; 5] {
        [
            &*self.window_watch_uv,
            &*self.window_gpm,
            &*self.window_watch_to_pay_rate,
            &*self.window_product_click_rate,
            &*self.window_avg_watch_seconds,
        ]
    }

    /// Keeps what `set_running` received, for readers ([`RoomMetrics::read`]); in
    /// place, as it comes every tick.
    fn keep_running(&self, key: &RoomKey, online: u64, live: bool, windows: &[(&str, &Counts)]) {
        let mut running = self.running.lock().expect("poisoned");
        let Some(r) = running.get_mut(&key.room_id) else {
            let windows = windows.iter().map(|(name, c)| ((*name).to_owned(), (*c).clone())).collect();
            running.insert(key.room_id.clone(), Running { key: key.clone(), online, live, windows });
            return;
        };
        if r.key != *key {
            r.key = key.clone();
        }
        r.online = online;
        r.live = live;
        r.windows.truncate(windows.len());
        for (i, (name, counts)) in windows.iter().enumerate() {
            match r.windows.get_mut(i) {
                Some((n, c)) => {
                    if n != name {
                        *n = (*name).to_owned();
                    }
                    c.clone_from(counts);
                }
                None => r.windows.push(((*name).to_owned(), (*counts).clone())),
            }
        }
    }

    /// Sets a room's top products this session (largest GMV first).
    pub(crate) fn set_products(&self, key: &RoomKey, top: Vec<ProductLine>) {
        let mut products = self.products.lock().expect("poisoned");
        products.insert(key.room_id.clone(), (key.clone(), top.into()));
    }

    /// A room's top products this session, largest GMV first (at most
    /// [`crate::TOP_PRODUCTS`]); `None` when none are known for it (no product rows yet,
    /// or no tumbling window with breakdowns configured).
    pub fn products(&self, room_id: &str) -> Option<Arc<[ProductLine]>> {
        self.products.lock().expect("poisoned").get(room_id).map(|(_, p)| p.clone())
    }

    pub(crate) fn remove(&self, key: &RoomKey) {
        {
            let mut products = self.products.lock().expect("poisoned");
            if products.get(&key.room_id).is_some_and(|(k, _)| k == key) {
                products.remove(&key.room_id);
            }
        }
        {
            let mut running = self.running.lock().expect("poisoned");
            if running.get(&key.room_id).is_some_and(|r| r.key == *key) {
                running.remove(&key.room_id);
            }
        }
        let l = key.labels();
        for c in self.counters() {
            let _ = c.remove_label_values(&l);
        }
        let _ = self.online_viewers.remove_label_values(&l);
        let _ = self.live.remove_label_values(&l);
        for w in &self.windows {
            let lw = [l[0], l[1], l[2], w.as_str()];
            for g in self.window_families() {
                let _ = g.remove_label_values(&lw);
            }
        }
        self.signals.remove(key, &self.windows);
    }
}
