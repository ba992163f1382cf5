//! The insert path: rows are encoded into one RowBinary buffer per table as they
//! arrive, and flushed in batches with retries.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
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
///
/// The tables of a batch are inserted in parallel. [`ClickHouseSink::seal`] takes the
/// buffered rows out as a [`SealedBatch`], so a caller can keep encoding the next batch
/// while earlier ones are inserted; batches may then land out of order, which the
/// versions make harmless too.
pub struct ClickHouseSink {
    conn: Conn,
    metrics: ClickHouseMetrics,
    open: Batch,
    /// Table inserts, of this sink and its sealed batches, failing and being retried.
    failing: Arc<AtomicUsize>,
}

/// One buffer per table, indexed like [`Table::ALL`].
struct Batch {
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

/// Rows taken out of a [`ClickHouseSink`] by [`ClickHouseSink::seal`], to be inserted
/// on their own. Rows stay in it until ClickHouse acknowledges them, so a failed
/// [`SealedBatch::insert`] can be sent again.
pub struct SealedBatch {
    conn: Conn,
    metrics: ClickHouseMetrics,
    batch: Batch,
    failing: Arc<AtomicUsize>,
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
        let open = Batch::new(&cfg.database);
        Ok(ClickHouseSink { conn, metrics, open, failing: Arc::default() })
    }

    pub fn config(&self) -> &ClickHouseConfig {
        &self.conn.cfg
    }

    /// Encodes a result row into its table's buffer.
    #[inline]
    pub fn push(&mut self, row: &Row) {
        let table = Table::of_row(row);
        let buffer = &mut self.open.buffers[table as usize];
        let encoded = encode_row(row, &mut buffer.bytes);
        debug_assert_eq!(encoded, table);
        buffer.rows += 1;
        self.open.pushed();
    }

    /// Encodes an annotation into the `annotations` buffer.
    pub fn push_annotation(&mut self, annotation: &Annotation) {
        let buffer = &mut self.open.buffers[Table::Annotations as usize];
        encode_annotation(annotation, &mut buffer.bytes);
        buffer.rows += 1;
        self.open.pushed();
    }

    /// Rows waiting for a flush, all tables together.
    pub fn buffered_rows(&self) -> u64 {
        self.open.rows
    }

    /// Rows of one table waiting for a flush.
    pub fn buffered_rows_of(&self, table: Table) -> u64 {
        self.open.buffers[table as usize].rows
    }

    /// Encoded bytes waiting for a flush, for back-pressure while ClickHouse is down.
    pub fn buffered_bytes(&self) -> usize {
        self.open.bytes()
    }

    /// Whether `batch_rows` rows are buffered or the oldest is `batch_interval` old.
    pub fn should_flush(&self, now: Instant) -> bool {
        self.open.rows >= self.conn.cfg.batch_rows as u64
            || self
                .open
                .oldest
                .is_some_and(|t| now.saturating_duration_since(t) >= self.conn.cfg.batch_interval.as_std())
    }

    /// Inserts every buffered row, retrying retryable errors with backoff until they
    /// succeed or `retry.max_elapsed` passes. The tables are inserted in parallel; a
    /// fatal error returns at once and keeps the rows of every table not acknowledged.
    ///
    /// Cancel-safe: dropping the future keeps every row not yet acknowledged.
    pub async fn flush(&mut self) -> Result<FlushStats, ClickHouseError> {
        insert_batch(&self.conn, &self.metrics, &self.failing, &mut self.open).await
    }

    /// Whether an insert of this sink or of a batch it sealed is failing and being
    /// retried: ClickHouse is down or refusing, and more rows would only wait in memory.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed) > 0
    }

    /// Takes the buffered rows out, to be inserted by [`SealedBatch::insert`] while
    /// the sink buffers the next rows.
    pub fn seal(&mut self) -> SealedBatch {
        let batch = std::mem::replace(&mut self.open, Batch::new(&self.conn.cfg.database));
        SealedBatch {
            conn: self.conn.clone(),
            metrics: self.metrics.clone(),
            batch,
            failing: self.failing.clone(),
        }
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
        outcome.unwrap_or(Err(ClickHouseError::ShutDown { rows: self.open.rows }))
    }
}

impl SealedBatch {
    /// Inserts the batch's tables in parallel, as [`ClickHouseSink::flush`] does.
    pub async fn insert(&mut self) -> Result<FlushStats, ClickHouseError> {
        insert_batch(&self.conn, &self.metrics, &self.failing, &mut self.batch).await
    }
}

impl Batch {
    fn new(database: &str) -> Batch {
        let buffers = Table::ALL
            .iter()
            .map(|&table| TableBuffer { table, sql: table.insert_sql(database), bytes: Vec::new(), rows: 0 })
            .collect();
        Batch { buffers, rows: 0, oldest: None }
    }

    #[inline]
    fn pushed(&mut self) {
        self.rows += 1;
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
    }

    fn bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.bytes.len()).sum()
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

/// Inserts every non-empty table of `batch` at once, each with its own retries, and
/// clears the tables ClickHouse acknowledged. The first fatal error (or exhausted
/// retries) is returned at once; the other tables' inserts are then dropped, their
/// rows kept (one that had landed already is sent again later, harmlessly).
async fn insert_batch(
    conn: &Conn,
    metrics: &ClickHouseMetrics,
    failing: &AtomicUsize,
    batch: &mut Batch,
) -> Result<FlushStats, ClickHouseError> {
    let started = Instant::now();
    let mut stats = FlushStats::default();
    let mut acknowledged = Vec::new();
    let failure = {
        let mut inserts: FuturesUnordered<_> = batch
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.rows > 0)
            .map(|(i, b)| async move { (i, insert_with_retry(conn, metrics, failing, b).await) })
            .collect();
        let mut failure = None;
        while let Some((i, result)) = inserts.next().await {
            match result {
                Ok(retries) => {
                    let b = &batch.buffers[i];
                    stats.rows += b.rows;
                    stats.bytes += b.bytes.len() as u64;
                    stats.inserts += 1;
                    stats.retries += retries;
                    acknowledged.push(i);
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        failure
    };
    for i in acknowledged {
        batch.clear(i);
    }
    stats.elapsed = started.elapsed();
    match failure {
        Some(err) => Err(err),
        None => Ok(stats),
    }
}

/// Inserts one table's buffer, retrying retryable errors with backoff until they
/// succeed or `retry.max_elapsed` passes; returns the number of retries.
async fn insert_with_retry(
    conn: &Conn,
    metrics: &ClickHouseMetrics,
    failing: &AtomicUsize,
    buffer: &TableBuffer,
) -> Result<u32, ClickHouseError> {
    let table = buffer.table;
    let mut attempt = 0u32;
    let mut failing_since: Option<Instant> = None;
    let mut _counted: Option<Failing<'_>> = None;
    loop {
        let t0 = Instant::now();
        let result = insert(conn, &buffer.sql, &buffer.bytes).await;
        let seconds = t0.elapsed().as_secs_f64();
        let err = match result {
            Ok(()) => {
                metrics.inserted(table, buffer.rows, seconds);
                tracing::debug!(table = table.name(), rows = buffer.rows, seconds, "clickhouse insert");
                return Ok(attempt);
            }
            Err(err) => err,
        };
        let retryable = err.is_retryable();
        metrics.failed(table, retryable, seconds);
        if !retryable {
            tracing::error!(table = table.name(), rows = buffer.rows, error = %err, "clickhouse insert failed");
            return Err(err);
        }
        if _counted.is_none() {
            _counted = Some(Failing::count(failing));
        }
        let since = *failing_since.get_or_insert(t0);
        let elapsed_ms = since.elapsed().as_millis() as u64;
        if conn.cfg.retry.max_elapsed.is_some_and(|max| elapsed_ms >= max.as_unsigned_ms()) {
            return Err(ClickHouseError::RetriesExhausted { elapsed_ms, last: Box::new(err) });
        }
        let wait = backoff(&conn.cfg.retry, attempt);
        tracing::warn!(
            table = table.name(),
            rows = buffer.rows,
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %err,
            "clickhouse insert failed, retrying"
        );
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

/// A table insert counted as failing until it ends, however it ends.
struct Failing<'a>(&'a AtomicUsize);

impl<'a> Failing<'a> {
    fn count(n: &'a AtomicUsize) -> Failing<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Failing(n)
    }
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One `INSERT ... FORMAT RowBinary` of `bytes`, within the request timeout, sent in
/// compressed chunks so the server parses while the rest is still on the way.
async fn insert(conn: &Conn, sql: &str, bytes: &[u8]) -> Result<(), ClickHouseError> {
    let timeout = conn.cfg.request_timeout.as_std();
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
    let cap = retry
        .initial_backoff
        .as_unsigned_ms()
        .saturating_mul(1u64 << attempt.min(40))
        .min(retry.max_backoff.as_unsigned_ms());
    Duration::from_millis(rand::rng().random_range(0..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let retry = RetryConfig {
            initial_backoff: livefunnel_core::Duration::from_ms(100),
            max_backoff: livefunnel_core::Duration::from_ms(1_000),
            max_elapsed: None,
        };
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
        let cfg = ClickHouseConfig {
            batch_rows: 2,
            batch_interval: livefunnel_core::Duration::from_ms(50),
            ..ClickHouseConfig::default()
        };
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
        assert!(err.to_string().starts_with("config key `clickhouse.database`: "), "{err}");
        assert!(!err.is_retryable());
    }
}
