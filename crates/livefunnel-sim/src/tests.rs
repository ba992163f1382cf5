use std::collections::{HashMap, HashSet};

use livefunnel_core::{decode, EventType, Reason, SourceClass};

use super::*;

fn params(rooms: u32, minutes: i64, seed: u64) -> SimParams {
    SimParams { rooms, duration_ms: minutes * 60_000, seed, ..SimParams::default() }
}

fn all_messages(p: SimParams) -> Vec<Vec<u8>> {
    let mut sim = Simulator::new(p);
    let mut v = Vec::new();
    let mut buf = Vec::new();
    while sim.next_message(&mut buf) {
        v.push(std::mem::take(&mut buf));
    }
    assert_eq!(sim.events_emitted(), v.len() as u64);
    v
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let p = SimParams { malformed_share: 0.01, ..params(5, 10, 42) };
    let a = all_messages(p.clone());
    let b = all_messages(p.clone());
    assert!(a.len() > 500, "{}", a.len());
    assert_eq!(a, b);
    let c = all_messages(SimParams { seed: 43, ..p });
    assert_ne!(a, c);
}

#[test]
fn every_line_is_valid_and_ids_are_unique_per_room() {
    let msgs = all_messages(SimParams { late_share: 0.01, duplicate_share: 0.01, ..params(12, 20, 5) });
    let mut first: HashMap<(String, String), &Vec<u8>> = HashMap::new();
    let mut dups = 0;
    for m in &msgs {
        assert!(!m.contains(&b'\n'));
        let ev = decode(m).unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(m)));
        let n = ev.event_id.strip_prefix(&format!("{}-", ev.room_id)).expect("event id is <room>-<n>");
        assert!(n.parse::<u64>().is_ok(), "{}", ev.event_id);
        match first.get(&(ev.room_id.to_string(), ev.event_id.to_string())) {
            Some(prev) => {
                assert_eq!(*prev, m, "a duplicate is an identical re-send");
                dups += 1;
            }
            None => {
                first.insert((ev.room_id.to_string(), ev.event_id.to_string()), m);
            }
        }
    }
    let share = f64::from(dups) / msgs.len() as f64;
    assert!((0.005..0.015).contains(&share), "duplicate share {share}");
}

#[test]
fn malformed_messages_cover_every_kind() {
    let msgs = all_messages(SimParams { malformed_share: 0.05, ..params(6, 15, 9) });
    let mut reasons: HashMap<Reason, u32> = HashMap::new();
    for m in &msgs {
        if let Err(r) = decode(m) {
            *reasons.entry(r.reason).or_default() += 1;
        }
    }
    let bad: u32 = reasons.values().sum();
    let share = f64::from(bad) / msgs.len() as f64;
    assert!((0.03..0.07).contains(&share), "malformed share {share}");
    let kinds: HashSet<Reason> = reasons.keys().copied().collect();
    let want: HashSet<Reason> =
        [Reason::MalformedJson, Reason::MissingField, Reason::UnknownEventType, Reason::BadField].into();
    assert_eq!(kinds, want, "{reasons:?}");
}

#[test]
fn arrival_order_has_bounded_disorder_and_sessions_frame_the_room() {
    let msgs = all_messages(params(10, 20, 3));
    let mut max_ts = 0;
    let mut behind = 0;
    let mut span: HashMap<String, (i64, i64)> = HashMap::new();
    let mut seen_start: HashSet<String> = HashSet::new();
    let mut ts_by_room: HashMap<String, Vec<i64>> = HashMap::new();
    for m in &msgs {
        let ev = decode(m).expect("valid");
        let room = ev.room_id.to_string();
        assert!(ev.ts > max_ts - 120_000, "no event more than 120 s behind");
        if ev.ts < max_ts - 2_500 {
            behind += 1;
        }
        max_ts = max_ts.max(ev.ts);
        match ev.kind {
            EventType::SessionStart => {
                assert!(seen_start.insert(room.clone()), "one session_start per room");
                span.entry(room.clone()).or_insert((ev.ts, i64::MAX)).0 = ev.ts;
            }
            EventType::SessionEnd => span.entry(room.clone()).or_insert((i64::MIN, ev.ts)).1 = ev.ts,
            _ => assert!(seen_start.contains(&room), "session_start arrives first"),
        }
        ts_by_room.entry(room).or_default().push(ev.ts);
    }
    // Only the late share (0.2 %) is more than the jitter behind.
    assert!(f64::from(behind) / (msgs.len() as f64) < 0.006, "{behind} of {}", msgs.len());
    assert_eq!(span.len(), 10);
    for (room, ts) in ts_by_room {
        let (s, e) = span[&room];
        assert!(ts.iter().all(|&t| t >= s && t <= e), "{room}: events inside its session");
    }
}

#[derive(Default)]
struct RoomTally {
    viewers: HashSet<String>,
    buyers: HashSet<String>,
    enters_by_class: [u64; 3],
    late_enters_by_class: [u64; 3],
    impressions: u64,
    orders: u64,
    gmv: i64,
    qty1: u64,
}

fn class_index(c: SourceClass) -> usize {
    match c {
        SourceClass::Private => 0,
        SourceClass::Public => 1,
        SourceClass::Paid => 2,
    }
}

#[test]
fn funnel_ratios_are_realistic() {
    let p = params(60, 30, 11);
    let sim = Simulator::new(p.clone());
    let private_led: HashMap<String, bool> =
        sim.rooms.iter().map(|r| (r.id.clone(), r.private_led)).collect();
    let starts: HashMap<String, i64> = sim.rooms.iter().map(|r| (r.id.clone(), r.start)).collect();
    drop(sim);
    let msgs = all_messages(p);
    let mut tally: HashMap<String, RoomTally> = HashMap::new();
    let mut seen = HashSet::new();
    for m in &msgs {
        let ev = decode(m).expect("valid");
        if !seen.insert((ev.room_id.to_string(), ev.event_id.to_string())) {
            continue;
        }
        let t = tally.entry(ev.room_id.to_string()).or_default();
        match ev.kind {
            EventType::Enter => {
                let c = class_index(ev.source.expect("enter has a source").class());
                t.viewers.insert(ev.user_id.as_deref().unwrap().to_owned());
                t.enters_by_class[c] += 1;
                if ev.ts >= starts[ev.room_id.as_ref()] + 15 * 60_000 {
                    t.late_enters_by_class[c] += 1;
                }
            }
            EventType::RoomImpression => t.impressions += 1,
            EventType::OrderPaid => {
                t.buyers.insert(ev.user_id.as_deref().unwrap().to_owned());
                t.orders += 1;
                t.gmv += ev.amount_cents();
                if ev.quantity() == 1 {
                    t.qty1 += 1;
                }
            }
            _ => {}
        }
    }
    let (mut pv, mut pb, mut uv, mut ub) = (0usize, 0usize, 0usize, 0usize);
    let (mut orders, mut gmv, mut qty1, mut imp, mut pub_enters) = (0u64, 0i64, 0u64, 0u64, 0u64);
    let (mut late_pub, mut late_all) = (0u64, 0u64);
    for (room, t) in &tally {
        if private_led[room] {
            pv += t.viewers.len();
            pb += t.buyers.len();
        } else {
            uv += t.viewers.len();
            ub += t.buyers.len();
            late_pub += t.late_enters_by_class[1] + t.late_enters_by_class[2];
            late_all += t.late_enters_by_class.iter().sum::<u64>();
        }
        orders += t.orders;
        gmv += t.gmv;
        qty1 += t.qty1;
        imp += t.impressions;
        pub_enters += t.enters_by_class[1] + t.enters_by_class[2];
    }
    let private_conv = pb as f64 / pv as f64;
    let public_conv = ub as f64 / uv as f64;
    let aov_yuan = gmv as f64 / 100.0 / orders as f64;
    let public_share_late = late_pub as f64 / late_all as f64;
    assert!(pv > 1_000 && uv > 1_000, "{pv} {uv}");
    assert!((0.07..0.13).contains(&private_conv), "private-led view→pay {private_conv}");
    assert!((0.005..0.02).contains(&public_conv), "public-led view→pay {public_conv}");
    assert!((170.0..230.0).contains(&aov_yuan), "AOV {aov_yuan}");
    assert!(qty1 as f64 / orders as f64 > 0.7, "quantity mostly 1");
    assert!(imp > 3 * pub_enters, "impressions ≫ public enters: {imp} vs {pub_enters}");
    assert!(
        (0.78..0.95).contains(&public_share_late),
        "public-led rooms' late public share {public_share_late}"
    );
}

#[test]
fn memory_is_bounded_by_live_viewers_not_stream_length() {
    fn peak(minutes: i64) -> (usize, u64) {
        let mut sim = Simulator::new(params(8, minutes, 21));
        let mut buf = Vec::new();
        let mut peak = 0;
        while sim.next_message(&mut buf) {
            buf.clear();
            peak = peak.max(sim.gen.len() + sim.arr.len());
        }
        (peak, sim.events_emitted())
    }
    let (p1, n1) = peak(30);
    let (p2, n2) = peak(90);
    assert!(n2 > 2 * n1, "{n1} {n2}");
    assert!(p2 < p1 * 2, "pending {p1} for 30 min, {p2} for 90 min");
    assert!((p2 as u64) < n2 / 10, "pending {p2} of {n2}");
}
