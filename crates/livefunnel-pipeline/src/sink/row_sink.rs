//! Where the sink task writes rows: ClickHouse, JSONL files, or nowhere (benches).

use std::io;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use livefunnel_clickhouse::{Annotation, ClickHouseError, ClickHouseSink, FlushStats};
use livefunnel_core::Row;

/// Rows buffered by the sink task and written in batches.
///
/// [`RowSink::seal`] takes the buffered rows out and returns their write: the sink
/// task keeps pushing the next rows while it runs, and may run several at once. A
/// destination whose writes must not overlap (files appended in order) writes inside
/// `seal` and returns a finished future.
pub trait RowSink: Send {
    fn push(&mut self, rows: &[Row], annotations: &[Annotation]);
    /// Rows pushed since the last seal.
    fn buffered_rows(&self) -> u64;
    /// Whether the buffered rows make a batch now: enough of them, or the oldest old enough.
    fn should_flush(&self, now: Instant) -> bool;
    fn seal(&mut self) -> BoxFuture<'static, Result<FlushStats, SinkError>>;
    /// Whether a write is failing and being retried: the sink task then takes no more
    /// rows, which would only wait in memory, and rows a fenced partition task queued
    /// meanwhile stay in the channel, to be dropped.
    fn is_failing(&self) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error("writing jsonl output: {0}")]
    Jsonl(#[from] io::Error),
    #[error("aborted while writing to {0}")]
    Aborted(&'static str),
}

impl SinkError {
    /// Whether the same write can succeed later. The sink task retries ClickHouse
    /// inside the write, so an error that reaches it stops the pipeline either way;
    /// this tells the log and the operator whether a restart alone may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::ClickHouse(e) => e.is_retryable(),
            SinkError::Jsonl(e) => SinkError::io_is_retryable(e),
            SinkError::Aborted(_) => false,
        }
    }

    /// Whether an IO error of the JSONL files may pass: not a missing directory or a
    /// refused permission, which need the operator.
    pub fn io_is_retryable(e: &io::Error) -> bool {
        matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    }
}

impl RowSink for ClickHouseSink {
    fn push(&mut self, rows: &[Row], annotations: &[Annotation]) {
        for r in rows {
            ClickHouseSink::push(self, r);
        }
        for a in annotations {
            self.push_annotation(a);
        }
    }

    fn buffered_rows(&self) -> u64 {
        ClickHouseSink::buffered_rows(self)
    }

    fn should_flush(&self, now: Instant) -> bool {
        ClickHouseSink::should_flush(self, now)
    }

    fn seal(&mut self) -> BoxFuture<'static, Result<FlushStats, SinkError>> {
        let mut batch = ClickHouseSink::seal(self);
        async move { batch.insert().await.map_err(SinkError::from) }.boxed()
    }

    fn is_failing(&self) -> bool {
        ClickHouseSink::is_failing(self)
    }
}

/// Counts rows and drops them: the pipeline without a destination's cost, for benches.
#[derive(Debug, Default)]
pub struct NullSink {
    rows: u64,
}

impl RowSink for NullSink {
    fn push(&mut self, rows: &[Row], annotations: &[Annotation]) {
        self.rows += (rows.len() + annotations.len()) as u64;
    }

    fn buffered_rows(&self) -> u64 {
        self.rows
    }

    fn should_flush(&self, _now: Instant) -> bool {
        self.rows > 0
    }

    fn seal(&mut self) -> BoxFuture<'static, Result<FlushStats, SinkError>> {
        let rows = std::mem::take(&mut self.rows);
        futures::future::ready(Ok(FlushStats { rows, ..FlushStats::default() })).boxed()
    }
}
