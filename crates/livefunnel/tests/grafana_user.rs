//! The ClickHouse user Grafana reads as (`deploy/clickhouse/users.d/grafana.xml`,
//! mounted by the compose file) against a real server: it reads the livefunnel
//! database and can change nothing, read no other database, and set no setting.
//!
//! The server here is Debian's 18.16, which the file's current-ClickHouse forms do not
//! fit: the root element is `<yandex>` there, the password comes from the environment
//! (`from_env`), and 18.16 has no `<constraints>` (the one setting Grafana's plugin
//! sets, `max_execution_time`, changeable up to 60 s). The test rewrites exactly those
//! three and checks everything else as shipped; the constraint stays checked only
//! statically (`tests/deploy.rs`).

mod common;

use clickhouse::Client;
use common::*;
use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_testkit::ClickHouseServer;

const PASSWORD: &str = "grafana-test-pw-1c7e";

/// The shipped file in 18.16's form; fails if the file no longer has what is rewritten.
fn for_18_16(shipped: &str) -> String {
    let rewrites = [
        ("<clickhouse>", "<yandex>".to_owned()),
        ("</clickhouse>", "</yandex>".to_owned()),
        (r#"<password from_env="CLICKHOUSE_GRAFANA_PASSWORD"/>"#, format!("<password>{PASSWORD}</password>")),
    ];
    let mut xml = shipped.to_owned();
    for (from, to) in rewrites {
        assert_eq!(xml.matches(from).count(), 1, "grafana.xml no longer has {from} once");
        xml = xml.replace(from, &to);
    }
    let start = xml.find("<constraints>").expect("grafana.xml has its constraints");
    let end =
        xml.find("</constraints>").expect("grafana.xml closes its constraints") + "</constraints>".len();
    xml.replace_range(start..end, "");
    xml
}

async fn refused(client: &Client, sql: &str) -> String {
    match client.query(sql).execute().await {
        Ok(()) => panic!("grafana ran `{sql}`"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn grafanas_user_reads_livefunnel_and_changes_nothing() {
    let mut server = ClickHouseServer::prepare();
    let shipped = std::fs::read_to_string(repo_root().join("deploy/clickhouse/users.d/grafana.xml")).unwrap();
    let users_d = server.dir().join("users.d");
    std::fs::create_dir_all(&users_d).unwrap();
    std::fs::write(users_d.join("grafana.xml"), for_18_16(&shipped)).unwrap();
    server.start();
    let rt = runtime();
    rt.block_on(async {
        let ch = ClickHouseConfig { url: server.http_url(), database: "livefunnel".into(), ..Default::default() };
        livefunnel_clickhouse::migrate(&ch).await.expect("migrating as the writer");
        let admin = Client::default().with_url(server.http_url()).with_validation(false);
        admin.query("CREATE TABLE default.secret (a UInt8) ENGINE = TinyLog").execute().await.unwrap();
        admin.query("INSERT INTO default.secret VALUES (42)").execute().await.unwrap();

        let grafana = Client::default().with_url(server.http_url()).with_validation(false).with_user("grafana").with_password(PASSWORD);
        let rows: u64 =
            grafana.query("SELECT count() FROM livefunnel.room_window_stats").fetch_one().await.expect("it reads");
        assert_eq!(rows, 0);
        for sql in [
            "INSERT INTO livefunnel.room_window_stats SELECT * FROM livefunnel.room_window_stats",
            "CREATE TABLE livefunnel.t (a UInt8) ENGINE = TinyLog",
            "DROP TABLE livefunnel.room_window_stats",
            "ALTER TABLE livefunnel.room_window_stats DELETE WHERE 1",
            "TRUNCATE TABLE livefunnel.room_window_stats",
        ] {
            let e = refused(&grafana, sql).await;
            assert!(e.contains("readonly"), "`{sql}`: {e}");
        }
        let e = refused(&grafana, "SELECT a FROM default.secret").await;
        assert!(e.contains("default") && e.to_lowercase().contains("access"), "another database: {e}");
        let e = refused(&grafana.clone().with_setting("max_memory_usage", "1"), "SELECT 1").await;
        assert!(e.contains("readonly"), "a setting: {e}");
        let wrong = Client::default().with_url(server.http_url()).with_validation(false).with_user("grafana").with_password("nope");
        let e = refused(&wrong, "SELECT 1").await;
        assert!(e.contains("password") || e.contains("Authentication"), "a wrong password: {e}");

        // Still there, untouched, for the writer.
        let n: u64 = admin.query("SELECT count() FROM system.tables WHERE database = 'livefunnel' AND name = 'room_window_stats'")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(n, 1);
    });
}
