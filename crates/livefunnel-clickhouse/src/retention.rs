//! `[clickhouse.retention]`: how long result rows are kept.
//!
//! Window, breakdown and annotation tables are partitioned by month of their time
//! column (`window_start`, `ts`), so old data goes a whole month at a time:
//! - on servers with table TTL (ClickHouse 19.6 and later) the start-up sets
//!   `TTL <time> + toIntervalDay(days)` on each table (and removes it when the
//!   retention becomes 0), and the server deletes expired rows as it merges;
//! - on every server, `livefunnel prune` (and `run`, once a day) drops each month
//!   partition whose every row is older than the retention: the only way on 18.16,
//!   which has no TTL.
//!
//! Session rows are kept forever: one row per broadcast, and not partitioned, since a
//! session's start can move with a late `session_start` (two versions of one session
//! in two partitions would never collapse), and a TTL on that moving time would delete
//! a newer version before an older one.

use serde::{Deserialize, Serialize};

use crate::client::Conn;
use crate::config::ClickHouseConfig;
use crate::error::ClickHouseError;
use crate::migrate::MigrationTarget;
use crate::schema::Table;

/// Days rows are kept, per kind of table; 0 keeps them forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `room_window_stats`: the minute series and the hop windows.
    pub windows_days: u32,
    /// The source, plan and product breakdowns: most of the rows.
    pub breakdowns_days: u32,
    /// `annotations` (pins, lucky bags, session start and end).
    pub annotations_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig { windows_days: 400, breakdowns_days: 90, annotations_days: 400 }
    }
}

impl RetentionConfig {
    /// The retention of `table` in days and its time column; `None` when it is kept
    /// forever (sessions always; the others when set to 0).
    pub fn of(&self, table: Table) -> Option<(u32, &'static str)> {
        let (days, column) = match table {
            Table::Window => (self.windows_days, "window_start"),
            Table::Source | Table::Plan | Table::Product => (self.breakdowns_days, "window_start"),
            Table::Annotations => (self.annotations_days, "ts"),
            Table::Session => return None,
        };
        (days > 0).then_some((days, column))
    }
}

/// Whether `version` (`SELECT version()`, e.g. `18.16.1`, `26.9.2.1`) has table TTL.
pub fn has_ttl(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (19, 6)
}

/// The TTL clause of `table` under `cfg`, as the server writes it in `engine_full`.
pub fn ttl_clause(cfg: &RetentionConfig, table: Table) -> Option<String> {
    cfg.of(table).map(|(days, column)| format!("TTL {column} + toIntervalDay({days})"))
}

/// Sets, changes or removes each table's TTL to match `cfg` (servers with TTL only;
/// nothing on 18.16). Reads `engine_full` first, so an unchanged retention sends no
/// `ALTER`. Returns the statements sent.
pub async fn apply_ttl_on<T: MigrationTarget>(
    target: &T,
    database: &str,
    server_version: &str,
    cfg: &RetentionConfig,
) -> Result<Vec<String>, ClickHouseError> {
    let mut sent = Vec::new();
    if !has_ttl(server_version) {
        return Ok(sent);
    }
    for table in Table::ALL {
        let read = format!(
            "SELECT engine_full FROM system.tables WHERE database = '{database}' AND name = '{}'",
            table.name()
        );
        let engine = crate::migrate::read_system(target, &read).await?.join(" ");
        let has = engine.contains(" TTL ");
        let sql = match ttl_clause(cfg, table) {
            Some(clause) if engine.contains(&clause) => continue,
            Some(clause) => format!("ALTER TABLE `{database}`.`{}` MODIFY {clause}", table.name()),
            None if has => format!("ALTER TABLE `{database}`.`{}` REMOVE TTL", table.name()),
            None => continue,
        };
        tracing::info!(table = table.name(), statement = %sql, "setting the retention of a clickhouse table");
        target.execute(&sql).await?;
        sent.push(sql);
    }
    Ok(sent)
}

/// The schema a fresh install ends up with, as one SQL file for DBAs to review:
/// what [`crate::migrate`] creates on an empty server (the create statements of
/// [`crate::migration_statements`]), then the TTLs of `retention` that the start-up
/// sets on servers that have TTL. `deploy/clickhouse/schema.sql` is this for the
/// defaults (a test checks it).
pub fn schema_sql(database: &str, retention: &RetentionConfig) -> String {
    use crate::migrate::{migration_statements, StatementRole, MIGRATIONS};
    let creates: Vec<u32> = MIGRATIONS.iter().filter(|m| m.creates_table()).map(|m| m.version).collect();
    let mut out = String::from(
        "-- livefunnel's ClickHouse schema, generated from the migrations\n\
         -- (crates/livefunnel-clickhouse; `livefunnel migrate` applies it, with the version\n\
         -- table it keeps). Regenerate: UPDATE_SCHEMA=1 cargo test -p livefunnel-clickhouse --test schema_file\n\n",
    );
    for st in migration_statements(database) {
        let wanted = match st.role {
            StatementRole::Setup => true,
            StatementRole::Apply(v) => creates.contains(&v),
            _ => false,
        };
        if wanted {
            out.push_str(&st.sql);
            out.push_str(";\n\n");
        }
    }
    out.push_str(
        "-- Retention (clickhouse.retention, defaults), set by the start-up on ClickHouse 19.6\n\
         -- and later; on older servers `livefunnel prune` drops expired month partitions.\n",
    );
    for table in Table::ALL {
        if let Some(clause) = ttl_clause(retention, table) {
            out.push_str(&format!("ALTER TABLE `{database}`.`{}` MODIFY {clause};\n", table.name()));
        }
    }
    out
}

/// A month partition dropped by [`prune_on`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPartition {
    pub table: Table,
    /// `YYYYMM`.
    pub month: u32,
}

/// Drops every month partition of every table whose rows are all older than the
/// table's retention on `today` (days since 1970-01-01, UTC): month `M` goes once the
/// first day of the next month plus the retention is not after today.
pub async fn prune_on<T: MigrationTarget>(
    target: &T,
    database: &str,
    cfg: &RetentionConfig,
    today: i64,
) -> Result<Vec<DroppedPartition>, ClickHouseError> {
    let mut dropped = Vec::new();
    for table in Table::ALL {
        let Some((days, _)) = cfg.of(table) else { continue };
        let read = format!(
            "SELECT DISTINCT partition FROM system.parts WHERE database = '{database}' AND table = '{}' \
             AND active ORDER BY partition",
            table.name()
        );
        for line in crate::migrate::read_system(target, &read).await? {
            let month: u32 = line.trim_matches('\'').parse().map_err(|_| {
                ClickHouseError::Protocol(format!(
                    "{} has a partition {line:?} that is not a month",
                    table.name()
                ))
            })?;
            if !month_expired(month, days, today) {
                continue;
            }
            let sql = format!("ALTER TABLE `{database}`.`{}` DROP PARTITION {month}", table.name());
            tracing::info!(
                table = table.name(),
                month,
                retention_days = days,
                "dropping an expired partition"
            );
            target.execute(&sql).await?;
            dropped.push(DroppedPartition { table, month });
        }
    }
    Ok(dropped)
}

/// [`prune_on`] over the HTTP interface, with today's date from the wall clock.
pub async fn prune(cfg: &ClickHouseConfig, now_ms: i64) -> Result<Vec<DroppedPartition>, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    prune_on(&conn, &cfg.database, &cfg.retention, now_ms.div_euclid(86_400_000)).await
}

/// Whether every day of month `yyyymm` is more than `days` before `today`.
pub fn month_expired(yyyymm: u32, days: u32, today: i64) -> bool {
    let (year, month) = ((yyyymm / 100) as i64, (yyyymm % 100) as i64);
    if !(1..=12).contains(&month) {
        return false;
    }
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    days_from_civil(next_year, next_month, 1) + i64::from(days) <= today
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 5), 20_792);
        assert_eq!(days_from_civil(2024, 2, 29) + 1, days_from_civil(2024, 3, 1));
    }

    #[test]
    fn a_month_expires_once_its_last_day_is_older_than_the_retention() {
        let today = days_from_civil(2026, 12, 5);
        // November 2026 ends on the 30th: 90 days after December 1 is March 1, 2027.
        assert!(!month_expired(202611, 90, today));
        // August 2026: September 1 + 90 days = November 30 <= December 5.
        assert!(month_expired(202608, 90, today));
        // September 2026: October 1 + 90 = December 30 > December 5.
        assert!(!month_expired(202609, 90, today));
        // Exactly on the boundary: expired.
        assert!(month_expired(202609, 65, today));
        assert!(!month_expired(202609, 66, today));
        assert!(!month_expired(202613, 1, today), "not a month");
    }

    #[test]
    fn ttl_follows_the_server_version_and_the_config() {
        assert!(!has_ttl("18.16.1") && !has_ttl("19.5.3.8") && has_ttl("19.6.2.11") && has_ttl("26.9.2.1"));
        let cfg = RetentionConfig::default();
        assert_eq!(ttl_clause(&cfg, Table::Window).as_deref(), Some("TTL window_start + toIntervalDay(400)"));
        assert_eq!(ttl_clause(&cfg, Table::Product).as_deref(), Some("TTL window_start + toIntervalDay(90)"));
        assert_eq!(ttl_clause(&cfg, Table::Annotations).as_deref(), Some("TTL ts + toIntervalDay(400)"));
        assert_eq!(ttl_clause(&cfg, Table::Session), None, "sessions are kept forever");
        let forever = RetentionConfig { windows_days: 0, ..cfg };
        assert_eq!(ttl_clause(&forever, Table::Window), None);
    }
}
