//! Restarting an engine from its state, case by case: configuration checks, the
//! version epoch, re-emission after a crash restore, the wall clock after a restore,
//! and the running values the Prometheus endpoint reads.
//!
//! Run: `cargo test -p livefunnel-core --release --test engine_restart`.

use std::borrow::Cow;

use livefunnel_core::{
    Engine, EngineConfig, Event, EventType as T, Row, RunningRoom, Source, StateError, TimeMode, WindowRow,
    WindowSpec,
};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const S: i64 = 1000;
const M: i64 = 60 * S;

fn cfg(windows: &[&str]) -> EngineConfig {
    let cfg = EngineConfig {
        windows: windows.iter().map(|w| WindowSpec::parse(w).unwrap()).collect(),
        ..EngineConfig::default()
    };
    cfg.validate().unwrap();
    cfg
}

fn ev(n: u32, room: &str, kind: T, ts: i64, user: Option<&str>) -> Event<'static> {
    let mut e = Event::minimal(&format!("{room}-{n}"), kind, ts, room, "s1");
    e.user_id = user.map(|u| Cow::Owned(u.to_owned()));
    if kind.requires_source() {
        e.source = Some(Source::Moments);
    }
    if kind.requires_product_id() {
        e.product_id = Some("p1".into());
    }
    if kind.requires_order_id() {
        e.order_id = Some(format!("o{n}").into());
    }
    if kind.requires_amount() {
        e.amount_cents = Some(19_900);
    }
    e
}

fn windows<'a>(rows: &'a [Row], window: &str, start: i64) -> Vec<&'a WindowRow> {
    rows.iter()
        .filter_map(|r| match r {
            Row::Window(w) if &*w.window == window && w.window_start == start => Some(w),
            _ => None,
        })
        .collect()
}

#[test]
fn restore_with_another_config_names_what_differs() {
    let mut e = Engine::new(cfg(&["1m", "5m/10s", "session"]));
    e.process(&ev(1, "r1", T::Like, T0, Some("u1")), 0, &mut Vec::new());
    let snap = e.snapshot();
    let err = Engine::restore(cfg(&["1m"]), &snap).err().expect("other windows");
    assert!(matches!(err, StateError::ConfigMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "checkpoint was taken with windows [1m, 5m/10s, session], the config has [1m]: restore with the \
         same configuration or delete the state directory to start over"
    );
    let mut other = cfg(&["1m", "5m/10s", "session"]);
    other.allowed_lateness_ms = 60_000;
    other.mode = TimeMode::Live;
    let msg = Engine::restore_exact(other, &snap).err().expect("other lateness").to_string();
    assert!(msg.contains("time.allowed_lateness 120s, the config has 60s"), "{msg}");
    assert!(msg.contains("mode replay, the config has live"), "{msg}");

    // Ids hashed before the engine (or with another salt) are other viewers: the
    // distinct counts of every open window would see each viewer twice.
    let hashed = EngineConfig {
        user_id_form: "hmac-sha256 salt 1a2b3c4d".into(),
        ..cfg(&["1m", "5m/10s", "session"])
    };
    let msg = Engine::restore(hashed.clone(), &snap).err().expect("other user id form").to_string();
    assert!(
        msg.contains(
            "checkpoint was taken with user ids (privacy.hash_user_ids, privacy.salt) clear, the config has \
             hmac-sha256 salt 1a2b3c4d"
        ),
        "{msg}"
    );
    let mut h = Engine::new(hashed.clone());
    h.process(&ev(1, "r1", T::Like, T0, Some("u1")), 0, &mut Vec::new());
    let resalted = EngineConfig { user_id_form: "hmac-sha256 salt 99999999".into(), ..hashed.clone() };
    assert!(matches!(Engine::restore(resalted, &h.snapshot()), Err(StateError::ConfigMismatch { .. })));
    assert!(Engine::restore(hashed, &h.snapshot()).is_ok());

    // What only steers the future may change across a restart.
    let mut steering = cfg(&["1m", "5m/10s", "session"]);
    steering.idle_grace_ms = 10_000;
    steering.max_future_skew_ms = 60_000;
    steering.breakdown_windows = Some(vec![WindowSpec::parse("1m").unwrap()]);
    steering.validate().unwrap();
    let restored = Engine::restore(steering.clone(), &snap).expect("steering values may change");
    assert_eq!(restored.config(), &steering);
    assert_eq!(restored.stats(), e.stats());
}

#[test]
fn foreign_truncated_and_future_bytes_are_named() {
    let c = cfg(&["1m"]);
    let mut e = Engine::new(c.clone());
    e.process(&ev(1, "r1", T::Like, T0, Some("u1")), 0, &mut Vec::new());
    let snap = e.snapshot();
    assert_eq!(Engine::restore(c.clone(), b"{\"json\": true}").err(), Some(StateError::NotEngineState));
    let err = Engine::restore(c.clone(), &snap[..3]).err().unwrap();
    assert!(err.to_string().contains("corrupt (truncated to 3 bytes)"), "{err}");
    let err = Engine::restore(c.clone(), &snap[..snap.len() - 1]).err().unwrap();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let mut future = snap.clone();
    future[4] = 99;
    assert_eq!(
        Engine::restore(c, &future).err(),
        Some(StateError::Format { found: 99, supported: livefunnel_core::STATE_FORMAT_VERSION })
    );
}

#[test]
fn version_epoch_goes_into_the_high_bits_and_never_back() {
    let mut e = Engine::new(cfg(&["1m"]));
    let mut rows = Vec::new();
    e.process(&ev(1, "r1", T::Like, T0, Some("u1")), 0, &mut rows);
    e.process(&ev(2, "r1", T::Like, T0 + 2 * M, Some("u1")), 0, &mut rows);
    assert_eq!(windows(&rows, "1m", T0)[0].version, 1, "epoch 0 is today's numbering");
    e.set_version_epoch(3).unwrap();
    assert_eq!(e.version_epoch(), 3);
    e.process(&ev(3, "r1", T::Like, T0 + 10 * S, Some("u1")), 0, &mut rows);
    assert_eq!(windows(&rows, "1m", T0)[1].version, 3 << 40 | 2);
    let restored = Engine::restore(cfg(&["1m"]), &e.snapshot()).unwrap();
    assert_eq!(restored.version_epoch(), 3, "the epoch is part of the state");
    let err = e.set_version_epoch(2).unwrap_err();
    assert_eq!(err, StateError::EpochBackwards { current: 3, requested: 2 });
    assert!(err.to_string().contains("versions would go backwards"));
}

/// A room with an open 1m window [T0, T0+1m) already emitted.
fn room_with_an_emitted_window() -> (Engine, Vec<Row>) {
    let mut e = Engine::new(cfg(&["1m"]));
    let mut rows = Vec::new();
    e.process(&ev(1, "r1", T::Enter, T0, Some("u1")), 0, &mut rows);
    e.process(&ev(2, "r1", T::Like, T0 + 70 * S, Some("u1")), 0, &mut rows);
    assert_eq!(windows(&rows, "1m", T0).len(), 1, "emitted once W passed its end");
    (e, rows)
}

#[test]
fn crash_restore_reemits_an_open_window_at_its_next_check_even_unchanged() {
    let (e, _) = room_with_an_emitted_window();
    let snap = e.snapshot();

    // Exact: an event that changes nothing in the window re-emits nothing.
    let mut exact = Engine::restore_exact(cfg(&["1m"]), &snap).unwrap();
    let mut rows = Vec::new();
    exact.process(&ev(3, "r1", T::Heartbeat, T0 + 50 * S, Some("u1")), 0, &mut rows);
    assert!(windows(&rows, "1m", T0).is_empty(), "unchanged: {rows:?}");

    // After a crash: the same check re-emits it once, with the new epoch's version.
    let mut d = Engine::restore(cfg(&["1m"]), &snap).unwrap();
    d.set_version_epoch(1).unwrap();
    let mut rows = Vec::new();
    d.process(&ev(3, "r1", T::Heartbeat, T0 + 50 * S, Some("u1")), 0, &mut rows);
    let again = windows(&rows, "1m", T0);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].version, 1 << 40 | 2);
    assert_eq!(again[0].counts.watch_pv, 1);
    rows.clear();
    d.process(&ev(4, "r1", T::Heartbeat, T0 + 51 * S, Some("u1")), 0, &mut rows);
    assert!(windows(&rows, "1m", T0).is_empty(), "re-emitted once only: {rows:?}");
}

#[test]
fn crash_restore_reemits_an_untouched_open_window_when_it_becomes_final() {
    let (e, _) = room_with_an_emitted_window();
    let mut d = Engine::restore(cfg(&["1m"]), &e.snapshot()).unwrap();
    d.set_version_epoch(1).unwrap();
    let mut rows = Vec::new();
    // Events after the window's end only: nothing touches it, until the horizon
    // passes its end (W - 120 s >= T0 + 1m).
    d.process(&ev(3, "r1", T::Like, T0 + 90 * S, Some("u1")), 0, &mut rows);
    assert!(windows(&rows, "1m", T0).is_empty());
    d.process(&ev(4, "r1", T::Like, T0 + 4 * M, Some("u1")), 0, &mut rows);
    let again = windows(&rows, "1m", T0);
    assert_eq!(again.len(), 1, "{rows:?}");
    assert_eq!(again[0].version, 1 << 40 | 2);

    // And at end of input for one that never becomes final before.
    let (e, _) = room_with_an_emitted_window();
    let mut d = Engine::restore(cfg(&["1m"]), &e.snapshot()).unwrap();
    let mut rows = Vec::new();
    d.finish(&mut rows);
    assert_eq!(windows(&rows, "1m", T0).len(), 1);
}

#[test]
fn crash_restore_does_not_count_downtime_as_idle_time() {
    let mut live = cfg(&["1m"]);
    live.mode = TimeMode::Live;
    let mut e = Engine::new(live.clone());
    let mut rows = Vec::new();
    e.process(&ev(1, "r1", T::Like, T0, Some("u1")), T0, &mut rows);
    let snap = e.snapshot();

    // Continued without a stop, 10 minutes of silence move the partition on.
    let mut exact = Engine::restore_exact(live.clone(), &snap).unwrap();
    exact.tick(T0 + 10 * M, &mut rows);
    assert_eq!(exact.partition_max_ts(), Some(T0 + 10 * M));

    // Restarted 10 minutes later: the backlog is in Kafka, not silence.
    let mut d = Engine::restore(live, &snap).unwrap();
    d.tick(T0 + 10 * M, &mut rows);
    assert_eq!(d.partition_max_ts(), Some(T0), "the first tick only takes the new clock");
    d.tick(T0 + 10 * M + 20 * S, &mut rows);
    assert_eq!(d.partition_max_ts(), Some(T0), "not idle for idle_timeout yet");
    d.tick(T0 + 10 * M + 40 * S, &mut rows);
    assert_eq!(d.partition_max_ts(), Some(T0 + 40 * S));
}

fn running(e: &mut Engine) -> Vec<RunningRoom> {
    let mut out = Vec::new();
    e.running(&mut out);
    out
}

#[test]
fn running_reports_changed_rooms_once_with_online_live_and_totals() {
    let mut e = Engine::new(cfg(&["1m", "5m/10s", "session"]));
    let mut rows = Vec::new();
    let mut start = ev(1, "r1", T::SessionStart, T0, None);
    start.org_id = Some("agency".into());
    e.process(&start, 0, &mut rows);
    e.process(&ev(2, "r1", T::Enter, T0 + S, Some("u1")), 0, &mut rows);
    e.process(&ev(3, "r1", T::Enter, T0 + 2 * S, Some("u2")), 0, &mut rows);
    e.process(&ev(4, "r1", T::OrderPaid, T0 + 3 * S, Some("u1")), 0, &mut rows);
    e.process(&ev(5, "r1", T::Leave, T0 + 4 * S, Some("u2")), 0, &mut rows);
    e.process(&ev(6, "r2", T::Like, T0 + 5 * S, None), 0, &mut rows);
    let r = running(&mut e);
    assert_eq!(r.iter().map(|r| &*r.room_id).collect::<Vec<_>>(), ["r1", "r2"]);
    let r1 = &r[0];
    assert_eq!((r1.latest_ts, r1.online, r1.live, r1.retired), (T0 + 4 * S, 1, true, false));
    assert_eq!((&*r1.identity.org_id, &*r1.identity.session_id, r1.session_end_ts), ("default", "s1", None));
    assert_eq!((r1.totals.watch_entries, r1.totals.orders_paid, r1.totals.gmv_cents), (2, 1, 19_900));
    let names: Vec<&str> = r1.windows.iter().map(|w| &*w.window).collect();
    assert_eq!(names, ["1m", "5m/10s"]);
    let hop = &r1.windows[1];
    // The 5m/10s window with the latest start holding T0 + 4 s.
    assert_eq!((hop.window_start, hop.window_end), (T0, T0 + 5 * M));
    assert_eq!((hop.counts.watch_uv, hop.counts.gmv_cents, hop.counts.buyer_uv), (2, 19_900, 1));
    assert_eq!(hop.counts.ratios().watch_to_pay_rate, Some(0.5));
    assert!(running(&mut e).is_empty(), "nothing changed since");

    e.process(&ev(7, "r1", T::SessionEnd, T0 + 6 * S, None), 0, &mut rows);
    let r = running(&mut e);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].online, r[0].live, r[0].session_end_ts), (0, false, Some(T0 + 6 * S)));
}

#[test]
fn running_window_is_the_row_emitted_at_end_of_input() {
    let mut e = Engine::new(cfg(&["1m", "10m/1m"]));
    let mut rows = Vec::new();
    for (n, (kind, t, u)) in [
        (T::Enter, 5 * S, "u1"),
        (T::ProductClick, 20 * S, "u1"),
        (T::Enter, 3 * M, "u2"),
        (T::Comment, 3 * M + 30 * S, "u2"),
    ]
    .into_iter()
    .enumerate()
    {
        e.process(&ev(n as u32, "r1", kind, T0 + t, Some(u)), 0, &mut rows);
    }
    let r = running(&mut e).remove(0);
    e.finish(&mut rows);
    for w in &r.windows {
        let last = *windows(&rows, &w.window, w.window_start).last().expect("emitted at the end");
        assert_eq!((&last.identity, &last.counts), (&w.identity, &w.counts), "{}", w.window);
    }
    assert_eq!(r.windows[1].window_start, T0 + 3 * M, "the latest 10m/1m start holding 3m30s");
}

#[test]
fn running_reports_a_retired_room_once_and_restore_reports_every_open_room() {
    let c = EngineConfig { session_idle_timeout_ms: 10 * M, ..cfg(&["1m", "session"]) };
    c.validate().unwrap();
    let mut e = Engine::new(c.clone());
    let mut rows = Vec::new();
    e.process(&ev(1, "r1", T::SessionStart, T0, None), 0, &mut rows);
    e.process(&ev(2, "r1", T::SessionEnd, T0 + M, None), 0, &mut rows);
    e.process(&ev(1, "r2", T::Like, T0 + M, None), 0, &mut rows);
    assert_eq!(running(&mut e).len(), 2);
    let snap = e.snapshot();
    // r2 moves the partition past r1's last event + session_idle_timeout.
    e.process(&ev(2, "r2", T::Like, T0 + 12 * M, None), 0, &mut rows);
    let r = running(&mut e);
    let r1 = r.iter().find(|r| &*r.room_id == "r1").expect("r1 reported");
    assert!(r1.retired && r1.windows.is_empty() && !r1.live);
    assert_eq!(r1.session_end_ts, Some(T0 + M));
    assert!(running(&mut e).is_empty());

    let mut restored = Engine::restore(c, &snap).unwrap();
    let r = running(&mut restored);
    assert_eq!(r.iter().map(|r| &*r.room_id).collect::<Vec<_>>(), ["r1", "r2"]);
}

/// The events of the pinned-format scenario: two rooms, viewers, sources and plans,
/// an order and a refund, a session that ends, re-deliveries; split in two halves.
fn pinned_events() -> (Vec<Event<'static>>, Vec<Event<'static>>) {
    type Fill = fn(&mut Event<'static>);
    let mut all = Vec::new();
    let push = |all: &mut Vec<Event<'static>>, room: &str, kind: T, t: i64, user: Option<&str>, f: Fill| {
        let mut e = ev(all.len() as u32 + 1, room, kind, T0 + t, user);
        f(&mut e);
        all.push(e);
    };
    let none: Fill = |_| {};
    push(&mut all, "r1", T::SessionStart, 0, None, |e| e.home_city = Some("杭州".into()));
    push(&mut all, "r1", T::Enter, S, Some("u1"), |e| {
        e.source = Some(Source::PaidBoost);
        e.plan_id = Some("plan-1".into());
    });
    push(&mut all, "r1", T::Enter, 2 * S, Some("u2"), none);
    push(&mut all, "r2", T::Enter, 3 * S, Some("u1"), |e| {
        e.platform = Some(livefunnel_core::Platform::Douyin)
    });
    push(&mut all, "r1", T::ProductClick, 20 * S, Some("u1"), none);
    push(&mut all, "r1", T::OrderPaid, 40 * S, Some("u1"), |e| e.buyer_city = Some("上海".into()));
    push(&mut all, "r1", T::Comment, 70 * S, Some("u2"), none);
    push(&mut all, "r1", T::Leave, 80 * S, Some("u2"), none);
    push(&mut all, "r2", T::Heartbeat, 90 * S, Some("u1"), none);
    let split = all.len();
    push(&mut all, "r1", T::Refund, 100 * S, Some("u1"), none);
    push(&mut all, "r1", T::Like, 75 * S, Some("u1"), none);
    push(&mut all, "r1", T::SessionEnd, 3 * M, None, none);
    push(&mut all, "r2", T::Like, 5 * M, Some("u1"), none);
    let second = all.split_off(split);
    (all, second)
}

/// A snapshot written by this format version must keep restoring to the same engine.
/// If this fails after a change to any serialized type (a field, its order, an enum
/// variant, of the engine or of `Event`'s enums): bump `STATE_FORMAT_VERSION`, then write
/// the new fixture with `LIVEFUNNEL_BLESS_STATE=1`.
#[test]
fn state_format_is_pinned_by_a_checked_in_snapshot() {
    restores_the_pinned_snapshot(livefunnel_core::STATE_FORMAT_VERSION);
}

/// The first engine's formats (1 to 3, the fixtures of those releases) are refused, not
/// misread, and the error says what to do.
#[test]
fn states_of_the_first_engine_are_refused_with_what_to_do() {
    let c = cfg(&["1m", "5m/10s", "session"]);
    for version in 1..=3u16 {
        let path = format!("{}/tests/fixtures/engine_state_v{version}.bin", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        let err = Engine::restore(c.clone(), &bytes).err().expect("an earlier engine's state is refused");
        assert_eq!(
            err,
            StateError::EarlierEngine { found: version, supported: livefunnel_core::STATE_FORMAT_VERSION }
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "engine state format {version} was written by a livefunnel release before engine v2"
            )),
            "{msg}"
        );
        assert!(msg.contains("delete this partition's checkpoints"), "{msg}");
        assert!(Engine::restore_exact(c.clone(), &bytes).is_err());
    }
}

/// Format 4 states written before heartbeats that decide nothing were dropped hold
/// every heartbeat of the acceptance horizon: they restore to an engine that gives the
/// same rows as today's.
#[test]
fn a_state_holding_every_heartbeat_restores_to_the_same_rows() {
    let path = format!("{}/tests/fixtures/engine_state_v4_every_beat.bin", env!("CARGO_MANIFEST_DIR"));
    let c = cfg(&["1m", "5m/10s", "session"]);
    let (fresh, second) = pinned_first_half(&c);
    let older = std::fs::read(&path).unwrap();
    assert!(older.len() > fresh.snapshot().len(), "the older state holds more events");
    let restored = Engine::restore_exact(c, &older).unwrap();
    assert_same_future(fresh, restored, &second, "the state holding every heartbeat");
}

/// An engine fed the first half of the pinned scenario, and the second half.
fn pinned_first_half(c: &EngineConfig) -> (Engine, Vec<Event<'static>>) {
    let (first, second) = pinned_events();
    let mut fresh = Engine::new(c.clone());
    let mut rows = Vec::new();
    for e in &first {
        fresh.process(e, 0, &mut rows);
    }
    (fresh, second)
}

/// Both engines, given the same rest of the stream, emit the same rows and counters.
fn assert_same_future(mut fresh: Engine, mut restored: Engine, second: &[Event<'static>], what: &str) {
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for e in second {
        fresh.process(e, 0, &mut want);
        restored.process(e, 0, &mut got);
    }
    fresh.finish(&mut want);
    restored.finish(&mut got);
    assert!(want.len() > 10, "the scenario emits rows: {want:?}");
    assert_eq!(got, want, "{what} restores to another engine");
    assert_eq!(restored.stats(), fresh.stats());
}

fn restores_the_pinned_snapshot(version: u16) {
    let path = format!("{}/tests/fixtures/engine_state_v{version}.bin", env!("CARGO_MANIFEST_DIR"));
    let c = cfg(&["1m", "5m/10s", "session"]);
    let (fresh, second) = pinned_first_half(&c);
    if std::env::var_os("LIVEFUNNEL_BLESS_STATE").is_some() {
        std::fs::write(&path, fresh.snapshot()).unwrap();
    }
    let pinned = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}: write it with LIVEFUNNEL_BLESS_STATE=1 after bumping STATE_FORMAT_VERSION")
    });
    assert_eq!(u16::from_le_bytes([pinned[4], pinned[5]]), version, "{path} holds another format");
    assert_eq!(
        pinned,
        fresh.snapshot(),
        "{path}: the same engine writes other bytes: bump STATE_FORMAT_VERSION"
    );
    let restored = Engine::restore_exact(c, &pinned).unwrap_or_else(|e| {
        panic!("format {version}: {e}: the state format changed: bump STATE_FORMAT_VERSION")
    });
    assert_same_future(fresh, restored, &second, &format!("format {version}: the pinned state"));
}
