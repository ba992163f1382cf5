//! The signal computation with hand-computed values.

use livefunnel_core::{Counts, Identity, Platform, SessionRow, WindowRow};

use super::*;

const MIN: i64 = 60_000;

fn windows() -> SignalWindows {
    SignalWindows {
        compare: Some(SignalWindow { name: "10m/1m".into(), size_ms: 10 * MIN }),
        online: Some(SignalWindow { name: "5m/10s".into(), size_ms: 5 * MIN }),
    }
}

fn wrow(window: &str, size: i64, end: i64, version: u64, counts: Counts) -> WindowRow {
    WindowRow {
        room_id: "r".into(),
        window: window.into(),
        window_start: end - size,
        window_end: end,
        version,
        identity: Identity {
            session_id: "s".into(),
            org_id: "o".into(),
            account_id: None,
            platform: Platform::Douyin,
        },
        counts,
    }
}

fn compare_row(end: i64, version: u64, counts: Counts) -> WindowRow {
    wrow("10m/1m", 10 * MIN, end, version, counts)
}

/// watch_pv, watch_uv, product_click_uv, buyer_uv, orders_paid, gmv_cents.
fn counts(pv: u64, uv: u64, click_uv: u64, buyers: u64, orders: u64, gmv: i64) -> Counts {
    Counts {
        watch_pv: pv,
        watch_uv: uv,
        product_click_uv: click_uv,
        buyer_uv: buyers,
        orders_paid: orders,
        gmv_cents: gmv,
        ..Counts::default()
    }
}

fn session_row(id: &str, version: u64, start: i64, end: Option<i64>, pv: u64, gmv: i64) -> SessionRow {
    SessionRow {
        room_id: "r".into(),
        session_id: id.into(),
        version,
        org_id: "o".into(),
        account_id: None,
        platform: Platform::Douyin,
        session_start_ts: start,
        session_end_ts: end,
        duration_ms: 0,
        peak_online: 0,
        peak_online_ts: None,
        counts: Counts { watch_pv: pv, gmv_cents: gmv, ..Counts::default() },
        first30m: Counts::default(),
        ended_by_timeout: false,
        cold_start: false,
    }
}

fn get(v: &SignalValues, s: Series) -> f64 {
    v[s].unwrap_or_else(|| panic!("{s:?} has no value: {v:?}"))
}

#[test]
fn current_is_the_largest_closed_end_and_previous_one_size_before() {
    let mut r = RoomSignals::default();
    // Ends 10m, 11m, 20m, 21m, 22m; the 22m window is not closed at ts 21m30s.
    r.on_compare_row(&compare_row(10 * MIN, 1, counts(1, 1, 1, 1, 1, 1)));
    r.on_compare_row(&compare_row(11 * MIN, 1, counts(100, 80, 16, 8, 9, 100_000)));
    r.on_compare_row(&compare_row(20 * MIN, 1, counts(7, 7, 7, 7, 7, 7)));
    r.on_compare_row(&compare_row(21 * MIN, 1, counts(200, 100, 20, 5, 6, 50_000)));
    r.on_compare_row(&compare_row(22 * MIN, 1, counts(9, 9, 9, 9, 9, 9)));
    let w = windows();
    assert_eq!(r.values(&w)[Series::Gpm], None, "nothing is closed before the running values are known");
    r.observe(21 * MIN + 30_000, true);
    let v = r.values(&w);
    // Current: the 21m row. gpm = 500 yuan / 200 views * 1000.
    assert_eq!(get(&v, Series::Gpm), 2500.0);
    assert_eq!(get(&v, Series::WatchPv), 200.0);
    assert_eq!(get(&v, Series::WatchUv), 100.0);
    assert_eq!(get(&v, Series::WatchToPayRate), 0.05);
    assert_eq!(get(&v, Series::ProductClickUv), 20.0);
    assert_eq!(get(&v, Series::ClickToPayRate), 0.25);
    assert_eq!(get(&v, Series::OrdersPaid), 6.0);
    assert_eq!(get(&v, Series::WindowEnd), 1260.0);
    // Previous: the 11m row (not the overlapping 20m one). gpm = 1000 yuan / 100 * 1000.
    assert_eq!(get(&v, Series::GpmPrevious), 10_000.0);
    assert_eq!(get(&v, Series::WatchPvPrevious), 100.0);
    assert_eq!(get(&v, Series::WatchUvPrevious), 80.0);
    assert_eq!(get(&v, Series::WatchToPayRatePrevious), 0.1);
    assert_eq!(get(&v, Series::ProductClickUvPrevious), 16.0);
    assert_eq!(get(&v, Series::ClickToPayRatePrevious), 0.5);
    assert_eq!(get(&v, Series::OrdersPaidPrevious), 9.0);

    // A window ending exactly at the latest ts is closed; its previous (12m) is missing.
    r.observe(22 * MIN, true);
    let v = r.values(&w);
    assert_eq!(get(&v, Series::WindowEnd), 1320.0);
    // 9 cents over 9 views: 0.09 yuan / 9 * 1000.
    assert_eq!(get(&v, Series::Gpm), 10.0);
    for s in [Series::GpmPrevious, Series::WatchPvPrevious, Series::OrdersPaidPrevious] {
        assert!(get(&v, s).is_nan(), "{s:?}: {v:?}");
    }
}

#[test]
fn a_late_correction_updates_the_values_and_older_versions_do_not() {
    let mut r = RoomSignals::default();
    let w = windows();
    r.observe(21 * MIN, true);
    r.on_compare_row(&compare_row(21 * MIN, 1, counts(200, 100, 20, 5, 6, 50_000)));
    assert_eq!(get(&r.values(&w), Series::Gpm), 2500.0);
    // A late order: version 2 has one more buyer and 100 more yuan.
    r.on_compare_row(&compare_row(21 * MIN, 2, counts(200, 100, 20, 6, 7, 60_000)));
    let v = r.values(&w);
    assert_eq!(get(&v, Series::Gpm), 3000.0);
    assert_eq!(get(&v, Series::WatchToPayRate), 0.06);
    assert_eq!(get(&v, Series::OrdersPaid), 7.0);
    // A stale copy of version 1 changes nothing.
    r.on_compare_row(&compare_row(21 * MIN, 1, counts(200, 100, 20, 5, 6, 50_000)));
    assert_eq!(get(&r.values(&w), Series::Gpm), 3000.0);
    // A correction of the previous window shows in the previous values.
    r.on_compare_row(&compare_row(11 * MIN, 3, counts(10, 10, 0, 0, 0, 0)));
    let v = r.values(&w);
    assert_eq!(get(&v, Series::GpmPrevious), 0.0);
    assert!(get(&v, Series::ClickToPayRatePrevious).is_nan(), "no clickers: NaN");
    assert_eq!(r.rows_kept().0, 2);
}

#[test]
fn zero_denominators_are_nan_and_counts_zero() {
    let mut r = RoomSignals::default();
    let w = windows();
    r.observe(30 * MIN, true);
    r.on_compare_row(&compare_row(30 * MIN, 1, counts(0, 0, 0, 0, 0, 0)));
    let v = r.values(&w);
    for s in [Series::Gpm, Series::WatchToPayRate, Series::ClickToPayRate] {
        assert!(get(&v, s).is_nan(), "{s:?}: {v:?}");
    }
    for s in [Series::WatchPv, Series::WatchUv, Series::ProductClickUv, Series::OrdersPaid] {
        assert_eq!(get(&v, s), 0.0, "{s:?}");
    }
}

#[test]
fn pruning_keeps_the_previous_window_and_what_is_not_closed_yet() {
    let mut r = RoomSignals::default();
    let w = windows();
    for m in 1..=25 {
        r.on_compare_row(&compare_row(m * MIN, 1, counts(m as u64, 1, 1, 1, 1, 100)));
    }
    for s in 0..40 {
        let end = 20 * MIN + s * 10_000;
        r.on_online_row(&wrow("5m/10s", 5 * MIN, end, 1, Counts { watch_ms: 1_000, ..Counts::default() }));
    }
    r.observe(21 * MIN + 30_000, true);
    r.prune(&w);
    // Compare: ends 11m..=21m (previous through current), then 22m..=25m not closed yet.
    assert_eq!(r.rows_kept().0, 11 + 4);
    // Online: current end 21m30s, then the ends up to 26m30s.
    assert_eq!(r.rows_kept().1, 1 + 30);
    let v = r.values(&w);
    assert_eq!(get(&v, Series::WatchPv), 21.0);
    assert_eq!(get(&v, Series::WatchPvPrevious), 11.0, "pruning kept the previous window");
    // Moving on one minute lets one more compare row go.
    r.observe(22 * MIN, true);
    r.prune(&w);
    assert_eq!(r.rows_kept().0, 11 + 3);
    assert_eq!(get(&r.values(&w), Series::WatchPvPrevious), 12.0);
}

#[test]
fn online_avg_is_watch_seconds_over_the_window_size() {
    let mut r = RoomSignals::default();
    let w = windows();
    r.observe(21 * MIN + 25_000, true);
    // 1,500 viewer-seconds over a 5-minute (300 s) window: 5 viewers on average.
    let c = Counts { watch_ms: 1_500_000, ..Counts::default() };
    r.on_online_row(&wrow("5m/10s", 5 * MIN, 21 * MIN + 20_000, 1, c));
    let c = Counts { watch_ms: 9_000_000, ..Counts::default() };
    r.on_online_row(&wrow("5m/10s", 5 * MIN, 21 * MIN + 30_000, 1, c));
    assert_eq!(get(&r.values(&w), Series::OnlineAvg), 5.0);
    assert_eq!(r.values(&w)[Series::Gpm], None, "no compare row: no compare series");
}

#[test]
fn session_age_and_gpm_of_the_live_session() {
    let mut r = RoomSignals::default();
    let w = windows();
    r.observe(21 * MIN + 30_000, true);
    let v = r.values(&w);
    assert!(get(&v, Series::SessionGpm).is_nan(), "no session row yet");
    assert!(get(&v, Series::SessionAge).is_nan());
    // 20,000 yuan over 1,000 views: gpm 20,000; started at 1m: 20m30s = 1230 s ago.
    r.on_session_row(&session_row("s1", 1, MIN, None, 1_000, 2_000_000));
    let v = r.values(&w);
    assert_eq!(get(&v, Series::SessionGpm), 20_000.0);
    assert_eq!(get(&v, Series::SessionAge), 1230.0);
    // An older session's row does not replace the newer one.
    r.on_session_row(&session_row("s0", 9, 0, Some(MIN), 10, 10));
    assert_eq!(get(&r.values(&w), Series::SessionGpm), 20_000.0);
    // Its own later version does.
    r.on_session_row(&session_row("s1", 2, MIN, None, 2_000, 2_000_000));
    assert_eq!(get(&r.values(&w), Series::SessionGpm), 10_000.0);
    // No views: NaN.
    r.on_session_row(&session_row("s1", 3, MIN, None, 0, 0));
    assert!(get(&r.values(&w), Series::SessionGpm).is_nan());
    // Ended: both NaN.
    r.on_session_row(&session_row("s1", 4, MIN, Some(22 * MIN), 2_000, 2_000_000));
    let v = r.values(&w);
    assert!(get(&v, Series::SessionGpm).is_nan() && get(&v, Series::SessionAge).is_nan(), "{v:?}");
    // A new session replaces it; while the room is not live (retired), NaN.
    r.on_session_row(&session_row("s2", 1, 30 * MIN, None, 100, 100_000));
    r.observe(31 * MIN, true);
    assert_eq!(get(&r.values(&w), Series::SessionAge), 60.0);
    assert_eq!(get(&r.values(&w), Series::SessionGpm), 10_000.0);
    r.observe(31 * MIN, false);
    assert!(get(&r.values(&w), Series::SessionAge).is_nan());
}

#[test]
fn last_received_is_the_wall_clock_in_seconds() {
    let mut r = RoomSignals::default();
    assert_eq!(r.values(&windows())[Series::LastReceived], None);
    r.on_accepted(1_767_225_600_500);
    assert_eq!(get(&r.values(&windows()), Series::LastReceived), 1_767_225_600.5);
}

#[test]
fn unconfigured_windows_have_no_series_and_a_changed_window_forgets_its_rows() {
    let mut r = RoomSignals::default();
    r.observe(21 * MIN, true);
    r.on_compare_row(&compare_row(21 * MIN, 1, counts(1, 1, 1, 1, 1, 100)));
    let v = r.values(&SignalWindows::default());
    assert_eq!(v[Series::Gpm], None);
    assert_eq!(v[Series::OnlineAvg], None);
    assert!(v[Series::SessionAge].is_some(), "session series do not need a window");
    r.clear_windows(true, false);
    assert_eq!(r.rows_kept(), (0, 0));
}
