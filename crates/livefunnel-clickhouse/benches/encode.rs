//! RowBinary encoding cost per row: the sample's rows (every kind, as emitted) and
//! window rows alone (the most common, 54 columns).
//!
//! `cargo bench -p livefunnel-clickhouse --bench encode`; criterion reports
//! elements/s, i.e. rows/s; ns/row is its inverse.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use livefunnel_clickhouse::rowbinary::encode_row;
use livefunnel_clickhouse::{ClickHouseConfig, ClickHouseMetrics, ClickHouseSink};
use livefunnel_core::{decode, Engine, EngineConfig, Row};

fn sample_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/sample.jsonl");
    let input = std::fs::read(path).expect("reading data/sample.jsonl");
    let mut engine = Engine::new(EngineConfig::default());
    let mut rows = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        if let Ok(ev) = decode(line) {
            engine.process(&ev, 0, &mut rows);
        }
    }
    engine.finish(&mut rows);
    rows
}

fn bench(c: &mut Criterion) {
    let rows = sample_rows();
    let windows: Vec<Row> = rows.iter().filter(|r| matches!(r, Row::Window(_))).cloned().collect();
    let mut group = c.benchmark_group("rowbinary");
    for (name, rows) in [("sample_rows", &rows), ("window_rows", &windows)] {
        group.throughput(Throughput::Elements(rows.len() as u64));
        let mut out = Vec::with_capacity(rows.len() * 1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for row in rows.iter() {
                    encode_row(black_box(row), &mut out);
                }
                black_box(out.len())
            })
        });
    }
    // Through a new sink: table lookup, bookkeeping and buffer growth included.
    group.throughput(Throughput::Elements(rows.len() as u64));
    let cfg = ClickHouseConfig { batch_rows: usize::MAX, ..ClickHouseConfig::default() };
    group.bench_function("sink_push_sample_rows_cold_buffers", |b| {
        b.iter_batched_ref(
            || ClickHouseSink::new(cfg.clone(), ClickHouseMetrics::unregistered()).unwrap(),
            |sink| {
                for row in rows.iter() {
                    sink.push(black_box(row));
                }
                black_box(sink.buffered_bytes())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
