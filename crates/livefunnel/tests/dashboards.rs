//! Every ClickHouse query of the Grafana dashboards (panels, annotations and
//! variables of `deploy/grafana/dashboards/*.json`) runs against real tables and
//! returns rows: on ClickHouse 18.16 (the Debian server, filled by the pipeline from
//! the repository's sample with the stack's own configuration) and on current
//! ClickHouse (chdb, loaded with the very same rows).
//!
//! Grafana's macros are expanded exactly as grafana-clickhouse-datasource v4 expands
//! them (`$__timeFilter(c)` is `c >= toDateTime(from) AND c <= toDateTime(to)`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use livefunnel::config::{self, Sources};
use livefunnel::pipeline::{self, Settings, SinkKind, Status, World};
use livefunnel_clickhouse::{ClickHouseConfig, Table};
use livefunnel_core::TimeMode;
use livefunnel_testkit::{Chdb, ChdbStep, ClickHouseServer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The database the dashboards name (`livefunnel.<table>`), as in the stack's config.
const DATABASE: &str = "livefunnel";
/// A room of the sample with products, paid plans and operator annotations.
const VARIABLES: [(&str, &str); 3] =
    [("org_id", "org-qianfan"), ("room_id", "room-0001"), ("session_id", "room-0001-20260101-1")];

fn stack_config_path() -> PathBuf {
    repo_root().join("deploy/livefunnel/livefunnel.toml")
}

/// Every ClickHouse query of the dashboards, as `(where it is, rawSql)`.
fn clickhouse_queries() -> Vec<(String, String)> {
    fn is_clickhouse(ds: &Value) -> bool {
        ds["type"] == "grafana-clickhouse-datasource"
    }
    fn walk(name: &str, panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let ds = if t["datasource"].is_object() { &t["datasource"] } else { &p["datasource"] };
                if is_clickhouse(ds) {
                    let sql = t["rawSql"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: {} has no rawSql", p["title"]));
                    out.push((
                        format!("{name}: panel {}", p["title"].as_str().unwrap_or("")),
                        sql.to_owned(),
                    ));
                }
            }
            walk(name, &p["panels"], out);
        }
    }
    let mut out = Vec::new();
    for name in ["agency-wall", "room-detail", "pipeline-health"] {
        let path = repo_root().join(format!("deploy/grafana/dashboards/{name}.json"));
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        walk(name, &d["panels"], &mut out);
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if is_clickhouse(&a["datasource"]) {
                let sql = a["target"]["rawSql"].as_str().unwrap();
                out.push((
                    format!("{name}: annotation {}", a["name"].as_str().unwrap_or("")),
                    sql.to_owned(),
                ));
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if is_clickhouse(&v["datasource"]) {
                let sql = v["query"].as_str().or(v["query"]["rawSql"].as_str()).unwrap();
                out.push((format!("{name}: variable {}", v["name"].as_str().unwrap_or("")), sql.to_owned()));
            }
        }
    }
    out
}

/// `sql` with the plugin's macros and the dashboard variables replaced; times in
/// unix seconds.
fn expand(sql: &str, from: i64, to: i64) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..i]);
        let args = &rest[i + "$__timeFilter(".len()..];
        let close = args.find(')').expect("$__timeFilter( without )");
        let column = args[..close].trim();
        out.push_str(&format!("{column} >= toDateTime({from}) AND {column} <= toDateTime({to})"));
        rest = &args[close + 1..];
    }
    out.push_str(rest);
    let mut out = out
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"));
    for (name, value) in VARIABLES {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "a macro or variable left in:\n{out}");
    out
}

/// Rows of the sample's time range, `(from, to)` in unix seconds.
fn sample_range(inputs: &[Input]) -> (i64, i64) {
    let ts: Vec<i64> = inputs
        .iter()
        .filter_map(|i| serde_json::from_slice::<Value>(&i.payload).ok()?.get("ts")?.as_i64())
        .filter(|t| *t > 0)
        .collect();
    (ts.iter().min().unwrap() / 1000 - 60, ts.iter().max().unwrap() / 1000 + 3600)
}

/// Whether a row says something: a non-empty string or a non-zero number.
fn informative(row: &[Value]) -> bool {
    row.iter().any(|v| match v {
        Value::String(s) => !s.is_empty() && s.parse::<f64>().ok() != Some(0.0),
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        _ => false,
    })
}

/// What replay makes of the inputs with the stack's configuration: the rows the
/// pipeline must have written before the dashboards are queried.
fn expected_with_stack_config(inputs: &[Input]) -> BTreeMap<String, Value> {
    let loaded = config::load(&Sources::file_only(Some(&stack_config_path())), TimeMode::Replay).unwrap();
    let mut text = Vec::new();
    for i in inputs {
        text.extend_from_slice(&i.payload);
        text.push(b'\n');
    }
    let mut out = Vec::new();
    livefunnel::replay::replay(&text[..], &mut out, None, loaded.engine).expect("replay");
    let rows: Vec<Value> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    latest(&rows)
}

/// Runs the pipeline, with the stack's configuration, over the sample into
/// ClickHouse until it holds what replay computes.
fn fill(f: &Fixture, ch: &ClickHouseConfig) {
    let mut loaded = config::load(&Sources::file_only(Some(&stack_config_path())), TimeMode::Live).unwrap();
    loaded.engine.idle_timeout_ms = 1_000;
    loaded.config.kafka.brokers = f.brokers.clone();
    loaded.config.kafka.topics = vec![TOPIC.to_owned()];
    loaded.config.kafka.group_id = "dashboards".to_owned();
    loaded.config.kafka.dlq_topic = String::new();
    loaded.config.checkpoint.dir = f.dir.path().to_owned();
    let mut settings = Settings::from_config(&loaded, SinkKind::ClickHouse(ch.clone()));
    settings.checkpoint_interval_ms = 1_000;
    let expected = expected_with_stack_config(&f.inputs);
    f.rt.block_on(async {
        produce(&f.brokers, &f.inputs).await;
        let shutdown = CancellationToken::new();
        let world = World {
            registry: prometheus::Registry::new(),
            http: None,
            shutdown: shutdown.clone(),
            abort: CancellationToken::new(),
        };
        let handle = tokio::spawn(pipeline::run(settings, world, Arc::new(Status::default())));
        wait_for_clickhouse(ch, &expected, Duration::from_secs(180)).await;
        shutdown.cancel();
        handle.await.unwrap().unwrap();
    });
}

/// The answer of `sql` on the 18.16 server in `format`.
fn fetch(f: &Fixture, url: &str, sql: &str, format: &str) -> Vec<u8> {
    f.rt.block_on(async {
        let client = clickhouse::Client::default().with_url(url).with_validation(false);
        let mut cursor = client.query_raw(sql).fetch_bytes(format).expect("starting a query");
        cursor
            .collect()
            .await
            .unwrap_or_else(|e| panic!("clickhouse 18.16 rejected the query: {e}\n{sql}"))
            .to_vec()
    })
}

#[test]
fn every_dashboard_query_returns_rows_on_clickhouse_18_16_and_current() {
    let queries = clickhouse_queries();
    assert!(queries.len() >= 12, "{} ClickHouse queries in the dashboards", queries.len());
    let server = ClickHouseServer::spawn();
    let f = Fixture::new(2);
    let ch = ClickHouseConfig {
        url: server.http_url(),
        database: DATABASE.to_owned(),
        batch_interval_ms: 200,
        ..Default::default()
    };
    fill(&f, &ch);
    let (from, to) = sample_range(&f.inputs);

    let mut counts = Vec::new();
    for (place, sql) in &queries {
        let sql = expand(sql, from, to);
        let body = fetch(&f, &server.http_url(), &sql, "JSONCompact");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let rows = answer["data"].as_array().unwrap();
        assert!(!rows.is_empty(), "{place}: no rows on 18.16 for\n{sql}");
        assert!(
            rows.iter().any(|r| informative(r.as_array().unwrap())),
            "{place}: only zeros and empty values on 18.16: {rows:?}\n{sql}"
        );
        counts.push(rows.len());
    }

    // Current ClickHouse: the same tables (every version of every row, so the
    // queries' own deduplication is what is tested), then the same queries.
    let dir = tempfile::tempdir().unwrap();
    let mut steps = vec![ChdbStep::sql(format!("CREATE DATABASE `{DATABASE}`"))];
    for table in Table::ALL {
        let file = dir.path().join(format!("{}.rowbinary", table.name()));
        let sql = format!("SELECT * FROM `{DATABASE}`.`{}`", table.name());
        std::fs::write(&file, fetch(&f, &server.http_url(), &sql, "RowBinary")).unwrap();
        steps.push(ChdbStep::sql(table.create_sql(DATABASE)));
        steps.push(ChdbStep::insert_rowbinary(format!("{DATABASE}.{}", table.name()), &file));
    }
    let first_query = steps.len();
    steps.extend(queries.iter().map(|(_, sql)| ChdbStep::query(expand(sql, from, to))));
    let run = Chdb::find().run(&steps);
    run.assert_all_ok();
    for (i, ((place, _), n)) in queries.iter().zip(&counts).enumerate() {
        let rows = run.rows(first_query + i);
        assert_eq!(
            rows.len(),
            *n,
            "{place}: {} rows on ClickHouse {}, {n} on 18.16",
            rows.len(),
            run.server_version
        );
    }
}

#[test]
fn macros_are_expanded_like_the_plugin_does() {
    let sql = "SELECT 1 FROM t WHERE room_id = '${room_id}' AND $__timeFilter(ts) AND x < $__toTime";
    assert_eq!(
        expand(sql, 10, 20),
        "SELECT 1 FROM t WHERE room_id = 'room-0001' AND ts >= toDateTime(10) AND ts <= toDateTime(20) \
         AND x < toDateTime(20)"
    );
    let all = clickhouse_queries();
    for part in ["panel Top products", "panel Paid plans", "annotation Room events", "variable session_id"] {
        assert!(all.iter().any(|(place, _)| place.contains(part)), "no query at {part}: {all:?}");
    }
}
