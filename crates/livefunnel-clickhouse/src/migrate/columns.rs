//! Columns: migration 7's `ended_by_timeout`, and the reconciliation that adds the
//! measures the core gained since a table was created. Both place a new column where
//! a table created today has it, through [`placed`].

use super::{idempotent, MigrationReport, MigrationTarget};
use crate::error::ClickHouseError;
use crate::schema::{Column, ColumnType, Table};

/// A table's columns as `name\ttype` lines, in table order.
pub(super) fn columns_sql(database: &str, table: Table) -> String {
    format!(
        "SELECT name, type FROM system.columns WHERE database = '{database}' AND table = '{}'",
        table.name()
    )
}

/// `(name, type)` of each `name\ttype` line of [`columns_sql`]'s answer.
pub(super) fn parse_columns(lines: &[String]) -> Vec<(String, String)> {
    lines.iter().filter_map(|l| l.split_once('\t').map(|(n, t)| (unescape_tsv(n), unescape_tsv(t)))).collect()
}

/// Column `name` of `table` and the column to add it after: the nearest column before
/// it in [`Table::columns`] that the table has (`existing`; every one when `None`),
/// `None` when there is none (it goes last).
pub(super) fn placed(
    table: Table,
    name: &str,
    existing: Option<&[(String, String)]>,
) -> (Column, Option<String>) {
    let all = table.columns();
    let at = all.iter().position(|c| c.name == name).expect("a column of today's schema");
    let has = |c: &Column| existing.is_none_or(|e| e.iter().any(|(n, _)| *n == c.name));
    let after = all[..at].iter().rev().find(|c| has(c)).map(|c| c.name.clone());
    (all[at].clone(), after)
}

/// Migration 7's kind of step: adds `name` to `table` unless it is there (a table
/// created since has it) or the table is missing (the reconciliation creates it).
pub(super) async fn add_one<T: MigrationTarget>(
    target: &T,
    database: &str,
    table: Table,
    name: &str,
    existing: &[(String, String)],
    report: &mut MigrationReport,
) -> Result<(), ClickHouseError> {
    if existing.is_empty() || existing.iter().any(|(n, _)| n == name) {
        return Ok(());
    }
    let (column, after) = placed(table, name, Some(existing));
    add(target, database, table, &column, after.as_deref(), report).await
}

async fn add<T: MigrationTarget>(
    target: &T,
    database: &str,
    table: Table,
    column: &Column,
    after: Option<&str>,
    report: &mut MigrationReport,
) -> Result<(), ClickHouseError> {
    let sql = add_column_sql(database, table, column, after);
    tracing::info!(table = table.name(), column = %column.name, after, "adding a clickhouse column");
    idempotent(target, &sql).await?;
    report.statements.push(sql);
    report.added_columns.push(format!("{}.{}", table.name(), column.name));
    Ok(())
}

/// Adds the columns the core has gained since `table` was created, given the
/// table's `name\ttype` lines from `system.columns`.
pub(super) async fn reconcile<T: MigrationTarget>(
    target: &T,
    database: &str,
    table: Table,
    lines: &[String],
    report: &mut MigrationReport,
) -> Result<(), ClickHouseError> {
    let mut existing = parse_columns(lines);
    if existing.is_empty() {
        // Recorded as migrated but dropped by hand since: create it again, empty.
        tracing::warn!(table = table.name(), database, "clickhouse table missing, creating it");
        let sql = table.create_sql(database);
        idempotent(target, &sql).await?;
        report.statements.push(sql);
        return Ok(());
    }
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
                let (column, after) = placed(table, &column.name, Some(&existing));
                add(target, database, table, &column, after.as_deref(), report).await?;
                existing.push((column.name, column.ty.sql().to_string()));
            }
        }
    }
    Ok(())
}

/// Adds `column` right after `after`, where a table created today has it; last
/// when `after` is `None` (the table's first column is missing).
pub(super) fn add_column_sql(database: &str, table: Table, column: &Column, after: Option<&str>) -> String {
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
pub(super) fn same_type(found: &str, expected: ColumnType) -> bool {
    found == expected.sql() || (expected == ColumnType::DateTime && found.starts_with("DateTime"))
}

pub(super) fn unescape_tsv(s: &str) -> String {
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
