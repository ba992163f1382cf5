//! The shipped sample (`data/sample.jsonl`, the README's first command): its replay
//! output is checked in (`data/sample.expected.jsonl`, reviewed as a whole) and, so a
//! regenerated file cannot hide a wrong number, its totals are recomputed here from the
//! raw input independently of the engine.
//!
//! `UPDATE_GOLDEN=1 cargo test -p livefunnel-e2e --test sample` rewrites the expected
//! file and still fails.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use livefunnel::config::{self, Sources};
use livefunnel::replay::replay;
use livefunnel_core::TimeMode;
use serde_json::Value;

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data").join(file)
}

fn run() -> (Vec<u8>, String) {
    let input = std::fs::read(data("sample.jsonl")).expect("data/sample.jsonl is shipped");
    let loaded = config::load(&Sources::file_only(None), TimeMode::Replay).expect("defaults load");
    let mut rows = Vec::new();
    let summary = replay(&input[..], &mut rows, None, loaded.engine).expect("replay runs");
    (rows, summary.to_json())
}

/// The last version of every row key.
fn latest(rows: &[u8]) -> HashMap<String, Value> {
    let mut last = HashMap::new();
    for line in rows.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let r: Value = serde_json::from_slice(line).expect("rows are json");
        let key =
            ["kind", "room_id", "window", "window_start", "session_id", "source", "plan_id", "product_id"]
                .iter()
                .map(|k| r.get(*k).map_or(String::new(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join("|");
        let version = r["version"].as_u64().unwrap();
        let prev = last.insert(key.clone(), r);
        if let Some(prev) = prev {
            assert_eq!(prev["version"].as_u64().unwrap() + 1, version, "versions of {key} go up by one");
        }
    }
    last
}

#[test]
fn sample_output_is_the_reviewed_one() {
    let (rows, summary) = run();
    let (again, _) = run();
    assert!(rows == again, "two replays of the sample differ");
    let path = data("sample.expected.jsonl");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &rows).unwrap();
        panic!("wrote {}: review it, then rerun without UPDATE_GOLDEN", path.display());
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with UPDATE_GOLDEN=1 cargo test -p livefunnel-e2e --test sample",
            path.display()
        )
    });
    if expected != rows {
        let first =
            expected.split(|&b| b == b'\n').zip(rows.split(|&b| b == b'\n')).position(|(a, b)| a != b);
        panic!("replay of the sample differs from {} (first differing row: {first:?})", path.display());
    }
    assert!(summary.contains("\"accepted\":6646"), "{summary}");
}

#[test]
fn sample_totals_match_the_raw_input() {
    // Independent of the engine: accepted order_paid events, first copy of each
    // (room_id, event_id) wins; the sample has no event beyond the lateness.
    let input = std::fs::read_to_string(data("sample.jsonl")).unwrap();
    let mut seen = HashSet::new();
    let mut gmv: HashMap<String, i64> = HashMap::new();
    let mut enters: HashMap<String, HashSet<String>> = HashMap::new();
    for line in input.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
        let (Some(room), Some(id), Some(kind)) =
            (e["room_id"].as_str(), e["event_id"].as_str(), e["type"].as_str())
        else {
            continue;
        };
        if livefunnel_core::decode(line.as_bytes()).is_err() || !seen.insert((room.to_owned(), id.to_owned()))
        {
            continue;
        }
        match kind {
            "order_paid" => *gmv.entry(room.to_owned()).or_default() += e["amount_cents"].as_i64().unwrap(),
            "enter" => {
                enters.entry(room.to_owned()).or_default().insert(e["user_id"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    assert_eq!(gmv.len(), 4, "four rooms sell in the sample");

    let (rows, _) = run();
    let last = latest(&rows);
    for (room, total) in &gmv {
        let sessions: Vec<&Value> =
            last.values().filter(|r| r["kind"] == "session" && r["room_id"] == room.as_str()).collect();
        assert_eq!(sessions.len(), 1, "{room}: one broadcast");
        let s = sessions[0];
        assert_eq!(s["gmv_cents"].as_i64(), Some(*total), "{room}: session gmv");
        let split: i64 = ["gmv_cents_private", "gmv_cents_public", "gmv_cents_paid"]
            .iter()
            .map(|k| s[*k].as_i64().unwrap())
            .sum();
        assert_eq!(split, *total, "{room}: the source classes add up");
        assert_eq!(s["watch_uv"].as_u64(), Some(enters[room].len() as u64), "{room}: distinct viewers");
        // Tumbling minutes partition time: their GMV adds up to the broadcast's.
        let minutes: i64 = last
            .values()
            .filter(|r| r["kind"] == "window" && r["window"] == "1m" && r["room_id"] == room.as_str())
            .map(|r| r["gmv_cents"].as_i64().unwrap())
            .sum();
        assert_eq!(minutes, *total, "{room}: 1m windows");
        // And the source breakdown of each minute adds up to that minute.
        let by_source: i64 = last
            .values()
            .filter(|r| r["kind"] == "source" && r["window"] == "1m" && r["room_id"] == room.as_str())
            .map(|r| r["gmv_cents"].as_i64().unwrap())
            .sum();
        assert_eq!(by_source, *total, "{room}: 1m source breakdowns");
    }
}
