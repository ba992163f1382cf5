//! Engine throughput on simulated traffic.
//!
//! `cargo bench -p livefunnel --bench engine`
//!
//! 200,000 simulator messages over 200 rooms (default delivery faults: 0.2 %
//! late, 0.2 % duplicates), measured two ways:
//! - `process`: pre-decoded owned events through `Engine::process` with the
//!   default `EngineConfig` (windows `1m`, `5m/10s`, `10m/1m`, `session`),
//!   plus `finish`;
//! - `decode_process`: the same from raw JSON bytes (decode + process + finish).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use livefunnel_core::{decode, Engine, EngineConfig, Event, Row};
use livefunnel_sim::{SimParams, Simulator};

const EVENTS: usize = 200_000;

fn messages() -> Vec<Vec<u8>> {
    let mut sim =
        Simulator::new(SimParams { rooms: 200, duration_ms: 6 * 3_600_000, ..SimParams::default() });
    let mut out = Vec::with_capacity(EVENTS);
    let mut buf = Vec::new();
    while out.len() < EVENTS && sim.next_message(&mut buf) {
        out.push(std::mem::take(&mut buf));
    }
    assert_eq!(out.len(), EVENTS, "the simulation is long enough");
    out
}

fn bench(c: &mut Criterion) {
    let raw = messages();
    let events: Vec<Event<'static>> =
        raw.iter().map(|m| decode(m).expect("simulator output is valid").into_owned()).collect();
    let bytes: u64 = raw.iter().map(|m| m.len() as u64 + 1).sum();

    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("process", |b| {
        b.iter(|| {
            let mut engine = Engine::new(EngineConfig::default());
            let mut rows: Vec<Row> = Vec::new();
            let mut n = 0usize;
            for ev in &events {
                black_box(engine.process(ev, 0, &mut rows));
                n += rows.len();
                rows.clear();
            }
            engine.finish(&mut rows);
            black_box(n + rows.len())
        })
    });
    g.bench_function("decode_process", |b| {
        b.iter(|| {
            let mut engine = Engine::new(EngineConfig::default());
            let mut rows: Vec<Row> = Vec::new();
            let mut n = 0usize;
            for m in &raw {
                if let Ok(ev) = decode(m) {
                    black_box(engine.process(&ev, 0, &mut rows));
                }
                n += rows.len();
                rows.clear();
            }
            engine.finish(&mut rows);
            black_box(n + rows.len())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("decode_only", |b| {
        b.iter(|| raw.iter().filter(|m| decode(black_box(m)).is_ok()).count())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
