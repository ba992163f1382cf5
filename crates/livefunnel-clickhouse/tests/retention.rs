//! Retention (`[clickhouse.retention]`) on ClickHouse 18.16 (a real server: no TTL,
//! expired month partitions dropped by `prune`) and on current ClickHouse (26.9 through
//! chdb: a TTL on every table but sessions, set, kept and removed by the start-up, and
//! `prune` too).

mod common;

use common::upgrade::ChdbTarget;
use common::{config_for, query_text};
use livefunnel_clickhouse::retention::{apply_ttl_on, days_from_civil, prune_on, DroppedPartition};
use livefunnel_clickhouse::{migrate, migrate_on, prune, RetentionConfig, Table};
use livefunnel_testkit::{Chdb, ClickHouseServer};

/// Rows in four months of the window, product and annotation tables, and a session.
fn fill_sql(db: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, day) in ["2024-01-15", "2026-08-20", "2026-09-03", "2026-11-30"].iter().enumerate() {
        let t = format!("'{day} 10:00:00'");
        out.push(format!(
            "INSERT INTO `{db}`.`room_window_stats` (room_id, `window`, window_start, window_end, version) \
             VALUES ('r{i}', '1m', {t}, {t}, 1)"
        ));
        out.push(format!(
            "INSERT INTO `{db}`.`room_product_window_stats` (room_id, `window`, window_start, window_end, version, \
             product_id) VALUES ('r{i}', '1m', {t}, {t}, 1, 'p')"
        ));
        out.push(format!(
            "INSERT INTO `{db}`.`annotations` (room_id, ts, ts_ms, event_id) VALUES ('r{i}', {t}, 0, 'e{i}')"
        ));
    }
    out.push(format!(
        "INSERT INTO `{db}`.`room_session_stats` (room_id, session_id, version, session_start_ts) \
         VALUES ('r0', 's', 1, 1705312800000)"
    ));
    out
}

/// What `prune` must drop on 2026-12-05 with the default retention (windows and
/// annotations 400 days, breakdowns 90): a month goes once its last day is older.
fn expected_drops() -> Vec<DroppedPartition> {
    vec![
        DroppedPartition { table: Table::Window, month: 202401 },
        DroppedPartition { table: Table::Product, month: 202401 },
        DroppedPartition { table: Table::Product, month: 202608 },
        DroppedPartition { table: Table::Annotations, month: 202401 },
    ]
}

fn months_sql(db: &str, table: &str, column: &str) -> String {
    format!("SELECT DISTINCT toYYYYMM({column}) AS m FROM `{db}`.`{table}` ORDER BY m")
}

fn today() -> i64 {
    days_from_civil(2026, 12, 5)
}

#[tokio::test]
async fn on_18_16_prune_drops_expired_months_and_nothing_else() {
    let server = ClickHouseServer::spawn();
    let db = "lf_retention";
    let cfg = config_for(&server, db);
    let report = migrate(&cfg).await.unwrap();
    assert!(report.retention.is_empty(), "18.16 has no TTL: {:?}", report.retention);
    for sql in fill_sql(db) {
        query_text(&server, &sql).await;
    }
    let dropped = prune(&cfg, today() * 86_400_000 + 3_600_000).await.unwrap();
    assert_eq!(dropped, expected_drops());
    assert_eq!(
        query_text(&server, &months_sql(db, "room_window_stats", "window_start")).await,
        "202608\n202609\n202611"
    );
    assert_eq!(
        query_text(&server, &months_sql(db, "room_product_window_stats", "window_start")).await,
        "202609\n202611"
    );
    assert_eq!(query_text(&server, &months_sql(db, "annotations", "ts")).await, "202608\n202609\n202611");
    assert_eq!(query_text(&server, &format!("SELECT count() FROM `{db}`.`room_session_stats`")).await, "1");
    // Again: nothing more to drop. With every retention 0, nothing at all.
    assert!(prune(&cfg, today() * 86_400_000).await.unwrap().is_empty());
    let forever = livefunnel_clickhouse::ClickHouseConfig {
        retention: RetentionConfig { windows_days: 0, breakdowns_days: 0, annotations_days: 0 },
        ..cfg.clone()
    };
    assert!(prune(&forever, (today() + 10_000) * 86_400_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn on_current_clickhouse_a_ttl_follows_the_retention_and_prune_works_too() {
    let db = "lf_retention_current";
    let chdb = ChdbTarget::new(Chdb::find().session());
    let report = migrate_on(&chdb, db).await.unwrap();
    let version = report.server_version.clone();
    assert!(livefunnel_clickhouse::retention::has_ttl(&version), "{version}");
    let cfg = RetentionConfig::default();
    let sent = apply_ttl_on(&chdb, db, &version, &cfg).await.unwrap();
    assert_eq!(sent.len(), 5, "every table but sessions: {sent:?}");
    let engine = |table: &str| {
        chdb.text(&format!(
            "SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = '{table}'"
        ))
    };
    assert!(
        engine("room_window_stats").contains("TTL window_start + toIntervalDay(400)"),
        "{}",
        engine("room_window_stats")
    );
    assert!(engine("room_plan_window_stats").contains("TTL window_start + toIntervalDay(90)"));
    assert!(engine("annotations").contains("TTL ts + toIntervalDay(400)"));
    assert!(!engine("room_session_stats").contains("TTL"));
    // The same retention again: nothing sent.
    assert!(apply_ttl_on(&chdb, db, &version, &cfg).await.unwrap().is_empty());

    // The server deletes expired rows itself (at merges): an old and a recent row.
    for sql in fill_sql(db) {
        chdb.execute_sql(&sql);
    }
    chdb.execute_sql(&format!("OPTIMIZE TABLE `{db}`.`room_window_stats` FINAL"));
    let months = chdb.text(&months_sql(db, "room_window_stats", "window_start"));
    assert!(!months.contains("202401"), "the 2024 row outlived its TTL: {months}");
    assert!(months.contains("202611"), "{months}");

    // prune drops what is left expired (the TTL deletes rows relative to today's real date).
    let dropped = prune_on(&chdb, db, &cfg, today() + 10_000).await.unwrap();
    assert!(dropped.iter().any(|d| d.table == Table::Annotations), "{dropped:?}");
    assert!(chdb.text(&format!("SELECT count() FROM `{db}`.`annotations`")).starts_with('0'));

    // Retention 0: the TTL goes.
    let forever = RetentionConfig { windows_days: 0, ..cfg };
    let sent = apply_ttl_on(&chdb, db, &version, &forever).await.unwrap();
    assert_eq!(sent, [format!("ALTER TABLE `{db}`.`room_window_stats` REMOVE TTL")]);
    assert!(!engine("room_window_stats").contains("TTL"), "{}", engine("room_window_stats"));
}
