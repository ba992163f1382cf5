//! Without a server: the generated columns are exactly the replay JSON keys, and
//! every row of the sample survives RowBinary encoding and decoding.

mod common;

use std::collections::BTreeSet;
use std::fmt;

use common::{annotation_json, json_matches, replay_sample, row_json};
use livefunnel_clickhouse::rowbinary::{decode_rows, encode_annotation, encode_row};
use livefunnel_clickhouse::Table;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The keys of a JSON object, in document order.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

#[test]
fn ddl_and_insert_columns_equal_replay_json_keys_in_order() {
    let replayed = replay_sample();
    let mut seen = BTreeSet::new();
    for row in &replayed.rows {
        let table = Table::of_row(row);
        if !seen.insert(table) {
            continue;
        }
        let mut line = Vec::new();
        row.write_jsonl(&mut line);
        let Keys(keys) = serde_json::from_slice(&line).unwrap();
        assert_eq!(keys[0], "kind");
        let columns: Vec<String> = table.columns().into_iter().map(|c| c.name).collect();
        assert_eq!(columns, keys[1..], "{table:?}: columns differ from the replay JSON keys");

        let ddl = table.create_sql("lf");
        let ddl_columns: Vec<&str> = ddl
            .lines()
            .filter_map(|l| l.trim().strip_prefix('`').and_then(|l| l.split('`').next()))
            .collect();
        assert_eq!(ddl_columns, keys[1..], "{table:?}: DDL columns differ from the replay JSON keys");

        let quoted: Vec<String> = keys[1..].iter().map(|k| format!("`{k}`")).collect();
        let insert = table.insert_sql("lf");
        assert!(insert.contains(&format!("({}) FORMAT RowBinary", quoted.join(", "))), "{insert}");
    }
    assert_eq!(seen.len(), Table::RESULTS.len(), "the sample has rows of every result table: {seen:?}");
}

#[test]
fn every_sample_row_round_trips_through_rowbinary() {
    let replayed = replay_sample();
    for table in Table::RESULTS {
        let rows: Vec<_> = replayed.rows.iter().filter(|r| Table::of_row(r) == table).collect();
        let mut bytes = Vec::new();
        for row in &rows {
            assert_eq!(encode_row(row, &mut bytes), table);
        }
        let decoded = decode_rows(table, &bytes).unwrap();
        assert_eq!(decoded.len(), rows.len(), "{table:?}");
        for (row, got) in rows.iter().zip(&decoded) {
            let want = row_json(row);
            assert!(json_matches(&want, got), "{table:?}\nwant {want}\n got {got}");
        }
    }
}

#[test]
fn annotations_round_trip_with_empty_product_ids() {
    let replayed = replay_sample();
    assert!(replayed.annotations.iter().any(|a| a.kind == "product_pin"));
    assert!(replayed.annotations.iter().any(|a| a.kind == "lucky_bag"));
    assert!(replayed.annotations.iter().any(|a| a.product_id.is_none()));
    let mut bytes = Vec::new();
    for a in &replayed.annotations {
        encode_annotation(a, &mut bytes);
    }
    let decoded = decode_rows(Table::Annotations, &bytes).unwrap();
    assert_eq!(decoded.len(), replayed.annotations.len());
    for (a, got) in replayed.annotations.iter().zip(&decoded) {
        assert_eq!(&annotation_json(a), got);
    }
}
