//! What the fault-injection tests (`faults_*.rs`) share: what replay says about every
//! message, and the check each of them ends with: ClickHouse holds replay's latest
//! rows, every message replay rejects is in the dead-letter topic exactly once with its
//! reason, and the counters agree, so no message is in neither ClickHouse nor the DLQ.
//! `livefunnel run` itself, as a child process, is [`crate::common::Run`].
//!
//! Declared by each test file with `#[path = "common/faults.rs"] mod faults;` after
//! `mod common;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_core::Reason;
use livefunnel_kafka::rdkafka::topic_partition_list::Offset;
use serde_json::Value;

use crate::common::*;

/// What replay makes of a stream, and where each message lands in Kafka.
pub struct Expect {
    pub inputs: Vec<Input>,
    /// The latest version of every row, as [`latest`] keys them.
    pub rows: BTreeMap<String, Value>,
    pub lines: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Rejections by reason, indexed like [`Reason::ALL`].
    pub rejected: [u64; Reason::ALL.len()],
    /// Every message replay rejects: (partition, offset) -> (input index, reason).
    pub dead: BTreeMap<(i32, i64), (usize, String)>,
    /// Messages per partition: every partition's end offset.
    pub ends: Vec<i64>,
}

impl Expect {
    pub fn new(inputs: Vec<Input>, partitions: i32) -> Expect {
        let replayed = replay_inputs(&inputs);
        let at = fresh_offsets(&inputs);
        let dead = replayed.rejected.into_iter().map(|(n, reason)| (at[n], (n, reason))).collect();
        Expect {
            rows: latest(&replayed.rows),
            lines: replayed.summary.lines,
            accepted: replayed.summary.accepted,
            duplicates: replayed.summary.duplicates,
            rejected: replayed.summary.rejected,
            dead,
            ends: partition_ends(&inputs, partitions),
            inputs,
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn rejected_of(&self, reason: Reason) -> u64 {
        self.rejected[Reason::ALL.iter().position(|r| *r == reason).unwrap()]
    }
}

/// The group's committed offsets per partition (-1: none).
pub async fn committed(brokers: &str, group: &str, partitions: i32) -> Vec<i64> {
    let (brokers, group) = (brokers.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let got = committed_offsets(&brokers, &group, partitions);
        got.into_iter()
            .map(|o| match o {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Polls `check` every `every` until it returns `None`, or fails with its last answer
/// and the log tail after `limit`.
pub async fn wait_for<F, Fut>(run: &Run, what: &str, limit: Duration, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let start = Instant::now();
    loop {
        let Some(why) = check().await else { return };
        if start.elapsed() > limit {
            run.fail(format!("{what}: not within {limit:?}: {why}"));
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until `group` committed exactly `want` on the input topic's partitions; fails
/// after `limit`.
pub async fn wait_committed(
    run: &Run,
    what: &str,
    brokers: &str,
    group: &str,
    want: &[i64],
    limit: Duration,
) {
    let partitions = want.len() as i32;
    wait_for(run, what, limit, Duration::from_millis(300), move || async move {
        let got = committed(brokers, group, partitions).await;
        (got != want).then(|| format!("committed {got:?}, want {want:?}"))
    })
    .await;
}

/// The end of every fault test, once the fault is healed: every partition is
/// committed to its end, ClickHouse holds replay's latest rows, each message replay
/// rejects is in the DLQ exactly once with its reason, the source headers and the
/// original bytes, and `/metrics` counts what replay counts.
pub async fn common_check(e: &Expect, run: &Run, brokers: &str, ch: &ClickHouseConfig, group: &str) {
    let limit = Duration::from_secs(120);
    wait_committed(run, "every partition committed to its end", brokers, group, &e.ends, limit).await;
    // Nothing in neither place: accepted (in ClickHouse above), duplicate, or rejected.
    assert_eq!(e.lines, e.inputs.len() as u64);
    assert_eq!(e.lines, e.accepted + e.duplicates + e.rejected_total(), "replay's own conservation");
    let text = scrape(run.addr).await;
    let counts = |name: &str| series_sum(&text, name) as u64;
    let mut wrong = Vec::new();
    for (name, want) in [
        ("livefunnel_events_consumed_total", e.lines),
        ("livefunnel_events_accepted_total", e.accepted),
        ("livefunnel_events_duplicate_total", e.duplicates),
    ] {
        if counts(name) != want {
            wrong.push(format!("{name} {} (replay {want})", counts(name)));
        }
    }
    for (i, reason) in Reason::ALL.iter().enumerate() {
        let l = [("reason", reason.as_str())];
        for name in ["livefunnel_events_rejected_total", "livefunnel_dead_letters_total"] {
            let got = series_value(&text, name, &l);
            if got != Some(e.rejected[i] as f64) {
                wrong.push(format!(
                    "{name}{{reason={}}} {got:?} (replay {})",
                    reason.as_str(),
                    e.rejected[i]
                ));
            }
        }
    }
    if !wrong.is_empty() {
        run.fail(format!("/metrics disagrees with replay: {}", wrong.join("; ")));
    }

    wait_for_clickhouse_or(ch, &e.rows, Duration::from_secs(60), || run.log_tail(60)).await;

    let (b, expect) = (brokers.to_owned(), e.dead.len());
    let seen = tokio::task::spawn_blocking(move || {
        read_dead_letters(&b, expect, Duration::from_secs(2), Duration::from_secs(60))
    })
    .await
    .unwrap();
    let mut got: BTreeMap<(i32, i64), (String, u64)> = BTreeMap::new();
    for d in &seen {
        assert_eq!(d.source_topic, TOPIC, "{d:?}");
        let old = got.insert((d.source_partition, d.source_offset), (d.reason.clone(), d.payload_hash));
        assert!(old.is_none(), "dead letter twice: {d:?}");
    }
    let want: BTreeMap<(i32, i64), (String, u64)> = e
        .dead
        .iter()
        .map(|(k, (n, reason))| (*k, (reason.clone(), xxhash_rust::xxh3::xxh3_64(&e.inputs[*n].payload))))
        .collect();
    if got != want {
        let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(k) != Some(v)).take(10).collect();
        let extra: Vec<_> = got.iter().filter(|(k, v)| want.get(k) != Some(v)).take(10).collect();
        run.fail(format!(
            "dead-letter topic: {} messages, replay rejects {}; missing or different: {missing:?}; unexpected: {extra:?}",
            got.len(),
            want.len()
        ));
    }
}
