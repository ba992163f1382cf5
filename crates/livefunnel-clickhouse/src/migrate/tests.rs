use super::columns::{add_column_sql, placed, same_type, unescape_tsv};
use super::rekey::{is_todays_key, Names};
use super::*;
use crate::schema::ColumnType;

#[test]
fn migrations_are_numbered_from_one_without_gaps_and_cover_every_table() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version as usize, i + 1, "{}", m.name);
        assert!(m.name.contains(m.table().name()), "{}", m.name);
    }
    for table in Table::ALL {
        let create = MIGRATIONS.iter().filter(|m| m.step == Step::Create(table)).count();
        let rekey = MIGRATIONS.iter().filter(|m| m.step == Step::Rekey(table)).count();
        assert_eq!((create, rekey), (1, 1), "{table:?}: created once, moved to today's key once");
    }
    // A column added by a migration is one of today's columns.
    for m in MIGRATIONS {
        if let Step::AddColumn(table, column) = m.step {
            assert!(table.columns().iter().any(|c| c.name == column), "{}", m.name);
        }
    }
}

#[test]
fn statements_inspect_apply_move_and_record_in_migration_order() {
    let all = migration_statements("lf");
    assert_eq!(all[0].sql, "CREATE DATABASE IF NOT EXISTS `lf`");
    assert!(all[1].sql.starts_with("CREATE TABLE IF NOT EXISTS `lf`.`schema_migrations` "), "{}", all[1].sql);
    assert_eq!(all[2].role, StatementRole::AppliedVersions);
    assert!(all[..3].iter().all(|s| s.version().is_none()));
    let mut rest = &all[3..];
    for m in MIGRATIONS {
        let n = rest.iter().position(|s| s.role == StatementRole::Record(m.version)).expect("recorded");
        let (own, after) = rest.split_at(n + 1);
        assert!(own.iter().all(|s| s.version() == Some(m.version)), "{}: {own:?}", m.name);
        let roles: Vec<StatementRole> = own.iter().map(|s| s.role).collect();
        let v = m.version;
        match m.step {
            Step::Create(table) => {
                assert_eq!(roles, [StatementRole::Apply(v), StatementRole::Record(v)]);
                assert_eq!(own[0].sql, table.create_sql("lf"));
            }
            Step::AddColumn(..) => {
                assert_eq!(
                    roles,
                    [StatementRole::Inspect(v), StatementRole::Apply(v), StatementRole::Record(v)]
                )
            }
            Step::Rekey(_) => {
                let mut want = vec![StatementRole::Inspect(v)];
                want.extend(MoveStep::ALL.map(|s| StatementRole::Move(v, s)));
                want.push(StatementRole::Record(v));
                assert_eq!(roles, want);
            }
        }
        assert!(own.last().unwrap().sql.ends_with(&format!("VALUES ({v}, '{}', now())", m.name)));
        rest = after;
    }
    let reads: Vec<Table> = rest
        .iter()
        .map(|s| match s.role {
            StatementRole::Columns(t) => t,
            other => panic!("{other:?} after the migrations"),
        })
        .collect();
    assert_eq!(reads, Table::ALL);
    assert!(rest.iter().all(MigrationStatement::is_read));
    assert_eq!(MigrationReport::planned_statements("lf"), all);
}

#[test]
fn ended_by_timeout_lands_before_cold_start_by_either_path() {
    let all = migration_statements("lf");
    let apply7 = all.iter().find(|s| s.role == StatementRole::Apply(7)).unwrap();
    assert_eq!(
        apply7.sql,
        "ALTER TABLE `lf`.`room_session_stats` ADD COLUMN `ended_by_timeout` UInt8 AFTER `first30m_refund_rate`"
    );
    let columns = Table::Session.columns();
    let at = columns.iter().position(|c| c.name == "ended_by_timeout").unwrap();
    assert_eq!(columns[at + 1].name, "cold_start");
    assert_eq!(columns[at - 1].name, "first30m_refund_rate");
    // A table without the column, nor the measure before it: the nearest column it has.
    let existing: Vec<(String, String)> = columns
        .iter()
        .filter(|c| c.name != "ended_by_timeout" && c.name != "first30m_refund_rate")
        .map(|c| (c.name.clone(), c.ty.sql().to_string()))
        .collect();
    let (column, after) = placed(Table::Session, "ended_by_timeout", Some(&existing));
    assert_eq!((column.ty, after.as_deref()), (ColumnType::Bool, Some("first30m_out_of_city_order_share")));
    let gpm = Table::Window.columns().into_iter().find(|c| c.name == "gpm").unwrap();
    assert_eq!(
        add_column_sql("lf", Table::Window, &gpm, Some("uv_value")),
        "ALTER TABLE `lf`.`room_window_stats` ADD COLUMN `gpm` Nullable(Float64) AFTER `uv_value`"
    );
}

#[test]
fn a_move_stages_copies_and_swaps_under_versioned_names() {
    let names = Names::new(Table::Session, 12);
    let sql = |step| names.sql("lf", step);
    assert_eq!(
        sql(MoveStep::Stage),
        "CREATE TABLE IF NOT EXISTS `lf`.`room_session_stats__v12_new` AS `lf`.`room_session_stats` \
         ENGINE = ReplacingMergeTree(`version`) ORDER BY (`room_id`, `session_id`)"
    );
    assert_eq!(
        sql(MoveStep::Copy),
        "INSERT INTO `lf`.`room_session_stats__v12_new` SELECT * FROM `lf`.`room_session_stats` FINAL"
    );
    assert_eq!(
        sql(MoveStep::Retire),
        "RENAME TABLE `lf`.`room_session_stats` TO `lf`.`room_session_stats__before_v12`"
    );
    assert_eq!(
        sql(MoveStep::Finish),
        "RENAME TABLE `lf`.`room_session_stats__v12_new` TO `lf`.`room_session_stats`"
    );
    assert_eq!(sql(MoveStep::Cleanup), "DROP TABLE IF EXISTS `lf`.`room_session_stats__v12_new`");
    assert!(sql(MoveStep::Inserts).contains("table = 'room_session_stats' AND active"));
    assert!(names.state_sql("lf").ends_with(
        "name IN ('room_session_stats', 'room_session_stats__v12_new', 'room_session_stats__before_v12')"
    ));
    let window = Names::new(Table::Window, 8).sql("lf", MoveStep::Stage);
    assert!(window
        .ends_with("PARTITION BY toYYYYMM(`window_start`) ORDER BY (`room_id`, `window`, `window_start`)"));
}

#[test]
fn sort_keys_are_recognised_as_both_servers_spell_them() {
    assert!(is_todays_key(Table::Window, "room_id, window, window_start"));
    assert!(is_todays_key(Table::Window, "`room_id`, `window`, `window_start`"));
    assert!(!is_todays_key(Table::Window, "org_id, room_id, window, window_start"));
    assert!(!is_todays_key(Table::Window, "room_id, window"));
    assert!(is_todays_key(Table::Annotations, "room_id, ts, ts_ms, event_id"));
}

#[test]
fn tsv_types_are_unescaped() {
    assert_eq!(unescape_tsv(r"DateTime(\'UTC\')"), "DateTime('UTC')");
    assert_eq!(unescape_tsv(r"a\tb\\c"), "a\tb\\c");
    assert!(same_type("DateTime('UTC')", ColumnType::DateTime));
    assert!(same_type("DateTime", ColumnType::DateTime));
    assert!(!same_type("UInt32", ColumnType::UInt64));
}
