//! Migrations against a real local server (ClickHouse 18.16 in CI).

mod common;

use common::{config_for, query_text};
use livefunnel_clickhouse::{
    applied_versions, migrate, ping, server_version, ClickHouseError, Table, MIGRATIONS,
};
use livefunnel_testkit::{ClickHouseServer, LIMITED_PASSWORD, LIMITED_USER};

fn all_versions() -> Vec<u32> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

async fn table_names(server: &ClickHouseServer, db: &str) -> Vec<String> {
    let text =
        query_text(server, &format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"))
            .await;
    text.lines().map(str::to_string).collect()
}

async fn column_count(server: &ClickHouseServer, db: &str, table: &str) -> usize {
    let sql = format!("SELECT count() FROM system.columns WHERE database = '{db}' AND table = '{table}'");
    query_text(server, &sql).await.parse().unwrap()
}

#[tokio::test]
async fn migrate_creates_every_table_and_running_it_again_changes_nothing() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_migrate");

    let first = migrate(&cfg).await.unwrap();
    assert!(!first.server_version.is_empty());
    assert_eq!(first.server_version, server_version(&cfg).await.unwrap());
    assert_eq!(first.applied, all_versions());
    assert!(first.already_applied.is_empty() && first.added_columns.is_empty(), "{first:?}");

    let mut expected: Vec<String> = Table::ALL.iter().map(|t| t.name().to_string()).collect();
    expected.push("schema_migrations".to_string());
    expected.sort();
    assert_eq!(table_names(&server, "lf_migrate").await, expected);
    for table in Table::ALL {
        assert_eq!(
            column_count(&server, "lf_migrate", table.name()).await,
            table.columns().len(),
            "{table:?}"
        );
    }
    let engine = query_text(
        &server,
        "SELECT engine FROM system.tables WHERE database = 'lf_migrate' AND name = 'room_window_stats'",
    )
    .await;
    assert_eq!(engine, "ReplacingMergeTree");

    let second = migrate(&cfg).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.already_applied, all_versions());
    assert!(second.added_columns.is_empty());
    assert_eq!(applied_versions(&cfg).await.unwrap(), all_versions());
    let names = query_text(&server, "SELECT name FROM lf_migrate.schema_migrations ORDER BY version").await;
    assert_eq!(names.lines().collect::<Vec<_>>(), MIGRATIONS.iter().map(|m| m.name).collect::<Vec<_>>());
    ping(&cfg).await.unwrap();
}

#[tokio::test]
async fn concurrent_migrations_are_harmless() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_concurrent");
    let (a, b, c) = tokio::join!(migrate(&cfg), migrate(&cfg), migrate(&cfg));
    for report in [a, b, c] {
        let report = report.unwrap();
        let mut all = report.applied.clone();
        all.extend(&report.already_applied);
        all.sort();
        assert_eq!(all, all_versions(), "{report:?}");
    }
    assert_eq!(applied_versions(&cfg).await.unwrap(), all_versions());
    for table in Table::ALL {
        assert_eq!(
            column_count(&server, "lf_concurrent", table.name()).await,
            table.columns().len(),
            "{table:?}"
        );
    }
    let again = migrate(&cfg).await.unwrap();
    assert!(again.applied.is_empty() && again.added_columns.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_measure_added_to_the_core_becomes_a_column_and_a_changed_type_stops_start_up() {
    let server = ClickHouseServer::spawn();
    // A table created by an older livefunnel, before `gpm` and `refund_rate` existed.
    query_text(&server, "CREATE DATABASE lf_old").await;
    let ddl: Vec<String> = Table::Window
        .create_sql("lf_old")
        .lines()
        .filter(|l| !l.contains("`gpm`") && !l.contains("`refund_rate`"))
        .map(str::to_string)
        .collect();
    let ddl = ddl.join("\n").replace(",\n)", "\n)");
    query_text(&server, &ddl).await;
    let cfg = config_for(&server, "lf_old");
    let report = migrate(&cfg).await.unwrap();
    assert_eq!(report.added_columns, ["room_window_stats.gpm", "room_window_stats.refund_rate"]);
    let columns = query_text(
        &server,
        "SELECT name FROM system.columns WHERE database = 'lf_old' AND table = 'room_window_stats'",
    )
    .await;
    let expected: Vec<String> = Table::Window.columns().into_iter().map(|c| c.name).collect();
    assert_eq!(columns.lines().collect::<Vec<_>>(), expected, "added in place, after their predecessor");

    query_text(&server, "CREATE DATABASE lf_bad").await;
    let ddl = Table::Session.create_sql("lf_bad").replace("`watch_pv` UInt64", "`watch_pv` String");
    query_text(&server, &ddl).await;
    let err = migrate(&config_for(&server, "lf_bad")).await.unwrap_err();
    assert!(matches!(err, ClickHouseError::ColumnType { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("room_session_stats") && text.contains("watch_pv") && text.contains("MODIFY COLUMN"),
        "{text}"
    );
}

#[tokio::test]
async fn a_read_only_user_cannot_migrate_and_is_told_why() {
    let server = ClickHouseServer::spawn();
    let cfg = config_for(&server, "lf_ro");
    let limited = livefunnel_clickhouse::ClickHouseConfig {
        user: LIMITED_USER.into(),
        password: LIMITED_PASSWORD.into(),
        ..cfg.clone()
    };
    let err = migrate(&limited).await.unwrap_err();
    assert!(matches!(err, ClickHouseError::AccessDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&format!("user {LIMITED_USER}")), "{err}");

    let err = ping(&cfg).await.unwrap_err();
    assert!(matches!(err, ClickHouseError::Missing { .. }), "not migrated yet: {err:?}");
    migrate(&cfg).await.unwrap();
    ping(&limited).await.unwrap();

    let wrong = livefunnel_clickhouse::ClickHouseConfig { password: "wrong".into(), ..limited };
    let err = ping(&wrong).await.unwrap_err();
    assert!(matches!(err, ClickHouseError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("clickhouse.user / clickhouse.password"), "{err}");
}

#[tokio::test]
async fn ping_says_when_the_server_is_down() {
    let server = ClickHouseServer::prepare();
    let cfg = config_for(&server, "lf_down");
    let err = ping(&cfg).await.unwrap_err();
    assert!(matches!(err, ClickHouseError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&server.http_url()), "{err}");
    let err = migrate(&cfg).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}
