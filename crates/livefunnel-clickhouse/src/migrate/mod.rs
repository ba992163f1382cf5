//! Versioned, idempotent migrations, run at start-up.
//!
//! A version is recorded only after its statements succeeded, and every statement
//! either is idempotent (`IF NOT EXISTS`, "already exists" tolerated) or is chosen
//! from what the server holds right now, so an interrupted run, or two processes
//! migrating at once, are harmless. Migrations 1 to 6 create the tables, 7 adds
//! `room_session_stats.ended_by_timeout`, 8 to 13 move each table created with
//! `org_id` in its sort key to today's key ([`rekey`]). After the numbered
//! migrations, each table's columns are compared with [`Table::columns`]: a measure
//! added to the core since the table was created is added as a column (`ALTER TABLE
//! ... ADD COLUMN`), and a column whose type differs stops the start-up with an error
//! saying how to fix it.

mod columns;
mod rekey;

use std::future::Future;

use crate::client::Conn;
use crate::config::ClickHouseConfig;
use crate::error::ClickHouseError;
use crate::schema::Table;

pub use rekey::{MoveStep, MovedTable};

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    step: Step,
}

/// What a migration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Creates the table with today's [`Table::create_sql`].
    Create(Table),
    /// Adds a column of [`Table::columns`] where a table created today has it.
    AddColumn(Table, &'static str),
    /// Moves the rows of a table created with another sort key into one with today's
    /// (contract §5); nothing to do on a table created with today's key.
    Rekey(Table),
}

impl Migration {
    /// Whether it creates its table (the others change one that exists).
    pub fn creates_table(&self) -> bool {
        matches!(self.step, Step::Create(_))
    }

    /// The table the migration changes.
    pub fn table(&self) -> Table {
        match self.step {
            Step::Create(t) | Step::AddColumn(t, _) | Step::Rekey(t) => t,
        }
    }
}

/// Every migration, in version order. Never renumber or edit an applied one: add one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "create_room_window_stats", step: Step::Create(Table::Window) },
    Migration { version: 2, name: "create_room_source_window_stats", step: Step::Create(Table::Source) },
    Migration { version: 3, name: "create_room_plan_window_stats", step: Step::Create(Table::Plan) },
    Migration { version: 4, name: "create_room_product_window_stats", step: Step::Create(Table::Product) },
    Migration { version: 5, name: "create_room_session_stats", step: Step::Create(Table::Session) },
    Migration { version: 6, name: "create_annotations", step: Step::Create(Table::Annotations) },
    Migration {
        version: 7,
        name: "add_room_session_stats_ended_by_timeout",
        step: Step::AddColumn(Table::Session, "ended_by_timeout"),
    },
    Migration { version: 8, name: "rekey_room_window_stats", step: Step::Rekey(Table::Window) },
    Migration { version: 9, name: "rekey_room_source_window_stats", step: Step::Rekey(Table::Source) },
    Migration { version: 10, name: "rekey_room_plan_window_stats", step: Step::Rekey(Table::Plan) },
    Migration { version: 11, name: "rekey_room_product_window_stats", step: Step::Rekey(Table::Product) },
    Migration { version: 12, name: "rekey_room_session_stats", step: Step::Rekey(Table::Session) },
    Migration { version: 13, name: "rekey_annotations", step: Step::Rekey(Table::Annotations) },
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
    /// `table.column` added, by migration 7 or because the core gained a measure.
    pub added_columns: Vec<String>,
    /// Tables this run moved to today's sort key, each with the name the table as it
    /// was is kept under.
    pub moved: Vec<MovedTable>,
    /// Every statement this run sent after `SELECT version()`, in order.
    pub statements: Vec<String>,
    /// `ALTER TABLE ... MODIFY TTL` / `REMOVE TTL` sent to match
    /// `clickhouse.retention` (servers with TTL only; also in `statements`).
    pub retention: Vec<String>,
}

impl MigrationReport {
    /// [`migration_statements`]: what a run can send, known without a server.
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
    /// Reads what migration `n` decides on (a table's columns, or its sort key and
    /// the tables a move leaves); sent until `n` is recorded.
    Inspect(u32),
    /// Does what migration `n` does when the server lacks it: creates its table, or
    /// adds its column (only when [`StatementRole::Inspect`] found it missing).
    Apply(u32),
    /// A step of migration `n`'s move to today's sort key, sent as the tables found
    /// require (see [`MoveStep`]): none on a table created with today's key.
    Move(u32, MoveStep),
    /// Records migration `n` in `schema_migrations`, once it is done.
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
    /// The migration the statement belongs to, if any.
    pub fn version(&self) -> Option<u32> {
        match self.role {
            StatementRole::Inspect(v)
            | StatementRole::Apply(v)
            | StatementRole::Move(v, _)
            | StatementRole::Record(v) => Some(v),
            _ => None,
        }
    }

    /// Whether [`migrate`] reads rows from its answer (a `SELECT`).
    pub fn is_read(&self) -> bool {
        match self.role {
            StatementRole::AppliedVersions | StatementRole::Inspect(_) | StatementRole::Columns(_) => true,
            StatementRole::Move(_, step) => step.is_read(),
            _ => false,
        }
    }
}

/// Every statement [`migrate`] can send after `SELECT version()`, in order, built
/// without a server. On a server without `database` a run sends all of them but the
/// [`StatementRole::Move`] steps (tables created today already have today's key); once
/// migrated, only the `Setup`, `AppliedVersions` and `Columns` ones. On a database
/// created by an older release it sends the `Apply` and `Move` steps its tables need.
/// After a table's `Columns` read it may also send `ALTER TABLE ... ADD COLUMN` (a
/// measure added since) or the table's `CREATE TABLE` again (dropped by hand), as
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
        let v = m.version;
        match m.step {
            Step::Create(table) => out.push(st(StatementRole::Apply(v), table.create_sql(db))),
            Step::AddColumn(table, column) => {
                out.push(st(StatementRole::Inspect(v), columns::columns_sql(db, table)));
                let (column, after) = columns::placed(table, column, None);
                let sql = columns::add_column_sql(db, table, &column, after.as_deref());
                out.push(st(StatementRole::Apply(v), sql));
            }
            Step::Rekey(table) => {
                let names = rekey::Names::new(table, v);
                out.push(st(StatementRole::Inspect(v), names.state_sql(db)));
                for step in MoveStep::ALL {
                    out.push(st(StatementRole::Move(v, step), names.sql(db, step)));
                }
            }
        }
        out.push(st(
            StatementRole::Record(v),
            format!(
                "INSERT INTO `{db}`.`schema_migrations` (`version`, `name`, `applied_at`) VALUES ({v}, '{}', now())",
                m.name
            ),
        ));
    }
    for table in Table::ALL {
        out.push(st(StatementRole::Columns(table), columns::columns_sql(db, table)));
    }
    out
}

/// Where [`migrate_on`] sends its statements. [`migrate`] uses the HTTP interface;
/// tests drive other engines (current ClickHouse in process) through the same code.
pub trait MigrationTarget: Sync {
    /// Runs a statement that answers nothing, within the request time limit.
    fn execute(&self, sql: &str) -> impl Future<Output = Result<(), ClickHouseError>> + Send;
    /// Runs a statement that copies a whole table, within the migration time limit
    /// (`clickhouse.migration_timeout`).
    fn execute_long(&self, sql: &str) -> impl Future<Output = Result<(), ClickHouseError>> + Send;
    /// Runs a query and answers its `TabSeparated` lines.
    fn fetch_lines(&self, sql: &str) -> impl Future<Output = Result<Vec<String>, ClickHouseError>> + Send;
}

impl MigrationTarget for Conn {
    fn execute(&self, sql: &str) -> impl Future<Output = Result<(), ClickHouseError>> + Send {
        Conn::execute(self, sql)
    }

    fn execute_long(&self, sql: &str) -> impl Future<Output = Result<(), ClickHouseError>> + Send {
        self.execute_within(sql, self.cfg.migration_timeout.as_std())
    }

    fn fetch_lines(&self, sql: &str) -> impl Future<Output = Result<Vec<String>, ClickHouseError>> + Send {
        Conn::fetch_lines(self, sql)
    }
}

/// Creates the database and tables of contract §5, or brings them up to date, then
/// sets each table's TTL to `clickhouse.retention` where the server has TTL.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<MigrationReport, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    let mut report = migrate_on(&conn, &cfg.database).await?;
    let sent =
        crate::retention::apply_ttl_on(&conn, &cfg.database, &report.server_version, &cfg.retention).await?;
    report.statements.extend(sent.iter().cloned());
    report.retention = sent;
    Ok(report)
}

/// [`migrate`] through any [`MigrationTarget`]; `database` must be a plain identifier.
pub async fn migrate_on<T: MigrationTarget>(
    target: &T,
    database: &str,
) -> Result<MigrationReport, ClickHouseError> {
    debug_assert!(crate::config::is_identifier(database), "{database:?}");
    let db = database;
    let version = target.fetch_lines("SELECT version()").await?;
    let server_version = version
        .into_iter()
        .next()
        .ok_or_else(|| ClickHouseError::Protocol("empty answer to SELECT version()".into()))?;
    let mut report = MigrationReport { server_version, ..Default::default() };
    let mut done = Vec::new();
    for statement in migration_statements(db) {
        let sql = &statement.sql;
        if statement.version().is_some_and(|v| done.contains(&v)) {
            if let StatementRole::Record(v) = statement.role {
                report.already_applied.push(v);
            }
            continue;
        }
        match statement.role {
            StatementRole::Setup => idempotent(target, sql).await?,
            StatementRole::AppliedVersions => done = parse_versions(&target.fetch_lines(sql).await?)?,
            StatementRole::Inspect(version) => {
                let m = migration(version);
                tracing::info!(version, name = m.name, database = %db, "applying clickhouse migration");
                match m.step {
                    Step::AddColumn(table, column) => {
                        report.statements.push(statement.sql.clone());
                        let existing = columns::parse_columns(&read_system(target, sql).await?);
                        columns::add_one(target, db, table, column, &existing, &mut report).await?;
                    }
                    Step::Rekey(table) => rekey::rekey(target, db, table, version, &mut report).await?,
                    Step::Create(_) => unreachable!("create migrations have nothing to inspect"),
                }
                continue;
            }
            StatementRole::Apply(version) => {
                // Inspected migrations send their own statements (above).
                let Step::Create(_) = migration(version).step else { continue };
                tracing::info!(version, name = migration(version).name, database = %db, "applying clickhouse migration");
                idempotent(target, sql).await?;
            }
            StatementRole::Move(..) => continue,
            StatementRole::Record(version) => {
                target.execute(sql).await?;
                report.applied.push(version);
            }
            StatementRole::Columns(table) => {
                let existing = read_system(target, sql).await?;
                report.statements.push(statement.sql);
                columns::reconcile(target, db, table, &existing, &mut report).await?;
                continue;
            }
        }
        report.statements.push(statement.sql);
    }
    Ok(report)
}

fn migration(version: u32) -> &'static Migration {
    MIGRATIONS.iter().find(|m| m.version == version).expect("statements name known migrations")
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
    44, // ILLEGAL_COLUMN: "column with this name already exists" (ADD COLUMN, 18.16)
    15, // DUPLICATE_COLUMN (ADD COLUMN, current releases)
    57, // TABLE_ALREADY_EXISTS
    82, // DATABASE_ALREADY_EXISTS
];

fn already_exists(e: &ClickHouseError) -> bool {
    e.code().is_some_and(|c| ALREADY_EXISTS.contains(&c))
}

/// How often a read of a system table that found a table missing is sent again, and the
/// pause before each.
const SYSTEM_READ_TRIES: usize = 5;
const SYSTEM_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Reads `system.tables`, `system.columns` or `system.parts`. 18.16 lists a database's
/// tables, then looks each up by name: a table renamed in between (another instance
/// moving it) fails the whole read with "doesn't exist", though the read named no
/// table. Seen by hand in 3 reads of 1,500 during a loop of renames; sent again.
pub(crate) async fn read_system<T: MigrationTarget>(
    target: &T,
    sql: &str,
) -> Result<Vec<String>, ClickHouseError> {
    debug_assert!(sql.contains("FROM system."), "{sql}");
    let mut tries = 1;
    loop {
        match target.fetch_lines(sql).await {
            Err(e @ ClickHouseError::Missing { .. }) if tries < SYSTEM_READ_TRIES => {
                tracing::debug!(error = %e, "a system table read raced a rename; reading again");
                tries += 1;
                tokio::time::sleep(SYSTEM_READ_PAUSE).await;
            }
            other => return other,
        }
    }
}

async fn idempotent<T: MigrationTarget>(target: &T, sql: &str) -> Result<(), ClickHouseError> {
    match target.execute(sql).await {
        Err(e) if already_exists(&e) => {
            tracing::debug!(error = %e, "object created concurrently");
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
