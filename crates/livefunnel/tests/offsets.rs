//! Offsets that do not follow on are reported, never skipped silently:
//! - a checkpoint whose offset is past the end of its partition (the topic was
//!   deleted and created again: here a new cluster with fewer messages) is logged and
//!   counted (`livefunnel_offset_jumps_total{kind="beyond_end"}`), and the partition
//!   processes the new topic's messages from its start instead of skipping every one
//!   below the old offset;
//! - messages deleted below a checkpoint before they were read (retention; here the
//!   mock broker's 5 MB per partition, see `faults_poison.rs`) make the next offset
//!   jump: logged with the expected and the fetched offset, counted as a `gap`.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::Duration;

use common::*;
use faults::*;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_testkit::ClickHouseServer;

type Mock = MockCluster<'static, livefunnel_kafka::rdkafka::producer::DefaultProducerContext>;

fn cluster() -> (Mock, String) {
    let mock = MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}

/// Runs `livefunnel run` until the group committed `end` on the single partition,
/// then stops it cleanly; returns its `/metrics` before the stop and its log.
async fn run_to(
    config: &std::path::Path,
    addr: std::net::SocketAddr,
    log: &std::path::Path,
    brokers: &str,
    group: &str,
    end: i64,
) -> (String, String) {
    let mut run = Run::start(config, addr, log);
    let limit = Duration::from_secs(90);
    wait_committed(&run, "the partition committed to its end", brokers, group, &[end], limit).await;
    let metrics = scrape(addr).await;
    let st = run.terminate();
    assert!(st.success(), "exit {st:?}\n{}", run.log_tail(40));
    (metrics, std::fs::read_to_string(log).unwrap_or_default())
}

fn processed(metrics: &str) -> f64 {
    [
        "livefunnel_events_accepted_total",
        "livefunnel_events_duplicate_total",
        "livefunnel_events_rejected_total",
    ]
    .iter()
    .map(|n| series_sum(metrics, n))
    .sum()
}

fn jumps(metrics: &str, kind: &str) -> Option<f64> {
    series_value(metrics, "livefunnel_offset_jumps_total", &[("kind", kind)])
}

#[test]
fn faultsuite_a_checkpoint_past_the_end_of_a_recreated_topic_is_reported_and_the_new_topic_processed() {
    init_logs();
    let server = ClickHouseServer::spawn();
    let inputs = sample_input(1);
    let (old, rest) = inputs.split_at(inputs.len() * 2 / 3);
    let new = &rest[..rest.len() / 2];
    assert!(new.len() < old.len());
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "offsets_recreated");
    let group = "offsets-recreated";
    let log = dir.path().join("run.log");
    let rt = runtime();
    rt.block_on(async {
        let addr = free_local_addr();
        let (mock, brokers) = cluster();
        let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, group, addr));
        produce(&brokers, old).await;
        run_to(&config, addr, &log, &brokers, group, old.len() as i64).await;
        drop(mock);

        // The topic again, with fewer messages than the checkpoint's offset.
        let (_mock, brokers) = cluster();
        let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, group, addr));
        produce(&brokers, new).await;
        let (metrics, text) = run_to(&config, addr, &log, &brokers, group, new.len() as i64).await;
        assert_eq!(processed(&metrics), new.len() as f64, "every message of the new topic is processed");
        assert_eq!(jumps(&metrics, "beyond_end"), Some(1.0), "{metrics}");
        let warned = text.lines().find(|l| l.contains("WARN") && l.contains("past the end"));
        let warned = warned.unwrap_or_else(|| panic!("no warning for the checkpoint past the end:\n{text}"));
        for part in [format!("offset={}", old.len()), format!("end={}", new.len()), "partition=0".to_owned()]
        {
            assert!(warned.contains(&part), "{part} in {warned}");
        }
    });
    drop(server);
}

#[test]
fn faultsuite_messages_deleted_below_a_checkpoint_are_reported_as_a_gap() {
    init_logs();
    let server = ClickHouseServer::spawn();
    let inputs = sample_input(1);
    let (first, second) = inputs.split_at(inputs.len() / 2);
    // More than the 5 MB the mock broker keeps: the oldest messages, the whole first
    // half among them, are deleted before the second run reads on.
    let filler: Vec<Input> = (0..110)
        .map(|i| Input { partition: 0, key: b"filler".to_vec(), payload: format!("{i:060000}").into_bytes() })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "offsets_gap");
    let group = "offsets-gap";
    let log = dir.path().join("run.log");
    let rt = runtime();
    rt.block_on(async {
        let addr = free_local_addr();
        let (_mock, brokers) = cluster();
        let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, group, addr));
        produce(&brokers, first).await;
        run_to(&config, addr, &log, &brokers, group, first.len() as i64).await;

        produce(&brokers, &filler).await;
        produce(&brokers, second).await;
        let end = (first.len() + filler.len() + second.len()) as i64;
        let (metrics, text) = run_to(&config, addr, &log, &brokers, group, end).await;
        assert_eq!(jumps(&metrics, "gap"), Some(1.0), "{metrics}");
        assert_eq!(jumps(&metrics, "rewind"), Some(0.0), "{metrics}");
        let warned = text.lines().find(|l| l.contains("WARN") && l.contains("offsets missing"));
        let warned = warned.unwrap_or_else(|| panic!("no warning for the gap:\n{text}"));
        assert!(warned.contains(&format!("expected={}", first.len())), "{warned}");
        let got: i64 =
            warned.split("got=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
        assert!(got > first.len() as i64 && got < end, "{warned}");
    });
    drop(server);
}
