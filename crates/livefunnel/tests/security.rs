//! Security basics, end to end through the `livefunnel` binary: secrets set in the
//! file and in `LIVEFUNNEL_*` variables never show up in the logs (at debug level,
//! with authentication errors forced), in `/metrics`, `/readyz` or `check-config`;
//! with `[privacy] hash_user_ids` no raw `user_id` reaches ClickHouse or the
//! checkpoints, and ClickHouse holds exactly what `replay` computes with the same salt.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use livefunnel_clickhouse::{ClickHouseConfig, Secret};
use livefunnel_core::TimeMode;
use livefunnel_pipeline::privacy::UserIdHasher;
use livefunnel_testkit::{ClickHouseServer, WRITER_PASSWORD, WRITER_USER};
use serde_json::Value;

const PARTITIONS: i32 = 2;
/// Set in the file.
const SASL_PASSWORD: &str = "kafka-sasl-pw-8d2e61";
const SALT: &str = "privacy-salt-91ac07";
/// Set in the environment.
const SSL_KEY_PASSWORD: &str = "kafka-keypw-env-3b7a44";
const WRONG_CH_PASSWORD: &str = "wrong-ch-pw-77aa19";

fn secrets() -> [&'static str; 5] {
    [SASL_PASSWORD, SALT, SSL_KEY_PASSWORD, WRONG_CH_PASSWORD, WRITER_PASSWORD]
}

fn assert_no_secret(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

/// `cmd` without the `LIVEFUNNEL_*` variables it would inherit.
fn without_livefunnel_env(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LIVEFUNNEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The binary with no inherited `LIVEFUNNEL_*` variables.
fn livefunnel() -> Command {
    without_livefunnel_env(Command::new(env!("CARGO_BIN_EXE_livefunnel")))
}

/// The writer's ClickHouse settings at `url`, database `sec` (the password comes from
/// the environment, never from the file).
fn sec_clickhouse(url: String) -> ClickHouseConfig {
    ClickHouseConfig {
        url,
        database: "sec".into(),
        user: WRITER_USER.into(),
        password: WRITER_PASSWORD.into(),
        batch_interval: livefunnel_core::Duration::from_ms(200),
        ..Default::default()
    }
}

/// `[kafka]` carries SASL secrets as a deployment would, over plaintext (the mock
/// cluster speaks no SASL): librdkafka accepts and ignores them for PLAINTEXT.
fn write_config(dir: &Path, brokers: &str, ch: &ClickHouseConfig, http: SocketAddr) -> PathBuf {
    let kafka = [("sasl.mechanism", "SCRAM-SHA-256"), ("sasl.password", SASL_PASSWORD)];
    let privacy = format!("\n[privacy]\nhash_user_ids = true\nsalt = \"{SALT}\"\n");
    write_run_config(
        dir,
        &RunConfig { kafka: &kafka, extra: &privacy, ..RunConfig::new(brokers, ch, "security", http) },
    )
}

/// `run` at debug level with the ClickHouse password `ch_password` and an SSL key
/// password from the environment.
fn start_run(config: &Path, http: SocketAddr, ch_password: &str, log: &Path) -> Run {
    let mut cmd = without_livefunnel_env(run_command(config, log));
    cmd.env("RUST_LOG", "debug")
        .env("LIVEFUNNEL_CLICKHOUSE__PASSWORD", ch_password)
        .env("LIVEFUNNEL_KAFKA__SSL__KEY__PASSWORD", SSL_KEY_PASSWORD);
    Run::spawn(cmd, http, log)
}

/// Raw `user_id`s of the input (non-empty ones).
fn raw_user_ids(inputs: &[Input]) -> BTreeSet<String> {
    inputs
        .iter()
        .filter_map(|i| serde_json::from_slice::<Value>(&i.payload).ok())
        .filter_map(|v| v.get("user_id").and_then(Value::as_str).map(str::to_owned))
        .filter(|u| !u.is_empty())
        .collect()
}

/// Every row of every table of `database`, as TSV, through the HTTP interface.
fn dump_tables(port: u16, database: &str) -> String {
    let query = |sql: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to clickhouse");
        let req = format!(
            "POST / HTTP/1.0\r\nHost: x\r\nX-ClickHouse-User: {WRITER_USER}\r\nX-ClickHouse-Key: {WRITER_PASSWORD}\r\n\
             Content-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"), "{sql}: {out}");
        out.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default()
    };
    let tables = query(&format!("SELECT name FROM system.tables WHERE database = '{database}' FORMAT TSV"));
    let names: Vec<&str> = tables.lines().filter(|l| !l.is_empty()).collect();
    assert!(names.len() >= 5, "the migrations made the tables: {names:?}");
    names.iter().map(|t| query(&format!("SELECT * FROM `{database}`.`{t}` FORMAT TSV"))).collect()
}

/// postcard's varint encoding of a u64: how the engine's id hashes sit in a checkpoint.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// How many of `ids` the engine state in `files` holds (as the engine's id hash).
fn ids_in_state(files: &BTreeSet<Vec<u8>>, ids: &BTreeSet<String>) -> usize {
    let needles: BTreeSet<Vec<u8>> =
        ids.iter().map(|id| varint(xxhash_rust::xxh3::xxh3_64(id.as_bytes()))).collect();
    let lengths: BTreeSet<usize> = needles.iter().map(Vec::len).collect();
    let mut found = BTreeSet::new();
    for f in files {
        for &n in &lengths {
            for w in f.windows(n) {
                if needles.contains(w) {
                    found.insert(w.to_vec());
                }
            }
        }
    }
    found.len()
}

fn read_checkpoints(dir: &Path) -> BTreeSet<Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn run_with_secrets_leaks_nothing_and_hashes_user_ids_like_replay() {
    let server = ClickHouseServer::spawn();
    let f = Fixture::new(PARTITIONS);
    let (brokers, inputs, dir) = (&f.brokers, &f.inputs, &f.dir);
    let http = free_local_addr();
    let ch = sec_clickhouse(server.http_url());
    let config = write_config(dir.path(), brokers, &ch, http);
    let state = dir.path().join("state");

    // What replay computes with the same salt; the pipeline must match it exactly.
    let hasher = UserIdHasher::new(&Secret::new(SALT));
    let expected = latest(&replay_inputs_with(inputs, engine_config(TimeMode::Replay), Some(&hasher)).rows);
    let raw = raw_user_ids(inputs);
    assert!(raw.len() > 100, "the sample has viewers: {}", raw.len());
    let pseudonyms: BTreeSet<String> = raw.iter().map(|u| hasher.hash(u)).collect();

    // 1. A wrong ClickHouse password: authentication errors, and no secret in them.
    let wrong_log = dir.path().join("wrong.log");
    let mut p = start_run(&config, http, WRONG_CH_PASSWORD, &wrong_log);
    let t = Instant::now();
    while p.alive() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    p.stop(Duration::from_secs(30));
    let logged = std::fs::read_to_string(&wrong_log).unwrap();
    assert!(
        logged.contains("credentials") && logged.contains(WRITER_USER),
        "an auth error is logged:\n{logged}"
    );
    assert_no_secret("the log of a run with a wrong password", &logged);

    // 2. The right password (from the environment). The sample without the clock
    // events first, so the checkpoints hold live viewer state.
    let log = dir.path().join("run.log");
    let dump_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let (sample, clock) = inputs.split_at(inputs.len() - 2 * PARTITIONS as usize);
    let mut p = start_run(&config, http, WRITER_PASSWORD, &log);
    f.rt.block_on(produce(brokers, sample));
    let mut seen_state = BTreeSet::new();
    let t = Instant::now();
    while ids_in_state(&seen_state, &pseudonyms) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no checkpoint holds a pseudonymised viewer id (is hashing applied in run?); log:\n{}",
            dump_log()
        );
        std::thread::sleep(Duration::from_millis(300));
        seen_state.extend(read_checkpoints(&state));
    }
    f.rt.block_on(produce(brokers, clock));
    f.rt.block_on(wait_for_clickhouse_or(&ch, &expected, Duration::from_secs(120), dump_log));
    let (code, metrics) = f.rt.block_on(http_get(http, "/metrics")).expect("GET /metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("livefunnel_"), "{metrics}");
    assert_no_secret("/metrics", &metrics);
    let (_, ready) = f.rt.block_on(http_get(http, "/readyz")).expect("GET /readyz");
    assert_no_secret("/readyz", &ready);
    let st = p.stop(Duration::from_secs(30));
    assert!(st.success(), "{st:?}; log:\n{}", dump_log());
    let logged = dump_log();
    assert!(logged.contains("DEBUG"), "the run logged at debug level");
    assert_no_secret("the debug log of the run", &logged);

    // 3. No raw viewer id in ClickHouse or in the engine state; the pseudonyms are
    // there (so the search itself works).
    let tables = dump_tables(server.http_port(), "sec");
    let leaked: Vec<&String> = raw.iter().filter(|u| tables.contains(u.as_str())).collect();
    assert!(leaked.is_empty(), "raw user ids in clickhouse: {leaked:?}");
    seen_state.extend(read_checkpoints(&state));
    assert_eq!(ids_in_state(&seen_state, &raw), 0, "raw user ids in the checkpoints");
    assert!(ids_in_state(&seen_state, &pseudonyms) > 0, "the search finds the pseudonyms");
    for s in secrets() {
        assert!(
            !seen_state.iter().any(|f| f.windows(s.len()).any(|w| w == s.as_bytes())),
            "{s} in a checkpoint"
        );
    }
}

fn check_config(file: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = livefunnel();
    cmd.arg("check-config");
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("RUST_LOG", "debug").output().expect("running check-config")
}

#[test]
fn check_config_redacts_secrets_and_its_output_cannot_be_run_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let ch = sec_clickhouse("http://127.0.0.1:8123".into());
    let config = write_config(dir.path(), "127.0.0.1:9092", &ch, "127.0.0.1:9464".parse().unwrap());
    let env = [
        ("LIVEFUNNEL_CLICKHOUSE__PASSWORD", WRITER_PASSWORD),
        ("LIVEFUNNEL_KAFKA__SSL__KEY__PASSWORD", SSL_KEY_PASSWORD),
    ];
    let out = check_config(Some(&config), &env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert_no_secret("check-config", &format!("{stdout}{stderr}"));
    // The keys are there, redacted; everything else is shown.
    assert!(stdout.contains("SCRAM-SHA-256") && stdout.contains(WRITER_USER), "{stdout}");
    assert!(stdout.matches("[redacted]").count() >= 4, "four secrets, each redacted:\n{stdout}");

    // Fed back as a configuration, the placeholder is refused, naming the key.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &stdout).unwrap();
    let out = check_config(Some(&printed), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("[redacted]") && stderr.contains("real value"), "{stderr}");
    // With the secrets from the environment again, it loads.
    let out = check_config(
        Some(&printed),
        &[
            ("LIVEFUNNEL_CLICKHOUSE__PASSWORD", "x1"),
            ("LIVEFUNNEL_KAFKA__SSL__KEY__PASSWORD", "x2"),
            ("LIVEFUNNEL_KAFKA__SASL__PASSWORD", "x3"),
            ("LIVEFUNNEL_PRIVACY__SALT", "x4"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hashing_without_a_salt_is_a_config_error_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lf.toml");
    std::fs::write(&path, "[privacy]\nhash_user_ids = true\n").unwrap();
    let out = check_config(Some(&path), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("privacy.salt") && stderr.contains("LIVEFUNNEL_PRIVACY__SALT"), "{stderr}");
    let out = check_config(Some(&path), &[("LIVEFUNNEL_PRIVACY__SALT", SALT)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_no_secret("check-config", &String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_metrics_endpoint_listens_on_loopback_by_default() {
    let out = check_config(None, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(stdout.contains("listen = \"127.0.0.1:9464\""), "{stdout}");
    let addr: std::net::SocketAddr = livefunnel::Config::default().http.listen.parse().unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
}
