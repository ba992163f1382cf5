//! RowBinary: rows are encoded straight from the core's rows into insert buffers,
//! and read back into the replay JSON shape (contract §6).
//!
//! Column order and types come from [`Table::columns`]; the writers below follow the
//! same order, which the tests check field by field against the replay JSON.
//! RowBinary: integers and floats little-endian, strings as LEB128 length + bytes,
//! `Nullable(T)` as a 1 (null) or 0 byte followed by `T`, `DateTime` as `u32` seconds.

use livefunnel_core::row::MEASURE_COUNT;
use livefunnel_core::{Counts, Measure, Row};
use serde_json::{Map, Number, Value};

use crate::annotation::Annotation;
use crate::schema::{ColumnType, Table};

/// Appends `row` to `out` in the column order of its table, returning the table.
pub fn encode_row(row: &Row, out: &mut Vec<u8>) -> Table {
    match row {
        Row::Window(r) => {
            put_str(out, &r.room_id);
            put_str(out, &r.window);
            put_datetime(out, r.window_start);
            put_datetime(out, r.window_end);
            put_u64(out, r.version);
            put_str(out, &r.identity.session_id);
            put_str(out, &r.identity.org_id);
            put_opt_str(out, r.identity.account_id.as_deref());
            put_str(out, r.identity.platform.as_str());
            put_counts(out, &r.counts);
            Table::Window
        }
        Row::Breakdown(r) => {
            put_str(out, &r.room_id);
            put_str(out, &r.window);
            put_datetime(out, r.window_start);
            put_datetime(out, r.window_end);
            put_u64(out, r.version);
            put_str(out, &r.org_id);
            put_str(out, &r.key);
            for (_, m) in r.counts.measures(r.kind) {
                put_measure(out, m);
            }
            Table::of_breakdown(r.kind)
        }
        Row::Session(r) => {
            put_str(out, &r.room_id);
            put_str(out, "session");
            put_str(out, &r.session_id);
            put_u64(out, r.version);
            put_str(out, &r.org_id);
            put_opt_str(out, r.account_id.as_deref());
            put_str(out, r.platform.as_str());
            put_u64(out, ms_to_u64(r.session_start_ts));
            put_opt_ms(out, r.session_end_ts);
            put_f64(out, r.duration_ms as f64 / 1000.0);
            put_u64(out, r.peak_online);
            put_opt_ms(out, r.peak_online_ts);
            put_counts(out, &r.counts);
            put_counts(out, &r.first30m);
            out.push(u8::from(r.ended_by_timeout));
            out.push(u8::from(r.cold_start));
            Table::Session
        }
    }
}

/// Appends an annotation in the column order of [`Table::Annotations`].
pub fn encode_annotation(a: &Annotation, out: &mut Vec<u8>) {
    put_str(out, &a.org_id);
    put_str(out, &a.room_id);
    put_str(out, &a.session_id);
    put_str(out, a.platform);
    put_str(out, a.kind);
    put_datetime(out, a.ts_ms);
    put_u64(out, ms_to_u64(a.ts_ms));
    put_str(out, &a.event_id);
    put_str(out, a.product_id.as_deref().unwrap_or(""));
    put_str(out, &a.text);
}

#[inline]
fn put_counts(out: &mut Vec<u8>, c: &Counts) {
    // Encoded on the stack and appended at once: one capacity check per row part
    // instead of one per field (this is the hot loop of the sink).
    let mut buf = [0u8; MEASURE_COUNT * 9];
    let mut n = 0;
    for (_, m) in c.measures() {
        n += write_measure(&mut buf[n..], m);
    }
    out.extend_from_slice(&buf[..n]);
}

#[inline]
fn put_measure(out: &mut Vec<u8>, m: Measure) {
    let mut buf = [0u8; 9];
    let n = write_measure(&mut buf, m);
    out.extend_from_slice(&buf[..n]);
}

/// Writes one measure at the start of `buf` (at least 9 bytes), returning its length.
#[inline(always)]
fn write_measure(buf: &mut [u8], m: Measure) -> usize {
    let (null, bytes) = match m {
        Measure::UInt(v) => (None, v.to_le_bytes()),
        Measure::Int(v) => (None, v.to_le_bytes()),
        Measure::Float(v) => (None, v.to_le_bytes()),
        Measure::Ratio(None) | Measure::OptInt(None) => (Some(1u8), [0; 8]),
        Measure::Ratio(Some(v)) => (Some(0), v.to_le_bytes()),
        Measure::OptInt(Some(v)) => (Some(0), v.to_le_bytes()),
    };
    match null {
        None => {
            buf[..8].copy_from_slice(&bytes);
            8
        }
        Some(1) => {
            buf[0] = 1;
            1
        }
        Some(_) => {
            buf[0] = 0;
            buf[1..9].copy_from_slice(&bytes);
            9
        }
    }
}

#[inline]
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len() as u64;
    while len >= 0x80 {
        out.push(len as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(s.as_bytes());
}

#[inline]
fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(0);
            put_str(out, s);
        }
        None => out.push(1),
    }
}

/// `DateTime` holds `u32` seconds: window bounds are whole seconds (§2); anything
/// outside 1970..2106 saturates, as ClickHouse itself cannot store it.
#[inline]
fn put_datetime(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32;
    out.extend_from_slice(&secs.to_le_bytes());
}

/// The `*_ts` columns are `UInt64` milliseconds (§6); times before 1970 saturate at 0.
#[inline]
fn ms_to_u64(ms: i64) -> u64 {
    debug_assert!(ms >= 0, "a time before 1970 cannot be stored in a UInt64 column: {ms}");
    ms.max(0) as u64
}

#[inline]
fn put_opt_ms(out: &mut Vec<u8>, ms: Option<i64>) {
    match ms {
        Some(ms) => {
            out.push(0);
            put_u64(out, ms_to_u64(ms));
        }
        None => out.push(1),
    }
}

/// Decodes RowBinary rows of `table` (as selected by [`Table::select_latest_sql`]) into
/// JSON objects shaped like replay output: same keys, `kind` added for result
/// tables, `DateTime` columns as epoch milliseconds, `UInt8` flags (`ended_by_timeout`,
/// `cold_start`) booleans.
pub fn decode_rows(table: Table, bytes: &[u8]) -> Result<Vec<Value>, String> {
    let columns = table.columns();
    let mut reader = Reader { buf: bytes, pos: 0 };
    let mut rows = Vec::new();
    while reader.pos < bytes.len() {
        let mut obj = Map::new();
        if let Some(kind) = table.kind() {
            obj.insert("kind".to_string(), Value::from(kind));
        }
        for c in &columns {
            let v = reader.value(c.ty).map_err(|e| format!("{}: column {}: {e}", table.name(), c.name))?;
            obj.insert(c.name.clone(), v);
        }
        rows.push(Value::Object(obj));
    }
    Ok(rows)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated row")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take returns exactly N bytes"))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".to_string())
    }

    fn value(&mut self, ty: ColumnType) -> Result<Value, String> {
        use ColumnType::*;
        let nullable = matches!(ty, NullableString | NullableUInt64 | NullableInt64 | NullableFloat64);
        if nullable && self.take(1)?[0] != 0 {
            return Ok(Value::Null);
        }
        Ok(match ty {
            String | NullableString => {
                let len = usize::try_from(self.varint()?).map_err(|_| "string too long")?;
                let bytes = self.take(len)?;
                Value::from(std::str::from_utf8(bytes).map_err(|e| e.to_string())?)
            }
            DateTime => Value::from(i64::from(u32::from_le_bytes(self.array()?)) * 1000),
            Bool => Value::Bool(self.take(1)?[0] != 0),
            UInt64 | NullableUInt64 => Value::from(u64::from_le_bytes(self.array()?)),
            Int64 | NullableInt64 => Value::from(i64::from_le_bytes(self.array()?)),
            Float64 | NullableFloat64 => {
                Number::from_f64(f64::from_le_bytes(self.array()?)).map_or(Value::Null, Value::Number)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use livefunnel_core::{Identity, Platform, WindowRow};

    use super::*;

    fn window_row() -> Row {
        Row::Window(WindowRow {
            room_id: Arc::from("r1"),
            window: Arc::from("5m/10s"),
            window_start: 1_767_225_600_000,
            window_end: 1_767_225_900_000,
            version: 3,
            identity: Identity {
                session_id: Arc::from("s1"),
                org_id: Arc::from("default"),
                account_id: None,
                platform: Platform::Douyin,
            },
            counts: Counts { watch_pv: 4, watch_uv: 2, gmv_cents: 1999, ..Counts::default() },
        })
    }

    #[test]
    fn window_row_bytes_follow_rowbinary() {
        let mut out = Vec::new();
        assert_eq!(encode_row(&window_row(), &mut out), Table::Window);
        let mut expected = vec![2, b'r', b'1', 6];
        expected.extend_from_slice(b"5m/10s");
        expected.extend_from_slice(&1_767_225_600u32.to_le_bytes());
        expected.extend_from_slice(&1_767_225_900u32.to_le_bytes());
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"\x02s1\x07default\x01\x06douyin");
        assert_eq!(&out[..expected.len()], &expected[..]);
        // Then room_impressions = 0 and watch_pv = 4 as UInt64.
        let rest = &out[expected.len()..];
        assert_eq!(&rest[..16], &[0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn long_strings_use_multi_byte_lengths() {
        let mut out = Vec::new();
        let s = "x".repeat(300);
        put_str(&mut out, &s);
        assert_eq!(&out[..2], &[0xac, 0x02]);
        let mut r = Reader { buf: &out, pos: 0 };
        assert_eq!(r.value(ColumnType::String).unwrap(), Value::from(s));
    }

    #[test]
    fn decode_reverses_encode_with_replay_keys_and_nulls() {
        let mut out = Vec::new();
        encode_row(&window_row(), &mut out);
        encode_row(&window_row(), &mut out);
        let rows = decode_rows(Table::Window, &out).unwrap();
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(r["kind"], "window");
        assert_eq!(r["window_start"], 1_767_225_600_000i64);
        assert_eq!(r["account_id"], Value::Null);
        assert_eq!(r["watch_pv"], 4);
        assert_eq!(r["uv_value"], 1999.0 / 100.0 / 2.0);
        assert_eq!(r["aov"], Value::Null);
        assert!(decode_rows(Table::Window, &out[..out.len() - 1]).unwrap_err().contains("truncated"));
    }

    #[test]
    fn times_outside_datetime_saturate() {
        let mut out = Vec::new();
        put_datetime(&mut out, -1);
        put_datetime(&mut out, i64::MAX);
        assert_eq!(out, [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    }
}
