//! Instruction counts of the engine's budgets, stable on a noisy machine: run under
//! callgrind, only `measured` is counted.
//!
//! ```sh
//! cargo build --profile ci -p livefunnel-core --example engine_ir
//! valgrind --tool=callgrind --toggle-collect='engine_ir::measured' \
//!     target/ci/examples/engine_ir engine standard 100000
//! ```
//! `what` is `decode` (messages to events), `engine` (`Engine::process` and `finish` on
//! pre-decoded events) or `rows` (every emitted row written as JSON); the profile is
//! `standard` or `dense`. Divide the instructions by the count printed.

use std::hint::black_box;

use livefunnel_core::{decode, Engine, EngineConfig, Event, Row};
use livefunnel_sim::{Profile, SimParams, Simulator};

fn messages(profile: Profile, n: usize) -> Vec<Vec<u8>> {
    let params = match profile {
        Profile::Standard => SimParams { rooms: 200, duration_ms: 6 * 3_600_000, ..SimParams::default() },
        Profile::Dense => SimParams { rooms: 40, duration_ms: 30 * 60_000, ..SimParams::default() },
    };
    let mut sim = Simulator::with_profile(params, profile);
    let mut out = Vec::with_capacity(n);
    let mut buf = Vec::new();
    while out.len() < n && sim.next_message(&mut buf) {
        out.push(std::mem::take(&mut buf));
    }
    out
}

#[inline(never)]
fn measured(what: &str, messages: &[Vec<u8>], events: &[Event<'static>], rows: &mut Vec<Row>) -> usize {
    match what {
        "decode" => messages.iter().filter(|m| decode(black_box(m)).is_ok()).count(),
        "engine" => {
            let mut engine = Engine::new(EngineConfig::default());
            let mut n = 0;
            for ev in events {
                black_box(engine.process(ev, 0, rows));
                n += rows.len();
                rows.clear();
            }
            engine.finish_with(rows, |rows| {
                n += rows.len();
                rows.clear();
            });
            n
        }
        _ => {
            let mut out = Vec::with_capacity(1 << 16);
            for row in rows.iter() {
                out.clear();
                row.write_jsonl(&mut out);
                black_box(&out);
            }
            rows.len()
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("engine", String::as_str);
    let profile = match args.get(2).map(String::as_str) {
        Some("dense") => Profile::Dense,
        _ => Profile::Standard,
    };
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let msgs = messages(profile, n);
    let events: Vec<Event<'static>> =
        msgs.iter().filter_map(|m| decode(m).ok().map(Event::into_owned)).collect();
    let mut rows = Vec::new();
    if what == "rows" {
        let mut engine = Engine::new(EngineConfig::default());
        for ev in &events {
            engine.process(ev, 0, &mut rows);
        }
        engine.finish(&mut rows);
    }
    let count = measured(what, &msgs, &events, &mut rows);
    let unit = match what {
        "decode" => "messages",
        "engine" => "events",
        _ => "rows",
    };
    let per = if what == "engine" { events.len() } else { count };
    println!("{what} {profile:?}: {per} {unit} ({count} counted)");
}
