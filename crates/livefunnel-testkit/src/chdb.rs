//! Current ClickHouse, in process: SQL steps run by `scripts/chdb-run.py` on chdb
//! (PyPI `chdb`, ClickHouse's engine as a Python module), so tests can check that
//! livefunnel's SQL works on current releases too, not only on the 18.16 server
//! [`crate::ClickHouseServer`] starts.
//!
//! The Python comes from `TESTKIT_CHDB_PYTHON` (else `python3`) and must be able
//! to `import chdb`; otherwise [`Chdb::find`] panics with the commands that install it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Environment variable naming the Python interpreter that has `chdb` installed.
pub const CHDB_PYTHON_ENV: &str = "TESTKIT_CHDB_PYTHON";
/// The chdb release the tests are written against (`SELECT version()` = 26.9.2.1).
pub const CHDB_VERSION: &str = "4.4.0";
/// The runner, compiled in: tests do not depend on the working directory, and a
/// change to the script rebuilds them.
pub(crate) const SCRIPT: &str = include_str!("../../../scripts/chdb-run.py");
/// Generous: loading the sample into every table takes seconds; a hung engine must
/// still not hold CI for its whole time limit.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) fn install_hint() -> String {
    format!(
        "install chdb in a virtual environment and point {CHDB_PYTHON_ENV} at its python: \
         `python3 -m venv \"$HOME/.cache/livefunnel-chdb\" && \"$HOME/.cache/livefunnel-chdb/bin/pip\" install \
         chdb=={CHDB_VERSION}` then `export {CHDB_PYTHON_ENV}=\"$HOME/.cache/livefunnel-chdb/bin/python\"` \
         (.ci/run does both)"
    )
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChdbStep {
    /// A statement answering nothing (DDL, DML).
    Sql(String),
    /// A query whose rows come back as JSON objects (`JSONEachRow`).
    Query(String),
    /// A query whose whole answer comes back as bytes in `format`, e.g. `RowBinary`.
    QueryFormat { sql: String, format: String },
    /// Loads a RowBinary file into `table` (`db.t`): every column, in table order.
    InsertRowBinary { table: String, file: PathBuf },
}

impl ChdbStep {
    pub fn sql(sql: impl Into<String>) -> ChdbStep {
        ChdbStep::Sql(sql.into())
    }

    pub fn query(sql: impl Into<String>) -> ChdbStep {
        ChdbStep::Query(sql.into())
    }

    pub fn query_format(sql: impl Into<String>, format: impl Into<String>) -> ChdbStep {
        ChdbStep::QueryFormat { sql: sql.into(), format: format.into() }
    }

    pub fn insert_rowbinary(table: impl Into<String>, file: impl AsRef<Path>) -> ChdbStep {
        ChdbStep::InsertRowBinary { table: table.into(), file: file.as_ref().to_path_buf() }
    }

    pub(crate) fn to_json(&self) -> Value {
        match self {
            ChdbStep::Sql(sql) => json!({ "sql": sql }),
            ChdbStep::Query(sql) => json!({ "query": sql }),
            ChdbStep::QueryFormat { sql, format } => json!({ "query": sql, "format": format }),
            ChdbStep::InsertRowBinary { table, file } => {
                let file = file.to_str().unwrap_or_else(|| panic!("non-utf-8 path {}", file.display()));
                json!({ "insert_rowbinary": { "table": table, "file": file } })
            }
        }
    }
}

/// What a step that succeeded answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ChdbAnswer {
    /// A [`ChdbStep::Sql`] statement ran.
    Done,
    /// The rows of a [`ChdbStep::Query`].
    Rows(Vec<Value>),
    /// The answer of a [`ChdbStep::QueryFormat`].
    Bytes(Vec<u8>),
    /// A [`ChdbStep::InsertRowBinary`] loaded its file into these columns.
    Inserted { columns: Vec<String> },
}

/// The answers of one run: one per step, in step order; a failed step's error is
/// ClickHouse's message, and the steps after it still ran.
#[derive(Debug, Clone)]
pub struct ChdbRun {
    /// The chdb package's version, e.g. `4.4.0`.
    pub chdb_version: String,
    /// The engine's `SELECT version()`, e.g. `26.9.2.1`.
    pub server_version: String,
    pub steps: Vec<ChdbStep>,
    pub results: Vec<Result<ChdbAnswer, String>>,
}

impl ChdbRun {
    /// The answer of step `i`; panics with the step and ClickHouse's error when it failed.
    pub fn answer(&self, i: usize) -> &ChdbAnswer {
        match &self.results[i] {
            Ok(answer) => answer,
            Err(e) => panic!("chdb {}: step {i} failed: {e}\nstep: {:?}", self.server_version, self.steps[i]),
        }
    }

    /// The rows of query step `i`; panics when it failed or was another kind of step.
    pub fn rows(&self, i: usize) -> &[Value] {
        match self.answer(i) {
            ChdbAnswer::Rows(rows) => rows,
            other => panic!("chdb step {i} answered {other:?}, not rows"),
        }
    }

    /// The bytes of query step `i`; panics when it failed or was another kind of step.
    pub fn bytes(&self, i: usize) -> &[u8] {
        match self.answer(i) {
            ChdbAnswer::Bytes(bytes) => bytes,
            other => panic!("chdb step {i} answered {other:?}, not bytes"),
        }
    }

    /// Panics listing every failed step, with its SQL and error.
    pub fn assert_all_ok(&self) {
        let failed: Vec<String> = self
            .results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("step {i}: {e}\n  {:?}", self.steps[i])))
            .collect();
        assert!(
            failed.is_empty(),
            "chdb {}: {} step(s) failed:\n{}",
            self.server_version,
            failed.len(),
            failed.join("\n")
        );
    }
}

/// A Python interpreter that can `import chdb`.
#[derive(Debug, Clone)]
pub struct Chdb {
    python: PathBuf,
}

impl Chdb {
    /// The interpreter named by `TESTKIT_CHDB_PYTHON`, else `python3`.
    ///
    /// Panics, saying how to install chdb, when it cannot `import chdb`: a test that
    /// needs current ClickHouse must fail loudly, never pass silently.
    pub fn find() -> Chdb {
        let (python, origin) = match std::env::var_os(CHDB_PYTHON_ENV).filter(|v| !v.is_empty()) {
            Some(p) => {
                let origin = format!("{CHDB_PYTHON_ENV}={}", Path::new(&p).display());
                (PathBuf::from(p), origin)
            }
            None => (PathBuf::from("python3"), format!("python3 ({CHDB_PYTHON_ENV} is not set)")),
        };
        let output = Command::new(&python).args(["-c", "import chdb"]).stdin(Stdio::null()).output();
        let problem = match output {
            Err(e) => format!("cannot run {origin}: {e}"),
            Ok(out) if !out.status.success() => {
                // The last line of a traceback says what is missing.
                let stderr = String::from_utf8_lossy(&out.stderr);
                let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
                format!("{origin} cannot `import chdb` ({}: {})", out.status, why.trim())
            }
            Ok(_) => return Chdb { python },
        };
        panic!("this test runs SQL on current ClickHouse through chdb, but {problem}; {}", install_hint())
    }

    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Runs `steps` in order in one fresh chdb session (its data in a temporary
    /// directory, removed afterwards). Panics when the runner itself fails (not when
    /// a step does: see [`ChdbRun::results`]).
    pub fn run(&self, steps: &[ChdbStep]) -> ChdbRun {
        let input = Value::Array(steps.iter().map(ChdbStep::to_json).collect()).to_string();
        let mut child = Command::new(&self.python)
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", self.python.display(), install_hint()));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let stdout = read_all(child.stdout.take().expect("piped stdout"));
        let stderr = read_all(child.stderr.take().expect("piped stderr"));
        let status = wait_with_deadline(&mut child, RUN_TIMEOUT);
        let stdout = stdout.join().expect("stdout reader");
        let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
        let written = writer.join().expect("stdin writer");
        let Some(status) = status else {
            panic!("chdb-run did not finish within {} s; stderr:\n{stderr}", RUN_TIMEOUT.as_secs());
        };
        assert!(status.success(), "chdb-run failed ({status}); stderr:\n{stderr}");
        written.unwrap_or_else(|e| panic!("writing the steps to chdb-run: {e}; stderr:\n{stderr}"));
        parse_output(steps, &String::from_utf8_lossy(&stdout), &stderr)
    }
}

pub(crate) fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read: the parse then says what is missing.
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child`, killing it after `timeout`: `None` when it had to be killed.
pub(crate) fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn parse_output(steps: &[ChdbStep], stdout: &str, stderr: &str) -> ChdbRun {
    let context = || format!("chdb-run output:\n{stdout}\nstderr:\n{stderr}");
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| {
        serde_json::from_str::<Value>(l)
            .unwrap_or_else(|e| panic!("chdb-run printed a non-JSON line ({e}): {l}"))
    });
    let header = lines.next().unwrap_or_else(|| panic!("chdb-run printed no header; {}", context()));
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let (Some(chdb_version), Some(server_version)) = (text(&header, "chdb"), text(&header, "version")) else {
        panic!("chdb-run header without chdb/version: {header}");
    };
    let mut results = Vec::with_capacity(steps.len());
    for (step, line) in steps.iter().zip(lines.by_ref()) {
        results.push(parse_result(step, &line));
    }
    assert_eq!(results.len(), steps.len(), "chdb-run answered fewer steps than it was given; {}", context());
    assert!(lines.next().is_none(), "chdb-run answered more steps than it was given; {}", context());
    ChdbRun { chdb_version, server_version, steps: steps.to_vec(), results }
}

pub(crate) fn parse_result(step: &ChdbStep, line: &Value) -> Result<ChdbAnswer, String> {
    match line.get("ok").and_then(Value::as_bool) {
        Some(true) => {}
        Some(false) => {
            return Err(line.get("error").and_then(Value::as_str).unwrap_or("no error message").to_string())
        }
        None => panic!("chdb-run result without \"ok\": {line}"),
    }
    let field = |key: &str| {
        line.get(key).unwrap_or_else(|| panic!("chdb-run result for {step:?} without {key}: {line}"))
    };
    Ok(match step {
        ChdbStep::Sql(_) => ChdbAnswer::Done,
        ChdbStep::Query(_) => {
            ChdbAnswer::Rows(field("rows").as_array().expect("rows is a JSON list").clone())
        }
        ChdbStep::QueryFormat { .. } => {
            let hex = field("hex").as_str().expect("hex is a string");
            ChdbAnswer::Bytes(decode_hex(hex).unwrap_or_else(|e| panic!("chdb-run hex answer: {e}")))
        }
        ChdbStep::InsertRowBinary { .. } => {
            let columns = field("columns").as_array().expect("columns is a JSON list");
            ChdbAnswer::Inserted {
                columns: columns
                    .iter()
                    .map(|c| c.as_str().expect("column names are strings").to_string())
                    .collect(),
            }
        }
    })
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd length {}", hex.len()));
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            u8::from_str_radix(digits, 16).map_err(|e| format!("{digits:?}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_and_rejects_garbage() {
        assert_eq!(decode_hex("00ff7f").unwrap(), [0, 255, 127]);
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("zz").is_err());
    }

    #[test]
    fn runs_steps_in_one_session_and_keeps_going_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rows.bin");
        // RowBinary of ('é', 7), ('a', 300): LEB128 string lengths, u64 little-endian.
        let mut bytes = vec![2];
        bytes.extend_from_slice("é".as_bytes());
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(b"\x01a");
        bytes.extend_from_slice(&300u64.to_le_bytes());
        std::fs::write(&file, &bytes).unwrap();
        let steps = [
            ChdbStep::sql("CREATE DATABASE t"),
            ChdbStep::sql("CREATE TABLE t.x (`s` String, `n` UInt64) ENGINE = MergeTree() ORDER BY `s`"),
            ChdbStep::insert_rowbinary("t.x", &file),
            ChdbStep::query("SELECT no_such_column FROM t.x"),
            ChdbStep::query("SELECT `s`, `n` FROM t.x ORDER BY `n`"),
            ChdbStep::query_format("SELECT `s`, `n` FROM t.x ORDER BY `n`", "RowBinary"),
        ];
        let run = Chdb::find().run(&steps);
        assert!(run.server_version.split('.').next().unwrap().parse::<u32>().unwrap() >= 20, "{run:?}");
        assert_eq!(run.results.len(), steps.len());
        assert_eq!(run.answer(0), &ChdbAnswer::Done);
        assert_eq!(run.answer(2), &ChdbAnswer::Inserted { columns: vec!["s".into(), "n".into()] });
        let err = run.results[3].as_ref().unwrap_err();
        assert!(err.contains("no_such_column"), "{err}");
        assert_eq!(run.rows(4), [json!({"s": "é", "n": 7}), json!({"s": "a", "n": 300})]);
        assert_eq!(run.bytes(5), &bytes[..]);
        let panicked = std::panic::catch_unwind(|| run.assert_all_ok()).unwrap_err();
        let message = panicked.downcast_ref::<String>().unwrap();
        assert!(message.contains("step 3") && message.contains("no_such_column"), "{message}");
    }
}
