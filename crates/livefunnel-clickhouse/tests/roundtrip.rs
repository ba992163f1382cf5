//! The sample replayed through the engine, inserted, and read back: ClickHouse holds
//! the last version of every key, duplicates and re-sends are harmless, and a
//! higher version wins.

mod common;

use std::time::Instant;

use common::{
    annotation_json, assert_same_rows, by_key, config_for, key_of, latest_by_key, query_text, replay_sample,
    window_row,
};
use livefunnel_clickhouse::{latest_rows, migrate, ClickHouseMetrics, ClickHouseSink, Table};
use livefunnel_core::Row;
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

async fn assert_latest_equals_engine(cfg: &livefunnel_clickhouse::ClickHouseConfig, rows: &[Row]) {
    for table in Table::RESULTS {
        let expected = latest_by_key(table, rows);
        assert!(!expected.is_empty(), "{table:?} has rows in the sample");
        let actual = by_key(table, latest_rows(cfg, table).await.unwrap());
        // The same rows were inserted, so even the versions agree.
        assert_same_rows(table, &expected, &actual, &[]);
    }
}

#[tokio::test]
async fn sample_round_trip_keeps_the_last_version_and_ignores_resends() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_roundtrip");
    migrate(&cfg).await.unwrap();
    let replayed = replay_sample();
    let metrics = ClickHouseMetrics::unregistered();
    let mut sink = ClickHouseSink::new(cfg.clone(), metrics.clone()).unwrap();

    for row in &replayed.rows {
        sink.push(row);
    }
    for a in &replayed.annotations {
        sink.push_annotation(a);
    }
    let pushed = replayed.rows.len() + replayed.annotations.len();
    assert_eq!(sink.buffered_rows(), pushed as u64);
    let stats = sink.flush().await.unwrap();
    assert_eq!(stats.rows, pushed as u64);
    assert_eq!(stats.inserts, 6);
    assert_eq!(stats.retries, 0);
    assert_eq!(sink.buffered_rows(), 0);
    assert_eq!(sink.buffered_bytes(), 0);
    assert_eq!(
        metrics.insert_rows(Table::Window),
        replayed.rows.iter().filter(|r| matches!(r, Row::Window(_))).count() as u64
    );
    assert_latest_equals_engine(&cfg, &replayed.rows).await;

    let expected_annotations: Vec<Value> = replayed.annotations.iter().map(annotation_json).collect();
    let mut got_annotations = latest_rows(&cfg, Table::Annotations).await.unwrap();
    assert_eq!(got_annotations.len(), expected_annotations.len());
    let sort = |v: &mut Vec<Value>| v.sort_by_key(|a| key_of(Table::Annotations, a));
    let mut expected_sorted = expected_annotations.clone();
    sort(&mut expected_sorted);
    sort(&mut got_annotations);
    assert_eq!(got_annotations, expected_sorted);

    // A crash replay sends everything again: nothing changes.
    for row in &replayed.rows {
        sink.push(row);
    }
    for a in &replayed.annotations {
        sink.push_annotation(a);
    }
    sink.flush().await.unwrap();
    assert_latest_equals_engine(&cfg, &replayed.rows).await;
    assert_eq!(latest_rows(&cfg, Table::Annotations).await.unwrap().len(), expected_annotations.len());
    // Once merged, the duplicates are gone from disk too, not only hidden by FINAL.
    for table in Table::ALL {
        query_text(&server, &format!("OPTIMIZE TABLE lf_roundtrip.{} FINAL", table.name())).await;
        let plain: usize = query_text(&server, &format!("SELECT count() FROM lf_roundtrip.{}", table.name()))
            .await
            .parse()
            .unwrap();
        let latest = latest_rows(&cfg, table).await.unwrap().len();
        assert_eq!(plain, latest, "{table:?} after OPTIMIZE FINAL");
    }

    // A correction: a higher version with other numbers wins; an older version sent
    // late (a replay of an earlier batch) does not bring old numbers back.
    let mut corrected = Vec::new();
    let mut stale = Vec::new();
    for row in replayed.rows.iter().filter(|r| matches!(r, Row::Window(_))) {
        let Row::Window(w) = row else { unreachable!() };
        let mut newer = w.clone();
        newer.version += 1;
        newer.counts.watch_pv += 1000;
        newer.counts.gmv_cents += 12_345;
        corrected.push(Row::Window(newer));
        let mut older = w.clone();
        older.version = 0;
        older.counts.watch_pv = 999_999;
        stale.push(Row::Window(older));
    }
    let mut all = replayed.rows.clone();
    all.extend(corrected.iter().cloned());
    for row in corrected.iter().chain(&stale) {
        sink.push(row);
    }
    sink.flush().await.unwrap();
    let expected = latest_by_key(Table::Window, &all);
    let actual = by_key(Table::Window, latest_rows(&cfg, Table::Window).await.unwrap());
    assert_same_rows(Table::Window, &expected, &actual, &[]);
    assert!(actual.values().all(|v| v["watch_pv"].as_u64().unwrap() >= 1000), "every window was corrected");
}

/// Reports the insert rate into the local server; prints it (see the crate's docs)
/// and checks every row arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_throughput_of_a_50k_window_row_batch() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_throughput");
    migrate(&cfg).await.unwrap();
    const ROWS: u64 = 50_000;
    let rows: Vec<Row> = (0..ROWS).map(window_row).collect();
    let mut sink = ClickHouseSink::new(cfg.clone(), ClickHouseMetrics::unregistered()).unwrap();

    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        for row in &rows {
            sink.push(row);
        }
        let encoded = t0.elapsed();
        let bytes = sink.buffered_bytes();
        let stats = sink.flush().await.unwrap();
        assert_eq!(stats.rows, ROWS);
        let total = t0.elapsed().as_secs_f64();
        best = best.min(total);
        eprintln!(
            "insert throughput: {ROWS} window rows, {:.1} MB RowBinary: encode {:.1} ms, insert {:.1} ms, \
             {:.0} rows/s end to end",
            bytes as f64 / 1e6,
            encoded.as_secs_f64() * 1e3,
            stats.elapsed.as_secs_f64() * 1e3,
            ROWS as f64 / total
        );
    }
    eprintln!("insert throughput: best {:.0} rows/s", ROWS as f64 / best);
    let count = query_text(&server, "SELECT count() FROM lf_throughput.room_window_stats FINAL").await;
    assert_eq!(count, ROWS.to_string());
    let sum = query_text(&server, "SELECT sum(gmv_cents) FROM lf_throughput.room_window_stats FINAL").await;
    let want: i64 = (0..ROWS as i64).map(|i| 1_234_500 + i).sum();
    assert_eq!(sum, want.to_string());
}
