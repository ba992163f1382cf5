//! `livefunnel bench` as a user runs it, with tiny sizes, against a throwaway ClickHouse:
//! the summary's structure and sanity (every event counted, every probe seen, rows in
//! ClickHouse, p50 <= p99), never speed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use livefunnel_clickhouse::Table;
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

/// One value of a query's answer, through ClickHouse's HTTP interface.
fn query(port: u16, sql: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the test server");
    let req = format!("POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}", sql.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{sql}: {answer}");
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim().to_owned()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn bench_counts_every_event_and_sees_every_probe() {
    let server = ClickHouseServer::spawn();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livefunnel"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LIVEFUNNEL_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("RUST_LOG", "warn")
        .args(["bench", "--clickhouse-url", &server.http_url()])
        .args(["--events", "20000", "--rooms", "50", "--partitions", "2"])
        .args(["--rate", "2000", "--freshness-seconds", "5"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running livefunnel bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        server.log_tail(20)
    );
    for label in [
        "throughput:",
        "events/s",
        "rows/s",
        "freshness:",
        "freshness p50",
        "freshness p99",
        "CPU, this process",
        "CPU, the pipeline",
    ] {
        assert!(stdout.contains(label), "no `{label}` in the summary:\n{stdout}");
    }

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("the --json file")).unwrap();
    assert_eq!(v["setup"]["partitions"], 2);
    assert!(v["setup"]["sink"].as_str().unwrap().starts_with("clickhouse "), "{}", v["setup"]);

    let t = &v["throughput"];
    assert_eq!(u(&t["events"]), 20_000, "{t}");
    let c = &t["counts"];
    assert_eq!(u(&c["consumed"]), 20_000, "{c}");
    assert_eq!(u(&c["accepted"]) + u(&c["duplicates"]) + u(&c["rejected"]), 20_000, "{c}");
    assert_eq!(u(&c["rejected"]), 0, "the simulator's events are all valid: {c}");
    let emitted = u(&c["rows_emitted_total"]);
    assert!(emitted > 0, "{c}");
    let by_kind: u64 = c["rows_emitted"].as_object().unwrap().values().map(u).sum();
    assert_eq!(by_kind, emitted, "{c}");
    assert!(u(&c["rows_inserted"]) >= emitted, "every row acknowledged (annotations on top): {c}");
    assert!(u(&c["checkpoints"]) >= 2, "a final checkpoint per partition: {c}");
    assert!(f(&t["wall_seconds"]) > 0.0 && f(&t["events_per_second"]) > 0.0, "{t}");
    let wall = f(&t["wall_seconds"]);
    assert!((f(&t["consume_seconds"]) + f(&t["drain_seconds"]) - wall).abs() < 1e-6, "{t}");
    assert!(f(&t["cpu"]["process_seconds"]) > 0.0, "{t}");
    // The pipeline's part of the process, its threads told from the producer's and the
    // mock broker's, is what the CPU per event counts.
    let pipeline = f(&t["cpu"]["by_part"]["pipeline"]);
    assert!(pipeline > 0.0, "{t}");
    let per_event = f(&t["pipeline_cpu_us_per_event"]);
    assert!((per_event - 1e6 * pipeline / 20_000.0).abs() < 1e-6, "{t}");
    let threads: f64 = t["cpu"]["by_thread"].as_object().unwrap().values().map(f).sum();
    let parts: f64 = t["cpu"]["by_part"].as_object().unwrap().values().map(f).sum();
    assert!((threads - parts).abs() < 1e-6, "every thread in one part: {t}");
    assert!(f(&t["peak_rss_mb"]) > 0.0, "{t}");

    let fr = &v["freshness"];
    let sent = u(&fr["probes_sent"]);
    assert!(sent >= 10, "a probe every 100 ms for 5 s: {fr}");
    assert_eq!(u(&fr["probes_seen"]), sent, "{fr}");
    let (p50, p99, max) = (f(&fr["p50_ms"]), f(&fr["p99_ms"]), f(&fr["max_ms"]));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{fr}");
    assert_eq!(fr["probe_ms"].as_array().unwrap().len() as u64, sent, "{fr}");
    let (q50, q99) = (f(&fr["p50_ms_from_request"]), f(&fr["p99_ms_from_request"]));
    assert!(q50 <= p50 && q99 <= p99 && q50 <= q99, "measured from the request, earlier: {fr}");
    assert!(u(&fr["events_produced"]) > 0 && f(&fr["achieved_rate"]) > 0.0, "{fr}");
    let messages = u(&fr["messages"]);
    assert_eq!(
        messages,
        u(&fr["events_produced"]) + sent + 2,
        "events, the probe room's opening, the probes: {fr}"
    );
    let fc = &fr["counts"];
    assert_eq!(u(&fc["consumed"]), messages, "{fc}");
    assert_eq!(u(&fc["accepted"]) + u(&fc["duplicates"]) + u(&fc["rejected"]), messages, "{fc}");
    assert!(u(&fr["scrapes"]) > 0, "{fr}");

    // The rows are in ClickHouse (versions of a key may already be merged away).
    let inserted = u(&c["rows_inserted"]) + u(&fc["rows_inserted"]);
    let stored: u64 = Table::ALL
        .iter()
        .map(|t| query(server.http_port(), &format!("SELECT count() FROM livefunnel_bench.{}", t.name())))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(stored > 0 && stored <= inserted, "{stored} rows stored, {inserted} inserted");
}
