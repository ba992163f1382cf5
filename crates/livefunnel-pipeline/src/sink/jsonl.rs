//! JSONL files as a sink, for the demo on a machine without ClickHouse: every row as in
//! `replay` (contract §6) appended to `rows.jsonl`, annotations to `annotations.jsonl`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use futures::future::BoxFuture;
use futures::FutureExt;
use livefunnel_clickhouse::{Annotation, FlushStats};
use livefunnel_core::Row;

use super::row_sink::{RowSink, SinkError};

const FLUSH_BYTES: usize = 1 << 20;

pub struct JsonlSink {
    rows: File,
    annotations: File,
    rows_buf: Vec<u8>,
    ann_buf: Vec<u8>,
    /// Rows and annotations buffered.
    buffered: u64,
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
            buffered: 0,
            last_flush: std::time::Instant::now(),
        })
    }

    fn push_rows(&mut self, rows: &[Row], annotations: &[Annotation]) {
        self.buffered += (rows.len() + annotations.len()) as u64;
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

    /// Writes and syncs: a barrier after this is durable.
    fn flush(&mut self) -> io::Result<()> {
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
        self.buffered = 0;
        Ok(())
    }
}

/// Appends in order: each seal writes and syncs before it returns.
impl RowSink for JsonlSink {
    fn push(&mut self, rows: &[Row], annotations: &[Annotation]) {
        self.push_rows(rows, annotations);
    }

    fn buffered_rows(&self) -> u64 {
        self.buffered
    }

    fn should_flush(&self, now: std::time::Instant) -> bool {
        self.buffered > 0
            && (self.rows_buf.len() >= FLUSH_BYTES
                || now.saturating_duration_since(self.last_flush).as_secs() >= 1)
    }

    fn seal(&mut self) -> BoxFuture<'static, Result<FlushStats, SinkError>> {
        let written = self.flush().map(|()| FlushStats::default()).map_err(SinkError::from);
        futures::future::ready(written).boxed()
    }
}
