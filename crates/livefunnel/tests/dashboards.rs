//! Every ClickHouse query of the Grafana dashboards (panels, annotations and
//! variables of `deploy/grafana/dashboards/*.json`) runs against real tables and
//! returns rows: on ClickHouse 18.16 (the Debian server, filled by the pipeline from
//! the repository's sample with the stack's own configuration) and on current
//! ClickHouse (chdb, loaded with the very same rows).
//!
//! Grafana's macros are expanded exactly as grafana-clickhouse-datasource v4 expands
//! them (`$__timeFilter(c)` is `c >= toDateTime(from) AND c <= toDateTime(to)`).
//!
//! Every dashboard variable in SQL is escaped: written
//! `decodeURLComponent('${var:percentencode}')`, so whatever a viewer puts in the URL
//! (`var-room_id=x' OR 1=1 --`) reaches ClickHouse as the contents of one string
//! literal. (`${var:sqlstring}` doubles quotes but leaves backslashes, which ClickHouse
//! reads as escapes: `x\' OR 1=1 --` would end its literal.) Checked by rendering each
//! query with hostile values, on its tokens and on both servers.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use livefunnel::config::{self, Sources};
use livefunnel_clickhouse::{ClickHouseConfig, Table};
use livefunnel_core::TimeMode;
use livefunnel_pipeline::{self as pipeline, SinkKind, Status, World};
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

/// Values a viewer could put in a dashboard's URL.
const HOSTILE: [&str; 4] =
    ["x' OR 1=1 --", "x\\' OR 1=1 --", "x'); DROP TABLE livefunnel.room_window_stats; --", "%27 OR ''='"];

/// Grafana's `percentencode` format (`encodeURIComponentStrict`): every byte but
/// `A-Z a-z 0-9 - _ . ~` as `%XX`.
fn percentencode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The dashboard variables replaced as Grafana does: `${name:percentencode}` encoded,
/// `${name}` and `$name` as they are (which only the tests below ever see).
fn substitute(sql: &str, vars: &[(&str, &str)]) -> String {
    let mut out = sql.to_owned();
    for (name, value) in vars {
        out = out
            .replace(&format!("${{{name}:percentencode}}"), &percentencode(value))
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// `sql` with the plugin's macros and the dashboard variables replaced; times in
/// unix seconds.
fn expand(sql: &str, from: i64, to: i64) -> String {
    expand_with(sql, from, to, &VARIABLES)
}

fn expand_with(sql: &str, from: i64, to: i64, vars: &[(&str, &str)]) -> String {
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
    let out = out
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"));
    let out = substitute(&out, vars);
    assert!(!out.contains("$__") && !out.contains("${"), "a macro or variable left in:\n{out}");
    out
}

/// The queries with at least one dashboard variable.
fn queries_with_variables() -> Vec<(String, String)> {
    clickhouse_queries()
        .into_iter()
        .filter(|(_, sql)| VARIABLES.iter().any(|(n, _)| sql.contains(&format!("${{{n}"))))
        .collect()
}

/// Each variable set to `value`.
fn hostile_vars(value: &str) -> Vec<(&'static str, &str)> {
    VARIABLES.iter().map(|(n, _)| (*n, value)).collect()
}

/// ClickHouse's tokens, as far as literals are concerned: string literals (with
/// `\` escapes and doubled quotes), quoted identifiers, comments, and everything else
/// one character or word at a time.
#[derive(Debug, PartialEq)]
enum Token {
    Str(String),
    Quoted(String),
    Comment,
    Other(String),
}

fn tokens(sql: &str) -> Vec<Token> {
    let b: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '`' {
            let mut text = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == '\\' && i + 1 < b.len() {
                    text.push(b[i + 1]);
                    i += 2;
                } else if b[i] == c && b.get(i + 1) == Some(&c) {
                    text.push(c);
                    i += 2;
                } else if b[i] == c {
                    break;
                } else {
                    text.push(b[i]);
                    i += 1;
                }
            }
            i += 1;
            out.push(if c == '\'' { Token::Str(text) } else { Token::Quoted(text) });
        } else if c == '-' && b.get(i + 1) == Some(&'-') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            out.push(Token::Comment);
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            out.push(Token::Comment);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                i += 1;
            }
            out.push(Token::Other(b[start..i].iter().collect()));
        } else {
            out.push(Token::Other(c.to_string()));
            i += 1;
        }
    }
    out
}

/// `sql` rendered with `value` in every variable has the tokens of `sql` rendered with
/// the usual values, but for string literals: the value stays inside its literal.
fn stays_literal(sql: &str, value: &str) -> Result<(), String> {
    let (benign, hostile) =
        (tokens(&expand(sql, 10, 20)), tokens(&expand_with(sql, 10, 20, &hostile_vars(value))));
    let shape = |t: &[Token]| -> Vec<String> {
        t.iter()
            .map(|t| match t {
                Token::Str(_) => "'…'".to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    if shape(&benign) != shape(&hostile) {
        return Err(format!(
            "{value:?} changes the query's tokens:\n{}",
            expand_with(sql, 10, 20, &hostile_vars(value))
        ));
    }
    if !hostile.iter().any(|t| *t == Token::Str(percentencode(value))) {
        return Err(format!("{value:?} is not one literal of its own"));
    }
    Ok(())
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
    let mut settings = loaded.pipeline_settings(SinkKind::ClickHouse(ch.clone()));
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
        batch_interval: livefunnel_core::Duration::from_ms(200),
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
    // Hostile values: the queries still run, and find nothing.
    let hostile: Vec<(String, String)> = queries_with_variables()
        .iter()
        .flat_map(|(place, sql)| {
            HOSTILE
                .iter()
                .map(move |v| (format!("{place} with {v:?}"), expand_with(sql, from, to, &hostile_vars(v))))
        })
        .collect();
    for (place, sql) in &hostile {
        let body = fetch(&f, &server.http_url(), sql, "JSONCompact");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let rows = answer["data"].as_array().unwrap();
        assert!(
            !rows.iter().any(|r| informative(r.as_array().unwrap())),
            "{place}: rows on 18.16: {rows:?}\n{sql}"
        );
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
    let first_hostile = steps.len();
    steps.extend(hostile.iter().map(|(_, sql)| ChdbStep::query(sql.clone())));
    let run = Chdb::find().run(&steps);
    run.assert_all_ok();
    for (i, (place, _)) in hostile.iter().enumerate() {
        let rows = run.rows(first_hostile + i);
        // JSON objects: their values, as a row.
        let values =
            |r: &Value| r.as_object().map(|o| o.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert!(
            !rows.iter().any(|r| informative(&values(r))),
            "{place}: rows on ClickHouse {}: {rows:?}",
            run.server_version
        );
    }
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
fn every_variable_in_sql_stays_one_string_literal() {
    let queries = queries_with_variables();
    assert!(queries.len() >= 12, "{} queries with variables", queries.len());
    for (place, sql) in &queries {
        // Written one way only: decoded from its percent-encoding inside a literal.
        let mut rest = sql.as_str();
        while let Some(i) = rest.find('$') {
            let tail = &rest[i..];
            if !tail.starts_with("$__") {
                let name = VARIABLES
                    .iter()
                    .map(|(n, _)| *n)
                    .find(|n| tail.starts_with(&format!("${{{n}:percentencode}}")));
                let name = name.unwrap_or_else(|| {
                    panic!("{place}: an unescaped variable at {:?}", &tail[..tail.len().min(30)])
                });
                assert!(
                    rest[..i].ends_with("decodeURLComponent('")
                        && tail[format!("${{{name}:percentencode}}").len()..].starts_with("')"),
                    "{place}: ${{{name}:percentencode}} outside decodeURLComponent('...')"
                );
            }
            rest = &rest[i + 1..];
        }
        for value in HOSTILE {
            stays_literal(sql, value).unwrap_or_else(|e| panic!("{place}: {e}"));
        }
    }
    // The check can fail: the way the dashboards used to write a variable.
    let old =
        "SELECT 1 FROM t WHERE room_id = '${room_id}' AND x = decodeURLComponent('${org_id:percentencode}')";
    assert!(stays_literal(old, HOSTILE[0]).is_err());
    let sqlstring =
        "SELECT 1 FROM t WHERE room_id = '${room_id}'".replace("'${room_id}'", "'x\\'' OR 1=1 --'");
    assert!(
        tokens(&sqlstring).contains(&Token::Comment),
        "sqlstring's escaping leaves a backslash's quote open"
    );
}

#[test]
fn macros_are_expanded_like_the_plugin_does() {
    let sql = "SELECT 1 FROM t WHERE room_id = decodeURLComponent('${room_id:percentencode}') AND $__timeFilter(ts) AND x < $__toTime";
    assert_eq!(
        expand(sql, 10, 20),
        "SELECT 1 FROM t WHERE room_id = decodeURLComponent('room-0001') AND ts >= toDateTime(10) AND ts <= toDateTime(20) \
         AND x < toDateTime(20)"
    );
    assert_eq!(percentencode("x' OR 1=1 -- 店\\"), "x%27%20OR%201%3D1%20--%20%E5%BA%97%5C");
    let all = clickhouse_queries();
    for part in ["panel Top products", "panel Paid plans", "annotation Room events", "variable session_id"] {
        assert!(all.iter().any(|(place, _)| place.contains(part)), "no query at {part}: {all:?}");
    }
}
