//! Boundary tests of §1.5 and §2, driven without IO or sleeps.

use std::borrow::Cow;

use super::*;
use crate::event::{EventType as T, Source};
use crate::row::{SessionRow, WindowRow};

pub(super) const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
pub(super) const S: i64 = 1000;
pub(super) const M: i64 = 60 * S;

pub(super) fn cfg(windows: &[&str]) -> EngineConfig {
    EngineConfig {
        windows: windows.iter().map(|w| WindowSpec::parse(w).unwrap()).collect(),
        ..EngineConfig::default()
    }
}

pub(super) struct Run {
    pub(super) engine: Engine,
    pub(super) rows: Vec<Row>,
    n: u64,
}

impl Run {
    pub(super) fn new(cfg: EngineConfig) -> Run {
        cfg.validate().unwrap();
        Run { engine: Engine::new(cfg), rows: Vec::new(), n: 0 }
    }

    pub(super) fn ev(&mut self, room: &str, kind: T, ts: i64, user: Option<&str>) -> Event<'static> {
        self.n += 1;
        let mut e = Event::minimal(&format!("{room}-{}", self.n), kind, ts, room, "s1");
        e.user_id = user.map(|u| Cow::Owned(u.to_owned()));
        if kind.requires_source() {
            e.source = Some(Source::Moments);
        }
        if kind.requires_product_id() {
            e.product_id = Some("p1".into());
        }
        if kind.requires_order_id() {
            e.order_id = Some(format!("o{}", self.n).into());
        }
        if kind.requires_amount() {
            e.amount_cents = Some(19_900);
        }
        e
    }

    pub(super) fn send(&mut self, e: &Event<'_>) -> Outcome {
        self.engine.process(e, 0, &mut self.rows)
    }

    pub(super) fn push(&mut self, room: &str, kind: T, ts: i64, user: Option<&str>) -> Outcome {
        let e = self.ev(room, kind, ts, user);
        self.send(&e)
    }

    pub(super) fn finish(&mut self) {
        self.engine.finish(&mut self.rows);
    }

    pub(super) fn windows(&self, room: &str, window: &str, start: i64) -> Vec<&WindowRow> {
        self.rows
            .iter()
            .filter_map(|r| match r {
                Row::Window(w) if &*w.room_id == room && &*w.window == window && w.window_start == start => {
                    Some(w)
                }
                _ => None,
            })
            .collect()
    }

    pub(super) fn last(&self, room: &str, window: &str, start: i64) -> &WindowRow {
        self.windows(room, window, start).pop().unwrap_or_else(|| panic!("no row {room} {window} {start}"))
    }

    pub(super) fn session(&self, room: &str) -> &SessionRow {
        self.rows
            .iter()
            .rev()
            .find_map(|r| match r {
                Row::Session(s) if &*s.room_id == room => Some(s),
                _ => None,
            })
            .expect("a session row")
    }
}

#[test]
fn an_event_at_a_window_end_belongs_to_the_next_window() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("r1", T::Like, T0 + 59_999, Some("u1"));
    r.push("r1", T::Like, T0 + M, Some("u1"));
    r.finish();
    assert_eq!(r.last("r1", "1m", T0).counts.likes, 1);
    assert_eq!(r.last("r1", "1m", T0 + M).counts.likes, 1);
    assert_eq!(r.last("r1", "1m", T0).window_end, T0 + M);
}

#[test]
fn lateness_boundary_is_inclusive_at_w_minus_allowed_lateness() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("r1", T::Like, T0 + 10 * M, Some("u1"));
    // W = max - 5 s; horizon = W - 120 s.
    let horizon = T0 + 10 * M - 5 * S - 120 * S;
    assert_eq!(r.push("r1", T::Like, horizon, Some("u1")), Outcome::Accepted { late: true });
    assert_eq!(r.push("r1", T::Like, horizon - 1, Some("u1")), Outcome::Rejected(Reason::TooLate));
    // Inside the out-of-orderness is not late.
    assert_eq!(r.push("r1", T::Like, T0 + 10 * M - 5 * S, Some("u1")), Outcome::Accepted { late: false });
    // Another room's clock does not make this room's events late.
    assert_eq!(r.push("r2", T::Like, T0, Some("u1")), Outcome::Accepted { late: false });
}

#[test]
fn windows_are_emitted_when_the_watermark_passes_their_end_and_re_emitted_on_change() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("r1", T::Like, T0 + 10 * S, Some("u1"));
    r.push("r1", T::Like, T0 + M + 4 * S, Some("u1"));
    assert!(r.windows("r1", "1m", T0).is_empty(), "W = 59 s < 60 s: not yet");
    r.push("r1", T::Like, T0 + M + 5 * S, Some("u1"));
    let first = r.windows("r1", "1m", T0);
    assert_eq!(first.len(), 1, "W reached the end exactly");
    assert_eq!((first[0].version, first[0].counts.likes), (1, 1));
    // A late event inside the lateness changes the emitted window: version 2.
    r.push("r1", T::Like, T0 + 30 * S, Some("u2"));
    let again = r.windows("r1", "1m", T0);
    assert_eq!(again.len(), 2);
    assert_eq!((again[1].version, again[1].counts.likes), (2, 2));
    // A heartbeat of nobody online changes nothing: no re-emission.
    r.push("r1", T::Heartbeat, T0 + 31 * S, Some("u3"));
    assert_eq!(r.windows("r1", "1m", T0).len(), 2);
}

#[test]
fn idle_grace_closes_a_quiet_room_when_its_partition_moves_on() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("quiet", T::Like, T0 + 10 * S, Some("u1"));
    // The busy room moves the partition; the quiet room's E = P - 30 s - 5 s.
    r.push("busy", T::Like, T0 + 94 * S, Some("u2"));
    assert!(r.windows("quiet", "1m", T0).is_empty(), "E = 59 s");
    r.push("busy", T::Like, T0 + 95 * S, Some("u2"));
    assert_eq!(r.last("quiet", "1m", T0).counts.likes, 1);
}

#[test]
fn duplicates_inside_the_horizon_are_dropped_and_outside_it_forgotten() {
    let mut r = Run::new(cfg(&["1m"]));
    let e = r.ev("r1", T::OrderPaid, T0, Some("u1"));
    assert_eq!(r.send(&e), Outcome::Accepted { late: false });
    let mut copy = e.clone();
    copy.amount_cents = Some(1);
    assert_eq!(r.send(&copy), Outcome::Duplicate, "whatever its content");
    r.push("r1", T::Like, T0 + 125 * S, Some("u1"));
    // Horizon is now exactly T0: the id is still remembered.
    assert_eq!(r.send(&e), Outcome::Duplicate);
    r.push("r1", T::Like, T0 + 125 * S + 1, Some("u1"));
    // The original fell below the horizon: a copy with an in-horizon ts is new.
    let mut later = e.clone();
    later.ts = T0 + 100 * S;
    assert_eq!(r.send(&later), Outcome::Accepted { late: true });
    assert_eq!(r.engine.stats().duplicates, 2);
    r.finish();
    assert_eq!(r.last("r1", "1m", T0).counts.gmv_cents, 19_900);
    assert_eq!(r.last("r1", "1m", T0 + M).counts.gmv_cents, 19_900);
}

#[test]
fn presence_measures_over_windows() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("r1", T::Enter, T0, Some("u1"));
    r.push("r1", T::Enter, T0 + 30 * S, Some("u2"));
    r.push("r1", T::Leave, T0 + 90 * S, Some("u1"));
    r.finish();
    let w0 = &r.last("r1", "1m", T0).counts;
    assert_eq!((w0.watch_pv, w0.watch_uv, w0.online_end, w0.online_peak), (2, 2, 2, 2));
    assert_eq!(w0.watch_ms, 60_000 + 30_000);
    assert_eq!(w0.present_uv, 2);
    assert_eq!(w0.ratios().avg_watch_seconds, Some(45.0));
    let w1 = &r.last("r1", "1m", T0 + M).counts;
    // u1 until 90 s; u2 until 30 s + 10 min timeout.
    assert_eq!((w1.watch_pv, w1.online_end, w1.online_peak), (0, 1, 2));
    assert_eq!(w1.watch_ms, 30_000 + 60_000);
    // A window with presence and no event still exists: the room is silent, not missing.
    let w5 = &r.last("r1", "1m", T0 + 5 * M).counts;
    assert_eq!((w5.watch_pv, w5.online_end, w5.present_uv), (0, 1, 1));
    assert_eq!(w5.ratios().gpm, None, "no views: gpm is null, never NaN");
    // u2 times out at 10 min 30 s.
    assert_eq!(r.last("r1", "1m", T0 + 10 * M).counts.watch_ms, 30_000);
    assert!(r.windows("r1", "1m", T0 + 11 * M).is_empty());
}

#[test]
fn strangers_and_sources_and_inheritance() {
    let mut r = Run::new(cfg(&["1m"]));
    let mut e = r.ev("r1", T::Enter, T0, Some("u1"));
    e.source = Some(Source::RecommendFeed);
    e.plan_id = Some("plan-1".into());
    r.send(&e);
    let e = r.ev("r1", T::OrderPaid, T0 + S, Some("u1"));
    r.send(&e);
    r.push("r1", T::Enter, T0 + 2 * S, Some("u2")); // moments: private
    r.push("r1", T::Leave, T0 + 12 * S, Some("u2"));
    r.push("r1", T::Leave, T0 + 20 * S, Some("u1"));
    r.finish();
    let c = &r.last("r1", "1m", T0).counts;
    assert_eq!((c.gmv_cents_public, c.gmv_cents_private, c.gmv_cents_paid), (19_900, 0, 0));
    assert_eq!((c.watch_uv_public, c.watch_uv_private), (1, 1));
    assert_eq!((c.stranger_watch_ms, c.stranger_present_uv), (20_000, 1));
    assert_eq!(c.ratios().stranger_avg_watch_seconds, Some(20.0));
    assert_eq!(c.ratios().public_private_ratio, Some(1.0));
    let plan = r
        .rows
        .iter()
        .find_map(|row| match row {
            Row::Breakdown(b) if b.kind == crate::row::BreakdownKind::Plan => Some(b),
            _ => None,
        })
        .expect("a plan row");
    assert_eq!((&*plan.key, plan.counts.gmv_cents, plan.counts.watch_pv), ("plan-1", 19_900, 1));
}

#[test]
fn session_rows_first_30_minutes_and_cold_start() {
    let mut r = Run::new(cfg(&["1m", "session"]));
    let mut start = r.ev("r1", T::SessionStart, T0, None);
    start.home_city = Some("杭州".into());
    r.send(&start);
    r.push("r1", T::Enter, T0 + S, Some("u1"));
    let mut paid = r.ev("r1", T::OrderPaid, T0 + 10 * M, Some("u1"));
    paid.buyer_city = Some("上海".into());
    r.send(&paid);
    r.push("r1", T::OrderPaid, T0 + 40 * M, Some("u1"));
    r.push("r1", T::SessionEnd, T0 + 45 * M, None);
    let s = r.session("r1").clone();
    assert_eq!((s.session_start_ts, s.session_end_ts, s.duration_ms), (T0, Some(T0 + 45 * M), 45 * M));
    assert_eq!((s.counts.orders_paid, s.first30m.orders_paid), (2, 1));
    assert_eq!((s.counts.orders_paid_known_city, s.counts.orders_paid_out_of_city), (1, 1));
    assert!(s.cold_start);
    // u1: entered at 1 s, refreshed at 10 min, timed out at 20 min.
    assert_eq!((s.peak_online, s.peak_online_ts), (1, Some(T0 + S)));
    assert_eq!(s.counts.watch_ms, (20 * M - S) as i128);
    assert_eq!(s.first30m.online_end, 0);
}

#[test]
fn a_retired_room_rejects_stragglers_and_accepts_its_next_broadcast() {
    let mut r = Run::new(cfg(&["1m", "session"]));
    r.push("r1", T::SessionStart, T0, None);
    r.push("r1", T::SessionEnd, T0 + M, None);
    // Another room moves the partition past r1's max + 30 min.
    r.push("r2", T::Like, T0 + M + 30 * M + 1, Some("u"));
    assert_eq!(r.engine.stats().rooms_retired, 1);
    // W jumped to max + 30 min - 5 s: an event of r1's old time is too late.
    assert_eq!(r.push("r1", T::Refund, T0 + 2 * M, Some("u")), Outcome::Rejected(Reason::TooLate));
    let mut refund = r.ev("r1", T::Refund, T0 + 31 * M - 125 * S, Some("u"));
    refund.session_id = "s1".into();
    assert_eq!(r.send(&refund), Outcome::Accepted { late: true });
    assert_eq!(r.engine.stats().after_session_final, 1);
    let mut next = r.ev("r1", T::SessionStart, T0 + 40 * M, None);
    next.session_id = "s2".into();
    assert_eq!(r.send(&next), Outcome::Accepted { late: false });
    r.finish();
    assert_eq!(r.session("r1").session_id.as_ref(), "s2");
}

#[test]
fn far_apart_timestamps_in_one_room_cost_nothing_for_the_gap() {
    let mut r = Run::new(cfg(&["1m", "5m/10s", "10m/1m", "session"]));
    // A producer with a broken clock sends epoch 0 for a new room, then real time:
    // the partition is at real time already, so both are accepted.
    r.push("r0", T::Like, T0, Some("u0"));
    assert_eq!(r.push("r1", T::Enter, 0, Some("u1")), Outcome::Accepted { late: false });
    assert_eq!(r.push("r1", T::Enter, T0, Some("u1")), Outcome::Accepted { late: false });
    r.push("r1", T::Like, T0 + S, Some("u1"));
    r.finish();
    assert_eq!(r.last("r1", "1m", 0).counts.watch_pv, 1);
    assert_eq!(r.last("r1", "1m", T0).counts.watch_pv, 1);
    // Presence-only windows exist until the timeout, not across the gap.
    let rows = r
        .rows
        .iter()
        .filter(|row| matches!(row, Row::Window(w) if &*w.window == "1m" && &*w.room_id == "r1"))
        .count();
    assert!(rows <= 24, "{rows} minute rows");
}

#[test]
fn extreme_timestamps_do_not_panic() {
    for ts in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
        let mut r = Run::new(EngineConfig::default());
        r.push("r1", T::SessionStart, ts, None);
        r.push("r1", T::Enter, ts, Some("u1"));
        r.push("r1", T::OrderPaid, ts, Some("u1"));
        r.push("r1", T::SessionEnd, ts, None);
        r.push("r2", T::Enter, ts.saturating_add(3_600_000), Some("u1"));
        r.finish();
        assert!(!r.rows.is_empty(), "ts {ts}");
    }
}

#[test]
fn live_mode_idle_partition_advances_with_the_wall_clock() {
    let mut cfg = cfg(&["1m"]);
    cfg.mode = TimeMode::Live;
    let mut r = Run::new(cfg);
    let wall = T0 + 10 * S;
    let e = r.ev("r1", T::Like, T0 + 10 * S, Some("u1"));
    assert_eq!(r.engine.process(&e, wall, &mut r.rows), Outcome::Accepted { late: false });
    // Not idle yet at 29 s: nothing moves.
    r.engine.tick(wall + 29 * S, &mut r.rows);
    assert!(r.rows.is_empty());
    // Idle: P = 10 s + elapsed; the window [0, 60 s) needs P - 35 s >= 60 s.
    r.engine.tick(wall + 84 * S, &mut r.rows);
    assert!(r.windows("r1", "1m", T0).is_empty());
    r.engine.tick(wall + 85 * S, &mut r.rows);
    assert_eq!(r.last("r1", "1m", T0).counts.likes, 1);
    // An event resets the idle clock.
    let e = r.ev("r1", T::Like, T0 + 100 * S, Some("u1"));
    r.engine.process(&e, wall + 90 * S, &mut r.rows);
    r.engine.tick(wall + 110 * S, &mut r.rows);
    assert!(r.windows("r1", "1m", T0 + M).is_empty(), "idle for 20 s only");
    // In live mode, ts_out_of_range is judged against the wall clock.
    let e = r.ev("r1", T::Like, wall + 90 * S + 3_600 * S + 1, Some("u1"));
    assert_eq!(r.engine.process(&e, wall + 90 * S, &mut r.rows), Outcome::Rejected(Reason::TsOutOfRange));
}

#[test]
fn tick_does_nothing_in_replay_mode() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("r1", T::Like, T0, Some("u1"));
    r.engine.tick(T0 + 3_600 * S, &mut r.rows);
    assert!(r.rows.is_empty());
}

#[test]
fn breakdown_rows_only_for_the_configured_windows() {
    let mut cfg = cfg(&["1m", "2m/1m"]);
    cfg.breakdown_windows = Some(vec![WindowSpec::parse("1m").unwrap()]);
    let mut r = Run::new(cfg);
    r.push("r1", T::Enter, T0, Some("u1"));
    r.push("r1", T::OrderPaid, T0 + S, Some("u1"));
    r.finish();
    let windows_of = |kind: crate::row::BreakdownKind| -> Vec<String> {
        r.rows
            .iter()
            .filter_map(|row| match row {
                Row::Breakdown(b) if b.kind == kind => Some(b.window.to_string()),
                _ => None,
            })
            .collect()
    };
    assert!(!windows_of(crate::row::BreakdownKind::Source).is_empty());
    assert!(windows_of(crate::row::BreakdownKind::Source).iter().all(|w| w == "1m"));
    assert!(windows_of(crate::row::BreakdownKind::Product).iter().all(|w| w == "1m"));
    // The 2m/1m rows themselves are still there, with every measure.
    assert_eq!(r.last("r1", "2m/1m", T0).counts.gmv_cents, 19_900);
}

#[test]
fn touched_rooms_come_once_per_call_with_their_totals() {
    let mut run = Run::new(cfg(&["1m"]));
    run.push("a", T::Enter, T0, Some("u1"));
    run.push("a", T::OrderPaid, T0 + S, Some("u1"));
    run.push("b", T::Comment, T0 + S, Some("u2"));
    let again = run.ev("a", T::OrderPaid, T0 + 2 * S, Some("u1"));
    assert!(matches!(run.send(&again), Outcome::Accepted { .. }));
    let mut out = Vec::new();
    run.engine.touched(&mut out);
    let got: Vec<_> = out
        .iter()
        .map(|r| {
            (&*r.room_id, r.totals.watch_entries, r.totals.orders_paid, r.totals.gmv_cents, r.totals.comments)
        })
        .collect();
    assert_eq!(got, [("a", 1, 2, 39_800, 0), ("b", 0, 0, 0, 1)]);
    assert_eq!(&*out[0].identity.session_id, "s1");
    // Nothing since, and a duplicate (not accepted) touches nothing.
    out.clear();
    run.engine.touched(&mut out);
    assert!(out.is_empty());
    assert!(matches!(run.send(&again), Outcome::Duplicate));
    run.engine.touched(&mut out);
    assert!(out.is_empty());
    // The totals go on from where they were.
    run.push("a", T::Enter, T0 + 3 * S, Some("u3"));
    run.engine.touched(&mut out);
    let got: Vec<_> =
        out.iter().map(|r| (&*r.room_id, r.totals.watch_entries, r.totals.orders_paid)).collect();
    assert_eq!(got, [("a", 2, 2)]);
}

#[test]
fn incremental_snapshots_encode_only_the_rooms_changed_since_the_last() {
    let mut run = Run::new(cfg(&["1m"]));
    run.push("a", T::Enter, T0, Some("u1"));
    run.push("b", T::Enter, T0, Some("u2"));
    run.push("c", T::Enter, T0, Some("u3"));
    let (first, stats) = run.engine.snapshot_incremental();
    assert_eq!((stats.rooms_encoded, stats.rooms_kept), (3, 0));
    assert_eq!(first, run.engine.snapshot());
    assert!(stats.kept_bytes >= first.len() - 200, "every room's bytes are kept: {stats:?}, {}", first.len());

    // Room b changes; a and c keep their bytes, and the whole is what a full snapshot writes.
    run.push("b", T::OrderPaid, T0 + S, Some("u2"));
    let (second, stats) = run.engine.snapshot_incremental();
    assert_eq!((stats.rooms_encoded, stats.rooms_kept), (1, 2));
    assert_eq!(second, run.engine.snapshot());
    assert_ne!(second, first);

    // A duplicate or a rejected event changes no room.
    let dup = run.ev("c", T::Comment, T0 + S, Some("u3"));
    assert!(matches!(run.send(&dup), Outcome::Accepted { .. }));
    assert!(matches!(run.send(&dup), Outcome::Duplicate));
    let (_, stats) = run.engine.snapshot_incremental();
    assert_eq!((stats.rooms_encoded, stats.rooms_kept), (1, 2));
    assert!(matches!(run.send(&dup), Outcome::Duplicate));
    let (third, stats) = run.engine.snapshot_incremental();
    assert_eq!((stats.rooms_encoded, stats.rooms_kept), (0, 3));
    assert_eq!(third, run.engine.snapshot());

    // The partition's progress closes a's and b's windows (their rows change them).
    run.push("c", T::Comment, T0 + 3 * M, Some("u3"));
    let (fourth, stats) = run.engine.snapshot_incremental();
    assert_eq!(fourth, run.engine.snapshot());
    assert_eq!(stats.rooms_encoded + stats.rooms_kept, 3);
    let restored = Engine::restore_exact(cfg(&["1m"]), &fourth).expect("restores");
    assert_eq!(restored.snapshot(), fourth);
}

#[test]
fn viewers_gone_for_good_are_forgotten_as_event_time_moves_on() {
    let mut r = Run::new(cfg(&["1m"]));
    r.push("r1", T::SessionStart, T0, None);
    for i in 0..50 {
        let u = format!("u{i}");
        r.push("r1", T::Enter, T0 + S, Some(&u));
        r.push("r1", T::Leave, T0 + 2 * S, Some(&u));
    }
    let held = |r: &Run| r.engine.rooms.iter().map(|room| room.viewers.active_len()).sum::<usize>();
    assert_eq!(held(&r), 50, "their presence is held while windows can still change");
    // One viewer keeps the room's event time moving.
    let mut t = T0 + 3 * S;
    let mut gone_at = None;
    while t < T0 + 15 * M {
        r.push("r1", T::Heartbeat, t, Some("keeper"));
        if gone_at.is_none() && held(&r) <= 1 {
            gone_at = Some(t);
        }
        t += 10 * S;
    }
    let gone_at = gone_at.expect("the 50 viewers who left are forgotten");
    // Final once the horizon (2 minutes of lateness behind) passes their windows, and
    // folded within a minute of event time after that.
    assert!(gone_at <= T0 + 6 * M, "forgotten {} s in", (gone_at - T0) / S);
}
