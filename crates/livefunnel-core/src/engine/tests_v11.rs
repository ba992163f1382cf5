//! Contract v1.1 at the engine's boundaries: sessions that end by timeout, live-mode
//! timeouts and retirement that wait for the wall clock, the room limit and the
//! breakdown key cap. Driven without IO or sleeps.

use super::tests::{cfg, Run, M, S, T0};
use super::*;
use crate::event::EventType as T;
use crate::row::{BreakdownKind, SessionRow};

fn session_rows<'a>(r: &'a Run, room: &str, session: &str) -> Vec<&'a SessionRow> {
    r.rows
        .iter()
        .filter_map(|row| match row {
            Row::Session(s) if &*s.room_id == room && &*s.session_id == session => Some(s),
            _ => None,
        })
        .collect()
}

fn live_cfg(windows: &[&str]) -> EngineConfig {
    EngineConfig { mode: TimeMode::Live, ..cfg(windows) }
}

fn running_of(engine: &mut Engine, room: &str) -> Option<RunningRoom> {
    let mut out = Vec::new();
    engine.running(&mut out);
    out.into_iter().find(|r| &*r.room_id == room)
}

#[test]
fn a_session_without_session_end_ends_by_timeout_and_its_room_retires() {
    let mut r = Run::new(cfg(&["1m", "session"]));
    r.push("r1", T::SessionStart, T0, None);
    r.push("r1", T::Enter, T0 + S, Some("u1"));
    r.push("r1", T::Like, T0 + 2 * M, Some("u1"));
    assert!(running_of(&mut r.engine, "r1").unwrap().live);
    // Exactly 30 min of partition time after r1's last event: not yet.
    r.push("r2", T::Like, T0 + 32 * M, Some("u9"));
    assert_eq!(r.engine.stats().sessions_timed_out, 0);
    let before = session_rows(&r, "r1", "s1").len();
    r.push("r2", T::Like, T0 + 32 * M + 1, Some("u9"));
    assert_eq!(r.engine.stats().sessions_timed_out, 1);
    let rows = session_rows(&r, "r1", "s1");
    assert!(rows.len() > before, "the timeout emits the session row");
    let s = rows.last().unwrap();
    assert!(s.ended_by_timeout);
    assert_eq!(s.session_end_ts, Some(T0 + 2 * M), "the session's largest ts");
    assert_eq!(s.duration_ms, 2 * M);
    // Every session ended and the partition moved past max + 30 min: retired too.
    assert_eq!(r.engine.stats().rooms_retired, 1);
    let run = running_of(&mut r.engine, "r1").unwrap();
    assert!(run.retired && !run.live);
    assert_eq!(run.session_end_ts, Some(T0 + 2 * M));
    // No session row every tick any more: nothing for r1 while the partition moves on.
    let n = r.rows.len();
    r.push("r2", T::Like, T0 + 90 * M, Some("u9"));
    assert!(r.rows[n..].iter().all(|row| !matches!(row, Row::Session(s) if &*s.room_id == "r1")));
}

#[test]
fn a_real_session_end_after_a_timeout_wins_and_a_later_event_does_not_reopen() {
    let mut r = Run::new(cfg(&["1m", "session"]));
    let s2 = |r: &mut Run, kind, ts, user| {
        let mut e = r.ev("r1", kind, ts, user);
        e.session_id = "s2".into();
        r.send(&e)
    };
    r.push("r1", T::SessionStart, T0, None);
    s2(&mut r, T::SessionStart, T0 + S, None);
    // s2 stays busy; s1 hears nothing for more than 30 min.
    for m in 1..=31 {
        s2(&mut r, T::Like, T0 + m * M, Some("u2"));
    }
    s2(&mut r, T::Like, T0 + 31 * M + 2 * S, Some("u2"));
    let s1 = *session_rows(&r, "r1", "s1").last().unwrap();
    assert!(s1.ended_by_timeout);
    assert_eq!(s1.session_end_ts, Some(T0));
    assert!(running_of(&mut r.engine, "r1").unwrap().live, "s2 is live");
    assert_eq!(r.engine.stats().rooms_retired, 0);
    // A late event of s1: counted, the session stays ended (by timeout).
    assert_eq!(r.push("r1", T::Like, T0 + 30 * M, Some("u1")), Outcome::Accepted { late: true });
    let s1 = *session_rows(&r, "r1", "s1").last().unwrap();
    assert!(s1.ended_by_timeout);
    assert_eq!((s1.session_end_ts, s1.counts.likes), (Some(T0 + 30 * M), 1));
    // Its real end arrives: it wins.
    r.push("r1", T::SessionEnd, T0 + 30 * M + S, None);
    let s1 = *session_rows(&r, "r1", "s1").last().unwrap();
    assert!(!s1.ended_by_timeout);
    assert_eq!(s1.session_end_ts, Some(T0 + 30 * M + S));
}

#[test]
fn a_timeout_changes_no_presence_and_no_window() {
    // Replay of the same room twice, the second with the session timing out: every
    // window row and the session's presence measures are the same.
    let events = |r: &mut Run| {
        r.push("r1", T::SessionStart, T0, None);
        r.push("r1", T::Enter, T0 + S, Some("u1"));
        r.push("r1", T::Enter, T0 + 20 * S, Some("u2"));
        r.push("r1", T::Heartbeat, T0 + 5 * M, Some("u1"));
    };
    let mut plain = Run::new(cfg(&["1m", "5m/10s", "session"]));
    events(&mut plain);
    plain.finish();
    let mut timed = Run::new(cfg(&["1m", "5m/10s", "session"]));
    events(&mut timed);
    timed.push("r2", T::Like, T0 + 40 * M, Some("u9"));
    timed.finish();
    assert_eq!(timed.engine.stats().sessions_timed_out, 1);
    let windows = |r: &Run| -> Vec<(String, i64, crate::row::Counts)> {
        let mut last = std::collections::BTreeMap::new();
        for row in &r.rows {
            if let Row::Window(w) = row {
                if &*w.room_id == "r1" {
                    last.insert((w.window.to_string(), w.window_start), w.counts.clone());
                }
            }
        }
        last.into_iter().map(|((w, s), c)| (w, s, c)).collect()
    };
    assert_eq!(windows(&timed), windows(&plain));
    let (a, b) = (plain.session("r1"), timed.session("r1"));
    assert_eq!(a.counts, b.counts);
    assert_eq!((a.peak_online, a.peak_online_ts), (b.peak_online, b.peak_online_ts));
    assert_eq!((a.session_end_ts, b.session_end_ts), (None, Some(T0 + 5 * M)));
    assert!(!a.ended_by_timeout && b.ended_by_timeout);
}

#[test]
fn live_mode_a_far_ahead_clock_retires_nothing_and_ends_no_session() {
    let mut r = Run::new(live_cfg(&["1m", "5m/10s", "10m/1m", "session"]));
    let wall = T0;
    let send = |r: &mut Run, room: &str, session: &str, kind, ts, at| {
        let mut e = r.ev(room, kind, ts, Some("u1"));
        e.session_id = session.to_owned().into();
        r.engine.process(&e, at, &mut r.rows)
    };
    // Room A broadcasts and ends; room B is live and quiet.
    send(&mut r, "a", "a1", T::SessionStart, wall, wall);
    send(&mut r, "b", "b1", T::SessionStart, wall, wall);
    send(&mut r, "a", "a1", T::Enter, wall + S, wall + S);
    send(&mut r, "a", "a1", T::SessionEnd, wall + 10 * M, wall + 10 * M);
    // Room C's producer has a clock 50 minutes ahead (accepted: skew is 1 h).
    let far = wall + 10 * M + 50 * M;
    assert_eq!(send(&mut r, "c", "c1", T::Like, far, wall + 10 * M), Outcome::Accepted { late: false });
    assert_eq!(r.engine.stats().rooms_retired, 0, "partition time alone retires nobody");
    assert_eq!(r.engine.stats().sessions_timed_out, 0, "nor ends B's broadcast");
    // A starts again a minute later: every event of the new broadcast is accepted.
    for (i, kind) in [T::SessionStart, T::Enter, T::Like, T::SessionEnd].into_iter().enumerate() {
        let t = wall + 11 * M + i as i64 * S;
        assert_eq!(send(&mut r, "a", "a2", kind, t, t), Outcome::Accepted { late: false }, "{kind:?}");
    }
    // Ticks of the wall clock: B ends by timeout once 30 min have passed on both
    // clocks since its last event, not before.
    r.engine.tick(wall + 30 * M - 1, &mut r.rows);
    assert_eq!(r.engine.stats().sessions_timed_out, 0);
    r.engine.tick(wall + 30 * M, &mut r.rows);
    assert_eq!(r.engine.stats().sessions_timed_out, 1);
    let b = *session_rows(&r, "b", "b1").last().unwrap();
    assert!(b.ended_by_timeout);
    // A retires 30 min of wall clock after its latest event arrived.
    r.engine.tick(wall + 11 * M + 3 * S + 30 * M - 1, &mut r.rows);
    let retired = r.engine.stats().rooms_retired;
    r.engine.tick(wall + 11 * M + 3 * S + 30 * M, &mut r.rows);
    assert_eq!(r.engine.stats().rooms_retired, retired + 1);
    assert!(running_of(&mut r.engine, "a").unwrap().retired);
}

#[test]
fn the_room_limit_rejects_new_rooms_and_retired_ones_do_not_count() {
    let mut c = cfg(&["1m", "session"]);
    c.max_rooms_per_partition = 2;
    let mut r = Run::new(c);
    r.push("r1", T::SessionStart, T0, None);
    r.push("r2", T::SessionStart, T0, None);
    assert_eq!(r.push("r3", T::SessionStart, T0, None), Outcome::Rejected(Reason::RoomLimit));
    assert_eq!(r.engine.stats().room_limit, 1);
    assert_eq!(r.engine.rooms(), 2, "a rejected room takes no memory");
    // Known rooms go on; their lateness and duplicates are judged first.
    assert_eq!(r.push("r1", T::Like, T0 + S, Some("u")), Outcome::Accepted { late: false });
    r.push("r1", T::SessionEnd, T0 + M, None);
    // r2 keeps the partition moving; r1 retires and leaves a place.
    r.push("r2", T::Like, T0 + M + 30 * M + 1, Some("u"));
    assert_eq!(r.engine.stats().rooms_retired, 1);
    assert_eq!(r.push("r3", T::SessionStart, T0 + 32 * M, None), Outcome::Accepted { late: false });
    // Now r1 coming back would make three.
    let mut next = r.ev("r1", T::SessionStart, T0 + 40 * M, None);
    next.session_id = "s2".into();
    assert_eq!(r.send(&next), Outcome::Rejected(Reason::RoomLimit));
    assert_eq!(r.engine.stats().room_limit, 2);
}

#[test]
fn breakdown_keys_beyond_the_cap_count_under_other() {
    let mut c = cfg(&["1m", "session"]);
    c.max_breakdown_keys = 16;
    let mut r = Run::new(c);
    for i in 0..20 {
        let mut e = r.ev("r1", T::ProductClick, T0 + i * S, Some("u1"));
        e.product_id = Some(format!("p{i}").into());
        r.send(&e);
    }
    // An admitted key keeps its own rows after the cap is reached.
    let mut e = r.ev("r1", T::ProductClick, T0 + 30 * S, Some("u1"));
    e.product_id = Some("p3".into());
    r.send(&e);
    r.finish();
    assert_eq!(r.engine.stats().breakdown_overflow, [0, 0, 4]);
    let products: std::collections::BTreeMap<String, u64> = r
        .rows
        .iter()
        .filter_map(|row| match row {
            Row::Breakdown(b) if b.kind == BreakdownKind::Product => {
                Some((b.key.to_string(), b.counts.product_clicks))
            }
            _ => None,
        })
        .collect();
    assert_eq!(products.len(), 17, "{products:?}");
    assert_eq!(products["__other__"], 4);
    assert_eq!(products["p3"], 2);
    assert!(!products.contains_key("p16"));
    // The window row itself counts everything.
    assert_eq!(r.last("r1", "1m", T0).counts.product_clicks, 21);
}

#[test]
fn a_flood_of_product_ids_makes_at_most_the_cap_of_rows_per_window() {
    let mut r = Run::new(cfg(&["1m", "5m/10s", "10m/1m", "session"]));
    for i in 0..5_000 {
        let mut e = r.ev("r1", T::ProductImpression, T0 + i * 10, Some("u1"));
        e.product_id = Some(format!("p{i}").into());
        r.send(&e);
    }
    r.finish();
    assert_eq!(r.engine.stats().breakdown_overflow[BreakdownKind::Product as usize], 4_000);
    let mut per_window: std::collections::BTreeMap<(String, i64), usize> = Default::default();
    for row in &r.rows {
        if let Row::Breakdown(b) = row {
            *per_window.entry((b.window.to_string(), b.window_start)).or_default() += 1;
        }
    }
    // Breakdowns for the minute series only, by default; 1,000 keys and __other__.
    assert!(per_window.keys().all(|(w, _)| w == "1m"), "{:?}", per_window.keys());
    assert!(per_window.values().all(|&n| n <= 1_001), "{per_window:?}");
}

#[test]
fn state_format_3_keeps_timeouts_keys_and_limits() {
    let mut c = live_cfg(&["1m", "session"]);
    c.max_breakdown_keys = 16;
    c.max_rooms_per_partition = 1;
    let mut r = Run::new(c.clone());
    let wall = T0;
    for i in 0..18 {
        let mut e = r.ev("r1", T::ProductClick, T0 + i * S, Some("u1"));
        e.product_id = Some(format!("p{i}").into());
        r.engine.process(&e, wall + i * S, &mut r.rows);
    }
    let e = r.ev("r2", T::Like, T0 + 20 * S, Some("u1"));
    assert_eq!(r.engine.process(&e, wall + 20 * S, &mut r.rows), Outcome::Rejected(Reason::RoomLimit));
    let snap = r.engine.snapshot();
    let mut back = Engine::restore_exact(c, &snap).unwrap();
    assert_eq!(back.stats(), r.engine.stats());
    assert_eq!(back.snapshot(), snap, "the same state writes the same bytes");
    // The restored engine still waits for the wall clock, and still caps keys.
    let mut out = Vec::new();
    back.tick(wall + 17 * S + 30 * M - 1, &mut out);
    assert_eq!(back.stats().sessions_timed_out, 0);
    let mut e = r.ev("r1", T::ProductClick, T0 + 40 * S, Some("u1"));
    e.product_id = Some("p99".into());
    back.process(&e, wall + 40 * S, &mut out);
    assert_eq!(back.stats().breakdown_overflow[BreakdownKind::Product as usize], 3);
}
