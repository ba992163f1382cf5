use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use livefunnel_core::{BreakdownCounts, Engine, EngineConfig, Event, EventType, Outcome, Row};

use super::*;
use crate::{RoomMetrics, RoomTracker};

fn window() -> ProductWindow {
    ProductWindow::from_engine(&EngineConfig::default()).expect("1m carries the breakdowns by default")
}

fn row(end: i64, version: u64, product: &str, gmv: i64) -> BreakdownRow {
    BreakdownRow {
        kind: BreakdownKind::Product,
        room_id: Arc::from("r1"),
        window: Arc::from("1m"),
        window_start: end - 60_000,
        window_end: end,
        version,
        org_id: Arc::from("o"),
        key: Arc::from(product),
        counts: BreakdownCounts { gmv_cents: gmv, orders_paid: 1, ..Default::default() },
    }
}

#[test]
fn the_default_window_is_1m_final_after_its_lateness() {
    let w = window();
    assert_eq!(w.name, "1m");
    assert_eq!(w.final_after_ms, 60_000 + 5_000 + 120_000);
    let mut c = EngineConfig::default();
    c.windows.retain(|w| w.name() != "1m");
    assert_eq!(ProductWindow::from_engine(&c), None, "no tumbling window with breakdowns: nothing summed");
}

#[test]
fn a_new_version_of_a_row_replaces_its_counts_and_an_older_one_is_ignored() {
    let w = window();
    let mut p = RoomProducts::default();
    p.on_row(&row(60_000, 1, "a", 100), &w);
    p.on_row(&row(120_000, 1, "a", 50), &w);
    p.on_row(&row(60_000, 3, "a", 300), &w);
    p.on_row(&row(60_000, 2, "a", 999), &w);
    p.on_row(&row(120_000, 1, "b", 400), &w);
    let top = p.top(10);
    let got: Vec<_> = top.iter().map(|l| (l.product_id.as_str(), l.counts.gmv_cents)).collect();
    assert_eq!(got, vec![("b", 400), ("a", 350)]);
    assert_eq!(p.top(1).len(), 1);
}

#[test]
fn final_windows_are_forgotten_and_never_summed_again() {
    let w = window();
    let mut p = RoomProducts::default();
    for m in 1..=60 {
        p.on_row(&row(m * 60_000, 1, "a", 10), &w);
    }
    assert_eq!(p.top(1)[0].counts.gmv_cents, 600);
    // 185 s of lateness: the windows ending in the last 3 minutes stay open.
    assert!(p.open_rows() <= 4, "{} open rows", p.open_rows());
    // A row of a final window (the engine never sends one) does not count twice.
    p.on_row(&row(10 * 60_000, 2, "a", 10_000), &w);
    assert_eq!(p.top(1)[0].counts.gmv_cents, 600);
}

#[test]
fn a_new_session_starts_the_sums_again() {
    let w = window();
    let mut t = RoomProducts::default();
    let session = |id: &str, start: i64| livefunnel_core::SessionRow {
        session_id: Arc::from(id),
        session_start_ts: start,
        ..session_row()
    };
    t.on_session(&session("s1", 0));
    t.on_row(&row(60_000, 1, "a", 100), &w);
    t.on_session(&session("s1", 0));
    assert_eq!(t.top(10).len(), 1, "the same session again changes nothing");
    t.on_session(&session("s2", 3_600_000));
    assert!(t.top(10).is_empty());
    // A window of the old session, corrected late, is not the new session's.
    t.on_row(&row(120_000, 2, "a", 100), &w);
    assert!(t.top(10).is_empty());
    t.on_row(&row(3_660_000, 1, "b", 7), &w);
    assert_eq!(t.top(10)[0].product_id, "b");
}

fn session_row() -> livefunnel_core::SessionRow {
    livefunnel_core::SessionRow {
        room_id: Arc::from("r1"),
        session_id: Arc::from("s1"),
        version: 1,
        org_id: Arc::from("o"),
        account_id: None,
        platform: livefunnel_core::Platform::Other,
        session_start_ts: 0,
        session_end_ts: None,
        duration_ms: 0,
        peak_online: 0,
        peak_online_ts: None,
        counts: Default::default(),
        first30m: Default::default(),
        ended_by_timeout: false,
        cold_start: false,
    }
}

/// A deterministic stream (an LCG, no dependency): one room, one session of 40 minutes
/// starting mid-minute,
/// 30 products, paid orders arriving up to 150 s out of order (so windows are
/// corrected late and some events are too late). Returns the events in arrival order.
fn stream() -> Vec<Event<'static>> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    // The session starts in the middle of a minute: that minute's orders are its own.
    let start = 90_000;
    let mut out = vec![Event::minimal("start", EventType::SessionStart, start, "r1", "s1")];
    for i in 0..4_000i64 {
        let t = start + 1_000 + i * 600;
        let ts = (t - next(150_000) as i64).max(start);
        let kind = if next(3) == 0 { EventType::OrderPaid } else { EventType::ProductClick };
        let mut e = Event::minimal(&format!("e{i}"), kind, ts, "r1", "s1");
        e.user_id = Some(Cow::Owned(format!("u{}", next(500))));
        e.product_id = Some(Cow::Owned(format!("p{}", next(30))));
        if kind == EventType::OrderPaid {
            e.order_id = Some(Cow::Owned(format!("o{i}")));
            e.amount_cents = Some(100 + next(10_000) as i64);
        }
        out.push(e);
    }
    out.push(Event::minimal("end", EventType::SessionEnd, start + 2_401_000, "r1", "s1"));
    out
}

#[test]
fn the_engines_rows_sum_to_each_products_accepted_paid_amounts() {
    let mut engine = Engine::new(EngineConfig::default());
    let mut tracker = RoomTracker::default();
    tracker.set_product_window(Some(window()));
    let mut expected: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    let (mut rows, mut late) = (Vec::new(), 0);
    let mut restored_once = false;
    for (i, e) in stream().iter().enumerate() {
        let outcome = engine.process(e, 0, &mut rows);
        if let Outcome::Accepted { late: l } = outcome {
            late += usize::from(l);
            if e.kind == EventType::OrderPaid {
                let x = expected.entry(e.product_id.as_deref().unwrap().to_owned()).or_default();
                x.0 += e.amount_cents.unwrap();
                x.1 += 1;
            }
        }
        tracker.on_rows(&rows);
        rows.clear();
        if i == 2_000 && !restored_once {
            // Half-way, a restart from the checkpoint: the sums go on from where they were.
            tracker = RoomTracker::from_checkpoint(&tracker.to_checkpoint().unwrap()).unwrap();
            tracker.set_product_window(Some(window()));
            restored_once = true;
        }
    }
    engine.finish(&mut rows);
    tracker.on_rows(&rows);
    assert!(late > 100, "the stream corrects windows late: {late} late events");
    assert!(engine.stats().too_late > 0, "and some events are too late: the edge of the lateness");

    let reg = prometheus::Registry::new();
    let m = RoomMetrics::new(&reg, vec![]).unwrap();
    let key = crate::RoomKey { org_id: "default".into(), room_id: "r1".into(), platform: "other".into() };
    tracker.observe(&m, &key, 0, true, &[], 0);
    tracker.publish_signals(&m);
    let got = m.products("r1").expect("the room's products are published");
    assert_eq!(got.len(), TOP_PRODUCTS);
    let mut want: Vec<(String, i64, u64)> = expected.into_iter().map(|(p, (g, n))| (p, g, n)).collect();
    want.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then_with(|| a.0.cmp(&b.0)));
    want.truncate(TOP_PRODUCTS);
    let got: Vec<(String, i64, u64)> =
        got.iter().map(|l| (l.product_id.clone(), l.counts.gmv_cents, l.counts.orders_paid)).collect();
    assert_eq!(got, want);
}

#[test]
fn a_checkpoint_from_before_the_products_loads_and_another_format_is_refused() {
    let w = window();
    let mut t = RoomTracker::default();
    t.set_product_window(Some(w.clone()));
    t.on_rows(&[Row::Breakdown(row(60_000, 1, "a", 100))]);
    let bytes = t.to_checkpoint().unwrap();
    let mut back = RoomTracker::from_checkpoint(&bytes).unwrap();
    back.set_product_window(Some(w.clone()));
    assert_eq!(back, t, "the sums come back");

    let empty = RoomTracker::default().to_checkpoint().unwrap();
    assert_eq!(empty[empty.len() - 2..], [STATE_FORMAT, 0], "the products' section is last: format, no room");
    let before = RoomTracker::from_checkpoint(&empty[..empty.len() - 2]).unwrap();
    assert_eq!(before, RoomTracker::default());

    let mut section = Vec::new();
    let mut p = RoomProducts::default();
    p.on_row(&row(60_000, 1, "a", 100), &w);
    save(&BTreeMap::from([("r1".to_owned(), p)]), &mut section).unwrap();
    assert!(bytes.ends_with(&section));
    let at = bytes.len() - section.len();
    let mut future = bytes.clone();
    future[at] = STATE_FORMAT + 1;
    let err = RoomTracker::from_checkpoint(&future).unwrap_err().to_string();
    assert!(err.contains("another version of livefunnel"), "{err}");
}
