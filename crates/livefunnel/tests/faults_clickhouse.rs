//! ClickHouse outage: the server is killed for 60 s while a simulated stream is being
//! produced. During the outage `/readyz` is 503 naming ClickHouse,
//! `livefunnel_clickhouse_up` is 0, consumption pauses once the bounded queues are full
//! (Kafka keeps the backlog) and the process's memory stays bounded. The consumer stays
//! in its group although the outage is longer than its `max.poll.interval.ms` (20 s
//! here; 5 minutes by default): behind partitions are paused, not waited for, so it
//! keeps polling and no partition is revoked. After the restart
//! the pipeline catches up and ClickHouse holds exactly what replay computes; the
//! catch-up rate is printed.
//!
//! librdkafka's mock broker keeps at most 5 MB (and 100,000 messages) per partition:
//! each append deletes the oldest message sets beyond that, consumed or not
//! (rdkafka_mock.c, `rd_kafka_mock_partition_log_append`). The backlog that builds
//! while consumption is paused must stay below it, so the stream is spread over
//! enough partitions that none holds more than [`PARTITION_BYTES_LIMIT`] in total.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use faults::*;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 12;
/// Well below the mock broker's 5 MB per partition (message overhead included).
const PARTITION_BYTES_LIMIT: usize = 3_000_000;
const OUTAGE: Duration = Duration::from_secs(60);
/// ClickHouse goes down this long after production started.
const BEFORE_OUTAGE: Duration = Duration::from_secs(10);
/// The whole stream is produced over this long: it keeps flowing through most of the
/// outage, and is all in Kafka at the restart.
const PRODUCE_OVER: Duration = Duration::from_secs(60);
/// The bound on `livefunnel run`'s resident memory during the outage.
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// Far below the outage: a consumer that stopped polling while ClickHouse is down
/// would leave the group, and its partitions would be revoked and assigned again.
const MAX_POLL_INTERVAL_MS: &str = "20000";

/// Produces `inputs` in order at an even pace over `over`, counting enqueued
/// messages, and returns once every one is delivered.
async fn produce_paced(brokers: String, inputs: Vec<Input>, over: Duration, produced: Arc<AtomicU64>) {
    let p = producer(&brokers);
    let start = Instant::now();
    let total = inputs.len() as f64;
    let mut pending = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(50) {
        for i in chunk {
            pending.push(enqueue(&p, i).await);
        }
        let done = produced.fetch_add(chunk.len() as u64, Ordering::SeqCst) + chunk.len() as u64;
        let due = start + over.mul_f64(done as f64 / total);
        tokio::time::sleep_until(due.into()).await;
    }
    for d in pending {
        d.await.expect("delivery canceled").expect("producing a test message");
    }
}

/// The stream with its rooms moved so the partitions get about as many bytes each
/// (rooms differ a lot in traffic): each room stays on one partition, the biggest
/// rooms first onto the lightest partition. The clock rooms stay where they are.
fn balanced(mut inputs: Vec<Input>) -> Vec<Input> {
    let mut room_bytes: std::collections::BTreeMap<Vec<u8>, usize> = std::collections::BTreeMap::new();
    let mut load = vec![0usize; PARTITIONS as usize];
    for i in &inputs {
        if i.key.starts_with(b"clock-") {
            load[i.partition as usize] += i.payload.len();
        } else {
            *room_bytes.entry(i.key.clone()).or_default() += i.payload.len();
        }
    }
    let mut rooms: Vec<(Vec<u8>, usize)> = room_bytes.into_iter().collect();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut partition_of_room = std::collections::BTreeMap::new();
    for (room, bytes) in rooms {
        let p = (0..load.len()).min_by_key(|&p| load[p]).unwrap();
        load[p] += bytes;
        partition_of_room.insert(room, p as i32);
    }
    for i in &mut inputs {
        if let Some(&p) = partition_of_room.get(&i.key) {
            i.partition = p;
        }
    }
    inputs
}

/// What `/readyz`, `/metrics` and /proc show at one moment of the outage.
#[derive(Debug)]
struct Sample {
    at: Duration,
    readyz: (u16, String),
    up: Option<f64>,
    consumed: u64,
    produced: u64,
    rss_kib: u64,
}

fn inserted_rows(text: &str) -> u64 {
    let all = series_sum(text, "livefunnel_clickhouse_insert_rows_total");
    let annotations =
        series_value(text, "livefunnel_clickhouse_insert_rows_total", &[("table", "annotations")])
            .unwrap_or(0.0);
    (all - annotations) as u64
}

fn processed(text: &str) -> u64 {
    (series_sum(text, "livefunnel_events_accepted_total")
        + series_sum(text, "livefunnel_events_duplicate_total")
        + series_sum(text, "livefunnel_events_rejected_total")) as u64
}

#[test]
fn faultsuite_clickhouse_outage_pauses_consumption_then_catches_up() {
    init_logs();
    let mut server = ClickHouseServer::spawn();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let sim = livefunnel_sim::SimParams {
        rooms: 24,
        duration_ms: 10 * 60_000,
        seed: 11,
        malformed_share: 0.002,
        ..Default::default()
    };
    let e = Expect::new(balanced(sim_input(sim, PARTITIONS)), PARTITIONS);
    let total = e.lines;
    assert!(total > 20_000, "{total}");
    let mut bytes = vec![0usize; PARTITIONS as usize];
    for i in &e.inputs {
        // About 70 bytes of record and batch overhead per message in the mock's log.
        bytes[i.partition as usize] += i.payload.len() + i.key.len() + 70;
    }
    let biggest = *bytes.iter().max().unwrap();
    assert!(
        biggest < PARTITION_BYTES_LIMIT,
        "a partition gets {biggest} bytes: the mock broker would drop some ({bytes:?})"
    );
    eprintln!(
        "clickhouse outage: {total} events over {PARTITIONS} partitions, bytes per partition {bytes:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "faults_ch");
    let group = "faults-ch";
    // No idle advance while consumption is paused: the live result stays the replay's.
    let addr = free_local_addr();
    let config = write_run_config(
        dir.path(),
        &RunConfig {
            idle_timeout: Some("10m"),
            kafka: &[("max.poll.interval.ms", MAX_POLL_INTERVAL_MS)],
            ..RunConfig::new(&brokers, &ch, group, addr)
        },
    );
    let rt = runtime();
    rt.block_on(async {
        let mut run = Run::start(&config, addr, &dir.path().join("run.log"));
        let produced = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let producing = tokio::spawn(produce_paced(brokers.clone(), e.inputs.clone(), PRODUCE_OVER, produced.clone()));

        // Rows reach ClickHouse and checkpoints complete before the outage.
        wait_for(&run, "rows in clickhouse before the outage", BEFORE_OUTAGE, Duration::from_millis(200), move || async move {
            let text = scrape(addr).await;
            let ok = series_sum(&text, "livefunnel_checkpoints_total");
            (inserted_rows(&text) == 0 || ok == 0.0 || series_value(&text, "livefunnel_clickhouse_up", &[]) != Some(1.0))
                .then(|| format!("inserted {} rows, {ok} checkpoints", inserted_rows(&text)))
        })
        .await;
        tokio::time::sleep_until((started + BEFORE_OUTAGE).into()).await;
        let rss_before = run.rss_kib();

        server.stop();
        let stopped = Instant::now();
        let mut samples = Vec::new();
        while stopped.elapsed() < OUTAGE {
            let readyz = http_get(addr, "/readyz").await.unwrap_or((0, String::new()));
            let text = scrape(addr).await;
            samples.push(Sample {
                at: stopped.elapsed(),
                readyz,
                up: series_value(&text, "livefunnel_clickhouse_up", &[]),
                consumed: series_sum(&text, "livefunnel_events_consumed_total") as u64,
                produced: produced.load(Ordering::SeqCst),
                rss_kib: run.rss_kib(),
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let at_restart = scrape(addr).await;
        let (consumed_at_restart, inserted_at_restart) =
            (series_sum(&at_restart, "livefunnel_events_consumed_total") as u64, inserted_rows(&at_restart));
        let t0 = Instant::now();
        server.start();
        let restarted = Instant::now();
        let startup = restarted - t0;
        producing.await.unwrap();
        assert_eq!(produced.load(Ordering::SeqCst), total, "all produced by the restart");

        // During the outage (from 5 s in: health checks run every 2 s).
        let late: Vec<&Sample> = samples.iter().filter(|s| s.at >= Duration::from_secs(5)).collect();
        assert!(late.len() >= 40, "{} samples", late.len());
        for s in &late {
            if s.readyz.0 != 503 || !s.readyz.1.contains("clickhouse") || s.up != Some(0.0) {
                run.fail(format!("during the outage /readyz must be 503 naming clickhouse and clickhouse_up 0: {s:?}"));
            }
        }
        // Consumption pauses: nothing consumed over the outage's last 20 s while the
        // stream kept coming.
        let mid = late.iter().find(|s| s.at >= OUTAGE - Duration::from_secs(20)).unwrap();
        let last = late.last().unwrap();
        if last.consumed != mid.consumed || last.produced <= mid.produced || last.consumed >= last.produced {
            run.fail(format!("consumption did not pause: {mid:?} then {last:?}"));
        }
        let rss_max = samples.iter().map(|s| s.rss_kib).max().unwrap();
        if rss_max > RSS_LIMIT_KIB || rss_max == 0 {
            run.fail(format!("rss {rss_max} KiB during the outage, bound {RSS_LIMIT_KIB} KiB"));
        }
        let paused_at = samples.iter().find(|s| s.consumed == last.consumed).unwrap();
        eprintln!(
            "clickhouse outage: {total} events; before the outage rss {rss_before} KiB; during it \
             rss max {rss_max} KiB (bound {RSS_LIMIT_KIB}); consumption paused {:.0} s into it at {} consumed \
             ({} produced then, {} at the restart)",
            paused_at.at.as_secs_f64(),
            last.consumed,
            paused_at.produced,
            last.produced
        );

        // Catch-up: consumed everything, processed it, and ClickHouse has every emitted
        // row (on two scrapes in a row, so no batch is between the counters).
        let mut caught_up: Option<Duration> = None;
        let mut fresh_since: Option<(Duration, String)> = None;
        let fresh = loop {
            let text = scrape(addr).await;
            let consumed = series_sum(&text, "livefunnel_events_consumed_total") as u64;
            if consumed == total && caught_up.is_none() {
                caught_up = Some(restarted.elapsed());
            }
            let emitted = series_sum(&text, "livefunnel_rows_emitted_total") as u64;
            let ok = consumed == total && processed(&text) == total && inserted_rows(&text) == emitted;
            match (&fresh_since, ok) {
                (Some((at, first)), true) => break (*at, first.clone()),
                (None, true) => fresh_since = Some((restarted.elapsed(), text.clone())),
                (_, false) => fresh_since = None,
            }
            if restarted.elapsed() > Duration::from_secs(150) {
                run.fail(format!(
                    "not fresh 150 s after the restart: consumed {consumed}/{total}, processed {}, \
                     inserted {} of {emitted} rows",
                    processed(&text),
                    inserted_rows(&text)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let (fresh_after, text) = fresh;
        let secs = fresh_after.as_secs_f64();
        let events = total - consumed_at_restart;
        let rows = inserted_rows(&text) - inserted_at_restart;
        // The stream was offered evenly over PRODUCE_OVER.
        let offered = total as f64 / PRODUCE_OVER.as_secs_f64();
        eprintln!(
            "catch-up after a {OUTAGE:?} clickhouse outage (server start-up {:.1} s, not counted): \
             consumer caught up after {:.1} s; fresh (every emitted row in clickhouse) after {secs:.1} s; \
             {events} events ({:.0} events/s, {:.1} times the offered {offered:.0} events/s), {rows} rows \
             ({:.0} rows/s)",
            startup.as_secs_f64(),
            caught_up.unwrap_or(fresh_after).as_secs_f64(),
            events as f64 / secs,
            events as f64 / secs / offered,
            rows as f64 / secs
        );

        common_check(&e, &run, &brokers, &ch, group).await;
        let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
        let (assigned, revoked) =
            (log.matches("partitions assigned").count(), log.matches("partitions revoked").count());
        if assigned != 1 || revoked != 0 || log.contains("max.poll.interval.ms") {
            run.fail(format!(
                "the consumer left its group during the outage: {assigned} assignments, {revoked} revocations"
            ));
        }
        let (code, body) = http_get(addr, "/readyz").await.unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(series_value(&scrape(addr).await, "livefunnel_clickhouse_up", &[]), Some(1.0));
        let st = run.terminate();
        assert!(st.success(), "exit {st:?}\n{}", run.log_tail(40));
    });
}
