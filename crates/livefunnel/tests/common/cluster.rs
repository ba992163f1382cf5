//! Several `livefunnel run` processes in one consumer group, with the shared Kafka
//! checkpoint store, fed by a simulated stream produced at a pace: what the crash-loop
//! and rebalance tests share.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_kafka::rdkafka::config::ClientConfig;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_kafka::rdkafka::producer::{DefaultProducerContext, FutureProducer};
use livefunnel_sim::SimParams;
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

use crate::common::*;

pub const STORE_TOPIC: &str = "livefunnel.checkpoints";
/// The instances' `session.timeout.ms`: after a `kill -9`, the group moves the
/// partitions once it has passed.
pub const SESSION_TIMEOUT_MS: u64 = 6_000;

/// What the cluster tests start from: ClickHouse; a mock cluster with the input
/// topic, the shared store's topic and the dead-letter topic; the stream and what
/// replay makes of it. Fields drop in order, the servers last.
pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub inputs: Vec<Input>,
    /// Replay's latest rows.
    pub expected: BTreeMap<String, Value>,
    pub ch: ClickHouseConfig,
    pub dir: tempfile::TempDir,
    pub brokers: String,
    /// `None` with a broker of one's own (`KAFKA_ENV`).
    pub mock: Option<MockCluster<'static, DefaultProducerContext>>,
    pub server: ClickHouseServer,
}

/// `host:port` of a Kafka-protocol broker to run the cluster tests on instead of
/// librdkafka's mock cluster (a fresh tansu, say: the test creates its topics there).
/// The mock's group coordinator differs from a real one's; this is how to see a
/// test's figures on another. Not `LIVEFUNNEL_*`: the instances would read that as a
/// configuration key.
pub const KAFKA_ENV: &str = "TESTKIT_KAFKA";

/// Set to `1`: each instance is a static member of its group (`group.instance.id`, its
/// name), as a deployment that restarts a process under the same name can be.
pub const STATIC_MEMBERSHIP_ENV: &str = "TESTKIT_STATIC_MEMBERSHIP";

impl Cluster {
    /// `inputs` over `partitions` input partitions, rows into `database`.
    pub fn new(database: &str, partitions: i32, dlq_partitions: i32, inputs: Vec<Input>) -> Cluster {
        init_logs();
        let server = ClickHouseServer::spawn();
        // As many store partitions as input partitions: each keeps one input partition's
        // checkpoints, within the mock broker's 5 MB per partition.
        let topics = [(TOPIC, partitions), (STORE_TOPIC, partitions), (DLQ_TOPIC, dlq_partitions)];
        let rt = runtime();
        let (brokers, mock) = match std::env::var(KAFKA_ENV).ok().filter(|b| !b.is_empty()) {
            Some(brokers) => {
                eprintln!("{KAFKA_ENV}: the cluster runs on the broker at {brokers}");
                rt.block_on(create_topics(&brokers, &topics));
                (brokers, None)
            }
            None => {
                let mock = MockCluster::new(1).expect("mock cluster");
                for (topic, n) in topics {
                    mock.create_topic(topic, n, 1).unwrap();
                }
                (mock.bootstrap_servers(), Some(mock))
            }
        };
        let expected = latest(&replay_inputs(&inputs).rows);
        Cluster {
            rt,
            inputs,
            expected,
            ch: ch_config(&server, database),
            dir: tempfile::tempdir().unwrap(),
            brokers,
            mock,
            server,
        }
    }

    /// A `livefunnel run` instance of `group`.
    pub fn start(&self, name: &str, group: &str) -> Instance {
        Instance::start(name, self.dir.path(), &self.brokers, &self.ch, group)
    }

    /// Waits until ClickHouse holds replay's latest rows; fails after `limit` with `logs()`.
    pub fn wait_for_replay(&self, limit: Duration, logs: impl Fn() -> String) {
        self.rt.block_on(wait_for_clickhouse_or(&self.ch, &self.expected, limit, logs));
    }
}

/// Creates the topics on a broker of one's own; a topic that exists already fails the
/// test, as it would hold another run's messages.
async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    use livefunnel_kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use livefunnel_kafka::rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("creating an admin client");
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|&(t, n)| NewTopic::new(t, n, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &opts).await.expect("creating the topics");
    for r in results {
        if let Err((topic, e)) = r {
            panic!("{KAFKA_ENV}: topic {topic} not created ({e}); give the test a fresh broker");
        }
    }
}

/// A small deterministic generator for the tests' random choices.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// A seed that differs from run to run, printed so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::env::var("TESTKIT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("seed {s} (rerun with TESTKIT_SEED={s})");
    s
}

/// The simulator's messages over `rooms` rooms and `minutes` of event time (late,
/// duplicate and malformed ones included; at least `min_events`), each on its room's
/// partition, then per partition the clock events that make every window final
/// ([`sim_input`]). Event time ends hours before now, so the clock stays inside
/// `max_future_skew`.
pub fn sim_inputs(rooms: u32, minutes: i64, min_events: usize, partitions: i32) -> Vec<Input> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let duration_ms = minutes * 60_000;
    let out = sim_input(
        SimParams {
            rooms,
            duration_ms,
            seed: 7,
            start_ms: (now - 4 * 3_600_000) / 60_000 * 60_000,
            late_share: 0.02,
            duplicate_share: 0.01,
            malformed_share: 0.01,
            ..SimParams::default()
        },
        partitions,
    );
    let clocks = 2 * partitions as usize;
    assert!(
        out.len() - clocks >= min_events,
        "the simulator made {} messages, fewer than {min_events}",
        out.len() - clocks
    );
    out
}

/// Produces `inputs` in order at about `per_second`; returns each input's
/// (partition, offset).
pub async fn produce_paced(brokers: &str, inputs: &[Input], per_second: f64) -> Vec<(i32, i64)> {
    produce_paced_until(brokers, inputs, per_second, &std::sync::atomic::AtomicBool::new(false)).await
}

/// [`produce_paced`], the rest at once from when `hurry` is set.
pub async fn produce_paced_until(
    brokers: &str,
    inputs: &[Input],
    per_second: f64,
    hurry: &std::sync::atomic::AtomicBool,
) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Few large batches: the mock broker finds a fetch offset by walking a
        // partition's batches, so many small ones make every fetch slow.
        .set("linger.ms", "100")
        .set("enable.idempotence", "true")
        .create()
        .expect("creating the test producer");
    let start = Instant::now();
    let mut out = Vec::with_capacity(inputs.len());
    let mut pending = Vec::new();
    for (n, i) in inputs.iter().enumerate() {
        if n % 500 == 0 && !hurry.load(std::sync::atomic::Ordering::Relaxed) {
            let due = Duration::from_secs_f64(n as f64 / per_second);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        pending.push(enqueue(&producer, i).await);
        if pending.len() >= 5_000 {
            for f in pending.drain(..) {
                let d = f.await.expect("delivery").expect("producing a test message");
                out.push((d.partition, d.offset));
            }
        }
    }
    for f in pending {
        let d = f.await.expect("delivery").expect("producing a test message");
        out.push((d.partition, d.offset));
    }
    out
}

/// The dead-letter topic, by source (partition, offset): the reason header, read until
/// 5 s pass without a new dead letter once `expect` came. A message dead-lettered
/// twice (by an owner that died before its checkpoint, then again by the next) must
/// carry the same reason both times.
pub fn dead_letters_by_source(brokers: &str, expect: usize) -> BTreeMap<(i32, i64), String> {
    let mut out = BTreeMap::new();
    for d in read_dead_letters(brokers, expect, Duration::from_secs(5), Duration::from_secs(120)) {
        let key = (d.source_partition, d.source_offset);
        if let Some(before) = out.insert(key, d.reason.clone()) {
            assert_eq!(before, d.reason, "dead letter {key:?} written twice with different reasons");
        }
    }
    out
}

/// One `livefunnel run` process, with the shared store: a [`Run`] that can be
/// restarted.
pub struct Instance {
    pub name: String,
    pub config: PathBuf,
    pub run: Run,
}

impl Deref for Instance {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

impl DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut Run {
        &mut self.run
    }
}

impl Instance {
    pub fn start(name: &str, dir: &Path, brokers: &str, ch: &ClickHouseConfig, group: &str) -> Instance {
        let http = free_local_addr();
        let config = dir.join(format!("{name}.toml"));
        let static_member = match std::env::var(STATIC_MEMBERSHIP_ENV).as_deref() {
            Ok("1") => format!("\"group.instance.id\" = \"{group}-{name}\""),
            _ => String::new(),
        };
        let text = format!(
            r#"
[time]
idle_timeout = "30s"

[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{TOPIC}"]
dlq_topic = "{DLQ_TOPIC}"
"session.timeout.ms" = {SESSION_TIMEOUT_MS}
"heartbeat.interval.ms" = 1000
"max.poll.interval.ms" = 20000
{static_member}

[clickhouse]
url = "{}"
database = "{}"
batch_interval = "200ms"

[checkpoint]
store = "kafka"
interval = "1s"

[checkpoint.kafka]
topic = "{STORE_TOPIC}"
chunk_bytes = 65536
timeout = "20s"

[http]
listen = "{http}"
"#,
            ch.url, ch.database
        );
        std::fs::write(&config, text).unwrap();
        let run = Run::start(&config, http, &dir.join(format!("{name}.log")));
        let mut i = Instance { name: name.to_owned(), config, run };
        i.wait_listening();
        i
    }

    /// Starts the same instance again (same config, same endpoint, log appended).
    pub fn restart(&mut self) {
        self.run = Run::start(&self.config, self.run.addr, &self.run.log);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("{} exited at start: {st:?}\n{}", self.name, self.log_tail(40));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{} never listened\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of its log, under its name.
    pub fn log_tail(&self, lines: usize) -> String {
        format!("--- {} ---\n{}", self.name, self.run.log_tail(lines))
    }
}

/// Per input partition, the largest version epoch of its rooms' rows in ClickHouse
/// (`version = epoch << 40 | n`): it grows when a new owner has written rows.
pub async fn epochs_by_partition(ch: &ClickHouseConfig, partitions: i32) -> BTreeMap<i32, u64> {
    let client = clickhouse::Client::default().with_url(&ch.url).with_validation(false);
    let sql = format!(
        "SELECT room_id, toUInt64(max(intDiv(version, 1099511627776))) FROM `{}`.room_window_stats GROUP BY room_id",
        ch.database
    );
    let rows: Vec<(String, u64)> = client.query(&sql).fetch_all().await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (room, epoch) in rows {
        if room.starts_with("clock-") {
            continue;
        }
        let e = out.entry(partition_of(&room, partitions)).or_insert(0);
        *e = (*e).max(epoch);
    }
    out
}
