//! Upgrading a database of the previous release on current ClickHouse (26.9 through
//! a chdb session): the same `migrate` code sends what it sends to 18.16, leaves one
//! row per key (the latest), runs again as a no-op, and an interrupted move finishes.

mod common;

use common::upgrade::{fill_18, unchanged, ChdbTarget, CrashAfter, Previous};
use common::{config_for, key_of, reorg, row_json};
use livefunnel_clickhouse::rowbinary::encode_row;
use livefunnel_clickhouse::{migrate, migrate_on, Table, MIGRATIONS};
use livefunnel_core::Row;
use livefunnel_testkit::{Chdb, ChdbStep, ClickHouseServer};

/// Checks a finished upgrade of `db` on chdb: today's keys, the backups, every
/// version recorded, the latest rows once each.
fn assert_upgraded(chdb: &ChdbTarget, db: &str, previous: &Previous) {
    for (i, table) in Table::ALL.iter().enumerate() {
        let sql = format!(
            "SELECT name, sorting_key FROM system.tables WHERE database = '{db}' AND name LIKE '{}%' ORDER BY name",
            table.name()
        );
        let want = format!(
            "{t}\t{}\n{t}__before_v{}\torg_id, {}",
            table.order_by().join(", "),
            8 + i,
            table.order_by().join(", "),
            t = table.name()
        );
        assert_eq!(chdb.text(&sql), want, "{table:?}");
    }
    let recorded =
        chdb.text(&format!("SELECT DISTINCT `version` FROM `{db}`.`schema_migrations` ORDER BY `version`"));
    let want: Vec<String> = MIGRATIONS.iter().map(|m| m.version.to_string()).collect();
    assert_eq!(recorded.lines().collect::<Vec<_>>(), want);
    previous.assert_latest(|t| chdb.latest(db, t));
}

#[tokio::test]
async fn a_previous_release_database_upgrades_on_current_clickhouse_as_on_18_16() {
    let db = "lf_upgrade";
    let previous = Previous::from_sample();
    let fills = previous.fill(db);
    let server = ClickHouseServer::spawn();
    fill_18(&server, &fills);
    let on_18 = migrate(&config_for(&server, db)).await.unwrap();

    let chdb = ChdbTarget::new(Chdb::find().session());
    let dir = tempfile::tempdir().unwrap();
    chdb.fill(&fills, dir.path());
    let report = migrate_on(&chdb, db).await.unwrap();
    // Statement for statement what 18.16 got: every state read answered the same.
    assert_eq!(report.statements, on_18.statements);
    assert_eq!(
        (&report.applied, &report.added_columns, &report.moved),
        (&on_18.applied, &on_18.added_columns, &on_18.moved)
    );
    assert_eq!(report.moved.len(), Table::ALL.len());
    assert_upgraded(&chdb, db, &previous);
    let columns = chdb.text(&format!(
        "SELECT name FROM system.columns WHERE database = '{db}' AND table = 'room_session_stats'"
    ));
    let today: Vec<String> = Table::Session.columns().into_iter().map(|c| c.name).collect();
    assert_eq!(columns.lines().collect::<Vec<_>>(), today, "ended_by_timeout right before cold_start");

    let again = migrate_on(&chdb, db).await.unwrap();
    assert!(
        again.applied.is_empty() && again.moved.is_empty() && again.added_columns.is_empty(),
        "{again:?}"
    );
    assert!(again.statements.iter().all(|s| s.starts_with("SELECT") || s.starts_with("CREATE")), "{again:?}");

    // Newer versions, inserted as the sink does, replace moved rows across an org change.
    let all = previous.all_rows();
    for table in Table::RESULTS {
        let mut row =
            reorg(all.iter().find(|r| Table::of_row(r) == table).unwrap(), "org-after-upgrade", 1000);
        if let Row::Session(s) = &mut row {
            s.ended_by_timeout = true;
        }
        let mut bytes = Vec::new();
        encode_row(&row, &mut bytes);
        let file = dir.path().join(format!("{}-newer.bin", table.name()));
        std::fs::write(&file, bytes).unwrap();
        let insert = table
            .insert_sql(db)
            .replace(" FORMAT RowBinary", &format!(" FROM INFILE '{}' FORMAT RowBinary", file.display()));
        chdb.session().step(&ChdbStep::sql(insert)).unwrap();
        let want = row_json(&row);
        let key = key_of(table, &want);
        let got: Vec<_> = chdb.latest(db, table).into_iter().filter(|v| key_of(table, v) == key).collect();
        assert_eq!(got.len(), 1, "{table:?} {key}");
        assert!(common::json_matches(&got[0], &want), "{table:?}\nwant {want}\n got {}", got[0]);
    }
}

#[tokio::test]
async fn an_interrupted_move_finishes_on_current_clickhouse() {
    let previous = Previous::from_sample();
    let chdb = ChdbTarget::new(Chdb::find().session());
    let dir = tempfile::tempdir().unwrap();
    chdb.fill(&previous.fill("lf_plan"), dir.path());
    let plan = migrate_on(&chdb, "lf_plan").await.unwrap().statements;
    let swap =
        plan.iter().position(|s| s.starts_with("RENAME TABLE `lf_plan`.`room_session_stats`")).unwrap();
    let copy = plan
        .iter()
        .position(|s| s.starts_with("INSERT INTO `lf_plan`.`room_session_stats__v12_new`"))
        .unwrap();
    let cut_copy: fn(&str) -> String = |sql| format!("{sql} LIMIT 7");
    // After the swap's first rename: the table is missing until the next run finishes.
    for (i, (call, mangle)) in
        [(swap + 1, unchanged as fn(&str) -> String), (copy + 1, cut_copy), (copy + 1, unchanged)]
            .into_iter()
            .enumerate()
    {
        let db = format!("lf_crash_{i}");
        chdb.fill(&previous.fill(&db), dir.path());
        assert!(migrate_on(&CrashAfter::new(&chdb, call, mangle), &db).await.is_err());
        migrate_on(&chdb, &db).await.unwrap_or_else(|e| panic!("after {}: {e}", plan[call - 1]));
        assert_upgraded(&chdb, &db, &previous);
    }
}
