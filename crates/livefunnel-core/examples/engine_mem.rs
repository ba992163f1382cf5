//! The engine's memory per room and per viewer, and its checkpoint bytes and snapshot
//! time per room: resident memory of the process before and after, divided by the
//! rooms or viewers added (Linux `/proc/self/status`).
//!
//! ```sh
//! cargo run --release -p livefunnel-core --example engine_mem [idle|viewers|standard|dense]
//! ```
//! (without an argument: each in a process of its own, one after the other).
//! Prints, for the default configuration (windows `1m`, `5m/10s`, `10m/1m`, `session`):
//! - an idle live room (one `session_start`, nobody online), 10,000 rooms;
//! - each online viewer (an `enter`, then a `heartbeat` every 20 s for 10 minutes),
//!   100 viewers in each of 1,000 rooms;
//! - the simulator's standard and dense rooms after 10 and 5 minutes of traffic
//!   (1,000 and 200 rooms), with the rows emitted by then dropped.

use std::time::Instant;

use livefunnel_core::{decode, Engine, EngineConfig, Row};
use livefunnel_sim::{Profile, SimParams, Simulator};

/// Resident bytes of this process (`VmRSS`): what the engine costs the machine,
/// allocator overhead included. Every figure is a difference over thousands of rooms.
fn held() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        .expect("a VmRSS line");
    kib * 1024
}

const T0: i64 = 1_767_225_600_000;

fn feed(engine: &mut Engine, line: &str, rows: &mut Vec<Row>) {
    let ev = decode(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"));
    engine.process(&ev, 0, rows);
    rows.clear();
    rows.shrink_to_fit();
}

fn session_start(room: usize, ts: i64) -> String {
    format!(
        r#"{{"event_id":"r{room}-s","type":"session_start","ts":{ts},"room_id":"room-{room:05}","session_id":"room-{room:05}-1","org_id":"org-a","account_id":"acct-a","platform":"douyin","home_city":"重庆"}}"#
    )
}

fn viewer_event(room: usize, user: usize, kind: &str, n: usize, ts: i64) -> String {
    let extra = if kind == "enter" { r#","source":"recommend_feed","is_follower":false"# } else { "" };
    format!(
        r#"{{"event_id":"r{room}-u{user}-{n}","type":"{kind}","ts":{ts},"room_id":"room-{room:05}","session_id":"room-{room:05}-1","org_id":"org-a","account_id":"acct-a","platform":"douyin","user_id":"u{room}-{user}"{extra}}}"#
    )
}

/// Snapshot bytes and time per room of `engine`.
fn report_snapshot(what: &str, engine: &Engine, rooms: usize) {
    let t = Instant::now();
    let snap = engine.snapshot();
    let took = t.elapsed();
    println!(
        "{what}: checkpoint {} bytes per room, snapshot {:.2} µs per room",
        snap.len() / rooms,
        took.as_secs_f64() * 1e6 / rooms as f64
    );
}

fn idle_rooms() {
    let rooms = 10_000;
    let before = held();
    let mut engine = Engine::new(EngineConfig::default());
    let mut rows = Vec::new();
    for r in 0..rooms {
        feed(&mut engine, &session_start(r, T0 + r as i64), &mut rows);
    }
    let bytes = held() - before;
    println!("idle live room: {} bytes per room ({rooms} rooms)", bytes / rooms as isize);
    report_snapshot("idle live room", &engine, rooms);
}

fn online_viewers() {
    let (rooms, viewers) = (1_000, 100);
    let mut engine = Engine::new(EngineConfig::default());
    let mut rows = Vec::new();
    for r in 0..rooms {
        feed(&mut engine, &session_start(r, T0), &mut rows);
    }
    let before = held();
    // Ten minutes: every viewer enters in the first 20 s, then beats every 20 s; the
    // rooms' windows and slots of those minutes are part of what is measured.
    for step in 0..30 {
        for r in 0..rooms {
            for u in 0..viewers {
                let ts = T0 + 1_000 + step * 20_000 + (u as i64) * 150;
                let kind = if step == 0 { "enter" } else { "heartbeat" };
                feed(&mut engine, &viewer_event(r, u, kind, step as usize, ts), &mut rows);
            }
        }
    }
    let bytes = held() - before;
    let n = (rooms * viewers) as isize;
    println!(
        "online viewers: {} bytes per viewer, room state included ({} viewers in {rooms} rooms)",
        bytes / n,
        n
    );
    report_snapshot("rooms of 100 online viewers", &engine, rooms);
}

fn simulated(profile: Profile, rooms: u32, minutes: i64) {
    let params = SimParams { rooms, duration_ms: minutes * 60_000, ..SimParams::default() };
    let mut sim = Simulator::with_profile(params, profile);
    let before = held();
    let mut engine = Engine::new(EngineConfig::default());
    let (mut rows, mut buf, mut events) = (Vec::new(), Vec::new(), 0u64);
    while sim.next_message(&mut buf) {
        if let Ok(ev) = decode(&buf) {
            engine.process(&ev, 0, &mut rows);
            rows.clear();
            events += 1;
        }
        buf.clear();
    }
    rows.shrink_to_fit();
    let bytes = held() - before;
    println!(
        "{profile:?} rooms after {minutes} min ({events} events): {} bytes per room ({} rooms)",
        bytes / engine.rooms() as isize,
        engine.rooms()
    );
    report_snapshot(&format!("{profile:?} rooms"), &engine, engine.rooms());
}

fn main() {
    // One measure per process: memory freed by one would be reused by the next
    // without showing in the resident size.
    match std::env::args().nth(1).as_deref() {
        Some("idle") => idle_rooms(),
        Some("viewers") => online_viewers(),
        Some("standard") => simulated(Profile::Standard, 1_000, 10),
        Some("dense") => simulated(Profile::Dense, 200, 5),
        _ => {
            let me = std::env::args().next().unwrap_or_default();
            for what in ["idle", "viewers", "standard", "dense"] {
                let status = std::process::Command::new(&me).arg(what).status().expect("runs itself");
                assert!(status.success(), "{what}: {status}");
            }
        }
    }
}
