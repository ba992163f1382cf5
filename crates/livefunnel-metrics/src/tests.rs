use std::borrow::Cow;

use livefunnel_core::{Counts, Engine, EngineConfig, Event, EventType, Outcome, TouchedRoom};
use prometheus::Registry;

use super::*;

fn ev(kind: EventType, room: &str, amount: Option<i64>) -> Event<'static> {
    let mut e = Event::minimal("e", kind, 1_000, room, "s1");
    e.user_id = Some(Cow::Borrowed("u"));
    e.amount_cents = amount;
    e
}

/// Events through an engine, as the pipeline feeds them: the tracker's counters follow
/// the totals of the rooms each event touched.
#[derive(Default)]
pub(crate) struct Feed {
    engine: Option<Engine>,
    n: u64,
    touched: Vec<TouchedRoom>,
}

impl Feed {
    pub(crate) fn accept(&mut self, t: &mut RoomTracker, m: &RoomMetrics, ev: &Event<'_>, now_ms: i64) {
        let engine = self.engine.get_or_insert_with(|| Engine::new(EngineConfig::default()));
        let mut ev = ev.clone();
        self.n += 1;
        ev.event_id = Cow::Owned(format!("feed-{}", self.n));
        let out = engine.process(&ev, now_ms, &mut Vec::new());
        assert!(matches!(out, Outcome::Accepted { .. }), "{out:?}");
        engine.touched(&mut self.touched);
        assert_eq!(self.touched.len(), 1, "one event touches its room");
        for r in self.touched.drain(..) {
            t.on_touched(m, &r, now_ms);
        }
    }
}

fn metrics() -> (Registry, RoomMetrics, PipelineMetrics) {
    let reg = Registry::new();
    let room = RoomMetrics::new(&reg, vec!["5m/10s".into()]).unwrap();
    let pipe = PipelineMetrics::new(&reg).unwrap();
    (reg, room, pipe)
}

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn counters_follow_accepted_events_and_continue_after_restore() {
    let mut feed = Feed::default();
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    feed.accept(&mut t, &m, &ev(EventType::OrderPaid, "r1", Some(19_900)), 0);
    feed.accept(&mut t, &m, &ev(EventType::OrderPaid, "r1", Some(100)), 0);
    feed.accept(&mut t, &m, &ev(EventType::Enter, "r1", None), 0);
    feed.accept(&mut t, &m, &ev(EventType::Refund, "r1", Some(500)), 0);
    let text = render_all(&reg, &m);
    let gmv = r#"livefunnel_room_gmv_cents_total{org_id="default",platform="other",room_id="r1"}"#;
    assert_eq!(line(&text, gmv), Some(&*format!("{gmv} 20000")), "{text}");
    assert!(text
        .contains(r#"livefunnel_room_orders_paid_total{org_id="default",platform="other",room_id="r1"} 2"#));
    assert!(text.contains(
        r#"livefunnel_room_refund_cents_total{org_id="default",platform="other",room_id="r1"} 500"#
    ));
    assert!(text.contains(
        r#"livefunnel_room_watch_entries_total{org_id="default",platform="other",room_id="r1"} 1"#
    ));

    // A restart: a new registry, the tracker restored from its serialized form.
    let bytes = t.to_checkpoint().unwrap();
    let (reg2, m2, _) = metrics();
    let mut t2 = RoomTracker::from_checkpoint(&bytes).unwrap();
    assert_eq!(t2, t);
    t2.publish(&m2);
    feed.accept(&mut t2, &m2, &ev(EventType::OrderPaid, "r1", Some(1)), 0);
    let text = render_all(&reg2, &m2);
    assert_eq!(line(&text, gmv), Some(&*format!("{gmv} 20001")), "{text}");
}

/// The engine counts; the tracker shows what it counted. A tracker that knows nothing
/// of a room the engine holds (its series expired, or a checkpoint of a version that
/// counted from its series' start) shows the engine's totals, not a count from zero.
#[test]
fn counters_show_the_engine_totals_whatever_the_tracker_saw() {
    let mut feed = Feed::default();
    let (_, m, _) = metrics();
    feed.accept(&mut RoomTracker::default(), &m, &ev(EventType::OrderPaid, "r1", Some(300)), 0);
    let (reg2, m2, _) = metrics();
    let mut fresh = RoomTracker::default();
    feed.accept(&mut fresh, &m2, &ev(EventType::OrderPaid, "r1", Some(5)), 0);
    let gmv = r#"livefunnel_room_gmv_cents_total{org_id="default",platform="other",room_id="r1"}"#;
    let text = render_all(&reg2, &m2);
    assert_eq!(line(&text, gmv), Some(&*format!("{gmv} 305")), "{text}");
    let orders = r#"livefunnel_room_orders_paid_total{org_id="default",platform="other",room_id="r1"}"#;
    assert_eq!(line(&text, orders), Some(&*format!("{orders} 2")), "{text}");
    feed.accept(&mut fresh, &m2, &ev(EventType::Refund, "r1", Some(40)), 0);
    let refund = r#"livefunnel_room_refund_cents_total{org_id="default",platform="other",room_id="r1"}"#;
    assert_eq!(line(&render_all(&reg2, &m2), refund), Some(&*format!("{refund} 40")));
}

#[test]
fn window_gauges_show_running_values_and_nan_for_null_ratios() {
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    let key = RoomKey { org_id: "o".into(), room_id: "r".into(), platform: "douyin".into() };
    let c = Counts { watch_pv: 4, watch_uv: 2, gmv_cents: 10_000, buyer_uv: 1, ..Counts::default() };
    t.observe(&m, &key, 7, true, &[("5m/10s", &c)], 0);
    let text = render_all(&reg, &m);
    let labels = r#"{org_id="o",platform="douyin",room_id="r",window="5m/10s"}"#;
    assert!(text.contains(&format!("livefunnel_room_window_watch_uv{labels} 2")), "{text}");
    // gpm = 100 yuan / 4 views * 1000
    assert!(text.contains(&format!("livefunnel_room_window_gpm{labels} 25000")), "{text}");
    assert!(text.contains(&format!("livefunnel_room_window_watch_to_pay_rate{labels} 0.5")), "{text}");
    assert!(text.contains(&format!("livefunnel_room_window_avg_watch_seconds{labels} NaN")), "{text}");
    assert!(text.contains(r#"livefunnel_room_online_viewers{org_id="o",platform="douyin",room_id="r"} 7"#));
    assert!(text.contains(r#"livefunnel_room_live{org_id="o",platform="douyin",room_id="r"} 1"#));
}

#[test]
fn series_go_ttl_after_the_session_ends() {
    let mut feed = Feed::default();
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    let key = RoomKey { org_id: "default".into(), room_id: "r1".into(), platform: "other".into() };
    feed.accept(&mut t, &m, &ev(EventType::Enter, "r1", None), 0);
    let c = Counts::default();
    t.observe(&m, &key, 1, true, &[("5m/10s", &c)], 0);
    assert_eq!(t.expire(&m, 10_000_000, 900_000), 0, "a live room never expires");
    t.observe(&m, &key, 0, false, &[("5m/10s", &c)], 1_000_000);
    // Observed again later, still ended: the end time does not move.
    t.observe(&m, &key, 0, false, &[("5m/10s", &c)], 1_500_000);
    assert_eq!(t.expire(&m, 1_899_999, 900_000), 0);
    assert!(render_all(&reg, &m).contains("room_id=\"r1\""));
    assert_eq!(t.expire(&m, 1_900_000, 900_000), 1);
    let text = render_all(&reg, &m);
    assert!(!text.contains("room_id=\"r1\""), "{text}");
}

#[test]
fn pipeline_series_exist_with_every_reason() {
    let (reg, _, p) = metrics();
    p.events_duplicate.inc();
    let text = render(&reg);
    for r in livefunnel_core::Reason::ALL {
        for name in [
            "livefunnel_events_rejected_total",
            "livefunnel_dead_letters_total",
            "livefunnel_dead_letters_lost_total",
        ] {
            assert!(text.contains(&format!("{name}{{reason=\"{}\"}} 0", r.as_str())), "{name}\n{text}");
        }
    }
    // The alerts on these see the first increase.
    for (name, kinds) in [
        ("livefunnel_dead_letter_errors_total", &crate::DEAD_LETTER_ERROR_KINDS),
        ("livefunnel_offset_jumps_total", &crate::OFFSET_JUMP_KINDS),
    ] {
        for k in kinds {
            assert!(text.contains(&format!("{name}{{kind=\"{k}\"}} 0")), "{name}\n{text}");
        }
    }
    for how in crate::SNAPSHOT_ROOM_KINDS {
        assert!(text.contains(&format!("livefunnel_snapshot_rooms_total{{how=\"{how}\"}} 0")), "{text}");
    }
    assert!(text.contains("livefunnel_dead_letters_truncated_total 0"));
    assert!(text.contains("livefunnel_events_duplicate_total 1"));
}

#[test]
fn top_rooms_by_gmv() {
    let mut feed = Feed::default();
    let (_, m, _) = metrics();
    let mut t = RoomTracker::default();
    feed.accept(&mut t, &m, &ev(EventType::OrderPaid, "a", Some(5)), 0);
    feed.accept(&mut t, &m, &ev(EventType::OrderPaid, "b", Some(50)), 0);
    feed.accept(&mut t, &m, &ev(EventType::OrderPaid, "c", Some(20)), 0);
    let top: Vec<_> = t.top_by_gmv(2).into_iter().map(|(k, g)| (k.room_id, g)).collect();
    assert_eq!(top, vec![("b".to_string(), 50), ("c".to_string(), 20)]);
}

/// The kept few agree with sorting every room, ties (by labels) and rooms without
/// sales included.
#[test]
fn top_rooms_by_gmv_agree_with_a_full_sort() {
    let mut feed = Feed::default();
    let (_, m, _) = metrics();
    let mut t = RoomTracker::default();
    let mut x = 12345u64;
    let mut rooms = std::collections::BTreeSet::new();
    for i in 0..300 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let room = format!("r{}", (x >> 33) % 120);
        let kind = if i % 7 == 0 { EventType::Enter } else { EventType::OrderPaid };
        feed.accept(&mut t, &m, &ev(kind, &room, Some(((x >> 20) % 4) as i64 * 100)), 0);
        rooms.insert(room);
    }
    let mut all: Vec<(RoomKey, u64)> = rooms
        .iter()
        .map(|r| {
            let key = RoomKey { org_id: "default".into(), room_id: r.clone(), platform: "other".into() };
            let gmv = t.totals(&key).expect("a tracked room").gmv_cents;
            (key, gmv)
        })
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    assert!(all.windows(2).any(|w| w[0].1 == w[1].1), "ties are exercised");
    for n in [0, 1, 2, 5, 8, all.len(), all.len() + 3, usize::MAX] {
        assert_eq!(t.top_by_gmv(n), all[..n.min(all.len())].to_vec(), "n = {n}");
    }
}

/// The tracker as checkpoints encoded it before the signals existed.
#[derive(serde::Serialize)]
struct TrackerV1 {
    rooms: std::collections::BTreeMap<RoomKey, TrackedV1>,
}

#[derive(serde::Serialize)]
struct TrackedV1 {
    totals: CounterTotals,
    ended_at_ms: Option<i64>,
}

#[test]
fn a_checkpoint_from_before_the_signals_still_loads() {
    let key = |r: &str| RoomKey { org_id: "default".into(), room_id: r.into(), platform: "other".into() };
    let totals = CounterTotals { gmv_cents: 12_345, orders_paid: 3, ..CounterTotals::default() };
    let old = TrackerV1 {
        rooms: [
            (key("a"), TrackedV1 { totals: totals.clone(), ended_at_ms: None }),
            (key("b"), TrackedV1 { totals: CounterTotals::default(), ended_at_ms: Some(7) }),
        ]
        .into(),
    };
    let t = RoomTracker::from_checkpoint(&postcard::to_stdvec(&old).unwrap()).unwrap();
    assert_eq!(t.totals(&key("a")), Some(&totals));
    assert_eq!(t.live_rooms(), 1);
    assert!(t.signals("a").is_none());
    assert!(RoomTracker::from_checkpoint(b"\xff\xff\xff").is_err(), "garbage is an error");
}

const MIN: i64 = 60_000;

fn signal_windows() -> SignalWindows {
    SignalWindows {
        compare: Some(SignalWindow { name: "10m/1m".into(), size_ms: 10 * MIN }),
        online: Some(SignalWindow { name: "5m/10s".into(), size_ms: 5 * MIN }),
    }
}

pub(crate) fn identity() -> livefunnel_core::Identity {
    livefunnel_core::Identity {
        session_id: "s1".into(),
        org_id: "o".into(),
        account_id: None,
        platform: livefunnel_core::Platform::Douyin,
    }
}

fn window_row(window: &str, size: i64, end: i64, counts: Counts) -> livefunnel_core::Row {
    livefunnel_core::Row::Window(livefunnel_core::WindowRow {
        room_id: "r".into(),
        window: window.into(),
        window_start: end - size,
        window_end: end,
        version: 1,
        identity: identity(),
        counts,
    })
}

fn running(latest_ts: i64, live: bool) -> livefunnel_core::RunningRoom {
    livefunnel_core::RunningRoom {
        room_id: "r".into(),
        identity: identity(),
        retired: false,
        latest_ts,
        online: 3,
        live,
        session_end_ts: None,
        totals: livefunnel_core::RoomTotals::default(),
        windows: Vec::new(),
    }
}

fn signal_metrics() -> (Registry, RoomMetrics) {
    let reg = Registry::new();
    let room = RoomMetrics::new(&reg, vec!["1m".into(), "5m/10s".into(), "10m/1m".into()]).unwrap();
    (reg, room)
}

#[test]
fn signal_series_follow_the_rows_and_go_with_the_room() {
    let mut feed = Feed::default();
    let (reg, m) = signal_metrics();
    let mut t = RoomTracker::default();
    t.set_signal_windows(signal_windows());
    let c = Counts { watch_pv: 200, watch_uv: 100, gmv_cents: 50_000, buyer_uv: 5, ..Counts::default() };
    let online = Counts { watch_ms: 600_000, ..Counts::default() };
    t.on_rows(&[
        window_row("1m", MIN, 21 * MIN, Counts { watch_pv: 1, ..Counts::default() }),
        window_row("10m/1m", 10 * MIN, 21 * MIN, c),
        window_row("5m/10s", 5 * MIN, 21 * MIN, online),
    ]);
    let mut ev = ev(EventType::Enter, "r", None);
    ev.org_id = Some(std::borrow::Cow::Borrowed("o"));
    ev.platform = Some(livefunnel_core::Platform::Douyin);
    feed.accept(&mut t, &m, &ev, 1_767_225_600_000);
    t.publish_signals(&m);
    assert!(
        !render_all(&reg, &m).contains("livefunnel_room_signal_gpm{"),
        "not shown before the labels are known"
    );
    t.observe_running(&m, &running(21 * MIN + 5_000, true), 0);
    t.publish_signals(&m);
    let text = render_all(&reg, &m);
    let cw = r#"{org_id="o",platform="douyin",room_id="r",window="10m/1m"}"#;
    let ow = r#"{org_id="o",platform="douyin",room_id="r",window="5m/10s"}"#;
    let room = r#"{org_id="o",platform="douyin",room_id="r"}"#;
    for want in [
        format!("livefunnel_room_signal_gpm{cw} 2500"),
        format!("livefunnel_room_signal_gpm_previous{cw} NaN"),
        format!("livefunnel_room_signal_watch_to_pay_rate{cw} 0.05"),
        format!("livefunnel_room_signal_window_end_timestamp_seconds{cw} 1260"),
        format!("livefunnel_room_signal_online_avg{ow} 2"),
        format!("livefunnel_room_session_gpm{room} NaN"),
        format!("livefunnel_room_last_event_received_timestamp_seconds{room} 1767225600"),
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want}:\n{text}");
    }
    assert!(
        !text.contains(r#"livefunnel_room_signal_gpm{org_id="o",platform="douyin",room_id="r",window="1m"}"#)
    );

    // Restored from a checkpoint into a new registry: the same series at once.
    let (reg2, m2) = signal_metrics();
    let mut t2 = RoomTracker::from_checkpoint(&t.to_checkpoint().unwrap()).unwrap();
    t2.set_signal_windows(signal_windows());
    t2.publish(&m2);
    assert!(
        render_all(&reg2, &m2).contains(&format!("livefunnel_room_signal_gpm{cw} 2500")),
        "{}",
        render_all(&reg2, &m2)
    );
    t2.unpublish(&m2);
    assert!(!render_all(&reg2, &m2).contains("room_id=\"r\""), "{}", render_all(&reg2, &m2));

    // The session ends: the series go `ttl` later, signals included, and the state too.
    t.observe_running(&m, &running(22 * MIN, false), 1_000);
    t.publish_signals(&m);
    assert_eq!(t.expire(&m, 1_000 + 900_000, 900_000), 1);
    let text = render_all(&reg, &m);
    assert!(!text.contains("room_id=\"r\""), "{text}");
    assert!(t.signals("r").is_none());
}

#[test]
fn a_changed_signal_window_forgets_the_old_rows() {
    let (_, m) = signal_metrics();
    let mut t = RoomTracker::default();
    t.set_signal_windows(signal_windows());
    t.on_rows(&[window_row("10m/1m", 10 * MIN, 21 * MIN, Counts::default())]);
    t.observe_running(&m, &running(21 * MIN, true), 0);
    assert_eq!(t.signals("r").unwrap().rows_kept(), (1, 0));
    let mut t = RoomTracker::from_checkpoint(&t.to_checkpoint().unwrap()).unwrap();
    t.set_signal_windows(SignalWindows {
        compare: Some(SignalWindow { name: "1m".into(), size_ms: MIN }),
        ..signal_windows()
    });
    assert_eq!(t.signals("r").unwrap().rows_kept(), (0, 0));
}

fn room_event(kind: EventType, room: &str, org: &'static str, amount: Option<i64>) -> Event<'static> {
    let mut e = ev(kind, room, amount);
    e.org_id = Some(Cow::Borrowed(org));
    e.platform = Some(livefunnel_core::Platform::Douyin);
    e
}

fn room_key(org: &str, room: &str) -> RoomKey {
    RoomKey { org_id: org.into(), room_id: room.into(), platform: "douyin".into() }
}

/// The series of one room, by label set.
fn series_of(text: &str, room: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("room_id=\"{room}\"")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_room_whose_labels_change_leaves_no_series_under_the_old_ones() {
    let mut feed = Feed::default();
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    let c = Counts::default();
    feed.accept(&mut t, &m, &room_event(EventType::OrderPaid, "r", "a", Some(100)), 0);
    t.observe(&m, &room_key("a", "r"), 3, true, &[("5m/10s", &c)], 0);
    assert!(render_all(&reg, &m).contains(r#"org_id="a""#));
    // The room's latest event now says org b: its series move there, its counters with them.
    feed.accept(&mut t, &m, &room_event(EventType::OrderPaid, "r", "b", Some(50)), 0);
    t.observe(&m, &room_key("b", "r"), 4, true, &[("5m/10s", &c)], 0);
    let text = render_all(&reg, &m);
    let series = series_of(&text, "r");
    assert!(series.iter().all(|l| l.contains(r#"org_id="b""#)), "{series:#?}");
    let gmv = r#"livefunnel_room_gmv_cents_total{org_id="b",platform="douyin",room_id="r"}"#;
    assert_eq!(line(&text, gmv), Some(&*format!("{gmv} 150")), "{text}");
    assert!(text.contains(r#"livefunnel_room_online_viewers{org_id="b",platform="douyin",room_id="r"} 4"#));
    assert_eq!(t.live_rooms(), 1);
    // A late event still carrying the old labels counts in the room, under its labels.
    feed.accept(&mut t, &m, &room_event(EventType::OrderPaid, "r", "a", Some(1)), 0);
    let text = render_all(&reg, &m);
    assert!(series_of(&text, "r").iter().all(|l| l.contains(r#"org_id="b""#)), "{text}");
    assert_eq!(line(&text, gmv), Some(&*format!("{gmv} 151")), "{text}");
    // It ends, and every series goes `ttl` later.
    t.observe(&m, &room_key("b", "r"), 0, false, &[("5m/10s", &c)], 1_000);
    assert_eq!(t.expire(&m, 1_000 + 900_000, 900_000), 1);
    assert_eq!(series_of(&render_all(&reg, &m), "r"), Vec::<String>::new());
}

#[test]
fn rooms_beyond_the_cap_get_no_series_and_are_counted() {
    let mut feed = Feed::default();
    let reg = Registry::new();
    let m = RoomMetrics::new(&reg, vec!["5m/10s".into()]).unwrap().with_max_rooms(2);
    let c = Counts::default();
    // Two partitions of one instance: the cap is the instance's.
    let (mut a, mut b) = (RoomTracker::default(), RoomTracker::default());
    feed.accept(&mut a, &m, &room_event(EventType::Enter, "r1", "o", None), 0);
    feed.accept(&mut b, &m, &room_event(EventType::Enter, "r2", "o", None), 0);
    feed.accept(&mut b, &m, &room_event(EventType::Enter, "r3", "o", None), 0);
    b.observe(&m, &room_key("o", "r3"), 5, true, &[("5m/10s", &c)], 0);
    feed.accept(&mut b, &m, &room_event(EventType::Enter, "r3", "o", None), 0);
    let text = render_all(&reg, &m);
    assert_eq!(series_of(&text, "r3"), Vec::<String>::new());
    assert!(!series_of(&text, "r2").is_empty());
    assert!(text.contains("livefunnel_room_series_dropped_total 1\n"), "{text}");
    assert!(text.contains("livefunnel_rooms_with_series 2\n"), "{text}");
    assert_eq!(b.live_rooms(), 2, "a room without series is still tracked");

    // r1's series expire: r3 gets its series at its next event, with its whole count.
    a.observe(&m, &room_key("o", "r1"), 0, false, &[("5m/10s", &c)], 0);
    assert_eq!(a.expire(&m, 900_000, 900_000), 1);
    feed.accept(&mut b, &m, &room_event(EventType::OrderPaid, "r3", "o", Some(7)), 0);
    let text = render_all(&reg, &m);
    let l = r#"{org_id="o",platform="douyin",room_id="r3"}"#;
    assert!(text.contains(&format!("livefunnel_room_watch_entries_total{l} 2\n")), "{text}");
    assert!(text.contains(&format!("livefunnel_room_gmv_cents_total{l} 7\n")), "{text}");
    assert!(text.contains("livefunnel_room_series_dropped_total 1\n"), "{text}");
    assert!(text.contains("livefunnel_rooms_with_series 2\n"), "{text}");

    // A revoked partition gives its rooms' places back.
    b.unpublish(&m);
    assert!(render_all(&reg, &m).contains("livefunnel_rooms_with_series 0\n"));
}

/// Checkpoints of versions that kept one entry per label set may hold a room twice:
/// restored as one room, with the counts of both, live if either is.
#[test]
fn a_checkpoint_with_a_room_under_two_label_sets_restores_one_room() {
    let totals = |gmv| CounterTotals { gmv_cents: gmv, orders_paid: 1, ..CounterTotals::default() };
    let old = TrackerV1 {
        rooms: [
            (room_key("a", "r"), TrackedV1 { totals: totals(100), ended_at_ms: None }),
            (room_key("b", "r"), TrackedV1 { totals: totals(50), ended_at_ms: Some(5) }),
        ]
        .into(),
    };
    let mut t = RoomTracker::from_checkpoint(&postcard::to_stdvec(&old).unwrap()).unwrap();
    assert_eq!(t.live_rooms(), 1);
    assert_eq!(t.totals(&room_key("a", "r")).map(|t| t.gmv_cents), Some(150));
    let (reg, m, _) = metrics();
    t.publish(&m);
    let series = series_of(&render_all(&reg, &m), "r");
    assert!(!series.is_empty() && series.iter().all(|l| l.contains(r#"org_id="a""#)), "{series:#?}");
}

/// The room's gauge lines, sorted.
fn gauges_of(text: &str, room: &str) -> Vec<String> {
    let mut g: Vec<String> = series_of(text, room)
        .into_iter()
        .filter(|l| {
            l.starts_with("livefunnel_room_online_viewers") || l.starts_with("livefunnel_room_window_")
        })
        .collect();
    g.sort();
    g
}

#[test]
fn kept_gauge_series_follow_moves_expiry_and_changing_windows() {
    let reg = Registry::new();
    let m = RoomMetrics::new(&reg, vec!["1m".into(), "5m/10s".into()]).unwrap();
    let mut t = RoomTracker::default();
    let c = |uv: u64| Counts { watch_uv: uv, ..Counts::default() };
    let (c1, c2, c3) = (c(1), c(2), c(3));
    let uv = |org: &str, w: &str, v: u64| {
        format!(
            r#"livefunnel_room_window_watch_uv{{org_id="{org}",platform="douyin",room_id="r",window="{w}"}} {v}"#
        )
    };
    let online = |org: &str, v: u64| {
        format!(r#"livefunnel_room_online_viewers{{org_id="{org}",platform="douyin",room_id="r"}} {v}"#)
    };
    let has = |text: &str, l: &str| text.lines().any(|x| x == l);

    t.observe(&m, &room_key("a", "r"), 3, true, &[("1m", &c1), ("5m/10s", &c1)], 0);
    // A second tick sets the same series to the new values.
    t.observe(&m, &room_key("a", "r"), 4, true, &[("1m", &c2), ("5m/10s", &c3)], 0);
    let text = render_all(&reg, &m);
    for l in [online("a", 4), uv("a", "1m", 2), uv("a", "5m/10s", 3)] {
        assert!(has(&text, &l), "{l}\n{text}");
    }
    assert_eq!(gauges_of(&text, "r").len(), 11, "{text}");

    // A window drops out, then comes back first: each value lands under its window.
    t.observe(&m, &room_key("a", "r"), 5, true, &[("5m/10s", &c1)], 0);
    t.observe(&m, &room_key("a", "r"), 6, true, &[("1m", &c3), ("5m/10s", &c2)], 0);
    let text = render_all(&reg, &m);
    for l in [online("a", 6), uv("a", "1m", 3), uv("a", "5m/10s", 2)] {
        assert!(has(&text, &l), "{l}\n{text}");
    }

    // To org b and back: the gauges are under the labels of the moment, and only there.
    t.observe(&m, &room_key("b", "r"), 7, true, &[("1m", &c1), ("5m/10s", &c1)], 0);
    let text = render_all(&reg, &m);
    assert!(has(&text, &online("b", 7)) && has(&text, &uv("b", "5m/10s", 1)), "{text}");
    assert!(gauges_of(&text, "r").iter().all(|l| l.contains(r#"org_id="b""#)), "{text}");
    t.observe(&m, &room_key("a", "r"), 8, true, &[("1m", &c2), ("5m/10s", &c2)], 0);
    let text = render_all(&reg, &m);
    assert!(has(&text, &online("a", 8)) && has(&text, &uv("a", "5m/10s", 2)), "{text}");
    assert!(gauges_of(&text, "r").iter().all(|l| l.contains(r#"org_id="a""#)), "{text}");

    // Its series expire; when it is back, so are its gauges.
    t.observe(&m, &room_key("a", "r"), 0, false, &[("1m", &c1)], 1_000);
    assert_eq!(t.expire(&m, 1_000 + 900_000, 900_000), 1);
    assert_eq!(gauges_of(&render_all(&reg, &m), "r"), Vec::<String>::new());
    t.observe(&m, &room_key("a", "r"), 9, true, &[("1m", &c3), ("5m/10s", &c3)], 2_000_000);
    let text = render_all(&reg, &m);
    for l in [online("a", 9), uv("a", "1m", 3), uv("a", "5m/10s", 3)] {
        assert!(has(&text, &l), "{l}\n{text}");
    }
    // Unpublished (the partition revoked) and published again.
    t.unpublish(&m);
    assert_eq!(gauges_of(&render_all(&reg, &m), "r"), Vec::<String>::new());
    t.publish(&m);
    t.observe(&m, &room_key("a", "r"), 10, true, &[("1m", &c1), ("5m/10s", &c2)], 2_000_000);
    let text = render_all(&reg, &m);
    for l in [online("a", 10), uv("a", "1m", 1), uv("a", "5m/10s", 2)] {
        assert!(has(&text, &l), "{l}\n{text}");
    }
}
