//! Migrations 8 to 13: a table created with `org_id` in its sort key moves to one
//! with today's key (contract §5, v1.1). ClickHouse cannot change a sort key in place
//! (18.16's `MODIFY ORDER BY` only appends columns), so the latest rows are copied
//! into a staging table with today's key, which then takes the table's name.
//!
//! Each round reads which of the three tables exist (the table, `<table>__v<n>_new`
//! staging, `<table>__before_v<n>` backup) and the table's sort key, then takes the
//! one step that state calls for, so a run interrupted anywhere, or racing another
//! run, continues from what the server holds:
//!
//! | table       | staging | backup | step                                          |
//! |-------------|---------|--------|-----------------------------------------------|
//! | today's key | -       | any    | done                                          |
//! | today's key | yes     | any    | drop the staging table (left by a lost race)   |
//! | older key   | any     | no     | stage and copy, then (next round) retire it   |
//! | older key   | any     | yes    | error: someone recreated the table             |
//! | missing     | yes     | yes    | finish: the staging table takes the name       |
//! | missing     | yes     | no     | error: the staging table's origin is unknown   |
//! | missing     | no      | any    | nothing to move (the table is created again)   |
//!
//! Copying again into a staging table that holds part of the rows is harmless: it
//! is a `ReplacingMergeTree(version)` keyed like the final table, so `FINAL` (and
//! merges) keep one row per key, the highest version.
//!
//! The swap is two renames of one table each, the table to its backup, then the
//! staging table to the table's name, never one `RENAME` of two pairs: 18.16 locks
//! every table of a `RENAME` before renaming any, the table first, while a copy locks
//! the staging table first, then the table. A swap queued behind a long query on the
//! table and a copy by another run arriving meanwhile would wait for each other
//! forever, and 18.16 cannot kill a query waiting for a lock. A pair `RENAME` is not
//! atomic on 18.16 either (it renames pair by pair), so splitting it loses nothing:
//! between the two renames the table is missing and the next round finishes.
//!
//! The old table is kept as the backup, not dropped. RENAME on 18.16 refuses a target
//! name that exists, and that is the only compare-and-set ClickHouse offers here (no
//! EXCHANGE, no transactions): a run that read "older key" before another run's swap
//! fails to rename the new table away because the backup name is taken. Dropping
//! the backup within the migration would reopen that race, and dropping data by
//! program is irreversible. The backup is named in the log and in
//! [`MigrationReport::moved`]; docs/runbook.md says how to check it and drop it.

use super::{already_exists, read_system, MigrationReport, MigrationTarget};
use crate::error::ClickHouseError;
use crate::schema::Table;

/// A step of a move, in the order a move without interruption sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveStep {
    /// `CREATE TABLE IF NOT EXISTS <staging> AS <table>` with today's engine,
    /// partitioning and key: the old table's columns (every one of them, whatever
    /// release created it), today's key.
    Stage,
    /// Reads the table's highest insert block number, before the copy and before the
    /// swap: a change means something inserted into it meanwhile, which the swap
    /// would leave behind in the backup.
    Inserts,
    /// `INSERT INTO <staging> SELECT * FROM <table> FINAL`: the latest version of each
    /// old key; the staging table keeps the highest version among those sharing a
    /// new key (a room whose `org_id` changed).
    Copy,
    /// `RENAME TABLE <table> TO <backup>`: the first half of the swap.
    Retire,
    /// `RENAME TABLE <staging> TO <table>`: the second half, in the round after the
    /// first, by whichever run reads the table missing.
    Finish,
    /// `DROP TABLE IF EXISTS <staging>`: a staging table left by a run that lost a
    /// race, once the table has today's key (nothing renames such a table away).
    Cleanup,
}

impl MoveStep {
    pub const ALL: [MoveStep; 6] = [
        MoveStep::Stage,
        MoveStep::Inserts,
        MoveStep::Copy,
        MoveStep::Retire,
        MoveStep::Finish,
        MoveStep::Cleanup,
    ];

    pub fn is_read(self) -> bool {
        self == MoveStep::Inserts
    }
}

/// A table this run moved to today's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedTable {
    pub table: String,
    /// The table as it was, kept under this name until someone drops it.
    pub backup: String,
}

/// More rounds than an uninterrupted move takes (copy, retire, finish, check) plus a
/// few lost races; beyond that something keeps changing the tables.
const MAX_ROUNDS: usize = 10;

/// How often a table listed under its own and its backup name is read again before
/// that is believed, and the pause before each read: a rename holds both names for
/// microseconds.
const MID_RENAME_READS: usize = 3;
const MID_RENAME_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The names one move works with.
pub(super) struct Names {
    table: Table,
    staging: String,
    backup: String,
}

impl Names {
    pub fn new(table: Table, version: u32) -> Names {
        Names {
            table,
            staging: format!("{}__v{version}_new", table.name()),
            backup: format!("{}__before_v{version}", table.name()),
        }
    }

    /// `name\tsorting_key` of the table, the staging and the backup table, those that exist.
    pub fn state_sql(&self, db: &str) -> String {
        format!(
            "SELECT name, sorting_key FROM system.tables WHERE database = '{db}' AND name IN ('{}', '{}', '{}')",
            self.table.name(),
            self.staging,
            self.backup
        )
    }

    pub fn sql(&self, db: &str, step: MoveStep) -> String {
        let (t, n, b) = (self.table.name(), &self.staging, &self.backup);
        match step {
            MoveStep::Stage => {
                format!("CREATE TABLE IF NOT EXISTS `{db}`.`{n}` AS `{db}`.`{t}` {}", self.table.engine_sql())
            }
            MoveStep::Inserts => format!(
                "SELECT max(max_block_number) FROM system.parts WHERE database = '{db}' AND table = '{t}' AND active"
            ),
            MoveStep::Copy => format!("INSERT INTO `{db}`.`{n}` SELECT * FROM `{db}`.`{t}` FINAL"),
            MoveStep::Retire => format!("RENAME TABLE `{db}`.`{t}` TO `{db}`.`{b}`"),
            MoveStep::Finish => format!("RENAME TABLE `{db}`.`{n}` TO `{db}`.`{t}`"),
            MoveStep::Cleanup => format!("DROP TABLE IF EXISTS `{db}`.`{n}`"),
        }
    }
}

/// What a state read found.
#[derive(Debug, PartialEq, Eq)]
struct State {
    /// The table's sort key, when it exists.
    table: Option<String>,
    staging: bool,
    backup: bool,
}

impl State {
    fn parse(names: &Names, lines: &[String]) -> State {
        let mut state = State { table: None, staging: false, backup: false };
        for line in lines {
            let (name, key) = line.split_once('\t').unwrap_or((line, ""));
            match name {
                n if n == names.table.name() => state.table = Some(key.to_string()),
                n if n == names.staging => state.staging = true,
                n if n == names.backup => state.backup = true,
                _ => {}
            }
        }
        state
    }
}

/// Whether `sorting_key` (as `system.tables` spells it: `room_id, window`) is `table`'s
/// key of today.
pub(super) fn is_todays_key(table: Table, sorting_key: &str) -> bool {
    let found: Vec<&str> = sorting_key.split(',').map(|c| c.trim().trim_matches('`')).collect();
    found == table.order_by()
}

/// Another run changed the tables between our read and our statement.
fn lost_race(e: &ClickHouseError) -> bool {
    already_exists(e) || matches!(e, ClickHouseError::Missing { .. })
}

/// Moves `table` to today's sort key unless it has it (see the module docs).
pub(super) async fn rekey<T: MigrationTarget>(
    target: &T,
    db: &str,
    table: Table,
    version: u32,
    report: &mut MigrationReport,
) -> Result<(), ClickHouseError> {
    let names = Names::new(table, version);
    let fail = |detail: String| ClickHouseError::Migration { table: table.name().to_string(), detail };
    // Once this run copied: the table's highest block number before the copy.
    let mut copied_after_block: Option<Vec<String>> = None;
    let mut both_names_seen = 0;
    for _ in 0..MAX_ROUNDS + MID_RENAME_READS {
        let mut blocks_before_copy = None;
        let state_sql = names.state_sql(db);
        let state = State::parse(&names, &read_system(target, &state_sql).await?);
        report.statements.push(state_sql);
        let step = match (&state.table, state.staging, state.backup) {
            (Some(key), staging, _) if is_todays_key(table, key) => {
                if staging {
                    match send(target, &names, db, MoveStep::Cleanup, report).await {
                        // 18.16 answers a drop racing another run's drop with "doesn't exist".
                        Err(e) if lost_race(&e) => {
                            tracing::debug!(error = %e, "staging table dropped concurrently")
                        }
                        other => other?,
                    }
                }
                return Ok(());
            }
            (Some(_), _, true) if both_names_seen < MID_RENAME_READS => {
                // 18.16 attaches a renamed table's new name before it detaches the old
                // one: another run's retire, half done, lists the table under both.
                both_names_seen += 1;
                tokio::time::sleep(MID_RENAME_PAUSE).await;
                continue;
            }
            (Some(key), _, true) => {
                return Err(fail(format!(
                    "it has the older sort key ({key}) and {} exists too: an instance of the previous \
                     version created the table again after the move; stop it, then compare the two tables \
                     and keep one (docs/runbook.md, \"Upgrading to contract v1.1\")",
                    names.backup
                )))
            }
            (Some(key), _, false) => match copied_after_block.take() {
                None => {
                    tracing::info!(
                        table = table.name(),
                        sort_key = %key,
                        staging = %names.staging,
                        "moving a clickhouse table to its new sort key"
                    );
                    let staged = target.execute(&names.sql(db, MoveStep::Stage)).await;
                    report.statements.push(names.sql(db, MoveStep::Stage));
                    if let Err(e) = staged {
                        if !lost_race(&e) {
                            return Err(e);
                        }
                        // Another run is swapping (or swapped) the table: read again.
                        tracing::debug!(error = %e, "tables changed by a concurrent migration");
                        continue;
                    }
                    blocks_before_copy = Some(read(target, &names, db, MoveStep::Inserts, report).await?);
                    MoveStep::Copy
                }
                Some(before) => {
                    let now = read(target, &names, db, MoveStep::Inserts, report).await?;
                    if now != before {
                        // Either a writer of the old table, or another run swapped the
                        // tables since our state read and `now` is the new table's:
                        // the table never goes back to an older key, so a state read
                        // now tells them apart.
                        let state_sql = names.state_sql(db);
                        let again = State::parse(&names, &read_system(target, &state_sql).await?);
                        report.statements.push(state_sql);
                        if again != state {
                            continue;
                        }
                        return Err(fail(format!(
                            "rows were inserted into it while it was copied (block {before:?}, now {now:?}): \
                             stop every instance of the previous version, then start again"
                        )));
                    }
                    MoveStep::Retire
                }
            },
            (None, true, true) => MoveStep::Finish,
            (None, true, false) => {
                return Err(fail(format!(
                    "it is missing but {} exists, without {}: rename the staging table to {} if it holds \
                     the rows, or drop it, then start again",
                    names.staging,
                    names.backup,
                    table.name()
                )))
            }
            // Dropped by hand: the reconciliation after the migrations creates it again.
            (None, false, _) => return Ok(()),
        };
        let sql = names.sql(db, step);
        let sent = match step {
            MoveStep::Copy => target.execute_long(&sql).await,
            _ => target.execute(&sql).await,
        };
        report.statements.push(sql);
        match sent {
            Ok(()) if step == MoveStep::Finish => {
                tracing::info!(
                    table = table.name(),
                    backup = %names.backup,
                    "moved a clickhouse table to its new sort key; the table as it was is kept as the backup: \
                     drop it once the new one is checked (docs/runbook.md)"
                );
                report.moved.push(MovedTable { table: table.name().to_string(), backup: names.backup.clone() });
            }
            Ok(()) if step == MoveStep::Copy => copied_after_block = blocks_before_copy,
            Ok(()) => {}
            Err(e) if lost_race(&e) => tracing::debug!(error = %e, "tables changed by a concurrent migration"),
            Err(ClickHouseError::Timeout { timeout_ms }) if step == MoveStep::Copy => {
                return Err(fail(format!(
                    "copying it took longer than {timeout_ms} ms (clickhouse.migration_timeout); the server \
                     may still be copying (system.processes): raise the limit, wait for the copy to end, then \
                     start again"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Err(fail(format!(
        "its tables kept changing for {MAX_ROUNDS} rounds: is another process renaming them? start again"
    )))
}

async fn send<T: MigrationTarget>(
    target: &T,
    names: &Names,
    db: &str,
    step: MoveStep,
    report: &mut MigrationReport,
) -> Result<(), ClickHouseError> {
    let sql = names.sql(db, step);
    target.execute(&sql).await?;
    report.statements.push(sql);
    Ok(())
}

async fn read<T: MigrationTarget>(
    target: &T,
    names: &Names,
    db: &str,
    step: MoveStep,
    report: &mut MigrationReport,
) -> Result<Vec<String>, ClickHouseError> {
    let sql = names.sql(db, step);
    let lines = read_system(target, &sql).await?;
    report.statements.push(sql);
    Ok(lines)
}
