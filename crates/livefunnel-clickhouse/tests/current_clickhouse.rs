//! Our SQL on current ClickHouse: `migrate` itself (through a chdb session), the
//! inserts and the latest-rows read run on chdb (ClickHouse 26.9 in process, see
//! `livefunnel_testkit::Chdb`) and answer exactly what a real 18.16 server answers.
//!
//! Answers are compared as the bytes the crate itself reads: `TabSeparated` for the
//! migration reads (what `migrate` parses) and `RowBinary` for the latest rows (what
//! `latest_rows` decodes). Binary answers carry no number formatting, so nothing is
//! normalized: equal bytes, or equal decoded rows with floats compared bit for bit.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::upgrade::ChdbTarget;
use common::{assert_same_rows, by_key, config_for, latest_by_key, replay_sample, Replayed};
use livefunnel_clickhouse::rowbinary::{decode_rows, encode_annotation, encode_row};
use livefunnel_clickhouse::{
    latest_rows, migrate, migrate_on, Annotation, ClickHouseMetrics, ClickHouseSink, MigrationReport,
    StatementRole, Table, MIGRATIONS,
};
use livefunnel_core::Row;
use livefunnel_testkit::{Chdb, ChdbRun, ChdbStep, ClickHouseServer, CHDB_VERSION};
use serde_json::Value;

/// The answer of `sql` in `format` over HTTP, as `migrate` and `latest_rows` fetch it.
async fn fetch(server: &ClickHouseServer, sql: &str, format: &str) -> Vec<u8> {
    let client = clickhouse::Client::default().with_url(server.http_url()).with_validation(false);
    let mut cursor = client.query_raw(sql).fetch_bytes(format).expect("starting a query");
    cursor.collect().await.unwrap_or_else(|e| panic!("18.16: {sql:?} failed: {e}")).to_vec()
}

/// The statements a `migrate` run sent, as chdb steps: reads answer `TabSeparated`,
/// like `migrate` reads them.
fn steps_of(statements: &[String]) -> Vec<ChdbStep> {
    let step = |sql: &String| {
        if sql.starts_with("SELECT") {
            ChdbStep::query_format(sql, "TabSeparated")
        } else {
            ChdbStep::sql(sql)
        }
    };
    statements.iter().map(step).collect()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8 answer")
}

/// The same `migrate` code on 18.16 (HTTP) and on 26.9 (a chdb session) sends the
/// same statements, and every read it decides on answers the same bytes.
#[tokio::test]
async fn migrate_runs_on_current_clickhouse_as_on_18_16() {
    let t0 = Instant::now();
    let server = ClickHouseServer::spawn();
    let db = "lf_current";
    let cfg = config_for(&server, db);
    let chdb = ChdbTarget::new(Chdb::find().session());
    let planned = MigrationReport::planned_statements(db);

    // A first run on nothing, then a second: what they send, on both servers.
    let first = migrate(&cfg).await.unwrap();
    let first_current = migrate_on(&chdb, db).await.unwrap();
    let not_moves: Vec<&str> = planned
        .iter()
        .filter(|s| !matches!(s.role, StatementRole::Move(..)) && !matches!(s.role, StatementRole::Apply(7)))
        .map(|s| s.sql.as_str())
        .collect();
    assert_eq!(first.statements, not_moves, "a first run: no move, no column to add");
    assert_eq!(first_current.statements, first.statements);
    assert_eq!((&first_current.applied, &first_current.moved), (&first.applied, &first.moved));
    let second = migrate(&cfg).await.unwrap();
    let second_current = migrate_on(&chdb, db).await.unwrap();
    let rerun: Vec<&str> = planned.iter().filter(|s| s.version().is_none()).map(|s| s.sql.as_str()).collect();
    assert_eq!(second.statements, rerun, "a second run only reads");
    assert_eq!(second_current.statements, second.statements);
    // Every read of the plan, even those a migrated database skips, answers alike.
    for statement in planned.iter().filter(|s| s.is_read()) {
        let old = fetch(&server, &statement.sql, "TabSeparated").await;
        let current = chdb.session().query_format(&statement.sql, "TabSeparated").unwrap();
        assert_eq!(text(&current), text(&old), "26.9 and 18.16 answer {} differently", statement.sql);
    }
    // The column reads match the tables `migrate` expects, types spelled the same.
    for table in Table::ALL {
        let sql = planned.iter().find(|s| s.role == StatementRole::Columns(table)).unwrap();
        let want: Vec<String> = table
            .columns()
            .iter()
            .map(|c| format!("{}\t{}", c.name, c.ty.sql().replace('\'', "\\'")))
            .collect();
        assert_eq!(chdb.text(&sql.sql).lines().collect::<Vec<_>>(), want, "{table:?}");
    }
    let recorded = chdb.text(&format!(
        "SELECT DISTINCT `version`, `name` FROM `{db}`.`schema_migrations` ORDER BY `version`"
    ));
    let want: Vec<String> = MIGRATIONS.iter().map(|m| format!("{}\t{}", m.version, m.name)).collect();
    assert_eq!(recorded.lines().collect::<Vec<_>>(), want);

    // A table created by an older release, without two measures: `migrate` adds them
    // with ALTER TABLE ... ADD COLUMN ... AFTER, on both.
    let old_ddl: Vec<String> = Table::Window
        .create_sql("lf_old")
        .lines()
        .filter(|l| !l.contains("`gpm`") && !l.contains("`refund_rate`"))
        .map(str::to_string)
        .collect();
    let old_ddl = old_ddl.join("\n").replace(",\n)", "\n)");
    for sql in ["CREATE DATABASE lf_old", old_ddl.as_str()] {
        fetch(&server, sql, "TabSeparated").await;
        chdb.session().sql(sql).unwrap();
    }
    let upgrade = migrate(&config_for(&server, "lf_old")).await.unwrap();
    let upgrade_current = migrate_on(&chdb, "lf_old").await.unwrap();
    assert_eq!(upgrade.added_columns, ["room_window_stats.gpm", "room_window_stats.refund_rate"]);
    assert_eq!(upgrade_current.statements, upgrade.statements);
    let columns_sql =
        "SELECT name, type FROM system.columns WHERE database = 'lf_old' AND table = 'room_window_stats'";
    let columns = chdb.text(columns_sql);
    assert_eq!(
        columns,
        text(&fetch(&server, columns_sql, "TabSeparated").await).trim(),
        "columns after the upgrade"
    );
    let names: Vec<&str> = columns.lines().map(|l| l.split('\t').next().unwrap()).collect();
    let want: Vec<String> = Table::Window.columns().into_iter().map(|c| c.name).collect();
    assert_eq!(names, want, "added in place, after their predecessor");
    let version = &chdb.session().server_version.clone();
    assert!(version.starts_with("26."), "chdb {CHDB_VERSION} runs 26.x, got {version}");
    eprintln!("migrate on 26.9 and 18.16: {:.1} s", t0.elapsed().as_secs_f64());
}

/// The rows in two batches, as two flushes would send them: alternate rows, so a
/// key's versions are spread over both inserts (its highest in either one) and
/// `FINAL` must collapse them across parts.
struct Batches<'a> {
    rows: [Vec<&'a Row>; 2],
    annotations: [Vec<&'a Annotation>; 2],
}

fn batches(replayed: &Replayed) -> Batches<'_> {
    fn alternate<T>(items: &[T]) -> [Vec<&T>; 2] {
        [items.iter().step_by(2).collect(), items.iter().skip(1).step_by(2).collect()]
    }
    Batches { rows: alternate(&replayed.rows), annotations: alternate(&replayed.annotations) }
}

/// How many keys of `x` have a higher version there than in `y`.
fn newer_in(x: &BTreeMap<String, Value>, y: &BTreeMap<String, Value>) -> usize {
    x.iter().filter(|(k, v)| y.get(*k).is_some_and(|w| w["version"].as_u64() < v["version"].as_u64())).count()
}

/// For every window row of the sample: a later version with other numbers, and a
/// version 0 with absurd ones that must never win.
fn corrections(rows: &[Row]) -> (Vec<Row>, Vec<Row>) {
    let (mut corrected, mut stale) = (Vec::new(), Vec::new());
    for row in rows {
        let Row::Window(w) = row else { continue };
        let mut newer = w.clone();
        newer.version += 1;
        newer.counts.watch_pv += 1000;
        newer.counts.gmv_cents += 12_345;
        newer.counts.watch_ms += 777;
        corrected.push(Row::Window(newer));
        let mut older = w.clone();
        older.version = 0;
        older.counts.watch_pv = 999_999;
        stale.push(Row::Window(older));
    }
    (corrected, stale)
}

/// Writes batch `b`'s RowBinary for `table` (what the sink sends) to a file.
fn write_batch(dir: &Path, batches: &Batches<'_>, table: Table, b: usize) -> PathBuf {
    let mut bytes = Vec::new();
    if table == Table::Annotations {
        for a in &batches.annotations[b] {
            encode_annotation(a, &mut bytes);
        }
    } else {
        for row in batches.rows[b].iter().filter(|r| Table::of_row(r) == table) {
            encode_row(row, &mut bytes);
        }
    }
    assert!(!bytes.is_empty(), "{table:?} has rows in batch {b}");
    let path = dir.join(format!("{}-{b}.bin", table.name()));
    std::fs::write(&path, &bytes).unwrap();
    path
}

#[tokio::test]
async fn latest_rows_read_the_same_on_current_clickhouse_as_on_18_16() {
    let chdb = Chdb::find();
    let t0 = Instant::now();
    let replayed = replay_sample();
    let mut batches = batches(&replayed);
    // Several versions of one key, some in each batch, the highest in either one:
    // the case FINAL exists for.
    let (mut newer_first, mut newer_second) = (0, 0);
    for table in Table::RESULTS {
        let latest_in = |b: usize| {
            let rows: Vec<Row> = batches.rows[b].iter().map(|r| (*r).clone()).collect();
            latest_by_key(table, &rows)
        };
        let (first, second) = (latest_in(0), latest_in(1));
        newer_first += newer_in(&first, &second);
        newer_second += newer_in(&second, &first);
    }
    eprintln!("keys whose latest version is in batch 0: {newer_first}, in batch 1: {newer_second}");
    assert!(newer_first >= 10 && newer_second >= 10, "{newer_first} / {newer_second}");
    // Corrections with other numbers: a higher version in the first insert, and an
    // older one sent late (a replay of an earlier batch) in the second.
    let (corrected, stale) = corrections(&replayed.rows);
    batches.rows[0].extend(&corrected);
    batches.rows[1].extend(&stale);
    let mut all_rows = replayed.rows.clone();
    all_rows.extend(corrected.iter().chain(&stale).cloned());

    // 18.16, through the sink: two flushes.
    let server = ClickHouseServer::spawn();
    let db = "lf_current";
    let cfg = config_for(&server, db);
    let migrated = migrate(&cfg).await.unwrap();
    let mut sink = ClickHouseSink::new(cfg.clone(), ClickHouseMetrics::unregistered()).unwrap();
    for b in 0..2 {
        batches.rows[b].iter().for_each(|r| sink.push(r));
        batches.annotations[b].iter().for_each(|a| sink.push_annotation(a));
        assert_eq!(sink.flush().await.unwrap().inserts, 6);
    }

    // 26.9: the migrations, then batch 0 through chdb-run's loader and batch 1 through
    // the sink's own insert statement (its column list), reading the file.
    let dir = tempfile::tempdir().unwrap();
    let mut steps = steps_of(&migrated.statements);
    for table in Table::ALL {
        let path = write_batch(dir.path(), &batches, table, 0);
        steps.push(ChdbStep::insert_rowbinary(format!("{db}.{}", table.name()), path));
    }
    for table in Table::ALL {
        let path = write_batch(dir.path(), &batches, table, 1);
        let insert = table.insert_sql(db);
        let head = insert.strip_suffix(" FORMAT RowBinary").expect("the sink inserts RowBinary");
        steps.push(ChdbStep::sql(format!("{head} FROM INFILE '{}' FORMAT RowBinary", path.display())));
    }
    let first_read = steps.len();
    for table in Table::ALL {
        steps.push(ChdbStep::query_format(table.select_latest_sql(db), "RowBinary"));
    }
    let t_chdb = Instant::now();
    let run: ChdbRun = chdb.run(&steps);
    let chdb_secs = t_chdb.elapsed().as_secs_f64();
    run.assert_all_ok();

    // Tables where FINAL had several versions of a key to choose from.
    let mut collapsed = Vec::new();
    for (i, table) in Table::ALL.into_iter().enumerate() {
        let current = decode_rows(table, run.bytes(first_read + i))
            .unwrap_or_else(|e| panic!("26.9 answered {table:?} in another layout: {e}"));
        let old = latest_rows(&cfg, table).await.unwrap();
        assert!(!old.is_empty(), "{table:?}");
        assert_eq!(current.len(), old.len(), "{table:?}: as many latest rows");
        // Exact equality, floats included: both servers return the stored f64 bits.
        for (c, o) in current.iter().zip(&old) {
            assert_eq!(c, o, "{table:?}: 26.9 and 18.16 differ");
        }
        // Byte for byte too: nothing hides in the decoding (a NaN read as null, say).
        let old_bytes = fetch(&server, &table.select_latest_sql(db), "RowBinary").await;
        assert!(run.bytes(first_read + i) == old_bytes.as_slice(), "{table:?}: the answers differ in bytes");
        if table == Table::Annotations {
            assert_eq!(current.len(), replayed.annotations.len(), "one row per annotated event");
            continue;
        }
        // And both hold the engine's last version of every key.
        let expected = latest_by_key(table, &all_rows);
        let inserted = all_rows.iter().filter(|r| Table::of_row(r) == table).count();
        if expected.len() < inserted {
            collapsed.push(table);
        }
        assert_same_rows(table, &expected, &by_key(table, current), &[]);
    }
    assert!(collapsed.contains(&Table::Window) && collapsed.contains(&Table::Session), "{collapsed:?}");
    let total: usize = all_rows.len() + replayed.annotations.len();
    eprintln!(
        "latest rows on 26.9 and 18.16: {total} rows, chdb run {chdb_secs:.1} s, whole test {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
