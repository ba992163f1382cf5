//! Tests of the model itself, so that it can be trusted: each case computed by hand.

use std::borrow::Cow;

use livefunnel_core::{BreakdownCounts, BreakdownKind, Counts, Platform};
use livefunnel_core::{EngineConfig, Event, EventType, Outcome, Reason, Source, WindowSpec};

use super::{run, ModelResult};

const T0: i64 = 1_700_000_040_000; // a multiple of 60 s

fn small_cfg(windows: &[&str], lateness: i64, pt: i64) -> EngineConfig {
    let mut cfg = EngineConfig {
        windows: windows.iter().map(|n| WindowSpec::parse(n).unwrap()).collect(),
        allowed_lateness_ms: lateness,
        presence_timeout_ms: pt,
        out_of_orderness_ms: 5_000,
        idle_grace_ms: 30_000,
        ..EngineConfig::default()
    };
    let max_size = cfg.hop_windows().map(|(size, _)| size).max().unwrap_or(0);
    // A timed-out session changes no presence: presence_timeout <= session_idle_timeout.
    cfg.session_idle_timeout_ms = (max_size + 5_000 + lateness + 30_000).max(pt);
    cfg.validate().unwrap();
    cfg
}

fn ev(id: &str, kind: EventType, ts: i64, room: &str, session: &str) -> Event<'static> {
    Event::minimal(id, kind, ts, room, session)
}

/// A viewer event of room `r`, session `s`.
fn viewer(id: &str, kind: EventType, ts: i64, user: &str) -> Event<'static> {
    viewer_in(id, kind, ts, "r", "s", user)
}

fn viewer_in(id: &str, kind: EventType, ts: i64, room: &str, session: &str, user: &str) -> Event<'static> {
    let mut e = ev(id, kind, ts, room, session);
    e.user_id = Some(Cow::Owned(user.to_owned()));
    if kind.requires_source() {
        e.source = Some(Source::Other);
    }
    if kind.requires_product_id() {
        e.product_id = Some(Cow::Borrowed("g1"));
    }
    if kind.requires_order_id() {
        e.order_id = Some(Cow::Owned(format!("o-{id}")));
    }
    if kind.requires_amount() {
        e.amount_cents = Some(0);
    }
    e
}

fn enter(id: &str, ts: i64, user: &str, source: Source) -> Event<'static> {
    let mut e = viewer(id, EventType::Enter, ts, user);
    e.source = Some(source);
    e
}

fn order(id: &str, ts: i64, user: &str, amount: i64) -> Event<'static> {
    let mut e = viewer(id, EventType::OrderPaid, ts, user);
    e.amount_cents = Some(amount);
    e
}

fn win<'m>(m: &'m ModelResult, room: &str, window: &str, start: i64) -> &'m Counts {
    &m.windows
        .get(&(room.to_owned(), window.to_owned(), start))
        .unwrap_or_else(|| panic!("no window {room} {window} {start}; have {:?}", m.windows.keys()))
        .counts
}

const ACC: Outcome = Outcome::Accepted { late: false };
const LATE: Outcome = Outcome::Accepted { late: true };

#[test]
fn model_watch_split_across_tumble_windows() {
    let cfg = small_cfg(&["1m", "session"], 30_000, 600_000);
    let events = vec![
        ev("ss", EventType::SessionStart, T0, "r", "s"),
        enter("in", T0, "u1", Source::RecommendFeed),
        viewer("out", EventType::Leave, T0 + 90_000, "u1"),
    ];
    let m = run(&cfg, &events);
    assert_eq!(m.outcomes, vec![ACC, ACC, ACC]);
    assert_eq!(m.windows.len(), 2);
    let presence = |watch_ms: i128, online_end: u64| Counts {
        online_end,
        online_peak: 1,
        watch_ms,
        present_uv: 1,
        stranger_watch_ms: watch_ms,
        stranger_present_uv: 1,
        ..Counts::default()
    };
    let first = Counts { watch_pv: 1, watch_uv: 1, watch_uv_public: 1, ..presence(60_000, 1) };
    assert_eq!(*win(&m, "r", "1m", T0), first);
    assert_eq!(*win(&m, "r", "1m", T0 + 60_000), presence(30_000, 0));
    let w2 = &m.windows[&("r".to_owned(), "1m".to_owned(), T0 + 60_000)];
    assert_eq!(w2.window_end, T0 + 120_000);
    assert_eq!(&*w2.identity.session_id, "s");
    assert_eq!(&*w2.identity.org_id, "default");
    assert_eq!(w2.identity.account_id, None);
    assert_eq!(w2.identity.platform, Platform::Other);

    let s = &m.sessions[&("r".to_owned(), "s".to_owned())];
    assert_eq!(s.session_start_ts, T0);
    assert_eq!(s.session_end_ts, None);
    assert_eq!(s.duration_ms, 90_000);
    assert_eq!((s.peak_online, s.peak_online_ts), (1, Some(T0)));
    assert_eq!(s.counts.watch_ms, 90_000);
    assert_eq!(s.counts.online_end, 0, "the leave at the last ts ends presence at that instant");
    assert_eq!(s.first30m.watch_ms, 90_000);
    assert_eq!(s.first30m.online_end, 0);
    assert_eq!(s.first30m.online_peak, 1);
    assert!(s.cold_start);
}

#[test]
fn model_presence_timeout_and_refresh() {
    let cfg = small_cfg(&["1m"], 30_000, 60_000);
    let mut u2 = enter("b", T0 + 10_000, "u2", Source::Search);
    u2.is_follower = false;
    let events =
        vec![enter("a", T0, "u1", Source::Wecom), viewer("hb", EventType::Heartbeat, T0 + 30_000, "u1"), u2];
    let m = run(&cfg, &events);
    // u1: [T0, T0+90s) (refreshed at 30 s); u2: [T0+10s, T0+70s), a stranger.
    assert_eq!(m.windows.len(), 2, "the second window exists through presence only");
    let w1 = win(&m, "r", "1m", T0);
    assert_eq!((w1.watch_ms, w1.online_end, w1.online_peak, w1.present_uv), (110_000, 2, 2, 2));
    assert_eq!((w1.stranger_watch_ms, w1.stranger_present_uv), (50_000, 1));
    assert_eq!((w1.watch_uv_private, w1.watch_uv_public), (1, 1));
    let w2 = win(&m, "r", "1m", T0 + 60_000);
    assert_eq!((w2.watch_ms, w2.online_end, w2.online_peak, w2.present_uv), (40_000, 0, 2, 2));
    assert_eq!((w2.stranger_watch_ms, w2.stranger_present_uv, w2.watch_pv), (10_000, 1, 0));
    let id = &m.windows[&("r".to_owned(), "1m".to_owned(), T0 + 60_000)].identity;
    assert_eq!(&*id.session_id, "s");
}

#[test]
fn model_reenter_changes_stranger_class() {
    let cfg = small_cfg(&["1m"], 120_000, 600_000);
    let mut follower = enter("c", T0, "u2", Source::Search);
    follower.is_follower = true;
    let events = vec![
        enter("a", T0, "u1", Source::Moments),
        enter("b", T0 + 20_000, "u1", Source::RecommendFeed),
        viewer("l1", EventType::Leave, T0 + 40_000, "u1"),
        follower,
        viewer("l2", EventType::Leave, T0 + 10_000, "u2"),
    ];
    let m = run(&cfg, &events);
    let w = win(&m, "r", "1m", T0);
    assert_eq!((w.watch_pv, w.watch_uv, w.watch_uv_private, w.watch_uv_public), (3, 2, 1, 2));
    assert_eq!((w.watch_ms, w.present_uv, w.online_peak, w.online_end), (50_000, 2, 2, 0));
    // Only u1's second segment (public, not a follower) is a stranger segment.
    assert_eq!((w.stranger_watch_ms, w.stranger_present_uv), (20_000, 1));
}

#[test]
fn model_session_end_ends_presence_of_its_viewers_only() {
    let cfg = small_cfg(&["1m", "session"], 30_000, 60_000);
    let events = vec![
        enter("a", T0, "u1", Source::Wecom),
        viewer_in("b", EventType::Enter, T0 + 5_000, "r", "s2", "u2"),
        ev("end", EventType::SessionEnd, T0 + 20_000, "r", "s"),
        viewer("hb", EventType::Heartbeat, T0 + 25_000, "u1"),
    ];
    let m = run(&cfg, &events);
    let w = win(&m, "r", "1m", T0);
    assert_eq!((w.watch_ms, w.online_end, w.online_peak), (20_000 + 55_000, 1, 2));
    let s = &m.sessions[&("r".to_owned(), "s".to_owned())];
    assert_eq!((s.session_start_ts, s.session_end_ts, s.duration_ms), (T0, Some(T0 + 20_000), 20_000));
    assert_eq!(
        (s.counts.watch_ms, s.counts.online_end, s.peak_online, s.peak_online_ts),
        (20_000, 0, 1, Some(T0))
    );
    let s2 = &m.sessions[&("r".to_owned(), "s2".to_owned())];
    assert_eq!((s2.session_start_ts, s2.session_end_ts, s2.duration_ms), (T0 + 5_000, None, 0));
    assert_eq!((s2.counts.online_end, s2.peak_online, s2.peak_online_ts), (1, 1, Some(T0 + 5_000)));
    assert_eq!(s2.counts.watch_ms, 60_000);
}

#[test]
fn model_presence_uses_the_smallest_session_end() {
    let cfg = small_cfg(&["1m", "session"], 60_000, 600_000);
    let events = vec![
        enter("a", T0, "u1", Source::Wecom),
        ev("end2", EventType::SessionEnd, T0 + 40_000, "r", "s"),
        ev("end1", EventType::SessionEnd, T0 + 20_000, "r", "s"),
    ];
    let m = run(&cfg, &events);
    assert_eq!(m.outcomes, vec![ACC, ACC, LATE]);
    assert_eq!(win(&m, "r", "1m", T0).watch_ms, 20_000);
    let s = &m.sessions[&("r".to_owned(), "s".to_owned())];
    assert_eq!((s.session_end_ts, s.duration_ms), (Some(T0 + 40_000), 40_000), "the row keeps the largest");
    assert_eq!((s.counts.watch_ms, s.counts.online_end), (20_000, 0));
}

#[test]
fn model_duplicate_inside_vs_outside_the_horizon() {
    let cfg = small_cfg(&["1m"], 30_000, 600_000);
    let mut changed = viewer("a", EventType::Like, T0 + 1_000, "u9");
    changed.org_id = Some(Cow::Borrowed("other"));
    let events = vec![
        viewer("a", EventType::Like, T0, "u1"),
        viewer("a", EventType::Like, T0, "u1"),
        changed,
        viewer_in("a", EventType::Like, T0, "r2", "s", "u1"),
        viewer("b", EventType::Like, T0 + 100_000, "u1"),
        // W = T0+95s, horizon T0+65s: the first "a" (ts T0) is forgotten.
        viewer("a", EventType::Like, T0 + 70_000, "u1"),
        viewer("a", EventType::Like, T0 + 70_000, "u1"),
        // Lateness is checked before duplicates.
        viewer("a", EventType::Like, T0, "u1"),
    ];
    let m = run(&cfg, &events);
    use Outcome::*;
    assert_eq!(
        m.outcomes,
        vec![ACC, Duplicate, Duplicate, ACC, ACC, LATE, Duplicate, Rejected(Reason::TooLate)]
    );
    assert_eq!(win(&m, "r", "1m", T0).likes, 1, "the first copy wins");
    assert_eq!(win(&m, "r", "1m", T0 + 60_000).likes, 2);
    assert_eq!(win(&m, "r2", "1m", T0).likes, 1);
}

#[test]
fn model_too_late_boundary() {
    let cfg = small_cfg(&["1m"], 30_000, 600_000);
    let events = vec![
        viewer("x", EventType::Like, T0 + 100_000, "u1"),
        viewer("y", EventType::Like, T0 + 65_000, "u1"), // exactly W - L
        viewer("z", EventType::Like, T0 + 64_999, "u1"), // one ms below
        viewer("w", EventType::Like, T0 + 95_000, "u1"), // exactly W: not late
        viewer("v", EventType::Like, T0 + 94_999, "u1"),
        // Another room has its own watermark.
        viewer_in("o", EventType::Like, T0, "r2", "s", "u1"),
    ];
    let m = run(&cfg, &events);
    assert_eq!(m.outcomes, vec![ACC, LATE, Outcome::Rejected(Reason::TooLate), ACC, LATE, ACC]);
}

#[test]
fn model_ts_out_of_range_in_replay() {
    let cfg = small_cfg(&["1m"], 30_000, 600_000);
    let skew = cfg.max_future_skew_ms;
    let events = vec![
        viewer("a", EventType::Like, T0, "u1"),
        viewer("b", EventType::Like, T0 + skew + 1, "u1"),
        viewer("c", EventType::Like, T0 + skew, "u1"),
    ];
    let m = run(&cfg, &events);
    assert_eq!(m.outcomes, vec![ACC, Outcome::Rejected(Reason::TsOutOfRange), ACC]);
}

#[test]
fn model_hop_windows_and_negative_timestamps() {
    let cfg = small_cfg(&["90s/30s"], 30_000, 600_000);
    let m = run(&cfg, &[viewer("a", EventType::Like, T0 + 45_000, "u1")]);
    let starts: Vec<i64> = m.windows.keys().map(|k| k.2).collect();
    assert_eq!(starts, vec![T0 - 30_000, T0, T0 + 30_000]);
    assert!(m.windows.keys().all(|k| k.1 == "90s/30s"));

    let cfg = small_cfg(&["1m"], 30_000, 600_000);
    let m = run(&cfg, &[viewer("a", EventType::Like, -1, "u1")]);
    assert_eq!(m.windows.keys().map(|k| k.2).collect::<Vec<_>>(), vec![-60_000]);
}

#[test]
fn model_source_plan_and_product_breakdowns() {
    let cfg = small_cfg(&["1m"], 30_000, 600_000);
    let mut e1 = enter("e1", T0, "u1", Source::PaidBoost);
    e1.plan_id = Some(Cow::Borrowed("p1"));
    let mut comment = viewer("c", EventType::Comment, T0 + 2_000, "u1");
    comment.plan_id = Some(Cow::Borrowed("p2"));
    let mut o2 = order("o2", T0 + 5_000, "u2", 50);
    o2.quantity = Some(1);
    let events = vec![
        e1,
        order("o1", T0 + 1_000, "u1", 100),
        comment,
        enter("e2", T0 + 3_000, "u1", Source::RecommendFeed), // no plan: none, not p1
        viewer("pc", EventType::ProductClick, T0 + 4_000, "u1"),
        o2,
    ];
    let m = run(&cfg, &events);
    let w = win(&m, "r", "1m", T0);
    assert_eq!((w.gmv_cents, w.gmv_cents_paid, w.gmv_cents_public, w.gmv_cents_private), (150, 100, 50, 0));
    let bd = |kind, key: &str| {
        m.breakdowns
            .get(&(kind, "r".to_owned(), "1m".to_owned(), T0, key.to_owned()))
            .unwrap_or_else(|| panic!("no breakdown {kind:?} {key}"))
            .counts
            .clone()
    };
    use BreakdownKind::{Plan, Product};
    let keys = |kind| m.breakdowns.keys().filter(|k| k.0 == kind).map(|k| k.4.clone()).collect::<Vec<_>>();
    assert_eq!(keys(BreakdownKind::Source), vec!["other", "paid_boost", "recommend_feed"]);
    assert_eq!(keys(Plan), vec!["p1", "p2"]);
    assert_eq!(keys(Product), vec!["g1"]);
    assert_eq!(
        bd(BreakdownKind::Source, "paid_boost"),
        BreakdownCounts {
            watch_pv: 1,
            watch_uv: 1,
            orders_paid: 1,
            buyer_uv: 1,
            gmv_cents: 100,
            comments: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        bd(BreakdownKind::Source, "recommend_feed"),
        BreakdownCounts {
            watch_pv: 1,
            watch_uv: 1,
            product_clicks: 1,
            product_click_uv: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        bd(BreakdownKind::Source, "other"),
        BreakdownCounts { orders_paid: 1, buyer_uv: 1, gmv_cents: 50, ..Default::default() }
    );
    assert_eq!(
        bd(Plan, "p1"),
        BreakdownCounts {
            watch_pv: 1,
            watch_uv: 1,
            orders_paid: 1,
            buyer_uv: 1,
            gmv_cents: 100,
            ..Default::default()
        }
    );
    assert_eq!(bd(Plan, "p2"), BreakdownCounts { comments: 1, ..Default::default() });
    assert_eq!(
        bd(Product, "g1"),
        BreakdownCounts {
            product_clicks: 1,
            product_click_uv: 1,
            orders_paid: 2,
            buyer_uv: 2,
            items_sold: 2,
            gmv_cents: 150,
            ..Default::default()
        }
    );
}

#[test]
fn model_home_city_in_arrival_order_and_saturating_money() {
    let cfg = small_cfg(&["1m", "session"], 30_000, 600_000);
    let city = |e: &mut Event<'static>, c: &'static str| e.buyer_city = Some(Cow::Borrowed(c));
    let mut ss1 = ev("ss1", EventType::SessionStart, T0, "r", "s");
    ss1.home_city = Some(Cow::Borrowed("sh"));
    let mut ss2 = ev("ss2", EventType::SessionStart, T0 + 2_000, "r", "s");
    ss2.home_city = Some(Cow::Borrowed("bj"));
    let mut op1 = order("op1", T0 + 1_000, "u1", i64::MAX - 10);
    city(&mut op1, "bj");
    op1.quantity = Some(2);
    let mut op2 = order("op2", T0 + 3_000, "u2", 100);
    city(&mut op2, "sh");
    let op3 = order("op3", T0 + 4_000, "u3", 5);
    let mut op0 = viewer_in("op0", EventType::OrderPaid, T0 + 5_000, "r", "t", "u1");
    city(&mut op0, "bj");
    let mut sst = ev("sst", EventType::SessionStart, T0 + 6_000, "r", "t");
    sst.home_city = Some(Cow::Borrowed("sh"));
    // Arrives after sst but is earlier in event time: the home city is known by arrival.
    let mut op4 = viewer_in("op4", EventType::OrderPaid, T0 + 5_500, "r", "t", "u1");
    city(&mut op4, "bj");
    let m = run(&cfg, &[ss1, op1, ss2, op2, op3, op0, sst, op4]);
    let w = win(&m, "r", "1m", T0);
    assert_eq!((w.orders_paid, w.orders_paid_known_city, w.orders_paid_out_of_city), (5, 3, 2));
    assert_eq!((w.gmv_cents, w.gmv_cents_public, w.items_sold), (i64::MAX, i64::MAX, 6));
    let s = &m.sessions[&("r".to_owned(), "s".to_owned())];
    assert_eq!(
        (s.counts.orders_paid, s.counts.orders_paid_known_city, s.counts.orders_paid_out_of_city),
        (3, 2, 1)
    );
    assert_eq!((s.counts.buyer_uv, s.counts.items_sold, s.counts.gmv_cents), (3, 4, i64::MAX));
    assert_eq!(s.session_start_ts, T0);
    assert_eq!(s.first30m.orders_paid, 3);
    let t = &m.sessions[&("r".to_owned(), "t".to_owned())];
    assert_eq!(t.session_start_ts, T0 + 6_000, "the earliest session_start, not the smallest ts");
    assert_eq!(t.duration_ms, 0, "to the largest ts of the session while it has no session_end");
    assert_eq!(t.first30m.orders_paid, 0, "both orders are before session_start_ts");
}

#[test]
fn model_retirement_freezes_sessions_and_frees_memory() {
    // sit = 60 s + 5 s + 30 s + 30 s = 125 s
    let cfg = small_cfg(&["1m", "session"], 30_000, 120_000);
    assert_eq!(cfg.session_idle_timeout_ms, 125_000);
    let room_a = |id: &str, kind, ts, user: &str| viewer_in(id, kind, ts, "a", "s1", user);
    let mut a2 = room_a("a2", EventType::Enter, T0 + 1_000, "u1");
    a2.source = Some(Source::Search);
    let mut a6 = room_a("a6", EventType::Enter, T0 + 2_000, "u2");
    a6.source = Some(Source::PaidAds);
    let mut a2_again = a2.clone();
    a2_again.ts = T0 + 100_000;
    let mut a5 = room_a("a5", EventType::OrderPaid, T0 + 110_000, "u1");
    a5.amount_cents = Some(500);
    let mut a7 = room_a("a7", EventType::OrderPaid, T0 + 111_000, "u2");
    a7.amount_cents = Some(300);
    let events = vec![
        ev("a1", EventType::SessionStart, T0, "a", "s1"),
        a2,
        a6,
        ev("a3", EventType::SessionEnd, T0 + 10_000, "a", "s1"),
        ev("b1", EventType::SessionStart, T0 + 10_000, "b", "t1"),
        // Partition at T0+136s > T0+10s + 125s: room a retires; W(a) = T0+130s.
        ev("b2", EventType::Like, T0 + 136_000, "b", "t1"),
        room_a("a4", EventType::Refund, T0 + 99_999, "u1"),
        a2_again, // duplicate memory was freed: accepted again
        a5,       // inherits from a2_again (after retirement)
        a7,       // u2's enter was before retirement: inherits nothing
        ev("a8", EventType::SessionStart, T0 + 120_000, "a", "s2"),
    ];
    let m = run(&cfg, &events);
    assert_eq!(
        m.outcomes,
        vec![ACC, ACC, ACC, ACC, ACC, ACC, Outcome::Rejected(Reason::TooLate), LATE, LATE, LATE, LATE]
    );
    let s1 = &m.sessions[&("a".to_owned(), "s1".to_owned())];
    assert_eq!(
        (s1.counts.watch_pv, s1.counts.orders_paid, s1.counts.gmv_cents),
        (2, 0, 0),
        "final at retirement"
    );
    assert_eq!((s1.session_end_ts, s1.duration_ms), (Some(T0 + 10_000), 10_000));
    assert_eq!((s1.peak_online, s1.peak_online_ts, s1.counts.watch_ms), (2, Some(T0 + 2_000), 17_000));
    assert!(m.sessions.contains_key(&("a".to_owned(), "s2".to_owned())));
    let w = win(&m, "a", "1m", T0 + 60_000);
    assert_eq!(
        (w.watch_pv, w.orders_paid, w.gmv_cents, w.gmv_cents_public, w.gmv_cents_paid),
        (1, 2, 800, 800, 0)
    );
    // The re-entered viewer's session s1 ended at T0+10s (tombstone): no presence.
    assert_eq!((w.watch_ms, w.present_uv), (0, 0));
    let src = |key: &str| {
        m.breakdowns[&(BreakdownKind::Source, "a".to_owned(), "1m".to_owned(), T0 + 60_000, key.to_owned())]
            .counts
            .gmv_cents
    };
    assert_eq!((src("search"), src("other")), (500, 300));
}
