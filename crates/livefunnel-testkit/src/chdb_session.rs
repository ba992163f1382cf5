//! A chdb session kept open (`chdb-run.py --lines`): steps run one at a time, each
//! answered before the next is sent, so the code under test can choose its next
//! statement from an answer (livefunnel's migrations read the server's state first).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use serde_json::Value;

use crate::chdb::{install_hint, parse_result, read_all, wait_with_deadline, RUN_TIMEOUT, SCRIPT};
use crate::{Chdb, ChdbAnswer, ChdbStep};

/// One chdb session (its data in a temporary directory, removed when the value is
/// dropped), answering steps as they come.
pub struct ChdbSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// The chdb package's version, e.g. `4.4.0`.
    pub chdb_version: String,
    /// The engine's `SELECT version()`, e.g. `26.9.2.1`.
    pub server_version: String,
}

impl Chdb {
    /// Starts a session; panics when the runner cannot start or print its header.
    pub fn session(&self) -> ChdbSession {
        let mut child = Command::new(self.python())
            .args(["-c", SCRIPT, "--lines"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", self.python().display(), install_hint()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(read_all(child.stderr.take().expect("piped stderr")));
        let mut session = ChdbSession {
            child,
            stdin: Some(stdin),
            lines,
            stderr,
            chdb_version: String::new(),
            server_version: String::new(),
        };
        let header = session.next_line("the header");
        let text = |key: &str| header.get(key).and_then(Value::as_str).map(str::to_string);
        let (Some(chdb), Some(version)) = (text("chdb"), text("version")) else {
            panic!("chdb-run header without chdb/version: {header}");
        };
        (session.chdb_version, session.server_version) = (chdb, version);
        session
    }
}

impl ChdbSession {
    /// Runs one step and returns its answer, or ClickHouse's error message.
    pub fn step(&mut self, step: &ChdbStep) -> Result<ChdbAnswer, String> {
        let stdin = self.stdin.as_mut().expect("the session is open");
        let mut line = step.to_json().to_string();
        line.push('\n');
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()) {
            let stderr = self.finish();
            panic!("writing a step to chdb-run: {e}; stderr:\n{stderr}");
        }
        let answer = self.next_line(&format!("{step:?}"));
        parse_result(step, &answer)
    }

    /// A statement answering nothing.
    pub fn sql(&mut self, sql: &str) -> Result<(), String> {
        self.step(&ChdbStep::sql(sql)).map(|_| ())
    }

    /// A query's whole answer in `format`.
    pub fn query_format(&mut self, sql: &str, format: &str) -> Result<Vec<u8>, String> {
        match self.step(&ChdbStep::query_format(sql, format))? {
            ChdbAnswer::Bytes(bytes) => Ok(bytes),
            other => panic!("chdb answered {other:?} to a query in {format}"),
        }
    }

    fn next_line(&mut self, what: &str) -> Value {
        match self.lines.recv_timeout(RUN_TIMEOUT) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("chdb-run printed a non-JSON line ({e}) for {what}: {line}")),
            Err(e) => {
                let stderr = self.finish();
                panic!("chdb-run gave no answer for {what} ({e}); stderr:\n{stderr}");
            }
        }
    }

    /// Closes stdin, waits for the runner (killing it when it hangs) and returns its stderr.
    fn finish(&mut self) -> String {
        drop(self.stdin.take());
        if wait_with_deadline(&mut self.child, RUN_TIMEOUT).is_none() {
            eprintln!("chdb-run did not exit within {} s of its input closing", RUN_TIMEOUT.as_secs());
        }
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        String::from_utf8_lossy(&stderr).into_owned()
    }
}

impl Drop for ChdbSession {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_answers_each_step_before_the_next_and_keeps_its_data() {
        let mut session = Chdb::find().session();
        assert!(session.server_version.starts_with("26."), "{}", session.server_version);
        session.sql("CREATE DATABASE s").unwrap();
        session.sql("CREATE TABLE s.t (`n` UInt64) ENGINE = MergeTree() ORDER BY `n`").unwrap();
        let err = session.sql("CREATE TABLE s.t (`n` UInt64) ENGINE = MergeTree() ORDER BY `n`").unwrap_err();
        assert!(err.contains("Code: 57"), "{err}");
        session.sql("INSERT INTO s.t VALUES (4), (2)").unwrap();
        assert_eq!(session.query_format("SELECT n FROM s.t ORDER BY n", "TabSeparated").unwrap(), b"2\n4\n");
        let rows = session.step(&ChdbStep::query("SELECT sum(n) AS total FROM s.t")).unwrap();
        assert_eq!(rows, ChdbAnswer::Rows(vec![serde_json::json!({"total": 6})]));
    }
}
