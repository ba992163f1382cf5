//! Several `livefunnel run` processes in one consumer group, with the shared Kafka
//! checkpoint store, fed by a simulated stream produced at a pace: what the crash-loop
//! and rebalance tests share.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_core::TimeMode;
use livefunnel_kafka::rdkafka::config::ClientConfig;
use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::message::{Headers, Message};
use livefunnel_kafka::rdkafka::producer::FutureProducer;
use livefunnel_sim::{SimParams, Simulator};
use serde_json::Value;

use super::{clock_inputs, engine_config, enqueue, partition_of, Input, TOPIC};

pub const STORE_TOPIC: &str = "livefunnel.checkpoints";
pub const DLQ_TOPIC: &str = "room-events.dlq";

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
/// partition, then per partition the clock events that make every window final. Event
/// time ends hours before now, so the clock stays inside `max_future_skew`.
pub fn sim_inputs(rooms: u32, minutes: i64, min_events: usize, partitions: i32) -> Vec<Input> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let duration_ms = minutes * 60_000;
    let mut sim = Simulator::new(SimParams {
        rooms,
        duration_ms,
        seed: 7,
        start_ms: (now - 4 * 3_600_000) / 60_000 * 60_000,
        late_share: 0.02,
        duplicate_share: 0.01,
        malformed_share: 0.01,
        ..SimParams::default()
    });
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut max_ts = 0;
    while let Some(meta) = sim.next_with_meta(&mut buf) {
        let room = sim.room_id(meta.room).to_owned();
        max_ts = max_ts.max(meta.ts_ms);
        out.push(Input {
            partition: partition_of(&room, partitions),
            key: room.into_bytes(),
            payload: buf.clone(),
        });
        buf.clear();
    }
    assert!(out.len() >= min_events, "the simulator made {} messages, fewer than {min_events}", out.len());
    out.extend(clock_inputs(max_ts, partitions));
    out
}

/// Produces `inputs` in order at about `per_second`; returns each input's
/// (partition, offset).
pub async fn produce_paced(brokers: &str, inputs: &[Input], per_second: f64) -> Vec<(i32, i64)> {
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
        if n % 500 == 0 {
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

/// What replay dead-letters, by the (partition, offset) each input got: its reason.
pub fn expected_dead_letters(inputs: &[Input], offsets: &[(i32, i64)]) -> BTreeMap<(i32, i64), String> {
    let mut text = Vec::new();
    for i in inputs {
        text.extend_from_slice(&i.payload);
        text.push(b'\n');
    }
    let mut dead = Vec::new();
    livefunnel::replay::replay(&text[..], std::io::sink(), Some(&mut dead), engine_config(TimeMode::Replay))
        .expect("replay");
    dead.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            // Every input is one line of the replay, counted from 1.
            let n = v["line"].as_u64().unwrap() as usize - 1;
            (offsets[n], v["reason"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The dead-letter topic, by source (partition, offset): the reason header. A message
/// dead-lettered twice (by an owner that died before its checkpoint, then again by the
/// next) must carry the same reason both times.
pub fn read_dead_letters(brokers: &str) -> BTreeMap<(i32, i64), String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("dlq-check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("dlq reader");
    c.subscribe(&[DLQ_TOPIC]).expect("subscribing to the dlq");
    let mut out = BTreeMap::new();
    // Until 5 s pass without a new dead letter.
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(5) {
        let Some(m) = c.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("reading the dlq");
        let h = m.headers().expect("dead-letter headers");
        let header = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("dead letter without {name}"))
        };
        let key = (
            header("livefunnel.source.partition").parse().unwrap(),
            header("livefunnel.source.offset").parse().unwrap(),
        );
        let reason = header("livefunnel.reason");
        if let Some(before) = out.insert(key, reason.clone()) {
            assert_eq!(before, reason, "dead letter {key:?} written twice with different reasons");
        }
        last = Instant::now();
    }
    out
}

/// One `livefunnel run` process.
pub struct Instance {
    pub name: String,
    pub child: Child,
    pub http: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Instance {
    pub fn start(name: &str, dir: &Path, brokers: &str, ch: &ClickHouseConfig, group: &str) -> Instance {
        let http: SocketAddr = format!("127.0.0.1:{}", livefunnel_testkit::free_port()).parse().unwrap();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            r#"
[time]
idle_timeout = "30s"

[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{TOPIC}"]
dlq_topic = "{DLQ_TOPIC}"
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000
"max.poll.interval.ms" = 20000

[clickhouse]
url = "{}"
database = "{}"
batch_interval_ms = 200

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
        let log = dir.join(format!("{name}.log"));
        let mut i = Instance { name: name.to_owned(), child: spawn(&config, &log), http, config, log };
        i.wait_listening();
        i
    }

    /// Starts the same instance again (same config, same endpoint, log appended).
    pub fn restart(&mut self) {
        self.child = spawn(&self.config, &self.log);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(self.http).is_err() {
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

    pub fn signal(&mut self, sig: i32) {
        let pid = self.child.id();
        let rc = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
        assert!(rc.success(), "kill -{sig} {pid}");
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "{} did not exit within {limit:?}\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!("--- {} ---\n{}", self.name, all[all.len().saturating_sub(lines)..].join("\n"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_livefunnel"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting livefunnel run")
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
