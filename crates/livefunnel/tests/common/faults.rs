//! What the fault-injection tests (`faults_*.rs`) share: `livefunnel run` as a child
//! process, what replay says about every message, and the check each of them ends
//! with: ClickHouse holds replay's latest rows, every message replay rejects is in the
//! dead-letter topic exactly once with its reason, and the counters agree, so no
//! message is in neither ClickHouse nor the DLQ.
//!
//! Declared by each test file with `#[path = "common/faults.rs"] mod faults;` after
//! `mod common;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_core::{Reason, TimeMode};
use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::message::{Headers, Message};
use livefunnel_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use livefunnel_kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use livefunnel_kafka::rdkafka::ClientConfig;
use serde_json::Value;

use crate::common::*;

pub const DLQ_TOPIC: &str = "room-events.dlq";
/// `message.max.bytes` of the test producer and of `run`'s dead-letter producer: room
/// for the 10 MiB poison message (librdkafka's default is 1,000,000).
pub const MAX_MESSAGE_BYTES: &str = "16777216";

/// `livefunnel run` as a child process, killed when dropped so a failing test leaves
/// nothing running.
pub struct Run {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Run {
    pub fn start(config: &Path, addr: SocketAddr, log: &Path) -> Run {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_livefunnel"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting livefunnel run");
        Run { child, addr, log: log.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics with `what` and the end of the process's log.
    pub fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{what}\n--- livefunnel run log (tail):\n{}", self.log_tail(60))
    }

    /// The process's resident memory (`VmRSS` of /proc/PID/status), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then waits for the exit (at most 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        // The `kill` command: the workspace forbids unsafe code, so no libc::kill.
        let pid = self.pid().to_string();
        let rc = Command::new("kill").args(["-15", &pid]).status().unwrap();
        assert!(rc.success(), "kill -15 {pid}");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                self.fail("livefunnel run did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What goes into `run`'s configuration file.
pub struct RunConfig<'a> {
    pub brokers: &'a str,
    pub clickhouse: &'a ClickHouseConfig,
    pub group: &'a str,
    /// `time.idle_timeout`.
    pub idle_timeout: &'a str,
    /// Extra librdkafka properties under `[kafka]`.
    pub kafka: &'a [(&'a str, &'a str)],
}

/// Writes `dir/livefunnel.toml` (state in `dir/state`, checkpoints every second) and
/// returns it with the address `/metrics` and `/readyz` will be served on.
pub fn write_config(dir: &Path, c: &RunConfig<'_>) -> (PathBuf, SocketAddr) {
    let http: SocketAddr = format!("127.0.0.1:{}", livefunnel_testkit::free_port()).parse().unwrap();
    let props: String = c.kafka.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"\n")).collect();
    let text = format!(
        r#"
[time]
idle_timeout = "{idle}"

[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{TOPIC}"]
{props}
[clickhouse]
url = "{url}"
database = "{db}"
batch_interval_ms = 200

[checkpoint]
dir = "{state}"
interval = "1s"

[http]
listen = "{http}"
"#,
        idle = c.idle_timeout,
        brokers = c.brokers,
        group = c.group,
        url = c.clickhouse.url,
        db = c.clickhouse.database,
        state = dir.join("state").display(),
    );
    let path = dir.join("livefunnel.toml");
    std::fs::write(&path, text).unwrap();
    (path, http)
}

/// Each input's offset: inputs are produced in order to a fresh topic.
pub fn offsets(inputs: &[Input]) -> Vec<i64> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    inputs
        .iter()
        .map(|i| {
            let n = next.entry(i.partition).or_default();
            *n += 1;
            *n - 1
        })
        .collect()
}

/// What replay makes of a stream, and where each message lands in Kafka.
pub struct Expect {
    pub inputs: Vec<Input>,
    pub offsets: Vec<i64>,
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
        let mut text = Vec::new();
        for i in &inputs {
            debug_assert!(!i.payload.contains(&b'\n'), "one message is one replay line");
            text.extend_from_slice(&i.payload);
            text.push(b'\n');
        }
        let (mut out, mut dead_out) = (Vec::new(), Vec::new());
        let summary = livefunnel::replay::replay(
            &text[..],
            &mut out,
            Some(&mut dead_out as &mut dyn std::io::Write),
            engine_config(TimeMode::Replay),
        )
        .expect("replay");
        let rows: Vec<Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let offsets = offsets(&inputs);
        let dead = dead_out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_slice(l).unwrap();
                let n = v["line"].as_u64().expect("line") as usize - 1;
                let reason = v["reason"].as_str().expect("reason").to_owned();
                ((inputs[n].partition, offsets[n]), (n, reason))
            })
            .collect();
        let ends =
            (0..partitions).map(|p| inputs.iter().filter(|i| i.partition == p).count() as i64).collect();
        Expect {
            rows: latest(&rows),
            lines: summary.lines,
            accepted: summary.accepted,
            duplicates: summary.duplicates,
            rejected: summary.rejected,
            dead,
            ends,
            offsets,
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

/// A producer that can send the 10 MiB poison message.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.max.bytes", MAX_MESSAGE_BYTES)
        // Offsets are computed from the input order: a retried request must not reorder.
        .set("enable.idempotence", "true")
        .create()
        .expect("creating the test producer")
}

pub async fn produce_all(producer: &FutureProducer, inputs: &[Input]) {
    for chunk in inputs.chunks(500) {
        let pending: Vec<_> = chunk
            .iter()
            .map(|i| {
                let rec =
                    FutureRecord::to(TOPIC).partition(i.partition).key(&i.key[..]).payload(&i.payload[..]);
                producer.send(rec, Duration::from_secs(10))
            })
            .collect();
        for f in pending {
            f.await.expect("producing a test message");
        }
    }
}

/// The group's committed offsets per partition (-1: none).
pub async fn committed(brokers: &str, group: &str, partitions: i32) -> Vec<i64> {
    let (brokers, group) = (brokers.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", &group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(TOPIC, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).expect("reading committed offsets");
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// `/metrics`, or "" while it does not answer.
pub async fn scrape(addr: SocketAddr) -> String {
    match http_get(addr, "/metrics").await {
        Ok((200, body)) => body,
        _ => String::new(),
    }
}

/// The sum of a series over all its label sets (0 when absent).
pub fn sum_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            l.rsplit_once(' ')?.1.parse::<f64>().ok()
        })
        .sum()
}

/// One message of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenDeadLetter {
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub payload_hash: u64,
}

fn seen_dead_letter(m: &impl Message) -> SeenDeadLetter {
    let h = m.headers().expect("dead letters carry headers");
    let get = |name: &str| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    SeenDeadLetter {
        reason: get("livefunnel.reason"),
        source_topic: get("livefunnel.source.topic"),
        source_partition: get("livefunnel.source.partition").parse().unwrap_or(-1),
        source_offset: get("livefunnel.source.offset").parse().unwrap_or(-1),
        payload_hash: xxhash_rust::xxh3::xxh3_64(m.payload().unwrap_or_default()),
    }
}

/// Everything in the dead-letter topic: reads until `expect` messages came, then a
/// little longer so extra ones (duplicates) show too.
pub async fn read_dead_letters(brokers: &str, expect: usize) -> Vec<SeenDeadLetter> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let group = format!("dlq-check-{}", std::process::id());
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        c.subscribe(&[DLQ_TOPIC]).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut quiet_until: Option<Instant> = None;
        while Instant::now() < deadline && quiet_until.is_none_or(|t| Instant::now() < t) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                out.push(seen_dead_letter(&m));
            }
            if out.len() >= expect && quiet_until.is_none() {
                quiet_until = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        out
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

/// The end of every fault test, once the fault is healed: every partition is
/// committed to its end, ClickHouse holds replay's latest rows, each message replay
/// rejects is in the DLQ exactly once with its reason, the source headers and the
/// original bytes, and `/metrics` counts what replay counts.
pub async fn common_check(e: &Expect, run: &Run, brokers: &str, ch: &ClickHouseConfig, group: &str) {
    let partitions = e.ends.len() as i32;
    wait_for(
        run,
        "every partition committed to its end",
        Duration::from_secs(120),
        Duration::from_millis(500),
        move || async move {
            let got = committed(brokers, group, partitions).await;
            (got != e.ends).then(|| format!("committed {got:?}, ends {:?}", e.ends))
        },
    )
    .await;
    // Nothing in neither place: accepted (in ClickHouse above), duplicate, or rejected.
    assert_eq!(e.lines, e.inputs.len() as u64);
    assert_eq!(e.lines, e.accepted + e.duplicates + e.rejected_total(), "replay's own conservation");
    let text = scrape(run.addr).await;
    let counts = |name: &str| sum_series(&text, name) as u64;
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
            let mut got = series_value(&text, name, &l);
            // Dead letters by reason appear on the first one; rejections from the start.
            if name == "livefunnel_dead_letters_total" && e.rejected[i] == 0 {
                got = got.or(Some(0.0));
            }
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

    wait_for(
        run,
        "clickhouse holds replay's latest rows",
        Duration::from_secs(60),
        Duration::from_millis(500),
        move || async move {
            match clickhouse_latest(ch).await {
                Ok(actual) => diff(&e.rows, &actual),
                Err(err) => Some(err),
            }
        },
    )
    .await;

    let seen = read_dead_letters(brokers, e.dead.len()).await;
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

/// A simulated stream (`livefunnel-sim`): each room on its partition, then per
/// partition the clock events of [`sample_input`], so every window ends final.
pub fn sim_input(p: livefunnel_sim::SimParams, partitions: i32) -> Vec<Input> {
    let mut sim = livefunnel_sim::Simulator::new(p);
    let mut out = Vec::new();
    let mut max_ts = 0i64;
    let mut buf = Vec::new();
    while let Some(meta) = sim.next_with_meta(&mut buf) {
        max_ts = max_ts.max(meta.ts_ms);
        let room = sim.room_id(meta.room).to_owned();
        out.push(Input {
            partition: partition_of(&room, partitions),
            key: room.into_bytes(),
            payload: std::mem::take(&mut buf),
        });
    }
    for step in 1..=2 {
        for p in 0..partitions {
            let ts = max_ts + step * 50 * 60_000;
            let kind = if step == 1 { "session_start" } else { "session_end" };
            let payload = format!(
                r#"{{"event_id":"clock-{p}-{step}","type":"{kind}","ts":{ts},"room_id":"clock-{p}","session_id":"clock"}}"#
            );
            out.push(Input {
                partition: p,
                key: format!("clock-{p}").into_bytes(),
                payload: payload.into_bytes(),
            });
        }
    }
    out
}
