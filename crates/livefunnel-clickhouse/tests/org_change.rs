//! Contract §5 (v1.1): a late event can re-decide a room's `org_id`, so two versions
//! of one result may carry different orgs. The newer must replace the older: one row
//! per key after `FINAL`, and sums count it once.

mod common;

use common::{config_for, query_text, reorg, replay_sample, row_json};
use livefunnel_clickhouse::{latest_rows, migrate, ClickHouseMetrics, ClickHouseSink, Table};
use livefunnel_testkit::ClickHouseServer;

#[tokio::test]
async fn a_newer_version_with_another_org_replaces_the_older_one() {
    let server = ClickHouseServer::spawn();
    let db = "lf_org_change";
    let cfg = config_for(&server, db);
    migrate(&cfg).await.unwrap();
    let replayed = replay_sample();
    let mut sink = ClickHouseSink::new(cfg.clone(), ClickHouseMetrics::unregistered()).unwrap();
    // The first row of every result table, then the same key re-decided under another
    // org with a higher version, in a second insert (another part, as in production).
    let firsts: Vec<_> = Table::RESULTS
        .iter()
        .map(|t| replayed.rows.iter().find(|r| Table::of_row(r) == *t).expect("a row of every table").clone())
        .collect();
    firsts.iter().for_each(|r| sink.push(r));
    sink.flush().await.unwrap();
    let newer: Vec<_> =
        firsts.iter().map(|r| reorg(r, "org-late", row_json(r)["version"].as_u64().unwrap() + 1)).collect();
    newer.iter().for_each(|r| sink.push(r));
    sink.flush().await.unwrap();

    for table in Table::RESULTS {
        let rows = latest_rows(&cfg, table).await.unwrap();
        let orgs: Vec<&str> = rows.iter().map(|r| r["org_id"].as_str().unwrap()).collect();
        assert_eq!(orgs, ["org-late"], "{table:?}: FINAL keeps only the newer version");
        let sum =
            query_text(&server, &format!("SELECT sum(`version`) FROM `{db}`.`{}` FINAL", table.name())).await;
        let newer_version = rows[0]["version"].as_u64().unwrap();
        assert_eq!(sum, newer_version.to_string(), "{table:?}: a sum over FINAL counts the key once");
    }
}
