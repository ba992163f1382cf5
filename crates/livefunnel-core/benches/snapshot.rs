//! Cost of a checkpoint of one partition's engine: 200 simulated rooms, 20 minutes into
//! their broadcasts (every window open, thousands of viewers online), default windows.
//! The live pipeline snapshots every 10 s, and restores once at start.
//!
//! Run: `cargo bench -p livefunnel-core --bench snapshot`; the state size is printed.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use livefunnel_core::{decode, Engine, EngineConfig, Outcome};
use livefunnel_sim::{SimParams, Simulator};

const ROOMS: u32 = 200;

/// The engine after the first `minutes` of a simulated stream.
fn engine_after(minutes: i64) -> (Engine, u64) {
    let params = SimParams { rooms: ROOMS, duration_ms: 60 * 60_000, seed: 7, ..SimParams::default() };
    let stop = params.start_ms + minutes * 60_000;
    let mut sim = Simulator::new(params);
    let mut engine = Engine::new(EngineConfig::default());
    let (mut msg, mut rows) = (Vec::new(), Vec::new());
    let mut accepted = 0;
    while sim.next_message(&mut msg) {
        if let Ok(ev) = decode(&msg) {
            if ev.ts >= stop {
                break;
            }
            if let Outcome::Accepted { .. } = engine.process(&ev, 0, &mut rows) {
                accepted += 1;
            }
        }
        msg.clear();
        rows.clear();
    }
    (engine, accepted)
}

fn bench(c: &mut Criterion) {
    let (engine, accepted) = engine_after(20);
    let state = engine.snapshot();
    eprintln!(
        "snapshot: {} rooms, {accepted} events accepted: {} bytes ({:.1} KiB per room)",
        engine.rooms(),
        state.len(),
        state.len() as f64 / 1024.0 / f64::from(ROOMS)
    );
    let cfg = EngineConfig::default();
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(20);
    group.bench_function("snapshot_200_rooms", |b| b.iter(|| black_box(engine.snapshot())));
    group.bench_function("restore_200_rooms", |b| {
        b.iter(|| Engine::restore(cfg.clone(), black_box(&state)).expect("restores"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
