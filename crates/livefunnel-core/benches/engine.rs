//! The engine's budgets per event and per row, on simulated traffic with the default
//! configuration (windows `1m`, `5m/10s`, `10m/1m`, `session`):
//! - `engine/standard`, `engine/dense`: pre-decoded events through `Engine::process`
//!   and `finish` (the rows built, not written): time per event;
//! - `rows/jsonl`: every row of the standard stream written as JSON (contract §6):
//!   time per row.
//!
//! Run: `cargo bench -p livefunnel-core --bench engine`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use livefunnel_core::{decode, Engine, EngineConfig, Event, Row};
use livefunnel_sim::{Profile, SimParams, Simulator};

const EVENTS: usize = 200_000;

/// The first [`EVENTS`] valid events of a simulated stream.
fn events(params: SimParams, profile: Profile) -> Vec<Event<'static>> {
    let mut sim = Simulator::with_profile(params, profile);
    let mut out = Vec::with_capacity(EVENTS);
    let mut buf = Vec::new();
    while out.len() < EVENTS && sim.next_message(&mut buf) {
        if let Ok(ev) = decode(&buf) {
            out.push(ev.into_owned());
        }
        buf.clear();
    }
    assert_eq!(out.len(), EVENTS, "the simulation is long enough");
    out
}

fn replay(events: &[Event<'static>], rows: &mut Vec<Row>) -> usize {
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

fn bench(c: &mut Criterion) {
    // 200 standard rooms over 6 hours (about 2.4 events per second each), and 40 dense
    // rooms (about 1,000 events per minute each, 1,000 viewers, 200 products).
    let standard = events(
        SimParams { rooms: 200, duration_ms: 6 * 3_600_000, ..SimParams::default() },
        Profile::Standard,
    );
    let dense =
        events(SimParams { rooms: 40, duration_ms: 6 * 60_000, ..SimParams::default() }, Profile::Dense);

    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS as u64));
    for (name, events) in [("standard", &standard), ("dense", &dense)] {
        let mut rows = Vec::new();
        eprintln!("engine/{name}: {EVENTS} events, {} rows", replay(events, &mut rows));
        g.bench_function(name, |b| b.iter(|| replay(events, &mut rows)));
    }
    g.finish();

    let mut all = Vec::new();
    let mut engine = Engine::new(EngineConfig::default());
    for ev in &standard {
        engine.process(ev, 0, &mut all);
    }
    engine.finish(&mut all);
    let mut g = c.benchmark_group("rows");
    g.sample_size(20);
    g.throughput(Throughput::Elements(all.len() as u64));
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function("jsonl", |b| {
        b.iter(|| {
            for row in &all {
                out.clear();
                row.write_jsonl(&mut out);
                black_box(&out);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
