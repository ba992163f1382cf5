//! The wall's view of every room, rebuilt once a second from the room series as
//! `/metrics` shows them ([`RoomMetrics::read`]) and the room directory: one
//! [`Snapshot`] that every page, API call and event stream reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livefunnel_core::Counts;
use livefunnel_metrics::signals::Series;
use livefunnel_metrics::{
    CounterTotals, DetectorConfig, RoomInfo, RoomInfoMetrics, RoomMetrics, RoomReading,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::alerts::{Firing, Inputs, RoomAlerts};
use super::directory;
use super::history::{History, Sample};

/// The wall shows this window's running GPM and watch→pay when it is configured.
pub const WALL_WINDOW: &str = "5m/10s";
/// Above this ratio to its baseline a trend points up; below its inverse, down.
const TREND_BAND: f64 = 1.1;
/// A rebuild slower than this stretches the interval, so a very large instance spends
/// at most about a tenth of a core on its wall.
const SLOW_BUILD: Duration = Duration::from_millis(100);

/// Up, down or flat against a baseline; `none` when either is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    pub ratio: Option<f64>,
    pub dir: &'static str,
}

impl Trend {
    fn of(now: f64, baseline: f64) -> Trend {
        let r = now / baseline;
        if !r.is_finite() {
            return Trend { ratio: None, dir: "none" };
        }
        let dir = if r >= TREND_BAND {
            "up"
        } else if r <= 1.0 / TREND_BAND {
            "down"
        } else {
            "flat"
        };
        Trend { ratio: Some(r), dir }
    }
}

/// One tile of the wall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomView {
    pub room_id: String,
    pub org_id: String,
    pub platform: String,
    /// From the room directory; empty when the room has no entry.
    pub name: String,
    pub anchor: String,
    pub brand: String,
    pub account: String,
    pub live: bool,
    pub online: u64,
    /// `livefunnel_room_gmv_cents_total`: this broadcast's GMV (and an earlier one's
    /// that ended less than `http.series_ttl` before it).
    pub gmv_cents: u64,
    pub gmv_target_cents: Option<i64>,
    /// `gmv_cents / gmv_target_cents`.
    pub pacing: Option<f64>,
    /// The window of `gpm` and `watch_to_pay` (`5m/10s` by default).
    pub window: String,
    pub gpm: Option<f64>,
    pub watch_to_pay: Option<f64>,
    /// GPM of the latest closed compare window against the session's GPM.
    pub gpm_trend: Trend,
    /// Online now against the average of the latest closed online window.
    pub online_trend: Trend,
    pub session_age_s: Option<f64>,
    /// Online viewers, last 30 minutes of the session, per 30 s.
    pub spark: Vec<Option<u32>>,
    pub alerts: Vec<Firing>,
}

/// The room page's numbers beyond its tile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomDetail {
    pub funnel: Option<Funnel>,
    pub sources: Option<Sources>,
    /// The room's counters (`livefunnel_room_*_total`).
    pub totals: CounterTotals,
    /// Wall clock of the room's latest accepted event, unix seconds.
    pub last_event_received_s: Option<f64>,
    /// The alert detectors' values against their thresholds; `None`: detectors off.
    pub detectors: Option<Detectors>,
    /// The products selling most this session, by GMV; `None`: not known (no
    /// product rows yet, or no tumbling window with breakdowns configured).
    pub top_products: Option<Vec<Product>>,
}

/// One product's sums this session, from the engine's product breakdown rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    /// As the events name it; `__other__`: the products beyond `limits.max_breakdown_keys`.
    pub product_id: String,
    pub gmv_cents: i64,
    pub orders_paid: u64,
    pub items_sold: i64,
    pub product_clicks: u64,
}

/// The detectors' evidence as the rules compare it (`null`: not armed), and what
/// the room's volume allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detectors {
    pub gpm_drop_evidence: Option<f64>,
    pub gpm_drop_threshold: f64,
    /// Expected seconds to detect a 50 % drop at the room's volume; `null`: the room
    /// is below the floor and not monitored for GPM drops.
    pub gpm_drop_horizon_s: Option<f64>,
    pub sales_stall_evidence: Option<f64>,
    pub sales_stall_threshold: f64,
    pub online_cliff_evidence: Option<f64>,
    pub online_cliff_threshold: f64,
    /// GMV per 1,000 organic views the room's baseline expects, fen.
    pub gpm_baseline: Option<f64>,
    pub orders_expected_per_minute: Option<f64>,
}

impl Detectors {
    fn of(s: &livefunnel_metrics::signals::SignalValues, d: &DetectorConfig) -> Detectors {
        let finite = |x: Series| s[x].filter(|v| v.is_finite());
        Detectors {
            gpm_drop_evidence: finite(Series::GpmDropEvidence),
            gpm_drop_threshold: d.gpm_drop_threshold,
            gpm_drop_horizon_s: finite(Series::GpmDropHorizon),
            sales_stall_evidence: finite(Series::SalesStallEvidence),
            sales_stall_threshold: d.sales_stall_threshold,
            online_cliff_evidence: finite(Series::OnlineCliffEvidence),
            online_cliff_threshold: d.cliff_threshold,
            gpm_baseline: finite(Series::GpmBaseline),
            orders_expected_per_minute: finite(Series::OrdersExpectedPerMinute),
        }
    }
}

/// Impressions → entries → clicks → orders over one running window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    pub window: String,
    pub room_impressions: u64,
    pub watch_pv: u64,
    pub product_clicks: u64,
    pub orders_paid: u64,
    pub watch_uv: u64,
    pub product_click_uv: u64,
    pub buyer_uv: u64,
    pub gmv_cents: i64,
}

/// Viewers and GMV by source class over the funnel's window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sources {
    pub watch_uv_private: u64,
    pub watch_uv_public: u64,
    pub watch_uv_paid: u64,
    pub gmv_cents_private: i64,
    pub gmv_cents_public: i64,
    pub gmv_cents_paid: i64,
    /// 公域撬动比: (public + paid) / private viewers.
    pub public_private_ratio: Option<f64>,
}

/// Every room at one instant, in wall order: rooms in alert first, then by GMV.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Rises by one per rebuild.
    pub seq: u64,
    /// Wall clock, unix milliseconds.
    pub at_ms: i64,
    pub rooms: Vec<RoomView>,
    /// By `room_id`, for the room pages.
    pub details: HashMap<String, (RoomDetail, Vec<Sample>)>,
    /// The room directory's latest reading error, if any.
    pub directory_error: Option<String>,
    /// How long reading the series and building this took, milliseconds.
    pub build_ms: f64,
}

impl Snapshot {
    pub fn room(&self, room_id: &str) -> Option<&RoomView> {
        self.rooms.iter().find(|r| r.room_id == room_id)
    }
}

/// The per-room state kept between rebuilds.
#[derive(Default)]
struct Kept {
    history: History,
    alerts: RoomAlerts,
}

pub struct Builder {
    rooms: RoomMetrics,
    info: RoomInfoMetrics,
    directory: Option<directory::Shared>,
    kept: HashMap<String, Kept>,
    seq: u64,
}

impl Builder {
    pub fn new(rooms: RoomMetrics, info: RoomInfoMetrics, directory: Option<directory::Shared>) -> Builder {
        Builder { rooms, info, directory, kept: HashMap::new(), seq: 0 }
    }

    /// Reads the series and builds the next snapshot; `now_ms` is the wall clock.
    pub fn build(&mut self, now_ms: i64) -> Snapshot {
        let readings = self.rooms.read();
        let empty = HashMap::new();
        let dir = self.directory.as_ref().map(|d| d.read().expect("poisoned"));
        let entries = dir.as_ref().map_or(&empty, |d| &d.entries);
        let directory_error = dir.as_ref().and_then(|d| d.error.clone());
        let no_info = RoomInfo::default();
        let mut views = Vec::with_capacity(readings.len());
        let mut details = HashMap::with_capacity(readings.len());
        for r in &readings {
            let info = entries.get(&r.key.room_id).unwrap_or(&no_info);
            let kept = self.kept.entry(r.key.room_id.clone()).or_default();
            let (view, mut detail) = view(r, info, kept, self.rooms.detector_config(), now_ms);
            detail.top_products = self.rooms.products(&r.key.room_id).map(|p| products(&p));
            details.insert(r.key.room_id.clone(), (detail, kept.history.session(240)));
            views.push(view);
        }
        self.info.sync(readings.iter().filter_map(|r| entries.get(&r.key.room_id).map(|i| (&r.key, i))));
        drop(dir);
        self.kept.retain(|id, _| details.contains_key(id));
        views.sort_by(|a, b| {
            // `false` (in alert) sorts first.
            a.alerts
                .is_empty()
                .cmp(&b.alerts.is_empty())
                .then(b.gmv_cents.cmp(&a.gmv_cents))
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        self.seq += 1;
        Snapshot { seq: self.seq, at_ms: now_ms, rooms: views, details, directory_error, build_ms: 0.0 }
    }
}

fn products(top: &[livefunnel_metrics::ProductLine]) -> Vec<Product> {
    top.iter()
        .map(|p| Product {
            product_id: p.product_id.clone(),
            gmv_cents: p.counts.gmv_cents,
            orders_paid: p.counts.orders_paid,
            items_sold: p.counts.items_sold,
            product_clicks: p.counts.product_clicks,
        })
        .collect()
}

fn window<'a>(r: &'a RoomReading, name: &str) -> Option<&'a Counts> {
    r.windows.iter().find(|(n, _)| n == name).map(|(_, c)| c)
}

/// The wall's window: `5m/10s` when configured, else the room's first window.
fn wall_window(r: &RoomReading) -> Option<(&str, &Counts)> {
    window(r, WALL_WINDOW)
        .map(|c| (WALL_WINDOW, c))
        .or_else(|| r.windows.first().map(|(n, c)| (n.as_str(), c)))
}

fn view(
    r: &RoomReading,
    info: &RoomInfo,
    kept: &mut Kept,
    detectors: Option<&DetectorConfig>,
    now_ms: i64,
) -> (RoomView, RoomDetail) {
    let s = &r.signals;
    let get = |x: Series| s[x].unwrap_or(f64::NAN);
    let ratios = wall_window(r).map(|(_, c)| c.ratios());
    let gpm = ratios.and_then(|x| x.gpm);
    let watch_to_pay = ratios.and_then(|x| x.watch_to_pay_rate);
    let age = s[Series::SessionAge].filter(|a| a.is_finite());
    kept.history.record(age, r.online, gpm, watch_to_pay);
    let alerts =
        kept.alerts.update(&Inputs { signals: s, live: r.live, now_s: now_ms as f64 / 1000.0, detectors });
    let gmv = r.totals.gmv_cents;
    let view = RoomView {
        room_id: r.key.room_id.clone(),
        org_id: r.key.org_id.clone(),
        platform: r.key.platform.clone(),
        name: info.name.clone(),
        anchor: info.anchor.clone(),
        brand: info.brand.clone(),
        account: info.account.clone(),
        live: r.live,
        online: r.online,
        gmv_cents: gmv,
        gmv_target_cents: info.gmv_target_cents,
        pacing: info.gmv_target_cents.filter(|t| *t > 0).map(|t| gmv as f64 / t as f64),
        window: wall_window(r).map_or_else(String::new, |(n, _)| n.to_owned()),
        gpm,
        watch_to_pay,
        gpm_trend: Trend::of(get(Series::Gpm), get(Series::SessionGpm)),
        online_trend: Trend::of(r.online as f64, get(Series::OnlineAvg)),
        session_age_s: age,
        spark: kept.history.spark(),
        alerts,
    };
    // The funnel's window: the longest configured one (10m/1m by default).
    let longest = r.windows.iter().max_by_key(|(n, _)| window_size_ms(n)).map(|(n, c)| (n.clone(), c));
    let detail = RoomDetail {
        funnel: longest.as_ref().map(|(n, c)| Funnel {
            window: n.clone(),
            room_impressions: c.room_impressions,
            watch_pv: c.watch_pv,
            product_clicks: c.product_clicks,
            orders_paid: c.orders_paid,
            watch_uv: c.watch_uv,
            product_click_uv: c.product_click_uv,
            buyer_uv: c.buyer_uv,
            gmv_cents: c.gmv_cents,
        }),
        sources: longest.as_ref().map(|(_, c)| Sources {
            watch_uv_private: c.watch_uv_private,
            watch_uv_public: c.watch_uv_public,
            watch_uv_paid: c.watch_uv_paid,
            gmv_cents_private: c.gmv_cents_private,
            gmv_cents_public: c.gmv_cents_public,
            gmv_cents_paid: c.gmv_cents_paid,
            public_private_ratio: c.ratios().public_private_ratio,
        }),
        totals: r.totals.clone(),
        last_event_received_s: s[Series::LastReceived],
        detectors: detectors.map(|d| Detectors::of(s, d)),
        top_products: None,
    };
    (view, detail)
}

fn window_size_ms(name: &str) -> i64 {
    match livefunnel_core::WindowSpec::parse(name) {
        Ok(livefunnel_core::WindowSpec::Hop { size_ms, .. }) => size_ms,
        _ => 0,
    }
}

/// Rebuilds the snapshot every second (longer when a rebuild is slow) until `stop`;
/// dropping the sender then ends every event stream.
pub fn run(mut builder: Builder, stop: CancellationToken) -> watch::Receiver<Arc<Snapshot>> {
    let timed = |b: &mut Builder| {
        let started = Instant::now();
        let mut snap = b.build(crate::now_ms());
        snap.build_ms = started.elapsed().as_secs_f64() * 1000.0;
        snap
    };
    let (tx, rx) = watch::channel(Arc::new(timed(&mut builder)));
    tokio::spawn(async move {
        let mut every = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let snap = timed(&mut builder);
            let took = Duration::from_secs_f64(snap.build_ms / 1000.0);
            every = if took > SLOW_BUILD { took * 10 } else { Duration::from_secs(1) };
            if took > SLOW_BUILD {
                tracing::debug!(
                    rooms = snap.rooms.len(),
                    took_ms = took.as_millis() as u64,
                    "slow wall rebuild"
                );
            }
            let _ = tx.send(Arc::new(snap));
        }
    });
    rx
}
