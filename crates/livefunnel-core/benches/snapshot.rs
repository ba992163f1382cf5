//! Cost of a checkpoint of one partition's engine: 200 simulated rooms, 20 minutes into
//! their broadcasts (every window open, thousands of viewers online), default windows.
//! The live pipeline snapshots every 10 s, and restores once at start. Incremental
//! snapshots (what the pipeline takes) encode only the rooms changed since the last:
//! none changed (quiet rooms), and those of 10 s more of the stream (here every room
//! is live, so most change).
//!
//! Run: `cargo bench -p livefunnel-core --bench snapshot`; the state size and the
//! rooms encoded after 10 s are printed.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use livefunnel_core::{decode, Engine, EngineConfig, Outcome};
use livefunnel_sim::{SimParams, Simulator};

const ROOMS: u32 = 200;

/// The engine after the first `minutes` of a simulated stream, and the rest of it.
fn engine_after(minutes: i64) -> (Engine, u64, Stream) {
    let params = SimParams { rooms: ROOMS, duration_ms: 60 * 60_000, seed: 7, ..SimParams::default() };
    let stop = params.start_ms + minutes * 60_000;
    let mut stream = Stream { sim: Simulator::new(params), next: Vec::new() };
    let mut engine = Engine::new(EngineConfig::default());
    let accepted = stream.feed(&mut engine, stop);
    (engine, accepted, stream)
}

struct Stream {
    sim: Simulator,
    /// The first message at or after the last `until`, held back.
    next: Vec<u8>,
}

impl Stream {
    /// Feeds the events before `until`; returns how many were accepted.
    fn feed(&mut self, engine: &mut Engine, until: i64) -> u64 {
        let (mut msg, mut rows) = (std::mem::take(&mut self.next), Vec::new());
        let mut accepted = 0;
        while !msg.is_empty() || self.sim.next_message(&mut msg) {
            if let Ok(ev) = decode(&msg) {
                if ev.ts >= until {
                    self.next = msg;
                    break;
                }
                if let Outcome::Accepted { .. } = engine.process(&ev, 0, &mut rows) {
                    accepted += 1;
                }
            }
            msg.clear();
            rows.clear();
        }
        accepted
    }
}

fn bench(c: &mut Criterion) {
    let (mut engine, accepted, mut stream) = engine_after(20);
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
    engine.snapshot_incremental();
    group.bench_function("incremental_200_rooms_none_changed", |b| {
        b.iter(|| black_box(engine.snapshot_incremental()))
    });
    // Each iteration: 10 s more of the stream (not timed), then the snapshot; a full
    // snapshot of the same state is timed beside it, first or second in turn (the
    // events just fed leave the caches colder than in the benches above).
    let mut until = SimParams::default().start_ms + 20 * 60_000;
    let (mut encoded, mut full, mut incremental) = (Vec::new(), Vec::new(), Vec::new());
    group.bench_function("incremental_200_rooms_after_10s", |b| {
        b.iter_custom(|iters| {
            let mut took = std::time::Duration::ZERO;
            for i in 0..iters {
                until += 10_000;
                stream.feed(&mut engine, until);
                let time_full = |engine: &Engine| {
                    let t = std::time::Instant::now();
                    black_box(engine.snapshot());
                    t.elapsed()
                };
                let full_first = if i % 2 == 0 { Some(time_full(&engine)) } else { None };
                let t = std::time::Instant::now();
                let (bytes, stats) = engine.snapshot_incremental();
                let inc = t.elapsed();
                black_box(bytes);
                full.push(full_first.unwrap_or_else(|| time_full(&engine)));
                incremental.push(inc);
                took += inc;
                encoded.push(stats.rooms_encoded);
            }
            took
        })
    });
    group.finish();
    encoded.sort_unstable();
    let ms = |d: &[std::time::Duration]| {
        d.iter().sum::<std::time::Duration>().as_secs_f64() * 1e3 / d.len() as f64
    };
    eprintln!(
        "after 10 s of the stream, {} times: rooms encoded min {}, median {}, max {} of {}; \
         incremental {:.2} ms, full {:.2} ms per snapshot (mean, same states, alternating)",
        encoded.len(),
        encoded[0],
        encoded[encoded.len() / 2],
        encoded[encoded.len() - 1],
        engine.rooms(),
        ms(&incremental),
        ms(&full)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
