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
use crate::schema::{ColumnType, Table};

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
}

/// ClickHouse codes meaning "it exists already": a concurrent migration won the race.
const ALREADY_EXISTS: &[u32] = &[
    44, // ILLEGAL_COLUMN: "column with this name already exists" (ADD COLUMN)
    15, // DUPLICATE_COLUMN
    57, // TABLE_ALREADY_EXISTS
    82, // DATABASE_ALREADY_EXISTS
];

/// Creates the database and tables of contract §5, or brings them up to date.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<MigrationReport, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    let db = &cfg.database;
    let mut report = MigrationReport { server_version: conn.server_version().await?, ..Default::default() };
    idempotent(&conn, &format!("CREATE DATABASE IF NOT EXISTS `{db}`")).await?;
    idempotent(
        &conn,
        &format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`schema_migrations` \
             (`version` UInt32, `name` String, `applied_at` DateTime) \
             ENGINE = ReplacingMergeTree() ORDER BY `version`"
        ),
    )
    .await?;
    let done = applied_versions(cfg).await?;
    for m in MIGRATIONS {
        if done.contains(&m.version) {
            report.already_applied.push(m.version);
            continue;
        }
        tracing::info!(version = m.version, name = m.name, database = %db, "applying clickhouse migration");
        idempotent(&conn, &m.table.create_sql(db)).await?;
        conn.execute(&format!(
            "INSERT INTO `{db}`.`schema_migrations` (`version`, `name`, `applied_at`) VALUES ({}, '{}', now())",
            m.version, m.name
        ))
        .await?;
        report.applied.push(m.version);
    }
    for table in Table::ALL {
        reconcile_columns(&conn, table, &mut report.added_columns).await?;
    }
    Ok(report)
}

/// Versions recorded in `schema_migrations`, ascending, each once.
pub async fn applied_versions(cfg: &ClickHouseConfig) -> Result<Vec<u32>, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    let sql =
        format!("SELECT DISTINCT `version` FROM `{}`.`schema_migrations` ORDER BY `version`", cfg.database);
    conn.fetch_lines(&sql)
        .await?
        .iter()
        .map(|l| l.parse().map_err(|_| ClickHouseError::Protocol(format!("bad migration version {l:?}"))))
        .collect()
}

async fn idempotent(conn: &Conn, sql: &str) -> Result<(), ClickHouseError> {
    match conn.execute(sql).await {
        Err(e) if e.code().is_some_and(|c| ALREADY_EXISTS.contains(&c)) => {
            tracing::debug!(error = %e, "object created concurrently");
            Ok(())
        }
        other => other,
    }
}

/// Adds the columns the core has gained since `table` was created.
async fn reconcile_columns(
    conn: &Conn,
    table: Table,
    added: &mut Vec<String>,
) -> Result<(), ClickHouseError> {
    let db = &conn.cfg.database;
    let sql = format!(
        "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{}'",
        table.name()
    );
    let existing: Vec<(String, String)> = conn
        .fetch_lines(&sql)
        .await?
        .iter()
        .filter_map(|l| l.split_once('\t').map(|(n, t)| (unescape_tsv(n), unescape_tsv(t))))
        .collect();
    if existing.is_empty() {
        // Recorded as migrated but dropped by hand since: create it again, empty.
        tracing::warn!(table = table.name(), database = %db, "clickhouse table missing, creating it");
        return idempotent(conn, &table.create_sql(db)).await;
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
                let position = match &previous {
                    Some(p) => format!(" AFTER `{p}`"),
                    None => String::new(),
                };
                let sql = format!(
                    "ALTER TABLE `{db}`.`{}` ADD COLUMN `{}` {}{position}",
                    table.name(),
                    column.name,
                    column.ty.sql()
                );
                tracing::info!(table = table.name(), column = %column.name, "adding a clickhouse column");
                idempotent(conn, &sql).await?;
                added.push(format!("{}.{}", table.name(), column.name));
            }
        }
        previous = Some(column.name);
    }
    Ok(())
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
    fn tsv_types_are_unescaped() {
        assert_eq!(unescape_tsv(r"DateTime(\'UTC\')"), "DateTime('UTC')");
        assert_eq!(unescape_tsv(r"a\tb\\c"), "a\tb\\c");
        assert!(same_type("DateTime('UTC')", ColumnType::DateTime));
        assert!(same_type("DateTime", ColumnType::DateTime));
        assert!(!same_type("UInt32", ColumnType::UInt64));
    }
}
