//! Versioned, idempotent migrations, run at start-up.
//!
//! Every statement is `IF NOT EXISTS`, and a version is recorded only after its
//! statements succeeded, so an interrupted run, or two processes migrating at once,
//! are harmless. After the numbered migrations, each table's columns are compared
//! with [`Table::columns`]: a measure added to the core since the table was created
//! is added as a column (`ALTER TABLE ... ADD COLUMN`), and a column whose type
//! differs stops the start-up with an error saying how to fix it.

use crate::client::Conn;
use crate::config::ClickHouseConfig;
use crate::error::ClickHouseError;
use crate::schema::{Column, ColumnType, Table};

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// The table it creates. Later migrations may need other kinds of steps; then
    /// this becomes an enum.
    table: Table,
}

/// Every migration, in version order. Never renumber or edit an applied one: add one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "create_room_window_stats", table: Table::Window },
    Migration { version: 2, name: "create_room_source_window_stats", table: Table::Source },
    Migration { version: 3, name: "create_room_plan_window_stats", table: Table::Plan },
    Migration { version: 4, name: "create_room_product_window_stats", table: Table::Product },
    Migration { version: 5, name: "create_room_session_stats", table: Table::Session },
    Migration { version: 6, name: "create_annotations", table: Table::Annotations },
];

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// `SELECT version()`, e.g. `18.16.1`.
    pub server_version: String,
    /// Versions applied by this run.
    pub applied: Vec<u32>,
    /// Versions found already applied.
    pub already_applied: Vec<u32>,
    /// `table.column` added because the core gained a measure.
    pub added_columns: Vec<String>,
    /// Every statement this run sent after `SELECT version()`, in order.
    pub statements: Vec<String>,
}

impl MigrationReport {
    /// [`migration_statements`]: what a run sends, known without a server.
    pub fn planned_statements(database: &str) -> Vec<MigrationStatement> {
        migration_statements(database)
    }
}

/// What a statement of [`migration_statements`] is for, i.e. what [`migrate`] does
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementRole {
    /// Creates the database or the version table: sent by every run, "already
    /// exists" tolerated.
    Setup,
    /// Reads the versions recorded in `schema_migrations` (one a line).
    AppliedVersions,
    /// Creates what migration `n` creates; skipped once `n` is recorded.
    Apply(u32),
    /// Records migration `n` in `schema_migrations`, once its `Apply` succeeded.
    Record(u32),
    /// Reads a table's columns (`name`, `type`) to add those the core has gained.
    Columns(Table),
}

/// One statement [`migrate`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatement {
    pub role: StatementRole,
    pub sql: String,
}

impl MigrationStatement {
    /// The migration the statement applies or records, if any.
    pub fn version(&self) -> Option<u32> {
        match self.role {
            StatementRole::Apply(v) | StatementRole::Record(v) => Some(v),
            _ => None,
        }
    }

    /// Whether [`migrate`] reads rows from its answer (a `SELECT`).
    pub fn is_read(&self) -> bool {
        matches!(self.role, StatementRole::AppliedVersions | StatementRole::Columns(_))
    }
}

/// Every statement [`migrate`] sends after `SELECT version()`, in order, built without
/// a server. A run sends all of them to a server without `database`; once migrated,
/// all but the `Apply` and `Record` of the recorded versions. After a table's
/// `Columns` read it may also send `ALTER TABLE ... ADD COLUMN` (a measure added
/// since) or the table's `CREATE TABLE` again (dropped by hand), as
/// [`MigrationReport::statements`] shows.
pub fn migration_statements(database: &str) -> Vec<MigrationStatement> {
    let db = database;
    let st = |role, sql: String| MigrationStatement { role, sql };
    let mut out = vec![
        st(StatementRole::Setup, format!("CREATE DATABASE IF NOT EXISTS `{db}`")),
        st(
            StatementRole::Setup,
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`schema_migrations` \
                 (`version` UInt32, `name` String, `applied_at` DateTime) \
                 ENGINE = ReplacingMergeTree() ORDER BY `version`"
            ),
        ),
        st(StatementRole::AppliedVersions, applied_versions_sql(db)),
    ];
    for m in MIGRATIONS {
        out.push(st(StatementRole::Apply(m.version), m.table.create_sql(db)));
        out.push(st(
            StatementRole::Record(m.version),
            format!(
                "INSERT INTO `{db}`.`schema_migrations` (`version`, `name`, `applied_at`) VALUES ({}, '{}', now())",
                m.version, m.name
            ),
        ));
    }
    for table in Table::ALL {
        out.push(st(
            StatementRole::Columns(table),
            format!(
                "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{}'",
                table.name()
            ),
        ));
    }
    out
}

/// Creates the database and tables of contract §5, or brings them up to date.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<MigrationReport, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    let db = &cfg.database;
    let mut report = MigrationReport { server_version: conn.server_version().await?, ..Default::default() };
    let mut done = Vec::new();
    for statement in migration_statements(db) {
        let sql = &statement.sql;
        match statement.role {
            StatementRole::Setup => idempotent(&conn, sql).await?,
            StatementRole::AppliedVersions => done = parse_versions(&conn.fetch_lines(sql).await?)?,
            StatementRole::Apply(version) if done.contains(&version) => {
                report.already_applied.push(version);
                continue;
            }
            StatementRole::Record(version) if done.contains(&version) => continue,
            StatementRole::Apply(version) => {
                let name = MIGRATIONS.iter().find(|m| m.version == version).map_or("", |m| m.name);
                tracing::info!(version, name, database = %db, "applying clickhouse migration");
                idempotent(&conn, sql).await?;
            }
            StatementRole::Record(version) => {
                conn.execute(sql).await?;
                report.applied.push(version);
            }
            StatementRole::Columns(table) => {
                let existing = conn.fetch_lines(sql).await?;
                report.statements.push(statement.sql);
                reconcile_columns(&conn, table, &existing, &mut report).await?;
                continue;
            }
        }
        report.statements.push(statement.sql);
    }
    Ok(report)
}

fn applied_versions_sql(database: &str) -> String {
    format!("SELECT DISTINCT `version` FROM `{database}`.`schema_migrations` ORDER BY `version`")
}

/// Versions recorded in `schema_migrations`, ascending, each once.
pub async fn applied_versions(cfg: &ClickHouseConfig) -> Result<Vec<u32>, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    parse_versions(&conn.fetch_lines(&applied_versions_sql(&cfg.database)).await?)
}

fn parse_versions(lines: &[String]) -> Result<Vec<u32>, ClickHouseError> {
    lines
        .iter()
        .map(|l| l.parse().map_err(|_| ClickHouseError::Protocol(format!("bad migration version {l:?}"))))
        .collect()
}

/// ClickHouse codes meaning "it exists already": a concurrent migration won the race.
const ALREADY_EXISTS: &[u32] = &[
    44, // ILLEGAL_COLUMN: "column with this name already exists" (ADD COLUMN)
    15, // DUPLICATE_COLUMN
    57, // TABLE_ALREADY_EXISTS
    82, // DATABASE_ALREADY_EXISTS
];

async fn idempotent(conn: &Conn, sql: &str) -> Result<(), ClickHouseError> {
    match conn.execute(sql).await {
        Err(e) if e.code().is_some_and(|c| ALREADY_EXISTS.contains(&c)) => {
            tracing::debug!(error = %e, "object created concurrently");
            Ok(())
        }
        other => other,
    }
}

/// Adds the columns the core has gained since `table` was created, given the
/// table's `name\ttype` lines from `system.columns`.
async fn reconcile_columns(
    conn: &Conn,
    table: Table,
    lines: &[String],
    report: &mut MigrationReport,
) -> Result<(), ClickHouseError> {
    let db = &conn.cfg.database;
    let existing: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.split_once('\t').map(|(n, t)| (unescape_tsv(n), unescape_tsv(t))))
        .collect();
    if existing.is_empty() {
        // Recorded as migrated but dropped by hand since: create it again, empty.
        tracing::warn!(table = table.name(), database = %db, "clickhouse table missing, creating it");
        let sql = table.create_sql(db);
        idempotent(conn, &sql).await?;
        report.statements.push(sql);
        return Ok(());
    }
    let mut previous: Option<String> = None;
    for column in table.columns() {
        match existing.iter().find(|(name, _)| *name == column.name) {
            Some((_, ty)) if same_type(ty, column.ty) => {}
            Some((_, ty)) => {
                return Err(ClickHouseError::ColumnType {
                    table: table.name().to_string(),
                    column: column.name,
                    found: ty.clone(),
                    expected: column.ty.sql().to_string(),
                })
            }
            None => {
                let sql = add_column_sql(db, table, &column, previous.as_deref());
                tracing::info!(table = table.name(), column = %column.name, "adding a clickhouse column");
                idempotent(conn, &sql).await?;
                report.statements.push(sql);
                report.added_columns.push(format!("{}.{}", table.name(), column.name));
            }
        }
        previous = Some(column.name);
    }
    Ok(())
}

/// Adds `column` right after `after`, where a table created today has it; last
/// when `after` is `None` (the table's first column is missing).
fn add_column_sql(database: &str, table: Table, column: &Column, after: Option<&str>) -> String {
    let position = after.map(|p| format!(" AFTER `{p}`")).unwrap_or_default();
    format!(
        "ALTER TABLE `{database}`.`{}` ADD COLUMN `{}` {}{position}",
        table.name(),
        column.name,
        column.ty.sql()
    )
}

/// `DateTime` columns created without the time zone (by hand, say) store the same
/// seconds; the zone only changes how they print.
fn same_type(found: &str, expected: ColumnType) -> bool {
    found == expected.sql() || (expected == ColumnType::DateTime && found.starts_with("DateTime"))
}

fn unescape_tsv(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps_and_cover_every_table() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(m.name.ends_with(m.table.name()), "{}", m.name);
        }
        for table in Table::ALL {
            assert!(MIGRATIONS.iter().any(|m| m.table == table), "{table:?} has no migration");
        }
    }

    #[test]
    fn statements_create_record_then_read_columns_in_migration_order() {
        let all = migration_statements("lf");
        assert_eq!(all.len(), 3 + 2 * MIGRATIONS.len() + Table::ALL.len());
        assert_eq!(all[0].sql, "CREATE DATABASE IF NOT EXISTS `lf`");
        assert!(
            all[1].sql.starts_with("CREATE TABLE IF NOT EXISTS `lf`.`schema_migrations` "),
            "{}",
            all[1].sql
        );
        assert_eq!(all[2].role, StatementRole::AppliedVersions);
        assert!(all[..3].iter().all(|s| s.version().is_none()));
        for (m, pair) in MIGRATIONS.iter().zip(all[3..].chunks(2)) {
            assert_eq!(pair[0].role, StatementRole::Apply(m.version));
            assert_eq!(pair[0].sql, m.table.create_sql("lf"));
            assert_eq!(pair[1].version(), Some(m.version));
            assert!(
                pair[1].sql.ends_with(&format!("VALUES ({}, '{}', now())", m.version, m.name)),
                "{}",
                pair[1].sql
            );
            assert!(!pair[0].is_read() && !pair[1].is_read());
        }
        let reads: Vec<Table> = all[3 + 2 * MIGRATIONS.len()..]
            .iter()
            .map(|s| match s.role {
                StatementRole::Columns(t) => t,
                other => panic!("{other:?} after the migrations"),
            })
            .collect();
        assert_eq!(reads, Table::ALL);
        assert_eq!(MigrationReport::planned_statements("lf"), all);
        let gpm = Table::Window.columns().into_iter().find(|c| c.name == "gpm").unwrap();
        assert_eq!(
            add_column_sql("lf", Table::Window, &gpm, Some("uv_value")),
            "ALTER TABLE `lf`.`room_window_stats` ADD COLUMN `gpm` Nullable(Float64) AFTER `uv_value`"
        );
    }

    #[test]
    fn tsv_types_are_unescaped() {
        assert_eq!(unescape_tsv(r"DateTime(\'UTC\')"), "DateTime('UTC')");
        assert_eq!(unescape_tsv(r"a\tb\\c"), "a\tb\\c");
        assert!(same_type("DateTime('UTC')", ColumnType::DateTime));
        assert!(same_type("DateTime", ColumnType::DateTime));
        assert!(!same_type("UInt32", ColumnType::UInt64));
    }
}
