//! Shared by the integration tests: the sample replayed through the engine, the
//! expected latest rows, and comparisons that treat floats numerically.
#![allow(dead_code)] // each test binary uses a different part

pub mod upgrade;

use std::collections::BTreeMap;
use std::path::PathBuf;

use livefunnel_clickhouse::{Annotation, ClickHouseConfig, Table};
use livefunnel_core::{decode, Counts, Engine, EngineConfig, Identity, Outcome, Platform, Row, WindowRow};
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

pub fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/sample.jsonl")
}

/// Every row the engine emits for the repository's sample, in emission order (all
/// versions), and the annotations of its accepted events: what `livefunnel replay`
/// does (one partition, arrival order, then `finish`).
pub struct Replayed {
    pub rows: Vec<Row>,
    pub annotations: Vec<Annotation>,
}

pub fn replay_sample() -> Replayed {
    let input = std::fs::read(sample_path()).expect("reading data/sample.jsonl");
    let mut engine = Engine::new(EngineConfig::default());
    let mut rows = Vec::new();
    let mut annotations = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(ev) = decode(line) else { continue };
        if let Outcome::Accepted { .. } = engine.process(&ev, 0, &mut rows) {
            annotations.extend(Annotation::from_event(&ev));
        }
    }
    engine.finish(&mut rows);
    assert!(rows.len() > 1000, "the sample yields thousands of rows, got {}", rows.len());
    Replayed { rows, annotations }
}

/// The replay JSON object of a row (contract §6).
pub fn row_json(row: &Row) -> Value {
    let mut out = Vec::new();
    row.write_jsonl(&mut out);
    serde_json::from_slice(&out).expect("replay rows are JSON")
}

/// The `annotations` row an annotation should read back as.
pub fn annotation_json(a: &Annotation) -> Value {
    serde_json::json!({
        "org_id": a.org_id,
        "room_id": a.room_id,
        "session_id": a.session_id,
        "platform": a.platform,
        "kind": a.kind,
        "ts": a.ts_ms.div_euclid(1000) * 1000,
        "ts_ms": a.ts_ms,
        "event_id": a.event_id,
        "product_id": a.product_id.clone().unwrap_or_default(),
        "text": a.text,
    })
}

/// The contract's key of a row of `table` (§3, §5), as a string: the sorting key
/// without `org_id`, so a row that changed its org would show up as a duplicate.
pub fn key_of(table: Table, v: &Value) -> String {
    let parts: Vec<String> = table
        .order_by()
        .into_iter()
        .filter(|k| *k != "org_id")
        .map(|k| v.get(k).unwrap_or_else(|| panic!("{table:?} row without {k}: {v}")).to_string())
        .collect();
    parts.join("|")
}

/// The highest version of every key among `rows` of `table`.
pub fn latest_by_key(table: Table, rows: &[Row]) -> BTreeMap<String, Value> {
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for row in rows.iter().filter(|r| Table::of_row(r) == table) {
        let v = row_json(row);
        let key = key_of(table, &v);
        let newer = latest.get(&key).is_none_or(|old| old["version"].as_u64() <= v["version"].as_u64());
        if newer {
            latest.insert(key, v);
        }
    }
    latest
}

/// Keys actual rows by [`key_of`], failing on a key seen twice.
pub fn by_key(table: Table, rows: Vec<Value>) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for v in rows {
        let key = key_of(table, &v);
        if let Some(old) = map.insert(key.clone(), v) {
            panic!("{table:?}: key {key} read back twice after FINAL, one was {old}");
        }
    }
    map
}

/// JSON equality with floats compared within 1e-12 relative (the contract allows
/// 1e-9): serde_json's default float parsing may be one ulp off.
pub fn json_matches(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_matches(v, w)))
        }
        _ => a == b,
    }
}

/// Asserts that `actual` has exactly the keys of `expected`, each with the same
/// object, `ignore` fields excepted.
pub fn assert_same_rows(
    table: Table,
    expected: &BTreeMap<String, Value>,
    actual: &BTreeMap<String, Value>,
    ignore: &[&str],
) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        for field in ignore {
            v.as_object_mut().expect("rows are objects").remove(*field);
        }
        v
    };
    let missing: Vec<&String> = expected.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<&String> = actual.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{table:?}: missing keys {missing:?}, unexpected keys {extra:?}"
    );
    for (key, want) in expected {
        let (want, got) = (strip(want), strip(&actual[key]));
        if !json_matches(&want, &got) {
            let diff: Vec<String> = want
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| !got.get(*k).is_some_and(|g| json_matches(v, g)))
                .map(|(k, v)| format!("{k}: want {v}, got {}", got.get(k).unwrap_or(&Value::Null)))
                .collect();
            panic!("{table:?} key {key} differs: {diff:?}\nwant {want}\n got {got}");
        }
    }
}

/// A config for `server`'s HTTP port and database `db`, with quick retries.
pub fn config_for(server: &ClickHouseServer, db: &str) -> ClickHouseConfig {
    let mut cfg = ClickHouseConfig { url: server.http_url(), database: db.to_string(), ..Default::default() };
    cfg.retry.initial_backoff = livefunnel_core::Duration::from_ms(20);
    cfg.retry.max_backoff = livefunnel_core::Duration::from_ms(200);
    cfg.request_timeout = livefunnel_core::Duration::from_ms(10_000);
    cfg
}

/// Runs SQL as `default` through the HTTP interface and returns the answer as text
/// (`TabSeparated`), trimmed.
pub async fn query_text(server: &ClickHouseServer, sql: &str) -> String {
    let client = clickhouse::Client::default().with_url(server.http_url()).with_validation(false);
    let mut cursor = client.query_raw(sql).fetch_bytes("TabSeparated").expect("starting a query");
    let bytes = cursor.collect().await.unwrap_or_else(|e| panic!("query {sql:?} failed: {e}"));
    String::from_utf8(bytes.to_vec()).expect("utf-8 answer").trim().to_string()
}

/// A synthetic `5m/10s` window row: 500 rooms, consecutive slides, realistic counts.
pub fn window_row(i: u64) -> Row {
    let room = i % 500;
    let minute = (i / 500) as i64;
    Row::Window(WindowRow {
        room_id: format!("room-{room:04}").into(),
        window: "5m/10s".into(),
        window_start: 1_767_225_600_000 + minute * 10_000,
        window_end: 1_767_225_600_000 + minute * 10_000 + 300_000,
        version: 1,
        identity: Identity {
            session_id: format!("room-{room:04}-20260101-1").into(),
            org_id: "org-lanhai".into(),
            account_id: Some("acct-lanhai-home".into()),
            platform: Platform::WechatChannels,
        },
        counts: Counts {
            room_impressions: 4000 + i,
            watch_pv: 2000 + i % 17,
            watch_uv: 1500,
            online_end: 300,
            online_peak: 420,
            watch_ms: 90_500_000,
            present_uv: 1000,
            product_clicks: 120,
            product_click_uv: 100,
            orders_created: 30,
            orders_paid: 25,
            buyer_uv: 22,
            items_sold: 40,
            gmv_cents: 1_234_500 + i as i64,
            comments: 80,
            comment_uv: 60,
            watch_uv_private: 500,
            watch_uv_public: 900,
            watch_uv_paid: 100,
            ..Counts::default()
        },
    })
}

/// `row` as a late event re-decides it: the same key under `org`, at `version`
/// (contract §5: `org_id` can change between versions of one result).
pub fn reorg(row: &Row, org: &str, version: u64) -> Row {
    let mut row = row.clone();
    match &mut row {
        Row::Window(w) => {
            w.identity.org_id = org.into();
            w.version = version;
        }
        Row::Breakdown(b) => {
            b.org_id = org.into();
            b.version = version;
        }
        Row::Session(s) => {
            s.org_id = org.into();
            s.version = version;
        }
    }
    row
}
