//! Shared by the pipeline's end-to-end tests: the input (the repository's sample plus
//! "clock" events that move every partition far enough for every window and session
//! to be final), the expected rows (what `replay` produces for the same events), and
//! comparisons with what ClickHouse holds. Re-exported from submodules: the Kafka side
//! (`kafka.rs`: producing, committed offsets, the dead-letter topic) and the pipeline
//! under test (`run.rs`: its configuration file, the process, the in-process run).

#![allow(dead_code)]

mod kafka;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livefunnel_clickhouse::{ClickHouseConfig, Table};
use livefunnel_core::{EngineConfig, TimeMode};
use livefunnel_pipeline::privacy::UserIdHasher;
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

// Each test binary uses a part of them, some none.
#[allow(unused_imports)]
pub use kafka::*;
#[allow(unused_imports)]
pub use run::*;

pub const TOPIC: &str = "room-events";

/// Logs of the pipeline in the test's output (shown when a test fails).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What every pipeline test starts from: a mock cluster with the input topic, the
/// sample input, what replay makes of it, a state directory and a runtime. The mock
/// cluster stays on the test's thread (it is not `Send`) and lives as long as this.
pub struct Fixture {
    pub mock: livefunnel_kafka::rdkafka::mocking::MockCluster<
        'static,
        livefunnel_kafka::rdkafka::producer::DefaultProducerContext,
    >,
    pub brokers: String,
    pub inputs: Vec<Input>,
    pub expected: BTreeMap<String, Value>,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

impl Fixture {
    pub fn new(partitions: i32) -> Fixture {
        init_logs();
        let mock =
            livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
        mock.create_topic(TOPIC, partitions, 1).expect("creating the input topic");
        let brokers = mock.bootstrap_servers();
        let inputs = sample_input(partitions);
        let expected = latest(&replay_inputs(&inputs).rows);
        let dir = tempfile::tempdir().unwrap();
        Fixture { mock, brokers, inputs, expected, dir, rt: runtime() }
    }
}

/// The tests' runtime: two workers, as many as the machine has cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The pipeline's ClickHouse settings for `database` on the test's server, with
/// batches flushed every 200 ms so rows show soon.
pub fn ch_config(server: &ClickHouseServer, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: server.http_url(),
        database: database.to_owned(),
        batch_interval: livefunnel_core::Duration::from_ms(200),
        ..Default::default()
    }
}

/// One input message and the partition it is produced to.
#[derive(Clone)]
pub struct Input {
    pub partition: i32,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The room of a JSON line, if it has one (malformed lines may not).
pub fn room_of(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    v.get("room_id")?.as_str().map(str::to_owned)
}

/// A room's partition: stable, whatever Kafka's partitioner does.
pub fn partition_of(room: &str, partitions: i32) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(room.as_bytes()) % partitions as u64) as i32
}

/// The sample's lines (bad ones included), each room on one partition; bad lines
/// without a room go to partition 0. Then, per partition, clock events 50 and 100
/// minutes after the sample's last `ts`, so that every window and session is final.
pub fn sample_input(partitions: i32) -> Vec<Input> {
    let text = std::fs::read(repo_root().join("data/sample.jsonl")).expect("reading data/sample.jsonl");
    let mut out = Vec::new();
    let mut max_ts = 0i64;
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(line) {
            if let Some(ts) = v.get("ts").and_then(Value::as_i64) {
                max_ts = max_ts.max(ts);
            }
        }
        let room = room_of(line);
        let partition = room.as_deref().map_or(0, |r| partition_of(r, partitions));
        out.push(Input { partition, key: room.unwrap_or_default().into_bytes(), payload: line.to_vec() });
    }
    out.extend(clock_inputs(max_ts, partitions));
    out
}

/// Per partition, a clock room's `session_start` 50 minutes after `max_ts` and its
/// `session_end` 50 minutes later: every window and session before them becomes final.
pub fn clock_inputs(max_ts: i64, partitions: i32) -> Vec<Input> {
    let mut out = Vec::new();
    for step in 1..=2 {
        for p in 0..partitions {
            let ts = max_ts + step * 50 * 60_000;
            let room = format!("clock-{p}");
            let kind = if step == 1 { "session_start" } else { "session_end" };
            let payload = format!(
                r#"{{"event_id":"clock-{p}-{step}","type":"{kind}","ts":{ts},"room_id":"{room}","session_id":"clock"}}"#
            );
            out.push(Input { partition: p, key: room.into_bytes(), payload: payload.into_bytes() });
        }
    }
    out
}

/// A simulated stream (`livefunnel-sim`): each room on its partition, then per
/// partition the [`clock_inputs`], so every window ends final.
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
    out.extend(clock_inputs(max_ts, partitions));
    out
}

/// Messages per partition: every partition's end offset in a fresh topic.
pub fn partition_ends(inputs: &[Input], partitions: i32) -> Vec<i64> {
    (0..partitions).map(|p| inputs.iter().filter(|i| i.partition == p).count() as i64).collect()
}

/// The sum of a series over all its label sets in a Prometheus text exposition.
pub fn series_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The engine configuration for both replay and the pipeline (live mode): defaults,
/// with a short idle timeout so quiet partitions move on.
pub fn engine_config(mode: TimeMode) -> EngineConfig {
    let mut loaded = livefunnel::config::load(&livefunnel::config::Sources::file_only(None), mode).unwrap();
    loaded.engine.idle_timeout_ms = 1_000;
    loaded.engine
}

/// What `replay` makes of the messages, one line each in order.
pub struct Replayed {
    pub summary: livefunnel::replay::Summary,
    /// Every row it writes, in order.
    pub rows: Vec<Value>,
    /// Every message it rejects: (input index, reason).
    pub rejected: Vec<(usize, String)>,
}

/// Replays `inputs` with [`engine_config`].
pub fn replay_inputs(inputs: &[Input]) -> Replayed {
    replay_inputs_with(inputs, engine_config(TimeMode::Replay), None)
}

/// Replays `inputs` with `cfg`, hashing `user_id`s with `hasher` if given.
pub fn replay_inputs_with(inputs: &[Input], cfg: EngineConfig, hasher: Option<&UserIdHasher>) -> Replayed {
    let mut text = Vec::new();
    for i in inputs {
        debug_assert!(!i.payload.contains(&b'\n'), "one message is one replay line");
        text.extend_from_slice(&i.payload);
        text.push(b'\n');
    }
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let summary =
        livefunnel::replay::replay_with(&text[..], &mut out, Some(&mut dead), cfg, hasher).expect("replay");
    let json_lines = |bytes: &[u8]| -> Vec<Value> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    };
    let rejected = json_lines(&dead)
        .into_iter()
        .map(|v| {
            // Every input is one line of the replay, counted from 1.
            let n = v["line"].as_u64().expect("line") as usize - 1;
            (n, v["reason"].as_str().expect("reason").to_owned())
        })
        .collect();
    Replayed { summary, rows: json_lines(&out), rejected }
}

/// What replay dead-letters, by where each input landed (`at[n]`: input `n`'s
/// partition and offset): its reason.
pub fn expected_dead_letters(inputs: &[Input], at: &[(i32, i64)]) -> BTreeMap<(i32, i64), String> {
    replay_inputs(inputs).rejected.into_iter().map(|(n, reason)| (at[n], reason)).collect()
}

fn key_of(v: &Value) -> String {
    let f = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}|{}|{}",
        f("kind"),
        f("room_id"),
        f("window"),
        f("window_start"),
        f("source"),
        f("plan_id"),
        f("product_id")
    ) + &if f("kind") == "\"session\"" { f("session_id") } else { String::new() }
}

/// The last version of every key, without `version`, by key. The clock rooms are
/// left out: their own last windows end after the clock and are final only at the end
/// of a bounded replay, never in a live run.
pub fn latest(rows: &[Value]) -> BTreeMap<String, Value> {
    let mut best: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    for r in rows {
        if r["room_id"].as_str().is_some_and(|id| id.starts_with("clock-")) {
            continue;
        }
        let v = r["version"].as_u64().expect("version");
        let k = key_of(r);
        if best.get(&k).is_none_or(|(bv, _)| v > *bv) {
            best.insert(k, (v, r.clone()));
        }
    }
    best.into_iter()
        .map(|(k, (_, mut r))| {
            r.as_object_mut().unwrap().remove("version");
            (k, r)
        })
        .collect()
}

/// Every result table's latest rows, keyed like [`latest`].
pub async fn clickhouse_latest(cfg: &ClickHouseConfig) -> Result<BTreeMap<String, Value>, String> {
    let mut all = Vec::new();
    for t in Table::ALL {
        if t == Table::Annotations {
            continue;
        }
        all.extend(livefunnel_clickhouse::latest_rows(cfg, t).await.map_err(|e| e.to_string())?);
    }
    Ok(latest(&all))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
            _ => false,
        },
        _ => a == b,
    }
}

/// `None` when equal; otherwise a description of the first differences.
pub fn diff(expected: &BTreeMap<String, Value>, actual: &BTreeMap<String, Value>) -> Option<String> {
    let mut out = Vec::new();
    for (k, e) in expected {
        match actual.get(k) {
            None => out.push(format!("missing {k}")),
            Some(a) => {
                let (eo, ao) = (e.as_object().unwrap(), a.as_object().unwrap());
                for (f, ev) in eo {
                    let av = ao.get(f).unwrap_or(&Value::Null);
                    if !same_value(ev, av) {
                        out.push(format!("{k}: {f} expected {ev}, got {av}"));
                    }
                }
                for f in ao.keys() {
                    if !eo.contains_key(f) {
                        out.push(format!("{k}: unexpected column {f}"));
                    }
                }
            }
        }
        if out.len() > 10 {
            break;
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) && out.len() <= 10 {
            out.push(format!("unexpected {k}"));
        }
    }
    (!out.is_empty()).then(|| {
        format!(
            "{} of {} expected keys; first differences:\n{}",
            actual.len(),
            expected.len(),
            out.join("\n")
        )
    })
}

/// Polls ClickHouse until it holds exactly `expected`, or fails after `limit`.
pub async fn wait_for_clickhouse(
    cfg: &ClickHouseConfig,
    expected: &BTreeMap<String, Value>,
    limit: Duration,
) {
    wait_for_clickhouse_or(cfg, expected, limit, String::new).await;
}

/// [`wait_for_clickhouse`], failing with `context()` (a log, say) too.
pub async fn wait_for_clickhouse_or(
    cfg: &ClickHouseConfig,
    expected: &BTreeMap<String, Value>,
    limit: Duration,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match clickhouse_latest(cfg).await {
            Ok(actual) => match diff(expected, &actual) {
                None => return,
                Some(d) => last = d,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("clickhouse never matched replay within {limit:?}: {last}\n{}", context());
}

/// Per room: (gmv_cents, orders_paid, comments) over all its `1m` windows.
pub fn room_totals(rows: &BTreeMap<String, Value>) -> BTreeMap<String, (i64, i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in rows.values() {
        if r["kind"] == "window" && r["window"] == "1m" {
            let t = out.entry(r["room_id"].as_str().unwrap().to_owned()).or_default();
            t.0 += r["gmv_cents"].as_i64().unwrap();
            t.1 += r["orders_paid"].as_i64().unwrap();
            t.2 += r["comments"].as_i64().unwrap();
        }
    }
    out
}

/// A plain HTTP GET on loopback: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Ok((code, body))
}

/// `/metrics`, or "" while it does not answer.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    match http_get(addr, "/metrics").await {
        Ok((200, body)) => body,
        _ => String::new(),
    }
}

/// The value of one series in a Prometheus text exposition.
pub fn series_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| l.starts_with(name) && !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        if !(rest.is_empty() || rest.starts_with('{')) {
            return None;
        }
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

/// Per room: the largest `ts` among its events that replay accepts, which is the
/// room's latest accepted `ts` in the pipeline's running values.
pub fn latest_accepted_ts(inputs: &[Input]) -> BTreeMap<String, i64> {
    let rejected: BTreeSet<usize> = replay_inputs(inputs).rejected.into_iter().map(|(n, _)| n).collect();
    let mut out = BTreeMap::new();
    for (n, i) in inputs.iter().enumerate() {
        if rejected.contains(&n) {
            continue;
        }
        let v: Value = serde_json::from_slice(&i.payload).expect("an accepted line is JSON");
        let (room, ts) = (v["room_id"].as_str().unwrap().to_owned(), v["ts"].as_i64().unwrap());
        let e = out.entry(room).or_insert(ts);
        *e = (*e).max(ts);
    }
    out
}

/// The alert signals (docs/metrics.md) of a room whose latest accepted `ts` is
/// `latest_ts`, computed from the latest rows: (series name, `window` label, value), NaN
/// where a ratio has no denominator or the previous window is missing.
pub fn expected_signals(
    rows: &BTreeMap<String, Value>,
    room: &str,
    latest_ts: i64,
) -> Vec<(String, &'static str, f64)> {
    let closed = |window: &str| -> BTreeMap<i64, &Value> {
        rows.values()
            .filter(|r| r["kind"] == "window" && r["window"] == window && r["room_id"] == room)
            .map(|r| (r["window_end"].as_i64().unwrap(), r))
            .filter(|(end, _)| *end <= latest_ts)
            .collect()
    };
    let num = |r: Option<&&Value>, f: &str| r.map_or(f64::NAN, |r| r[f].as_f64().unwrap_or(f64::NAN));
    let mut out = Vec::new();
    let compare = closed("10m/1m");
    if let Some((&end, cur)) = compare.last_key_value() {
        let prev = compare.get(&(end - 600_000));
        out.push((
            "livefunnel_room_signal_window_end_timestamp_seconds".into(),
            "10m/1m",
            end as f64 / 1000.0,
        ));
        for (name, field) in [
            ("livefunnel_room_signal_gpm", "gpm"),
            ("livefunnel_room_signal_watch_pv", "watch_pv"),
            ("livefunnel_room_signal_watch_uv", "watch_uv"),
            ("livefunnel_room_signal_watch_to_pay_rate", "watch_to_pay_rate"),
            ("livefunnel_room_signal_product_click_uv", "product_click_uv"),
            ("livefunnel_room_signal_click_to_pay_rate", "click_to_pay_rate"),
            ("livefunnel_room_signal_orders_paid", "orders_paid"),
        ] {
            out.push((name.into(), "10m/1m", num(Some(cur), field)));
            out.push((format!("{name}_previous"), "10m/1m", num(prev, field)));
        }
    }
    if let Some((_, cur)) = closed("5m/10s").last_key_value() {
        out.push((
            "livefunnel_room_signal_online_avg".into(),
            "5m/10s",
            num(Some(cur), "watch_seconds") / 300.0,
        ));
    }
    out
}
