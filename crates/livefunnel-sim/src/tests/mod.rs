use std::collections::{HashMap, HashSet};

use livefunnel_core::{decode, Event, EventType, Reason, SourceClass};

use super::*;

mod dense;
mod model;
mod scenarios;

const MIN: i64 = 60_000;

fn params(rooms: u32, minutes: i64, seed: u64) -> SimParams {
    SimParams { rooms, duration_ms: minutes * MIN, seed, ..SimParams::default() }
}

fn all_messages(p: SimParams) -> Vec<Vec<u8>> {
    with_meta(p).into_iter().map(|(_, m)| m).collect()
}

fn with_meta(p: SimParams) -> Vec<(MessageMeta, Vec<u8>)> {
    let mut sim = Simulator::new(p);
    let mut v = Vec::new();
    let mut buf = Vec::new();
    while let Some(meta) = sim.next_with_meta(&mut buf) {
        v.push((meta, std::mem::take(&mut buf)));
    }
    assert_eq!(sim.events_emitted(), v.len() as u64);
    v
}

/// The valid events, first copy of each (room, event_id), in arrival order.
fn accepted(msgs: &[Vec<u8>]) -> Vec<Event<'static>> {
    let mut seen = HashSet::new();
    msgs.iter()
        .filter_map(|m| decode(m).ok())
        .filter(|e| seen.insert((e.room_id.to_string(), e.event_id.to_string())))
        .map(Event::into_owned)
        .collect()
}

/// Session start of each room, by room id.
fn starts(events: &[Event<'_>]) -> HashMap<String, i64> {
    events
        .iter()
        .filter(|e| e.kind == EventType::SessionStart)
        .map(|e| (e.room_id.to_string(), e.ts))
        .collect()
}

#[test]
fn meta_says_when_and_where_each_message_belongs() {
    let p = SimParams { malformed_share: 0.02, late_share: 0.01, ..params(6, 12, 4) };
    let mut sim = Simulator::new(p);
    let mut buf = Vec::new();
    let (mut n, mut last_due, mut bad) = (0, i64::MIN, 0);
    while let Some(meta) = sim.next_with_meta(&mut buf) {
        assert!(meta.due_ms >= last_due, "due times never go down");
        last_due = meta.due_ms;
        assert!(meta.ts_ms <= meta.due_ms, "a message arrives after its event");
        assert!(meta.due_ms - meta.ts_ms <= 120_000, "{meta:?}");
        match decode(&buf) {
            Ok(e) => {
                assert_eq!(e.ts, meta.ts_ms);
                assert_eq!(e.room_id, sim.room_id(meta.room));
            }
            Err(_) => bad += 1,
        }
        assert!(sim.room_id(meta.room).starts_with("room-"));
        n += 1;
        buf.clear();
    }
    assert_eq!(sim.rooms(), 6);
    assert_eq!(sim.room_id(0), "room-0001");
    assert!(n > 2_000 && bad > 10, "{n} {bad}");
}

#[test]
fn a_room_does_not_depend_on_how_many_rooms_run() {
    // `--scenario ...:rooms=3` must always mean the same room.
    let room3 = |rooms: u32| -> Vec<Vec<u8>> {
        let p = SimParams { malformed_share: 0.01, ..params(rooms, 15, 77) };
        with_meta(p).into_iter().filter(|(m, _)| m.room == 2).map(|(_, b)| b).collect()
    };
    let a = room3(3);
    assert!(a.len() > 200, "{}", a.len());
    assert!(String::from_utf8_lossy(&a[0]).contains("\"room_id\":\"room-0003\""));
    assert_eq!(a, room3(9));
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
