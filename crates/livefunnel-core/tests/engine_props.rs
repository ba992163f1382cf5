//! Property test: the window engine against the brute-force model of `tests/model/`
//! (written from `docs/semantics.md` only), over random room streams.
//!
//! Run: `cargo test -p livefunnel-core --release --test engine_props`
//! (at least 1000 cases; `PROPTEST_CASES` may raise it). The model's own tests:
//! `cargo test -p livefunnel-core --test engine_props model_`.

mod gen;
mod model;

use std::collections::BTreeMap;
use std::fmt;

use livefunnel_core::{
    BreakdownCounts, BreakdownKind, Counts, Engine, EngineConfig, Event, EventType, Outcome, Reason, Row,
    WindowSpec,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use gen::{case, fmt_event, proptest_config, Case};
use model::{BreakdownKey, ModelResult, SessionKey, WindowKey};

// ---------------------------------------------------------------------------
// Running and comparing

fn run_engine(cfg: &EngineConfig, events: &[Event<'static>]) -> (Vec<Outcome>, Vec<Row>) {
    let mut engine = Engine::new(cfg.clone());
    let mut rows = Vec::new();
    let outcomes = events.iter().map(|ev| engine.process(ev, 0, &mut rows)).collect();
    engine.finish(&mut rows);
    (outcomes, rows)
}

/// The lines of two `{:#?}` renderings that differ.
fn diff<T: fmt::Debug>(engine: &T, model: &T) -> String {
    let a = format!("{engine:#?}");
    let b = format!("{model:#?}");
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied().unwrap_or(""), b.get(i).copied().unwrap_or(""));
        if x != y {
            out.push_str(&format!("    engine: {}\n    model:  {}\n", x.trim(), y.trim()));
        }
    }
    out
}

/// The accepted events of one room, for failure messages.
fn room_log(case: &Case, model: &ModelResult, room: &str) -> String {
    let mut s = format!("accepted events of room {room}:\n");
    for (i, ev) in case.events.iter().enumerate() {
        if *ev.room_id == *room {
            if let Outcome::Accepted { .. } = model.outcomes[i] {
                s.push_str(&format!("  #{i:<3} {}\n", fmt_event(ev)));
            }
        }
    }
    s
}

/// Zeroes the breakdown measures a kind does not carry (contract §3), which no output shows.
fn carried(kind: BreakdownKind, c: &BreakdownCounts) -> BreakdownCounts {
    let mut c = c.clone();
    match kind {
        BreakdownKind::Source | BreakdownKind::Plan => {
            c.product_impressions = 0;
            c.orders_created = 0;
            c.items_sold = 0;
        }
        BreakdownKind::Product => {
            c.watch_pv = 0;
            c.watch_uv = 0;
            c.comments = 0;
        }
    }
    c
}

fn check(case: &Case) -> Result<(), String> {
    let model = model::run(&case.cfg, &case.events);
    let (outcomes, rows) = run_engine(&case.cfg, &case.events);

    // (1) outcomes
    for (i, (got, want)) in outcomes.iter().zip(&model.outcomes).enumerate() {
        if got != want {
            return Err(format!(
                "event #{i} ({}): engine says {got:?}, model says {want:?}\n{}",
                fmt_event(&case.events[i]),
                room_log(case, &model, &case.events[i].room_id)
            ));
        }
    }

    // (4) versions 1, 2, 3, ... per key, and the last version of each key.
    let mut windows: BTreeMap<WindowKey, &livefunnel_core::WindowRow> = BTreeMap::new();
    let mut breakdowns: BTreeMap<BreakdownKey, &livefunnel_core::BreakdownRow> = BTreeMap::new();
    let mut sessions: BTreeMap<SessionKey, &livefunnel_core::SessionRow> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let (key, prev) = match row {
            Row::Window(w) => {
                let k = (w.room_id.to_string(), w.window.to_string(), w.window_start);
                let prev = windows.insert(k.clone(), w).map(|p| p.version);
                (format!("{k:?}"), prev)
            }
            Row::Breakdown(b) => {
                let k =
                    (b.kind, b.room_id.to_string(), b.window.to_string(), b.window_start, b.key.to_string());
                let prev = breakdowns.insert(k.clone(), b).map(|p| p.version);
                (format!("{k:?}"), prev)
            }
            Row::Session(s) => {
                let k = (s.room_id.to_string(), s.session_id.to_string());
                let prev = sessions.insert(k.clone(), s).map(|p| p.version);
                (format!("{k:?}"), prev)
            }
        };
        let want = prev.unwrap_or(0) + 1;
        if row.version() != want {
            return Err(format!("row #{i} of key {key} has version {}, expected {want}", row.version()));
        }
    }

    // (2), (3) window rows
    for (k, m) in &model.windows {
        let Some(e) = windows.get(k) else {
            return Err(format!(
                "window {k:?} exists (model: {m:#?}) but the engine never emitted it\n{}",
                room_log(case, &model, &k.0)
            ));
        };
        if e.window_end != m.window_end || e.identity != m.identity || e.counts != m.counts {
            let mut d = String::new();
            if e.window_end != m.window_end {
                d.push_str(&format!("    window_end: engine {} model {}\n", e.window_end, m.window_end));
            }
            d.push_str(&diff(&e.identity, &m.identity));
            d.push_str(&diff(&e.counts, &m.counts));
            return Err(format!(
                "window {k:?} (last version {}) differs:\n{d}{}",
                e.version,
                room_log(case, &model, &k.0)
            ));
        }
    }
    for (k, e) in &windows {
        // A window that existed only through presence can stop existing when a late
        // event shortens that presence; the engine can only correct an emitted row
        // by re-emitting it with zero counts.
        if !model.windows.contains_key(k) && e.counts != Counts::default() {
            return Err(format!(
                "engine emitted window {k:?} which the model says does not exist; last version {}: {:#?}\n{}",
                e.version,
                e.counts,
                room_log(case, &model, &k.0)
            ));
        }
    }

    // (2), (3) breakdown rows
    for (k, m) in &model.breakdowns {
        let Some(e) = breakdowns.get(k) else {
            return Err(format!(
                "breakdown {k:?} exists (model: {m:#?}) but the engine never emitted it\n{}",
                room_log(case, &model, &k.1)
            ));
        };
        let ec = carried(k.0, &e.counts);
        let mc = carried(k.0, &m.counts);
        if e.window_end != m.window_end || e.org_id != m.org_id || ec != mc {
            let mut d = String::new();
            if e.window_end != m.window_end {
                d.push_str(&format!("    window_end: engine {} model {}\n", e.window_end, m.window_end));
            }
            if e.org_id != m.org_id {
                d.push_str(&format!("    org_id: engine {} model {}\n", e.org_id, m.org_id));
            }
            d.push_str(&diff(&ec, &mc));
            return Err(format!(
                "breakdown {k:?} (last version {}) differs:\n{d}{}",
                e.version,
                room_log(case, &model, &k.1)
            ));
        }
    }
    if let Some(k) = breakdowns.keys().find(|k| !model.breakdowns.contains_key(*k)) {
        return Err(format!(
            "engine emitted breakdown {k:?} which the model says does not exist: {:#?}\n{}",
            breakdowns[k],
            room_log(case, &model, &k.1)
        ));
    }

    // (2), (3) session rows
    for (k, m) in &model.sessions {
        let Some(e) = sessions.get(k) else {
            return Err(format!(
                "session {k:?} exists (model: {m:#?}) but the engine never emitted it\n{}",
                room_log(case, &model, &k.0)
            ));
        };
        let mut e = (*e).clone();
        let version = e.version;
        e.version = 0;
        if e != *m {
            return Err(format!(
                "session {k:?} (last version {version}) differs:\n{}{}",
                diff(&e, m),
                room_log(case, &model, &k.0)
            ));
        }
    }
    if let Some(k) = sessions.keys().find(|k| !model.sessions.contains_key(*k)) {
        return Err(format!(
            "engine emitted session {k:?} which the model says does not exist: {:#?}\n{}",
            sessions[k],
            room_log(case, &model, &k.0)
        ));
    }

    // (5) determinism
    let (outcomes2, rows2) = run_engine(&case.cfg, &case.events);
    if outcomes2 != outcomes {
        return Err("a second run gave different outcomes".to_owned());
    }
    if let Some(i) = (0..rows.len().max(rows2.len())).find(|&i| rows.get(i) != rows2.get(i)) {
        return Err(format!(
            "a second run differs at row #{i} (of {} and {} rows):\n{}",
            rows.len(),
            rows2.len(),
            diff(&rows.get(i), &rows2.get(i))
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn engine_matches_model(case in case()) {
        check(&case).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// The generator itself: it must reach every edge the property relies on.

/// The generator reaches every edge the property is meant to cover, and the model
/// is fast enough for 1000 cases.
#[test]
fn model_generator_covers_the_edges() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let mut stats: BTreeMap<&str, u64> = BTreeMap::new();
    let started = std::time::Instant::now();
    let n = 300;
    for _ in 0..n {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let m = model::run(&case.cfg, &case.events);
        let mut add = |k: &'static str, v: u64| *stats.entry(k).or_default() += v;
        add("events", case.events.len() as u64);
        add("cases_default_config", u64::from(case.cfg == EngineConfig::default()));
        add("cases_without_session_rows", u64::from(!case.cfg.session_rows()));
        for o in &m.outcomes {
            add(
                match o {
                    Outcome::Accepted { late: false } => "accepted",
                    Outcome::Accepted { late: true } => "accepted_late",
                    Outcome::Duplicate => "duplicate",
                    Outcome::Rejected(Reason::TooLate) => "too_late",
                    Outcome::Rejected(Reason::TsOutOfRange) => "ts_out_of_range",
                    Outcome::Rejected(Reason::RoomLimit) => "room_limit",
                    Outcome::Rejected(_) => "other_rejection",
                },
                1,
            );
        }
        add("retirements", m.retirements);
        add("cases_with_retirement", u64::from(m.retirements > 0));
        add("after_session_final", m.after_session_final);
        add("sessions_timed_out", m.sessions_timed_out);
        add("sessions_ended_by_timeout", m.sessions.values().filter(|s| s.ended_by_timeout).count() as u64);
        add("breakdown_overflow_plan", m.breakdown_overflow.0);
        add("breakdown_overflow_product", m.breakdown_overflow.1);
        add(
            "breakdown_rows_other",
            m.breakdowns.keys().filter(|k| k.4 == livefunnel_core::config::OTHER_KEY).count() as u64,
        );
        add("window_rows", m.windows.len() as u64);
        add(
            "window_rows_presence_only",
            m.windows.values().filter(|w| w.counts.present_uv > 0 && w.counts.watch_pv == 0).count() as u64,
        );
        add(
            "window_rows_with_strangers",
            m.windows.values().filter(|w| w.counts.stranger_present_uv > 0).count() as u64,
        );
        add("breakdown_rows", m.breakdowns.len() as u64);
        add("session_rows", m.sessions.len() as u64);
        add("sessions_ended", m.sessions.values().filter(|s| s.session_end_ts.is_some()).count() as u64);
        add(
            "sessions_out_of_city",
            m.sessions.values().filter(|s| s.counts.orders_paid_out_of_city > 0).count() as u64,
        );
        add(
            "rows_saturated_gmv",
            (m.windows.values().filter(|w| w.counts.gmv_cents == i64::MAX).count()
                + m.sessions.values().filter(|s| s.counts.gmv_cents == i64::MAX).count()) as u64,
        );
    }
    let elapsed = started.elapsed();
    eprintln!("{n} generated cases in {elapsed:?}: {stats:#?}");
    for key in [
        "accepted",
        "accepted_late",
        "duplicate",
        "too_late",
        "ts_out_of_range",
        "retirements",
        "after_session_final",
        "room_limit",
        "sessions_timed_out",
        "sessions_ended_by_timeout",
        "breakdown_overflow_plan",
        "breakdown_overflow_product",
        "breakdown_rows_other",
        "window_rows_presence_only",
        "window_rows_with_strangers",
        "breakdown_rows",
        "session_rows",
        "sessions_ended",
        "sessions_out_of_city",
        "rows_saturated_gmv",
        "cases_default_config",
        "cases_without_session_rows",
    ] {
        assert!(stats.get(key).copied().unwrap_or(0) > 0, "the generator never produced {key}: {stats:#?}");
    }
    assert!(stats["cases_with_retirement"] * 10 >= n, "retirement in under 10 % of the cases: {stats:#?}");
}

/// Cross-checks of the model against itself on generated streams: the same facts
/// summed along different keys agree.
#[test]
fn model_is_self_consistent_on_generated_streams() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    for _ in 0..200 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let m = model::run(&case.cfg, &case.events);
        let accepted: Vec<&Event<'_>> = case
            .events
            .iter()
            .zip(&m.outcomes)
            .filter(|(_, o)| matches!(o, Outcome::Accepted { .. }))
            .map(|(e, _)| e)
            .collect();
        let enters = accepted.iter().filter(|e| e.kind == EventType::Enter).count() as u64;
        for spec in &case.cfg.windows {
            let WindowSpec::Hop { size_ms, slide_ms } = *spec else { continue };
            let name = spec.name();
            let k = (size_ms / slide_ms) as u64;
            let rows: Vec<&model::ModelWindow> =
                m.windows.iter().filter(|(key, _)| key.1 == name).map(|(_, w)| w).collect();
            // Every event lies in exactly size/slide windows of a spec.
            assert_eq!(rows.iter().map(|w| w.counts.watch_pv).sum::<u64>(), k * enters, "{case:?}");
            let by_source: u64 = m
                .breakdowns
                .iter()
                .filter(|(key, _)| key.0 == BreakdownKind::Source && key.2 == name)
                .map(|(_, b)| b.counts.watch_pv)
                .sum();
            let with_breakdowns = if case.cfg.has_breakdowns(spec) { k * enters } else { 0 };
            assert_eq!(by_source, with_breakdowns, "{case:?}");
            for w in &rows {
                let c = &w.counts;
                if c.gmv_cents < i64::MAX {
                    assert_eq!(c.gmv_cents_private + c.gmv_cents_public + c.gmv_cents_paid, c.gmv_cents);
                }
                assert!(c.online_peak <= c.present_uv);
                assert!(c.stranger_watch_ms <= c.watch_ms && c.stranger_present_uv <= c.present_uv);
                assert!(c.watch_ms <= i128::from(size_ms) * i128::from(c.present_uv));
            }
            // Tumbling windows partition time: their presence adds up to the sessions'
            // (unless a viewer entered a session already final: its row stays as it was).
            if k == 1 && case.cfg.session_rows() && m.after_session_final == 0 {
                let windows: i128 = rows.iter().map(|w| w.counts.watch_ms).sum();
                let sessions: i128 = m.sessions.values().map(|s| s.counts.watch_ms).sum();
                assert_eq!(windows, sessions, "{case:?}");
            }
        }
        for s in m.sessions.values() {
            assert!(s.first30m.watch_pv <= s.counts.watch_pv && s.first30m.watch_ms <= s.counts.watch_ms);
            assert_eq!(s.peak_online, s.counts.online_peak);
            assert_eq!(s.peak_online_ts.is_some(), s.counts.present_uv > 0);
        }
    }
}
