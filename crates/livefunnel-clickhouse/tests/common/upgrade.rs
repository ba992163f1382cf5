//! A database as the previous release (contract v1.0) left it: `org_id` first in every
//! sort key, `room_session_stats` without `ended_by_timeout`, migrations 1 to 6
//! recorded, and rows with several versions per key, some of whose `org_id` changed
//! between versions. Filled on 18.16 over HTTP and on current ClickHouse through chdb.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;

use livefunnel_clickhouse::rowbinary::{decode_rows, encode_annotation, encode_row};
use livefunnel_clickhouse::{Annotation, ClickHouseError, MigrationTarget, Table, MIGRATIONS};
use livefunnel_core::Row;
use livefunnel_testkit::{ChdbSession, ChdbStep, ClickHouseServer};
use serde_json::Value;

use super::{
    annotation_json, assert_same_rows, by_key, key_of, latest_by_key, reorg, replay_sample, row_json,
};

/// An org that sorts before every org of the sample, given to a newer version: under
/// the previous key its row comes first, so "the last row wins" would get it wrong.
pub const LATE_ORG: &str = "a-late-org";
/// An org that sorts after every org of the sample, given to an older version.
pub const EARLY_ORG: &str = "z-early-org";

/// `table`'s DDL as the previous release wrote it.
pub fn previous_create_sql(table: Table, db: &str) -> String {
    let today = table.create_sql(db);
    let sql = today.replace("ORDER BY (`room_id`", "ORDER BY (`org_id`, `room_id`");
    assert_ne!(sql, today, "{table:?}: today's key starts with room_id");
    let lines: Vec<&str> = sql.lines().filter(|l| !l.contains("`ended_by_timeout`")).collect();
    lines.join("\n")
}

/// RowBinary of `rows` of `table` in the previous release's columns.
pub fn encode_previous<'a>(table: Table, rows: impl IntoIterator<Item = &'a Row>) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows.into_iter().filter(|r| Table::of_row(r) == table) {
        let mut one = Vec::new();
        encode_row(row, &mut one);
        if table == Table::Session {
            // The two last bytes are ended_by_timeout and cold_start.
            let flag = one.remove(one.len() - 2);
            assert_eq!(flag, 0, "the previous release had no ended_by_timeout");
        }
        out.extend_from_slice(&one);
    }
    out
}

/// What the previous release wrote: two inserts per table, and the annotations.
pub struct Previous {
    pub batches: [Vec<Row>; 2],
    pub annotations: Vec<Annotation>,
    /// `(table, key)` of the keys whose org changed between versions.
    pub reorged: Vec<(Table, String)>,
}

impl Previous {
    /// The sample's rows, alternately in two inserts; for three keys of every result
    /// table a newer version under [`LATE_ORG`] in the first insert, and for three
    /// others an older one under [`EARLY_ORG`] in the second.
    pub fn from_sample() -> Previous {
        let replayed = replay_sample();
        let mut batches: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
        for (i, row) in replayed.rows.iter().enumerate() {
            batches[i % 2].push(row.clone());
        }
        let mut reorged = Vec::new();
        for table in Table::RESULTS {
            let mut last: BTreeMap<String, &Row> = BTreeMap::new();
            for row in replayed.rows.iter().filter(|r| Table::of_row(r) == table) {
                last.insert(key_of(table, &row_json(row)), row);
            }
            for (i, (key, row)) in last.into_iter().take(6).enumerate() {
                let version = row_json(row)["version"].as_u64().unwrap();
                if i < 3 {
                    batches[0].push(reorg(row, LATE_ORG, version + 1));
                } else {
                    assert!(version > 0, "{table:?} {key}");
                    batches[1].push(reorg(row, EARLY_ORG, 0));
                }
                reorged.push((table, key));
            }
        }
        Previous { batches, annotations: replayed.annotations, reorged }
    }

    pub fn all_rows(&self) -> Vec<Row> {
        self.batches.concat()
    }

    /// The statements and inserts that leave `db` as the previous release left it.
    pub fn fill(&self, db: &str) -> Vec<Fill> {
        let mut out = vec![
            Fill::Sql(format!("CREATE DATABASE `{db}`")),
            Fill::Sql(format!(
                "CREATE TABLE `{db}`.`schema_migrations` (`version` UInt32, `name` String, `applied_at` DateTime) \
                 ENGINE = ReplacingMergeTree() ORDER BY `version`"
            )),
        ];
        for m in &MIGRATIONS[..6] {
            out.push(Fill::Sql(format!(
                "INSERT INTO `{db}`.`schema_migrations` (`version`, `name`, `applied_at`) VALUES ({}, '{}', now())",
                m.version, m.name
            )));
        }
        for table in Table::ALL {
            out.push(Fill::Sql(previous_create_sql(table, db)));
        }
        for batch in &self.batches {
            for table in Table::RESULTS {
                out.push(Fill::Insert {
                    table: format!("{db}.{}", table.name()),
                    rows: encode_previous(table, batch),
                });
            }
        }
        let mut annotations = Vec::new();
        self.annotations.iter().for_each(|a| encode_annotation(a, &mut annotations));
        out.push(Fill::Insert { table: format!("{db}.annotations"), rows: annotations });
        out
    }

    /// Asserts that `latest` (a table's rows read back with `FINAL`) holds exactly one
    /// row per key, the highest version of each, for every table.
    pub fn assert_latest(&self, mut latest: impl FnMut(Table) -> Vec<Value>) {
        let all = self.all_rows();
        for table in Table::RESULTS {
            let actual = by_key(table, latest(table));
            assert_same_rows(table, &latest_by_key(table, &all), &actual, &[]);
            for (t, key) in self.reorged.iter().filter(|(t, _)| *t == table) {
                let org = actual[key]["org_id"].as_str().unwrap();
                assert_ne!(org, EARLY_ORG, "{t:?} {key}: an older version won");
            }
            let late = actual.values().filter(|v| v["org_id"] == LATE_ORG).count();
            assert_eq!(late, 3, "{table:?}: the newer versions under another org won");
        }
        let mut want: Vec<Value> = self.annotations.iter().map(annotation_json).collect();
        let mut got = latest(Table::Annotations);
        let sort = |v: &mut Vec<Value>| v.sort_by_key(|a| key_of(Table::Annotations, a));
        sort(&mut want);
        sort(&mut got);
        assert_eq!(got, want, "annotations");
    }
}

/// One step of [`Previous::fill`].
pub enum Fill {
    Sql(String),
    /// RowBinary rows for every column of `table` (`db.t`), in table order.
    Insert {
        table: String,
        rows: Vec<u8>,
    },
}

/// Runs [`Previous::fill`] on an 18.16 server over HTTP.
pub fn fill_18(server: &ClickHouseServer, fills: &[Fill]) {
    for fill in fills {
        match fill {
            Fill::Sql(sql) => post(server, sql, &[]),
            Fill::Insert { table, rows } => {
                let (db, t) = table.split_once('.').unwrap();
                post(server, &format!("INSERT INTO `{db}`.`{t}` FORMAT RowBinary"), rows);
            }
        }
    }
}

/// A POST to the HTTP interface as `default`: `sql` in the URL, `body` as its data.
fn post(server: &ClickHouseServer, sql: &str, body: &[u8]) {
    let query: String = sql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut stream = TcpStream::connect(("127.0.0.1", server.http_port())).expect("connecting to 18.16");
    let head =
        format!("POST /?query={query} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).expect("sending to 18.16");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading 18.16's answer");
    assert!(response.starts_with("HTTP/1.") && response.contains(" 200 "), "{sql}: {response}");
}

/// Current ClickHouse (a chdb session) as a [`MigrationTarget`], errors classified
/// as the HTTP client classifies 18.16's.
pub struct ChdbTarget {
    session: Mutex<ChdbSession>,
}

impl ChdbTarget {
    pub fn new(session: ChdbSession) -> ChdbTarget {
        ChdbTarget { session: Mutex::new(session) }
    }

    pub fn session(&self) -> std::sync::MutexGuard<'_, ChdbSession> {
        self.session.lock().unwrap()
    }

    fn error(message: String) -> ClickHouseError {
        ClickHouseError::from_server_message(&message, "default", "(chdb)")
    }

    /// Runs [`Previous::fill`], writing the inserts' rows to files in `dir`.
    pub fn fill(&self, fills: &[Fill], dir: &std::path::Path) {
        for (i, fill) in fills.iter().enumerate() {
            let step = match fill {
                Fill::Sql(sql) => ChdbStep::sql(sql),
                Fill::Insert { table, rows } => {
                    let file = dir.join(format!("fill-{i}.bin"));
                    std::fs::write(&file, rows).unwrap();
                    ChdbStep::insert_rowbinary(table, file)
                }
            };
            self.session().step(&step).unwrap_or_else(|e| panic!("{step:?}: {e}"));
        }
    }

    /// The latest rows of `table` in `db` (`FINAL`), decoded as `latest_rows` decodes 18.16's.
    pub fn latest(&self, db: &str, table: Table) -> Vec<Value> {
        let bytes = self.session().query_format(&table.select_latest_sql(db), "RowBinary").unwrap();
        decode_rows(table, &bytes).unwrap()
    }

    /// Runs a statement that answers nothing; panics on an error.
    pub fn execute_sql(&self, sql: &str) {
        self.session().sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A query's `TabSeparated` answer, trimmed.
    pub fn text(&self, sql: &str) -> String {
        let bytes = self.session().query_format(sql, "TabSeparated").unwrap_or_else(|e| panic!("{sql}: {e}"));
        String::from_utf8(bytes).unwrap().trim().to_string()
    }
}

impl MigrationTarget for ChdbTarget {
    async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        let result = self.session().sql(sql);
        result.map_err(ChdbTarget::error)
    }

    async fn execute_long(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.execute(sql).await
    }

    async fn fetch_lines(&self, sql: &str) -> Result<Vec<String>, ClickHouseError> {
        let result = self.session().query_format(sql, "TabSeparated");
        let bytes = result.map_err(ChdbTarget::error)?;
        Ok(String::from_utf8(bytes).unwrap().lines().map(str::to_string).collect())
    }
}

/// 18.16 over HTTP as a [`MigrationTarget`], errors classified as `migrate` classifies them.
pub struct HttpTarget {
    client: clickhouse::Client,
    database: String,
}

impl HttpTarget {
    pub fn new(server: &ClickHouseServer, database: &str) -> HttpTarget {
        let client = clickhouse::Client::default().with_url(server.http_url()).with_validation(false);
        HttpTarget { client, database: database.to_string() }
    }

    fn error(&self, e: clickhouse::error::Error) -> ClickHouseError {
        ClickHouseError::from_server_message(&e.to_string(), "default", &self.database)
    }
}

impl MigrationTarget for HttpTarget {
    async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.client.query_raw(sql).execute().await.map_err(|e| self.error(e))
    }

    async fn execute_long(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.execute(sql).await
    }

    async fn fetch_lines(&self, sql: &str) -> Result<Vec<String>, ClickHouseError> {
        let mut cursor = self.client.query_raw(sql).fetch_bytes("TabSeparated").map_err(|e| self.error(e))?;
        let bytes = cursor.collect().await.map_err(|e| self.error(e))?;
        Ok(String::from_utf8(bytes.to_vec()).unwrap().lines().map(str::to_string).collect())
    }
}

/// A target that dies right after its `n`-th call (0 is `SELECT version()`), as a
/// process killed then would: that statement reached the server, none after it did.
/// `mangle` may change the statement sent last (a copy cut short, half a swap).
/// Built with [`CrashAfter::meddle`] it does not die but runs `meddle` right after
/// call `n` (another process acting on the server at that moment).
pub struct CrashAfter<'a, T> {
    inner: &'a T,
    n: usize,
    mangle: fn(&str) -> String,
    meddle: Option<Box<dyn Fn() + Send + Sync + 'a>>,
    calls: std::sync::atomic::AtomicUsize,
}

/// A statement as it is.
pub fn unchanged(sql: &str) -> String {
    sql.to_string()
}

impl<'a, T: MigrationTarget> CrashAfter<'a, T> {
    pub fn new(inner: &'a T, n: usize, mangle: fn(&str) -> String) -> CrashAfter<'a, T> {
        CrashAfter { inner, n, mangle, meddle: None, calls: Default::default() }
    }

    pub fn meddle(inner: &'a T, n: usize, meddle: impl Fn() + Send + Sync + 'a) -> CrashAfter<'a, T> {
        CrashAfter { inner, n, mangle: unchanged, meddle: Some(Box::new(meddle)), calls: Default::default() }
    }

    /// The statement to send as call number `i`, or the error once dead.
    fn before(&self, sql: &str) -> Result<(usize, String), ClickHouseError> {
        let i = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match i.cmp(&self.n) {
            std::cmp::Ordering::Less => Ok((i, sql.to_string())),
            std::cmp::Ordering::Equal => Ok((i, (self.mangle)(sql))),
            std::cmp::Ordering::Greater if self.meddle.is_some() => Ok((i, sql.to_string())),
            std::cmp::Ordering::Greater => Err(ClickHouseError::Protocol("simulated crash".into())),
        }
    }

    fn after(&self, i: usize) -> Result<(), ClickHouseError> {
        match &self.meddle {
            Some(meddle) if i == self.n => meddle(),
            Some(_) => {}
            None if i == self.n => return Err(ClickHouseError::Protocol("simulated crash".into())),
            None => {}
        }
        Ok(())
    }
}

impl<T: MigrationTarget> MigrationTarget for CrashAfter<'_, T> {
    async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        let (i, sql) = self.before(sql)?;
        self.inner.execute(&sql).await?;
        self.after(i)
    }

    async fn execute_long(&self, sql: &str) -> Result<(), ClickHouseError> {
        let (i, sql) = self.before(sql)?;
        self.inner.execute_long(&sql).await?;
        self.after(i)
    }

    async fn fetch_lines(&self, sql: &str) -> Result<Vec<String>, ClickHouseError> {
        let (i, sql) = self.before(sql)?;
        let lines = self.inner.fetch_lines(&sql).await?;
        self.after(i).map(|()| lines)
    }
}

/// A target on which the first statement starting with `prefix` reaches the server
/// and then fails as it does when a concurrent run changed the tables in between:
/// ClickHouse 18.16 answers a `DROP TABLE IF EXISTS` racing another drop with
/// "doesn't exist", and a statement naming a table another run renamed the same way.
pub struct LoseRace<'a, T> {
    inner: &'a T,
    prefix: String,
    lost: std::sync::atomic::AtomicBool,
}

impl<'a, T: MigrationTarget> LoseRace<'a, T> {
    pub fn new(inner: &'a T, prefix: &str) -> LoseRace<'a, T> {
        LoseRace { inner, prefix: prefix.to_string(), lost: Default::default() }
    }

    /// Whether the race was lost once.
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn verdict(&self, sql: &str) -> Result<(), ClickHouseError> {
        if sql.starts_with(&self.prefix) && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(ClickHouseError::from_server_message(
                "Code: 60, e.displayText() = DB::Exception: Table lost.race doesn't exist., e.what() = DB::Exception",
                "default",
                "lost",
            ));
        }
        Ok(())
    }
}

impl<T: MigrationTarget> MigrationTarget for LoseRace<'_, T> {
    async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.inner.execute(sql).await?;
        self.verdict(sql)
    }

    async fn execute_long(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.inner.execute_long(sql).await?;
        self.verdict(sql)
    }

    async fn fetch_lines(&self, sql: &str) -> Result<Vec<String>, ClickHouseError> {
        let lines = self.inner.fetch_lines(sql).await?;
        self.verdict(sql).map(|()| lines)
    }
}
