//! The `livefunnel` binary as a user runs it: exit codes, stdout, stderr, files.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const EVENTS: &str = concat!(
    r#"{"event_id":"ev-1","type":"session_start","ts":1767225600000,"room_id":"room-hz-01","session_id":"s-20260101-1","platform":"wechat_channels","home_city":"杭州"}"#,
    "\n",
    r#"{"event_id":"ev-2","type":"enter","ts":1767225605000,"room_id":"room-hz-01","session_id":"s-20260101-1","user_id":"u-7f3a","source":"moments"}"#,
    "\n",
    r#"{"event_id":"ev-3","type":"session_end","ts":1767225900000,"room_id":"room-hz-01","session_id":"s-20260101-1"}"#,
    "\n",
);

fn livefunnel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livefunnel"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LIVEFUNNEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start livefunnel");
    // The program may exit (a config error) before reading its input.
    if let Err(e) = child.stdin.take().expect("stdin").write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
    }
    child.wait_with_output().expect("wait for livefunnel")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("livefunnel-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn replay_reads_stdin_and_writes_rows_to_stdout() {
    let mut cmd = livefunnel();
    cmd.args(["replay", "--input", "-"]);
    let out = run_with_stdin(cmd, EVENTS.as_bytes());
    assert!(out.status.success(), "exit {:?}, stderr:\n{}", out.status, text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in stdout.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("every output line is JSON");
        assert!(row.get("kind").is_some(), "row without kind: {line}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with(r#"{"kind":"window""#)),
        "no window row on stdout (the engine emits none?):\n{stdout}"
    );
    assert!(text(&out.stderr).contains("replay summary"), "stderr:\n{}", text(&out.stderr));
}

#[test]
fn config_error_exits_non_zero_and_names_the_key() {
    let dir = scratch("config-error");
    let config = dir.join("livefunnel.toml");
    std::fs::write(&config, "[time]\nallowed_lateness = \"two minutes\"\n").unwrap();
    let mut cmd = livefunnel();
    cmd.args(["replay", "--input", "-", "--config"]).arg(&config);
    let out = run_with_stdin(cmd, EVENTS.as_bytes());
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a bad config must fail, stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one-line error expected:\n{stderr}");
    assert!(stderr.contains("time.allowed_lateness"), "{stderr}");
    assert!(stderr.contains("livefunnel.toml"), "{stderr}");
    assert!(out.stdout.is_empty());

    let mut cmd = livefunnel();
    cmd.args(["replay", "--input", "-"]).env("LIVEFUNNEL_TIME__SESSION_IDLE_TIMEOUT", "1m");
    let out = run_with_stdin(cmd, EVENTS.as_bytes());
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("time.session_idle_timeout"), "{stderr}");
    assert!(stderr.contains("LIVEFUNNEL_TIME__SESSION_IDLE_TIMEOUT"), "{stderr}");
}

#[test]
fn missing_input_file_is_named() {
    let dir = scratch("missing-input");
    let missing = dir.join("no-such-events.jsonl");
    let out = livefunnel().args(["replay", "--input"]).arg(&missing).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one-line error expected:\n{stderr}");
}

#[test]
fn summary_file_is_deterministic_json() {
    let dir = scratch("summary");
    let input = dir.join("events.jsonl");
    let mut content = EVENTS.as_bytes().to_vec();
    content.extend_from_slice(b"\n{\"event_id\": oops}\r\n");
    std::fs::write(&input, &content).unwrap();
    let mut files = Vec::new();
    for run in 0..2 {
        let summary = dir.join(format!("summary-{run}.json"));
        let rows = dir.join(format!("rows-{run}.jsonl"));
        let dlq = dir.join(format!("dlq-{run}.jsonl"));
        let out = livefunnel()
            .args(["replay", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&rows)
            .arg("--dead-letter")
            .arg(&dlq)
            .arg("--summary")
            .arg(&summary)
            .output()
            .unwrap();
        assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(&dlq).unwrap(),
            "{\"reason\":\"malformed_json\",\"line\":5,\"raw\":\"{\\\"event_id\\\": oops}\"}\n"
        );
        files.push((std::fs::read(&summary).unwrap(), std::fs::read(&rows).unwrap()));
    }
    assert_eq!(files[0], files[1], "two runs must write the same bytes");

    let summary = text(&files[0].0);
    assert!(summary.ends_with("}\n") && summary.lines().count() == 1, "{summary}");
    let prefix =
        "{\"lines\":4,\"accepted\":3,\"duplicates\":0,\"rejected\":{\"oversize\":0,\"malformed_json\":1,\
                  \"missing_field\":0,\"unknown_event_type\":0,\"bad_field\":0,\"ts_out_of_range\":0,\
                  \"too_late\":0,\"room_limit\":0},\"rows\":{\"window\":";
    assert!(summary.starts_with(prefix), "{summary}");
    let json: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let rows = json["rows"].as_object().unwrap();
    let kinds: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(kinds.len(), 5);
    let total: u64 = rows.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total as usize, text(&files[0].1).lines().count(), "rows in the summary = lines written");
}

#[test]
fn check_config_prints_the_effective_config() {
    let out = livefunnel()
        .arg("check-config")
        .env("LIVEFUNNEL_TIME__ALLOWED_LATENESS", "90s")
        .env("LIVEFUNNEL_WINDOWS__SET", "1m,session")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("allowed_lateness = \"90s\""), "{stdout}");
    assert!(stdout.contains("\"session\""), "{stdout}");
    assert!(!stdout.contains("5m/10s"), "{stdout}");
}

#[test]
fn log_format_json_writes_one_object_per_line_with_the_fields_as_keys() {
    let input = format!("{EVENTS}{{\"event_id\": oops}}\n");
    let run = |format: &str| {
        let mut cmd = livefunnel();
        cmd.args(["replay", "--input", "-"]).env("RUST_LOG", "debug").env("LIVEFUNNEL_LOG__FORMAT", format);
        let out = run_with_stdin(cmd, input.as_bytes());
        assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
        text(&out.stderr)
    };
    let json = run("json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l:?}: {e}")))
        .collect();
    assert!(lines.len() >= 2, "{json}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string(), "{l}");
    }
    // The rejected line's debug event: its fields are keys of the object.
    let rejected = lines.iter().find(|l| l["reason"] == "malformed_json").unwrap_or_else(|| panic!("{json}"));
    assert!(rejected["line"].is_number(), "{rejected}");
    let summary = lines.iter().find(|l| l["message"] == "replay summary").unwrap_or_else(|| panic!("{json}"));
    assert_eq!((summary["accepted"].as_u64(), summary["rejected"].as_u64()), (Some(3), Some(1)), "{summary}");
    // The default stays text, and a wrong value names the key.
    assert!(run("text").lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()));
    let mut cmd = livefunnel();
    cmd.args(["check-config"]).env("LIVEFUNNEL_LOG__FORMAT", "xml");
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("log.format"), "{}", text(&out.stderr));
}
