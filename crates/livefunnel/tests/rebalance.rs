//! Rebalance: instances join and leave one consumer group during a stream (a clean
//! SIGTERM hands each partition over with a final checkpoint in the shared Kafka
//! store). At the end ClickHouse equals `replay`, the dead-letter topic equals replay's
//! rejections, and on `/metrics` every room is exported by exactly one live instance —
//! the owner of its partition — with its counters continued across every move, so a
//! sum across instances gives the totals.

mod common;

#[path = "common/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::*;
use common::*;
use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 16;

#[test]
fn faultsuite_instances_joining_and_leaving_hand_partitions_over_exactly() {
    init_logs();
    let server = ClickHouseServer::spawn();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    // As many store partitions as input partitions: each keeps one input partition's
    // checkpoints, within the mock broker's 5 MB per partition.
    mock.create_topic(STORE_TOPIC, PARTITIONS, 1).unwrap();
    mock.create_topic(DLQ_TOPIC, 2, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouseConfig {
        url: server.http_url(),
        database: "rebalance".into(),
        batch_interval_ms: 200,
        ..Default::default()
    };
    let inputs = sim_inputs(200, 6, 100_000, PARTITIONS);
    let expected = latest(&replay_rows(&inputs));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let start = |name: &str| Instance::start(name, dir.path(), &brokers, &ch, "rebalance");

    let producing = {
        let (brokers, inputs) = (brokers.clone(), inputs.clone());
        rt.spawn(async move { produce_paced(&brokers, &inputs, 2_000.0).await })
    };
    // (seconds into the stream, what happens)
    let stream_start = Instant::now();
    let mut live = vec![start("i0")];
    let mut stopped = 0;
    for (at, step) in [(8, "add i1"), (16, "add i2"), (26, "stop"), (36, "add i3"), (46, "stop")] {
        if let Some(wait) = Duration::from_secs(at).checked_sub(stream_start.elapsed()) {
            std::thread::sleep(wait);
        }
        match step.strip_prefix("add ") {
            Some(name) => live.push(start(name)),
            None => {
                // The oldest instance leaves cleanly: final checkpoints, then exit 0.
                let mut i = live.remove(0);
                let t = Instant::now();
                i.signal(15);
                let st = i.wait_exit(Duration::from_secs(90));
                assert!(st.success(), "{} must leave cleanly: {st:?}\n{}", i.name, i.log_tail(40));
                eprintln!("{} left in {:?}", i.name, t.elapsed());
                stopped += 1;
            }
        }
        assert!(!producing.is_finished(), "the stream ended before step `{step}`: make it longer");
        for i in live.iter_mut() {
            assert!(i.alive(), "{} died\n{}", i.name, i.log_tail(60));
        }
    }
    assert_eq!((live.len(), stopped), (2, 2));
    let offsets = rt.block_on(producing).expect("producer task");
    let logs = |inst: &[Instance]| inst.iter().map(|i| i.log_tail(30)).collect::<Vec<_>>().join("\n");

    let t0 = Instant::now();
    loop {
        let last = match rt.block_on(clickhouse_latest(&ch)) {
            Ok(actual) => match diff(&expected, &actual) {
                None => break,
                Some(d) => d,
            },
            Err(e) => e,
        };
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "clickhouse never matched replay: {last}\n{}",
            logs(&live)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let want = expected_dead_letters(&inputs, &offsets);
    assert!(want.len() > 500, "the stream must carry malformed messages; {} here", want.len());
    let got = read_dead_letters(&brokers);
    assert_eq!(got.len(), want.len(), "dead letters by source offset");
    assert!(got == want, "dead letters differ from replay's rejections");

    // Each room on exactly one live instance, with the whole stream's GMV.
    let totals = room_totals(&expected);
    let t1 = Instant::now();
    loop {
        let scrapes: Vec<String> = live
            .iter()
            .map(|i| rt.block_on(http_get(i.http, "/metrics")).map(|r| r.1).unwrap_or_default())
            .collect();
        let wrong: Vec<String> = totals
            .iter()
            .filter_map(|(room, (gmv, _, _))| {
                let seen: Vec<f64> = scrapes
                    .iter()
                    .filter_map(|s| series_value(s, "livefunnel_room_gmv_cents_total", &[("room_id", room)]))
                    .collect();
                (seen != [*gmv as f64]).then(|| format!("{room}: want [{gmv}] on one instance, got {seen:?}"))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "room series after the rebalances: {:?}",
            &wrong[..wrong.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for mut i in live.drain(..) {
        i.signal(15);
        let st = i.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "{} must stop cleanly: {st:?}\n{}", i.name, i.log_tail(40));
    }
}
