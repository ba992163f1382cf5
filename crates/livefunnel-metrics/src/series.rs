//! The alert-signal series: names, help, labels, and one room's values.

/// Which label set a series carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesLabels {
    /// `org_id`, `room_id`, `platform`, `window` = the compare window.
    Compare,
    /// `org_id`, `room_id`, `platform`, `window` = the online window.
    Online,
    /// `org_id`, `room_id`, `platform`.
    Room,
    /// `org_id`, `room_id`, `platform`; a counter (its value is the room's total).
    RoomCounter,
}

/// Every signal series, in the order of [`SignalValues`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Gpm,
    GpmPrevious,
    WatchPv,
    WatchPvPrevious,
    WatchUv,
    WatchUvPrevious,
    WatchToPayRate,
    WatchToPayRatePrevious,
    ProductClickUv,
    ProductClickUvPrevious,
    ClickToPayRate,
    ClickToPayRatePrevious,
    OrdersPaid,
    OrdersPaidPrevious,
    WindowEnd,
    OnlineAvg,
    SessionGpm,
    SessionAge,
    LastReceived,
    GpmDropEvidence,
    SalesStallEvidence,
    OrdersExpectedPerMinute,
    GpmBaseline,
    GpmDropHorizon,
    DropOrdersObserved,
    DropOrdersExpected,
    OnlineEnd,
    OnlineEnd60sAgo,
    OnlineCliffEvidence,
    PooledOrdersObserved,
    PooledOrdersExpected,
}

pub const SERIES_COUNT: usize = 31;

impl Series {
    pub const ALL: [Series; SERIES_COUNT] = [
        Series::Gpm,
        Series::GpmPrevious,
        Series::WatchPv,
        Series::WatchPvPrevious,
        Series::WatchUv,
        Series::WatchUvPrevious,
        Series::WatchToPayRate,
        Series::WatchToPayRatePrevious,
        Series::ProductClickUv,
        Series::ProductClickUvPrevious,
        Series::ClickToPayRate,
        Series::ClickToPayRatePrevious,
        Series::OrdersPaid,
        Series::OrdersPaidPrevious,
        Series::WindowEnd,
        Series::OnlineAvg,
        Series::SessionGpm,
        Series::SessionAge,
        Series::LastReceived,
        Series::GpmDropEvidence,
        Series::SalesStallEvidence,
        Series::OrdersExpectedPerMinute,
        Series::GpmBaseline,
        Series::GpmDropHorizon,
        Series::DropOrdersObserved,
        Series::DropOrdersExpected,
        Series::OnlineEnd,
        Series::OnlineEnd60sAgo,
        Series::OnlineCliffEvidence,
        Series::PooledOrdersObserved,
        Series::PooledOrdersExpected,
    ];

    /// Name, help text and labels of the series.
    pub fn describe(self) -> (&'static str, &'static str, SeriesLabels) {
        SERIES_INFO[self as usize]
    }
}

/// Name, help and labels of each [`Series`], in its order.
const SERIES_INFO: [(&str, &str, SeriesLabels); SERIES_COUNT] = {
    use SeriesLabels::{Compare, Online, Room, RoomCounter};
    [
        ("livefunnel_room_signal_gpm", "gpm of the current closed compare window (NaN: no views)", Compare),
        (
            "livefunnel_room_signal_gpm_previous",
            "gpm of the compare window one size before the current one (NaN: no views or no such window)",
            Compare,
        ),
        ("livefunnel_room_signal_watch_pv", "watch_pv of the current closed compare window", Compare),
        (
            "livefunnel_room_signal_watch_pv_previous",
            "watch_pv of the previous compare window (NaN: no such window)",
            Compare,
        ),
        ("livefunnel_room_signal_watch_uv", "watch_uv of the current closed compare window", Compare),
        (
            "livefunnel_room_signal_watch_uv_previous",
            "watch_uv of the previous compare window (NaN: no such window)",
            Compare,
        ),
        (
            "livefunnel_room_signal_watch_to_pay_rate",
            "buyer_uv / watch_uv of the current closed compare window (NaN: no viewers)",
            Compare,
        ),
        (
            "livefunnel_room_signal_watch_to_pay_rate_previous",
            "watch_to_pay_rate of the previous compare window (NaN: no viewers or no such window)",
            Compare,
        ),
        (
            "livefunnel_room_signal_product_click_uv",
            "product_click_uv of the current closed compare window",
            Compare,
        ),
        (
            "livefunnel_room_signal_product_click_uv_previous",
            "product_click_uv of the previous compare window (NaN: no such window)",
            Compare,
        ),
        (
            "livefunnel_room_signal_click_to_pay_rate",
            "buyer_uv / product_click_uv of the current closed compare window (NaN: no clickers)",
            Compare,
        ),
        (
            "livefunnel_room_signal_click_to_pay_rate_previous",
            "click_to_pay_rate of the previous compare window (NaN: no clickers or no such window)",
            Compare,
        ),
        ("livefunnel_room_signal_orders_paid", "orders_paid of the current closed compare window", Compare),
        (
            "livefunnel_room_signal_orders_paid_previous",
            "orders_paid of the previous compare window (NaN: no such window)",
            Compare,
        ),
        (
            "livefunnel_room_signal_window_end_timestamp_seconds",
            "event-time end of the current closed compare window, unix seconds",
            Compare,
        ),
        (
            "livefunnel_room_signal_online_avg",
            "average viewers online over the current closed online window: watch_seconds / size in seconds",
            Online,
        ),
        (
            "livefunnel_room_session_gpm",
            "gpm of the live session so far, from its latest session row (NaN: no views or no live session)",
            Room,
        ),
        (
            "livefunnel_room_session_age_seconds",
            "event-time seconds from the live session's start to the room's latest ts (NaN: no live session)",
            Room,
        ),
        (
            "livefunnel_room_last_event_received_timestamp_seconds",
            "wall-clock unix seconds at which the pipeline last accepted an event of the room",
            Room,
        ),
        (
            "livefunnel_room_signal_gpm_drop_evidence",
            "GPMDrop's CUSUM of organic paid orders per organic exposure against the room's baseline, nats; \
             fires at livefunnel_detector_threshold{detector=\"gpm_drop\"} (NaN: not armed or no live session)",
            Room,
        ),
        (
            "livefunnel_room_signal_sales_stall_evidence",
            "organic paid orders the baseline expected since the room's last one; fires at \
             livefunnel_detector_threshold{detector=\"sales_stall\"} (NaN: not armed or no live session)",
            Room,
        ),
        (
            "livefunnel_room_signal_orders_expected_per_minute",
            "organic paid orders per minute the baseline expects at the room's recent exposure (NaN: warm-up)",
            Room,
        ),
        (
            "livefunnel_room_signal_gpm_baseline",
            "GPM of the detectors' baseline: organic GMV per thousand organic views, yuan (NaN: nothing learnt)",
            Room,
        ),
        (
            "livefunnel_room_signal_gpm_drop_horizon_seconds",
            "expected event-time seconds for GPMDrop to find a 50 % drop at the room's current volume \
             (+Inf: below the floor, not monitored per room; NaN: no live session)",
            Room,
        ),
        (
            "livefunnel_room_signal_drop_orders_observed",
            "organic paid orders since the GPM-drop evidence last left 0 (NaN: not armed)",
            Room,
        ),
        (
            "livefunnel_room_signal_drop_orders_expected",
            "organic paid orders the baseline expected since the GPM-drop evidence last left 0 (NaN: not armed)",
            Room,
        ),
        (
            "livefunnel_room_signal_online_end",
            "viewers online at the end of the latest closed online-window row (NaN: none)",
            Room,
        ),
        (
            "livefunnel_room_signal_online_end_60s_ago",
            "viewers online 60 s before the end of the latest closed online-window row (NaN: none)",
            Room,
        ),
        (
            "livefunnel_room_signal_online_cliff_evidence",
            "the smaller of (online 60 s ago - online now) / sqrt(online 60 s ago) and the share of viewers \
             gone in 60 s scaled so that livefunnel_detector_threshold{detector=\"online_cliff_fall\"} is the \
             threshold; fires at livefunnel_detector_threshold{detector=\"online_cliff\"} (NaN: not armed)",
            Room,
        ),
        (
            "livefunnel_room_pooled_orders_observed_total",
            "organic paid orders of the room while past its warm-up and below the per-room floor (pooled alerts)",
            RoomCounter,
        ),
        (
            "livefunnel_room_pooled_orders_expected_total",
            "organic paid orders its baseline expected while past its warm-up and below the per-room floor \
             (pooled alerts)",
            RoomCounter,
        ),
    ]
};

/// The value of every series for one room, indexed by [`Series`]; `None`: the series
/// does not exist (yet) for the room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalValues(pub [Option<f64>; SERIES_COUNT]);

impl std::ops::Index<Series> for SignalValues {
    type Output = Option<f64>;
    fn index(&self, s: Series) -> &Option<f64> {
        &self.0[s as usize]
    }
}
