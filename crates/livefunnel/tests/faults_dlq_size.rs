//! A dead letter too large for the dead-letter producer: `livefunnel run` keeps
//! librdkafka's default `message.max.bytes` (1,000,000) while one input message is
//! about 1 MiB. The dead letter goes out truncated to `kafka.dlq_truncate_bytes`
//! (64 KiB by default) with the original size and checksum in its headers, it is
//! counted, and its partition is not held back: every partition is committed to its
//! end and ClickHouse holds what replay computes. (`faults_poison.rs` raises the
//! producer's limit instead, and its 10 MiB dead letter goes out whole.)
//!
//! The mock broker keeps at most 5 MB per partition (see `faults_poison.rs`): the
//! sample and the 1 MiB message fit in it.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::Duration;

use common::*;
use faults::*;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;
const BIG_BYTES: usize = 1 << 20;
/// `kafka.dlq_truncate_bytes` by default.
const TRUNCATED_BYTES: usize = 65_536;

#[test]
fn faultsuite_a_dead_letter_above_the_producer_limit_goes_out_truncated_and_holds_nothing() {
    init_logs();
    let server = ClickHouseServer::spawn();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let mut inputs = sample_input(PARTITIONS);
    // In the middle of partition 0: messages after it must be processed and committed.
    let at = inputs.iter().enumerate().filter(|(_, i)| i.partition == 0).nth(1000).unwrap().0;
    let payload = format!(
        r#"{{"event_id":"big","type":"like","ts":1,"room_id":"big","session_id":"s","pad":"{}"}}"#,
        "x".repeat(BIG_BYTES)
    );
    inputs.insert(at, Input { partition: 0, key: b"big".to_vec(), payload: payload.into_bytes() });
    let e = Expect::new(inputs, PARTITIONS);
    let big = e.dead.iter().find(|(_, (n, _))| *n == at).map(|(k, (_, r))| (*k, r.clone()));
    let (big_at, big_reason) = big.expect("replay rejects the 1 MiB message");
    assert_eq!(big_reason, "oversize");

    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "faults_dlq_size");
    let group = "faults-dlq-size";
    let addr = free_local_addr();
    // No `message.max.bytes`: the dead-letter producer keeps librdkafka's default.
    let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, group, addr));
    let rt = runtime();
    rt.block_on(async {
        produce_with(&producer(&brokers), &e.inputs).await;
        let run = Run::start(&config, addr, &dir.path().join("run.log"));
        let limit = Duration::from_secs(120);
        wait_committed(&run, "every partition committed to its end", &brokers, group, &e.ends, limit).await;
        wait_for_clickhouse_or(&ch, &e.rows, Duration::from_secs(60), || run.log_tail(60)).await;

        let (b, expect) = (brokers.clone(), e.dead.len());
        let seen = tokio::task::spawn_blocking(move || {
            read_dead_letters(&b, expect, Duration::from_secs(2), Duration::from_secs(60))
        })
        .await
        .unwrap();
        assert_eq!(seen.len(), e.dead.len(), "one dead letter per rejected message");
        let original = &e.inputs[at].payload;
        for d in &seen {
            let (n, reason) = &e.dead[&(d.source_partition, d.source_offset)];
            assert_eq!(&d.reason, reason, "{d:?}");
            if (d.source_partition, d.source_offset) == big_at {
                assert_eq!(d.payload_len, TRUNCATED_BYTES, "{d:?}");
                assert_eq!(d.payload_hash, xxhash_rust::xxh3::xxh3_64(&original[..TRUNCATED_BYTES]));
                assert_eq!(d.original_size, original.len().to_string(), "{d:?}");
                assert_eq!(d.original_xxh3, format!("{:016x}", xxhash_rust::xxh3::xxh3_64(original)));
            } else {
                assert_eq!(d.payload_hash, xxhash_rust::xxh3::xxh3_64(&e.inputs[*n].payload), "{d:?}");
                assert_eq!((d.original_size.as_str(), d.original_xxh3.as_str()), ("", ""), "{d:?}");
            }
        }

        let text = scrape(addr).await;
        assert_eq!(series_sum(&text, "livefunnel_dead_letters_truncated_total"), 1.0);
        assert_eq!(
            series_value(&text, "livefunnel_dead_letter_errors_total", &[("kind", "too_large")]),
            Some(1.0)
        );
        assert_eq!(series_sum(&text, "livefunnel_dead_letters_lost_total"), 0.0);
        let mut run = run;
        let st = run.terminate();
        assert!(st.success(), "exit {st:?}\n{}", run.log_tail(40));
    });
    drop(server);
}
