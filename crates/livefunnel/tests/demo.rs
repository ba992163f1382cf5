//! `livefunnel demo` as a user runs it, accelerated with a scenario: the alert-signal
//! series appear on `/metrics`, and Ctrl-C (SIGINT) stops it cleanly.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livefunnel_testkit::free_port;

/// Kills the demo if the test fails before stopping it.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A blocking GET on loopback: the body, or `None` while nothing answers.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// A `livefunnel_room_signal_gpm` sample with a number (not NaN), if there is one.
fn finite_gpm(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("livefunnel_room_signal_gpm{"))
        .find(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).is_some_and(f64::is_finite))
        .map(str::to_owned)
}

#[test]
fn accelerated_demo_shows_signals_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livefunnel"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LIVEFUNNEL_") {
            cmd.env_remove(key);
        }
    }
    let child = cmd
        .args(["demo", "--speed", "20", "--scenario", "gpm_drop:rooms=1:at=20m", "--rooms", "3"])
        .args(["--partitions", "2", "--sink", "jsonl", "--http", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting livefunnel demo");
    let mut demo = Demo(child);
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The warm-up already holds closed 10m/1m windows: the series come within seconds.
    let limit = Duration::from_secs(120);
    let start = Instant::now();
    let sample = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            panic!("the demo exited early ({status}):\n{}", logs());
        }
        if let Some(s) = get(&addr, "/metrics").as_deref().and_then(finite_gpm) {
            break s;
        }
        assert!(start.elapsed() < limit, "no livefunnel_room_signal_gpm within {limit:?}:\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(sample.contains(r#"window="10m/1m""#), "{sample}");
    let metrics = get(&addr, "/metrics").unwrap();
    assert!(metrics.contains("livefunnel_room_last_event_received_timestamp_seconds{"), "{metrics}");

    // `kill` the command: the workspace forbids unsafe code, so no libc::kill.
    let pid = demo.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no exit within 60 s of SIGINT:\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}:\n{}", logs());
    let rows = std::fs::metadata(dir.path().join("data/output/rows.jsonl")).map_or(0, |m| m.len());
    assert!(rows > 0, "the JSONL sink wrote rows under --data-dir");
}
