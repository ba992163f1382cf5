//! JSONL files as a sink, for the demo on a machine without ClickHouse: every row as in
//! `replay` (contract §6) appended to `rows.jsonl`, annotations to `annotations.jsonl`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use livefunnel_clickhouse::Annotation;
use livefunnel_core::Row;

const FLUSH_BYTES: usize = 1 << 20;

pub struct JsonlSink {
    rows: File,
    annotations: File,
    rows_buf: Vec<u8>,
    ann_buf: Vec<u8>,
    last_flush: std::time::Instant,
}

impl JsonlSink {
    pub fn open(dir: &Path) -> io::Result<JsonlSink> {
        fs::create_dir_all(dir)?;
        let open = |name: &str| OpenOptions::new().create(true).append(true).open(dir.join(name));
        Ok(JsonlSink {
            rows: open("rows.jsonl")?,
            annotations: open("annotations.jsonl")?,
            rows_buf: Vec::new(),
            ann_buf: Vec::new(),
            last_flush: std::time::Instant::now(),
        })
    }

    pub fn push(&mut self, rows: &[Row], annotations: &[Annotation]) {
        for r in rows {
            r.write_jsonl(&mut self.rows_buf);
        }
        for a in annotations {
            let v = serde_json::json!({
                "org_id": a.org_id, "room_id": a.room_id, "session_id": a.session_id,
                "platform": a.platform, "kind": a.kind, "ts": a.ts_ms, "event_id": a.event_id,
                "product_id": a.product_id, "text": a.text,
            });
            serde_json::to_writer(&mut self.ann_buf, &v).expect("writing json into a vec");
            self.ann_buf.push(b'\n');
        }
    }

    pub fn should_flush(&self) -> bool {
        self.rows_buf.len() >= FLUSH_BYTES || self.last_flush.elapsed().as_secs() >= 1
    }

    /// Writes and syncs: a barrier after this is durable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = std::time::Instant::now();
        if !self.rows_buf.is_empty() {
            self.rows.write_all(&self.rows_buf)?;
            self.rows.sync_data()?;
            self.rows_buf.clear();
        }
        if !self.ann_buf.is_empty() {
            self.annotations.write_all(&self.ann_buf)?;
            self.annotations.sync_data()?;
            self.ann_buf.clear();
        }
        Ok(())
    }
}
