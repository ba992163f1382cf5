use std::borrow::Cow;

use livefunnel_core::{Counts, Event, EventType};
use prometheus::Registry;

use super::*;

fn ev(kind: EventType, room: &str, amount: Option<i64>) -> Event<'static> {
    let mut e = Event::minimal("e", kind, 1_000, room, "s1");
    e.user_id = Some(Cow::Borrowed("u"));
    e.amount_cents = amount;
    e
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
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    t.on_accepted(&m, &ev(EventType::OrderPaid, "r1", Some(19_900)));
    t.on_accepted(&m, &ev(EventType::OrderPaid, "r1", Some(100)));
    t.on_accepted(&m, &ev(EventType::Enter, "r1", None));
    t.on_accepted(&m, &ev(EventType::Refund, "r1", Some(500)));
    let text = render(&reg);
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
    let bytes = postcard_like(&t);
    let (reg2, m2, _) = metrics();
    let t2: RoomTracker = postcard::from_bytes(&bytes).unwrap();
    t2.publish(&m2);
    let mut t2 = t2;
    t2.on_accepted(&m2, &ev(EventType::OrderPaid, "r1", Some(1)));
    let text = render(&reg2);
    assert_eq!(line(&text, gmv), Some(&*format!("{gmv} 20001")), "{text}");
}

fn postcard_like(t: &RoomTracker) -> Vec<u8> {
    postcard::to_stdvec(t).unwrap()
}

#[test]
fn window_gauges_show_running_values_and_nan_for_null_ratios() {
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    let key = RoomKey { org_id: "o".into(), room_id: "r".into(), platform: "douyin".into() };
    let c = Counts { watch_pv: 4, watch_uv: 2, gmv_cents: 10_000, buyer_uv: 1, ..Counts::default() };
    t.observe(&m, &key, 7, true, &[("5m/10s", &c)], 0);
    let text = render(&reg);
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
    let (reg, m, _) = metrics();
    let mut t = RoomTracker::default();
    let key = RoomKey { org_id: "default".into(), room_id: "r1".into(), platform: "other".into() };
    t.on_accepted(&m, &ev(EventType::Enter, "r1", None));
    let c = Counts::default();
    t.observe(&m, &key, 1, true, &[("5m/10s", &c)], 0);
    assert_eq!(t.expire(&m, 10_000_000, 900_000), 0, "a live room never expires");
    t.observe(&m, &key, 0, false, &[("5m/10s", &c)], 1_000_000);
    // Observed again later, still ended: the end time does not move.
    t.observe(&m, &key, 0, false, &[("5m/10s", &c)], 1_500_000);
    assert_eq!(t.expire(&m, 1_899_999, 900_000), 0);
    assert!(render(&reg).contains("room_id=\"r1\""));
    assert_eq!(t.expire(&m, 1_900_000, 900_000), 1);
    let text = render(&reg);
    assert!(!text.contains("room_id=\"r1\""), "{text}");
}

#[test]
fn pipeline_series_exist_with_every_reason() {
    let (reg, _, p) = metrics();
    p.events_duplicate.inc();
    let text = render(&reg);
    for r in livefunnel_core::Reason::ALL {
        assert!(
            text.contains(&format!("livefunnel_events_rejected_total{{reason=\"{}\"}} 0", r.as_str())),
            "{text}"
        );
    }
    assert!(text.contains("livefunnel_events_duplicate_total 1"));
}

#[test]
fn top_rooms_by_gmv() {
    let (_, m, _) = metrics();
    let mut t = RoomTracker::default();
    t.on_accepted(&m, &ev(EventType::OrderPaid, "a", Some(5)));
    t.on_accepted(&m, &ev(EventType::OrderPaid, "b", Some(50)));
    t.on_accepted(&m, &ev(EventType::OrderPaid, "c", Some(20)));
    let top: Vec<_> = t.top_by_gmv(2).into_iter().map(|(k, g)| (k.room_id, g)).collect();
    assert_eq!(top, vec![("b".to_string(), 50), ("c".to_string(), 20)]);
}
