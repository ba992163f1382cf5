//! The detectors inside the tracker: which rows feed them, their series, their
//! checkpoint section.

use livefunnel_core::{BreakdownCounts, BreakdownKind, BreakdownRow, Counts, Row, SessionRow};
use prometheus::Registry;

use crate::tests::identity;
use crate::*;

const MIN: i64 = 60_000;
const START: i64 = 1_767_225_600_000;
const ROOM: &str = r#"{org_id="o",platform="douyin",room_id="r"}"#;

/// Minute `m` of the session: its `1m` row (100 viewers present, 12 enters, `orders`
/// paid orders of 100 yuan) and its `paid_boost` row (2 enters, `paid` of the orders).
fn minute(m: i64, orders: u64, paid: u64) -> Vec<Row> {
    let end = START + (m + 1) * MIN;
    let counts = Counts {
        watch_pv: 12,
        watch_ms: 100 * MIN as i128,
        orders_paid: orders,
        gmv_cents: orders as i64 * 10_000,
        gmv_cents_paid: paid as i64 * 10_000,
        ..Counts::default()
    };
    let window = Row::Window(livefunnel_core::WindowRow {
        room_id: "r".into(),
        window: "1m".into(),
        window_start: end - MIN,
        window_end: end,
        version: 1,
        identity: identity(),
        counts,
    });
    let boost = Row::Breakdown(BreakdownRow {
        kind: BreakdownKind::Source,
        room_id: "r".into(),
        window: "1m".into(),
        window_start: end - MIN,
        window_end: end,
        version: 1,
        org_id: "o".into(),
        key: "paid_boost".into(),
        counts: BreakdownCounts { watch_pv: 2, orders_paid: paid, ..BreakdownCounts::default() },
    });
    vec![window, boost]
}

fn session(end: Option<i64>) -> Row {
    Row::Session(SessionRow {
        room_id: "r".into(),
        session_id: "s1".into(),
        version: 1,
        org_id: "o".into(),
        account_id: None,
        platform: livefunnel_core::Platform::Douyin,
        session_start_ts: START,
        session_end_ts: end,
        duration_ms: 0,
        peak_online: 0,
        peak_online_ts: None,
        counts: Counts::default(),
        first30m: Counts::default(),
        ended_by_timeout: false,
        cold_start: false,
    })
}

fn running(latest_ts: i64, live: bool) -> livefunnel_core::RunningRoom {
    livefunnel_core::RunningRoom {
        room_id: "r".into(),
        identity: identity(),
        retired: false,
        latest_ts,
        online: 100,
        live,
        session_end_ts: None,
        totals: livefunnel_core::RoomTotals::default(),
        windows: Vec::new(),
    }
}

fn setup(detectors: bool) -> (Registry, RoomMetrics, RoomTracker) {
    let reg = Registry::new();
    let m = RoomMetrics::new(&reg, vec!["1m".into(), "5m/10s".into()]).unwrap();
    let mut t = RoomTracker::default();
    t.set_signal_windows(SignalWindows::default());
    if detectors {
        m.export_detector_config(&DetectorConfig::default());
        t.set_detectors(Some(DetectorConfig::default()));
    }
    (reg, m, t)
}

fn value(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{ROOM} ");
    let line =
        text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}:\n{text}"));
    line[prefix.len()..].parse().unwrap()
}

/// 8 organic orders a minute (and 2 paid-sourced ones) for 100 minutes.
fn steady(t: &mut RoomTracker) {
    t.on_rows(&[session(None)]);
    for m in 0..100 {
        t.on_rows(&minute(m, 10, 2));
    }
}

#[test]
fn minute_rows_and_paid_sources_feed_the_evidence_series() {
    let (reg, m, mut t) = setup(true);
    steady(&mut t);
    t.observe_running(&m, &running(START + 100 * MIN + 5_000, true), 0);
    t.publish_signals(&m);
    let text = render_all(&reg, &m);
    assert_eq!(value(&text, "livefunnel_room_signal_gpm_drop_evidence"), 0.0);
    assert_eq!(value(&text, "livefunnel_room_signal_sales_stall_evidence"), 0.0);
    // 8 organic orders per 100 viewer-minutes, of which 10/12 organic: 80 viewer-minutes
    // of organic exposure... at the steady share the baseline expects 8 a minute.
    let expected = value(&text, "livefunnel_room_signal_orders_expected_per_minute");
    assert!((expected - 8.0).abs() < 0.2, "{expected}");
    // 8 organic orders of 100 yuan over 10 organic views: 80,000 yuan per 1,000 views.
    assert_eq!(value(&text, "livefunnel_room_signal_gpm_baseline"), 80_000.0);
    let horizon = value(&text, "livefunnel_room_signal_gpm_drop_horizon_seconds");
    // 60 · (h / (8 · (1 − ρ₁ + ½ · ln ρ₁)) + 1), within the baseline's noise.
    let c = DetectorConfig::default();
    let r = c.design_ratio;
    let want = 60.0 * (c.gpm_drop_threshold / (8.0 * (1.0 - r + 0.5 * r.ln())) + 1.0);
    assert!((horizon / want - 1.0).abs() < 0.1, "{horizon} against {want}");
    // Pooled from minute 50 until the baseline holds 30 orders (minute 53), then armed.
    assert_eq!(value(&text, "livefunnel_room_pooled_orders_observed_total"), 24.0);
    let threshold =
        format!("livefunnel_detector_threshold{{detector=\"gpm_drop\"}} {}", c.gpm_drop_threshold);
    assert!(text.contains(&threshold), "{text}");
    assert!(text.contains("livefunnel_detector_threshold{detector=\"online_cliff_fall\"} 0.25"), "{text}");

    // Paid-sourced orders keep coming, organic ones stop: a stall and a drop.
    for m in 100..103 {
        t.on_rows(&minute(m, 2, 2));
    }
    t.publish_signals(&m);
    let text = render_all(&reg, &m);
    let stall = value(&text, "livefunnel_room_signal_sales_stall_evidence");
    assert!((stall - 24.0).abs() < 1.0, "three minutes of 8 expected orders: {stall}");
    assert!(value(&text, "livefunnel_room_signal_gpm_drop_evidence") > c.gpm_drop_threshold);
    assert_eq!(value(&text, "livefunnel_room_signal_drop_orders_observed"), 0.0);

    // The session ends: no evidence, no horizon; the counters stay.
    t.on_rows(&[session(Some(START + 104 * MIN))]);
    t.publish_signals(&m);
    let text = render_all(&reg, &m);
    for name in
        ["livefunnel_room_signal_gpm_drop_evidence", "livefunnel_room_signal_gpm_drop_horizon_seconds"]
    {
        assert!(value(&text, name).is_nan(), "{name}");
    }
}

#[test]
fn a_small_room_is_pooled_and_its_counters_continue_after_a_restore() {
    let (reg, m, mut t) = setup(true);
    t.on_rows(&[session(None)]);
    for m in 0..120 {
        t.on_rows(&minute(m, u64::from(m % 4 == 0), 0));
    }
    t.observe_running(&m, &running(START + 120 * MIN + 5_000, true), 0);
    t.publish_signals(&m);
    let text = render_all(&reg, &m);
    assert_eq!(value(&text, "livefunnel_room_pooled_orders_observed_total"), 17.0, "minutes 50 to 119");
    let expected = value(&text, "livefunnel_room_pooled_orders_expected_total");
    assert!((10.0..25.0).contains(&expected), "{expected}");
    assert!(value(&text, "livefunnel_room_signal_gpm_drop_evidence").is_nan(), "below the floor");
    assert_eq!(value(&text, "livefunnel_room_signal_gpm_drop_horizon_seconds"), f64::INFINITY);

    let (reg2, m2, _) = setup(true);
    let mut t2 = RoomTracker::from_checkpoint(&t.to_checkpoint().unwrap()).unwrap();
    t2.set_detectors(Some(DetectorConfig::default()));
    assert_eq!(t2, t);
    t2.publish(&m2);
    t2.on_rows(&minute(120, 1, 0));
    t2.publish_signals(&m2);
    let text = render_all(&reg2, &m2);
    assert_eq!(value(&text, "livefunnel_room_pooled_orders_observed_total"), 18.0, "{text}");
}

#[test]
fn checkpoints_without_detectors_load_and_another_format_is_refused() {
    let (_, _, mut t) = setup(true);
    steady(&mut t);
    let bytes = t.to_checkpoint().unwrap();
    let back = RoomTracker::from_checkpoint(&bytes).unwrap();
    assert_eq!(back.detectors("r"), t.detectors("r"));
    assert!(back.detectors("r").unwrap().values(&DetectorConfig::default()).live);

    // A checkpoint of the version before the detectors is this one without its
    // detector section and the products' section after it (both empty here).
    let (_, _, mut old) = setup(false);
    steady(&mut old);
    let mut bytes = old.to_checkpoint().unwrap();
    assert_eq!(bytes[bytes.len() - 4..], [livefunnel_detectors::STATE_FORMAT, 0, 1, 0], "formats, no room");
    bytes.truncate(bytes.len() - 4);
    let restored = RoomTracker::from_checkpoint(&bytes).unwrap();
    assert_eq!(restored.detectors("r"), Some(&RoomDetectors::default()));
    assert_eq!(restored.signals("r"), old.signals("r"));

    let mut future = t.to_checkpoint().unwrap();
    let at = bytes.len();
    future[at] = livefunnel_detectors::STATE_FORMAT + 1;
    let err = RoomTracker::from_checkpoint(&future).unwrap_err().to_string();
    assert!(err.contains("format 2") && err.contains("another version of livefunnel"), "{err}");
}

#[test]
fn without_detectors_there_are_no_detector_series() {
    let (reg, m, mut t) = setup(false);
    steady(&mut t);
    t.observe_running(&m, &running(START + 100 * MIN, true), 0);
    t.publish_signals(&m);
    let text = render_all(&reg, &m);
    assert!(!text.contains("livefunnel_room_signal_gpm_drop_evidence{"), "{text}");
    assert!(!text.contains("livefunnel_detector_threshold{"), "{text}");
    assert_eq!(t.detectors("r"), Some(&RoomDetectors::default()), "rows do not reach detectors that are off");
}
