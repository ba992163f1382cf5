//! The insert path: rows are encoded into one RowBinary buffer per table as they
//! arrive, and flushed in batches with retries.

use std::future::Future;
use std::time::{Duration, Instant};

use livefunnel_core::Row;
use rand::Rng;

use crate::annotation::Annotation;
use crate::client::Conn;
use crate::config::{ClickHouseConfig, RetryConfig};
use crate::error::ClickHouseError;
use crate::metrics::ClickHouseMetrics;
use crate::rowbinary::{encode_annotation, encode_row};
use crate::schema::Table;

/// Bytes per compressed block sent on the wire: big enough for LZ4 to work well,
/// small enough that the server starts parsing before the whole batch has arrived.
const CHUNK_BYTES: usize = 1 << 20;

/// Buffers rows per table and inserts them into ClickHouse.
///
/// Rows are encoded on [`ClickHouseSink::push`], so the sink holds bytes, never
/// clones of rows. A table's buffer is cleared only once ClickHouse has acknowledged
/// its insert: a failed flush loses nothing, and sending a batch twice is harmless
/// because the tables keep one row per key and version (contract §5).
pub struct ClickHouseSink {
    conn: Conn,
    metrics: ClickHouseMetrics,
    /// Indexed like [`Table::ALL`].
    buffers: Vec<TableBuffer>,
    rows: u64,
    /// When the oldest buffered row was pushed.
    oldest: Option<Instant>,
}

struct TableBuffer {
    table: Table,
    sql: String,
    bytes: Vec<u8>,
    rows: u64,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub rows: u64,
    /// Uncompressed RowBinary bytes.
    pub bytes: u64,
    /// Insert statements that succeeded (one per non-empty table).
    pub inserts: u32,
    /// Failed attempts that were retried.
    pub retries: u32,
    pub elapsed: Duration,
}

impl ClickHouseSink {
    /// Validates `cfg` and prepares the buffers; no request is made. Run
    /// [`crate::migrate`] first so the tables exist.
    pub fn new(cfg: ClickHouseConfig, metrics: ClickHouseMetrics) -> Result<ClickHouseSink, ClickHouseError> {
        let conn = Conn::new(&cfg)?;
        let buffers = Table::ALL
            .iter()
            .map(|&table| TableBuffer {
                table,
                sql: table.insert_sql(&cfg.database),
                bytes: Vec::new(),
                rows: 0,
            })
            .collect();
        Ok(ClickHouseSink { conn, metrics, buffers, rows: 0, oldest: None })
    }

    pub fn config(&self) -> &ClickHouseConfig {
        &self.conn.cfg
    }

    /// Encodes a result row into its table's buffer.
    #[inline]
    pub fn push(&mut self, row: &Row) {
        let table = Table::of_row(row);
        let buffer = &mut self.buffers[table as usize];
        let encoded = encode_row(row, &mut buffer.bytes);
        debug_assert_eq!(encoded, table);
        buffer.rows += 1;
        self.pushed();
    }

    /// Encodes an annotation into the `annotations` buffer.
    pub fn push_annotation(&mut self, annotation: &Annotation) {
        let buffer = &mut self.buffers[Table::Annotations as usize];
        encode_annotation(annotation, &mut buffer.bytes);
        buffer.rows += 1;
        self.pushed();
    }

    #[inline]
    fn pushed(&mut self) {
        self.rows += 1;
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
    }

    /// Rows waiting for a flush, all tables together.
    pub fn buffered_rows(&self) -> u64 {
        self.rows
    }

    /// Rows of one table waiting for a flush.
    pub fn buffered_rows_of(&self, table: Table) -> u64 {
        self.buffers[table as usize].rows
    }

    /// Encoded bytes waiting for a flush, for back-pressure while ClickHouse is down.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.bytes.len()).sum()
    }

    /// Whether `batch_rows` rows are buffered or the oldest is `batch_interval_ms` old.
    pub fn should_flush(&self, now: Instant) -> bool {
        self.rows >= self.conn.cfg.batch_rows as u64
            || self.oldest.is_some_and(|t| now.saturating_duration_since(t) >= self.conn.cfg.batch_interval())
    }

    /// Inserts every buffered row, retrying retryable errors with backoff until they
    /// succeed or `retry.max_elapsed_ms` passes. A fatal error returns at once and
    /// keeps the rows of the failed table (and of the tables after it) buffered.
    ///
    /// Cancel-safe: dropping the future keeps every row not yet acknowledged.
    pub async fn flush(&mut self) -> Result<FlushStats, ClickHouseError> {
        let started = Instant::now();
        let mut stats = FlushStats::default();
        for i in 0..self.buffers.len() {
            if self.buffers[i].rows == 0 {
                continue;
            }
            let table = self.buffers[i].table;
            let mut attempt = 0u32;
            let mut failing_since: Option<Instant> = None;
            loop {
                let buffer = &self.buffers[i];
                let t0 = Instant::now();
                let result = insert(&self.conn, &buffer.sql, &buffer.bytes).await;
                let seconds = t0.elapsed().as_secs_f64();
                let err = match result {
                    Ok(()) => {
                        self.metrics.inserted(table, buffer.rows, seconds);
                        tracing::debug!(
                            table = table.name(),
                            rows = buffer.rows,
                            seconds,
                            "clickhouse insert"
                        );
                        stats.rows += buffer.rows;
                        stats.bytes += buffer.bytes.len() as u64;
                        stats.inserts += 1;
                        self.clear(i);
                        break;
                    }
                    Err(err) => err,
                };
                let retryable = err.is_retryable();
                self.metrics.failed(table, retryable, seconds);
                if !retryable {
                    tracing::error!(table = table.name(), rows = buffer.rows, error = %err, "clickhouse insert failed");
                    return Err(err);
                }
                let since = *failing_since.get_or_insert(t0);
                let elapsed_ms = since.elapsed().as_millis() as u64;
                if self.conn.cfg.retry.max_elapsed_ms.is_some_and(|max| elapsed_ms >= max) {
                    return Err(ClickHouseError::RetriesExhausted { elapsed_ms, last: Box::new(err) });
                }
                let wait = backoff(&self.conn.cfg.retry, attempt);
                tracing::warn!(
                    table = table.name(),
                    rows = buffer.rows,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %err,
                    "clickhouse insert failed, retrying"
                );
                attempt = attempt.saturating_add(1);
                stats.retries += 1;
                tokio::time::sleep(wait).await;
            }
        }
        stats.elapsed = started.elapsed();
        Ok(stats)
    }

    /// [`ClickHouseSink::flush`], given up when `shutdown` completes first: then the
    /// error is [`ClickHouseError::ShutDown`] and the unacknowledged rows stay buffered.
    pub async fn flush_until(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<FlushStats, ClickHouseError> {
        let outcome = {
            let flush = self.flush();
            tokio::pin!(flush);
            tokio::pin!(shutdown);
            tokio::select! {
                biased;
                result = &mut flush => Some(result),
                () = &mut shutdown => None,
            }
        };
        outcome.unwrap_or(Err(ClickHouseError::ShutDown { rows: self.rows }))
    }

    fn clear(&mut self, i: usize) {
        let buffer = &mut self.buffers[i];
        self.rows -= buffer.rows;
        buffer.rows = 0;
        buffer.bytes.clear();
        // One huge batch after an outage must not pin its memory forever.
        if buffer.bytes.capacity() > 64 * CHUNK_BYTES {
            buffer.bytes = Vec::new();
        }
        if self.rows == 0 {
            self.oldest = None;
        }
    }
}

/// One `INSERT ... FORMAT RowBinary` of `bytes`, within the request timeout, sent in
/// compressed chunks so the server parses while the rest is still on the way.
async fn insert(conn: &Conn, sql: &str, bytes: &[u8]) -> Result<(), ClickHouseError> {
    let timeout = conn.cfg.request_timeout();
    let mut insert = conn.client.insert_formatted_with(sql).with_timeouts(Some(timeout), Some(timeout));
    conn.timed(async move {
        for chunk in bytes.chunks(CHUNK_BYTES) {
            if let Err(sent) = insert.send(chunk.to_vec().into()).await {
                // A server that refuses the insert (bad credentials, read-only user)
                // answers before reading the whole body, and sending then only says
                // "channel closed": the answer is the error worth reporting.
                return match insert.end().await {
                    Err(answer) => Err(answer),
                    Ok(()) => Err(sent),
                };
            }
        }
        insert.end().await
    })
    .await
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, initial * 2^attempt)]`.
fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let cap = retry.initial_backoff_ms.saturating_mul(1u64 << attempt.min(40)).min(retry.max_backoff_ms);
    Duration::from_millis(rand::rng().random_range(0..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let retry = RetryConfig { initial_backoff_ms: 100, max_backoff_ms: 1_000, max_elapsed_ms: None };
        for attempt in 0..100 {
            let cap = (100u64 << attempt.min(20)).min(1_000);
            let wait = backoff(&retry, attempt).as_millis() as u64;
            assert!(wait <= cap, "attempt {attempt}: {wait} > {cap}");
        }
        let late: Vec<u64> = (0..200).map(|_| backoff(&retry, 30).as_millis() as u64).collect();
        assert!(late.iter().any(|&w| w > 500), "jitter spans the range");
        assert!(late.iter().any(|&w| w < 500), "jitter spans the range");
    }

    #[test]
    fn should_flush_on_rows_or_age() {
        let cfg = ClickHouseConfig { batch_rows: 2, batch_interval_ms: 50, ..ClickHouseConfig::default() };
        let mut sink = ClickHouseSink::new(cfg, ClickHouseMetrics::unregistered()).unwrap();
        let now = Instant::now();
        assert!(!sink.should_flush(now + Duration::from_secs(10)), "nothing buffered");
        let a = |i: i64| Annotation {
            org_id: "o".into(),
            room_id: "r".into(),
            session_id: "s".into(),
            platform: "other",
            kind: "lucky_bag",
            ts_ms: i,
            event_id: format!("e{i}"),
            product_id: None,
            text: "lucky bag".into(),
        };
        sink.push_annotation(&a(1));
        assert!(!sink.should_flush(Instant::now()));
        assert!(sink.should_flush(Instant::now() + Duration::from_millis(60)), "the oldest row is old");
        sink.push_annotation(&a(2));
        assert!(sink.should_flush(Instant::now()), "batch_rows reached");
        assert_eq!(sink.buffered_rows(), 2);
        assert_eq!(sink.buffered_rows_of(Table::Annotations), 2);
        assert!(sink.buffered_bytes() > 0);
    }

    #[test]
    fn new_refuses_an_invalid_config() {
        let cfg = ClickHouseConfig { database: "no-dash".into(), ..ClickHouseConfig::default() };
        let err = ClickHouseSink::new(cfg, ClickHouseMetrics::unregistered()).err().unwrap();
        assert!(err.to_string().starts_with("clickhouse.database: "), "{err}");
        assert!(!err.is_retryable());
    }
}
