//! The sink task: rows from every partition, batched by rows and time, written to
//! ClickHouse (or JSONL files); a barrier is acknowledged once everything before it
//! is durable.
//!
//! Writes overlap: a batch is sealed and written while the next one fills, up to
//! [`MAX_WRITES`] at once (ClickHouse inserts a batch's tables in parallel too). A
//! batch may then land before an earlier one, which is harmless: every table keeps the
//! highest version of a key (contract §5), and annotations are identical copies.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use livefunnel_clickhouse::{Annotation, ClickHouseConfig, ClickHouseMetrics, ClickHouseSink, FlushStats};
use livefunnel_core::Row;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod jsonl;
mod row_sink;
#[cfg(test)]
mod tests;

use super::error::chain;
use super::fence::Fence;
use super::{fail, panic_message, Fatal, Metrics, PipelineError, Status};
use jsonl::JsonlSink;
pub use row_sink::{NullSink, RowSink, SinkError};

/// Batches queued towards the sink before the partition tasks wait.
pub const CHANNEL_BATCHES: usize = 64;
const HEALTH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub enum SinkKind {
    ClickHouse(ClickHouseConfig),
    /// JSONL files in a directory: the demo without a ClickHouse server.
    Jsonl(PathBuf),
    /// Rows are dropped: the pipeline's own cost, for benches.
    Null,
}

impl SinkKind {
    /// Where rows go, for messages: `clickhouse at <url>` or `jsonl files in <dir>`.
    pub fn describe(&self) -> String {
        match self {
            SinkKind::ClickHouse(c) => format!("clickhouse at {}", c.url),
            SinkKind::Jsonl(dir) => format!("jsonl files in {}", dir.display()),
            SinkKind::Null => "no sink (rows dropped)".into(),
        }
    }
}

pub enum SinkMsg {
    /// Rows of a partition task: dropped once its `fence` is closed.
    Batch { rows: Vec<Row>, annotations: Vec<Annotation>, fence: Fence },
    /// Acknowledged once every row sent before it is written. It does not start a
    /// write of its own: the rows before it go out with the next batch, at the latest
    /// after `batch_interval`, unless `drain` asks for them at once (a partition's final
    /// checkpoint, on a stop or a revoke, which has a time limit).
    Barrier { ack: BarrierAck, drain: bool },
}

/// Answers a barrier: the rows before it are written, or why they never will be.
pub type BarrierAck = oneshot::Sender<Result<(), Arc<SinkError>>>;

/// Writes what the partition tasks send until they all stop. A failure, or a panic,
/// is the pipeline's fatal error: reported with [`fail`] before the channel closes, so
/// it is the error `run` returns rather than a partition's "the sink stopped".
pub async fn run(
    kind: SinkKind,
    mut rx: mpsc::Receiver<SinkMsg>,
    metrics: Metrics,
    status: Arc<Status>,
    abort: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), Fatal> {
    let served = AssertUnwindSafe(serve(kind, &mut rx, metrics, &status, &abort)).catch_unwind().await;
    let result = served.unwrap_or_else(|panic| Err(PipelineError::SinkPanicked(panic_message(&*panic))));
    let result = result.map_err(|e| {
        let msg = format!(
            "the sink stopped: {}; nothing more is written: fix the cause and restart livefunnel, which \
             resumes from its last checkpoints",
            chain(&e)
        );
        Fatal::new(msg, e.is_retryable())
    });
    if let Err(f) = &result {
        fail(&status, &shutdown, f.clone());
    }
    drop(rx);
    result
}

async fn serve(
    kind: SinkKind,
    rx: &mut mpsc::Receiver<SinkMsg>,
    metrics: Metrics,
    status: &Arc<Status>,
    abort: &CancellationToken,
) -> Result<(), PipelineError> {
    let (out, name): (Box<dyn RowSink>, &'static str) = match &kind {
        SinkKind::ClickHouse(cfg) => {
            tokio::spawn(watch_clickhouse(
                cfg.clone(),
                status.clone(),
                metrics.clickhouse.clone(),
                abort.clone(),
            ));
            // Until the tables exist nothing can be written; rows wait in the
            // channel, and nothing is committed meanwhile.
            migrate_until_done(cfg, status, abort).await?;
            tokio::spawn(prune_daily(cfg.clone(), abort.clone()));
            (Box::new(ClickHouseSink::new(cfg.clone(), metrics.clickhouse.clone())?), "clickhouse")
        }
        SinkKind::Jsonl(dir) => {
            status.sink_reachable.store(true, Ordering::Relaxed);
            *status.sink_detail.lock().expect("poisoned") = format!("jsonl files in {}", dir.display());
            (Box::new(JsonlSink::open(dir).map_err(PipelineError::Jsonl)?), "jsonl files")
        }
        SinkKind::Null => {
            status.sink_reachable.store(true, Ordering::Relaxed);
            *status.sink_detail.lock().expect("poisoned") = "no sink: rows are dropped".into();
            (Box::<NullSink>::default(), "nowhere")
        }
    };
    let mut writer = Writer::new(out);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open || writer.busy() {
        tokio::select! {
            biased;
            Some((seq, written)) = writer.writes.next() => writer.written(seq, written)?,
            m = rx.recv(), if open && writer.takes_rows() => match m {
                Some(SinkMsg::Batch { rows, annotations, fence }) => {
                    // Queued by a partition task given up since (its revoke timed out):
                    // the partition's new owner computes these rows again.
                    if fence.is_closed() {
                        debug!(rows = rows.len(), "rows of a fenced partition task dropped");
                        continue;
                    }
                    writer.out.push(&rows, &annotations);
                }
                Some(SinkMsg::Barrier { ack, drain }) => writer.barrier(ack, drain),
                None => {
                    open = false;
                    writer.drain = true;
                }
            },
            _ = tick.tick() => {}
            _ = abort.cancelled(), if writer.busy() => {
                let e = Arc::new(SinkError::Aborted(name));
                writer.fail_barriers(&e);
                return Err(PipelineError::Sink(e));
            }
        }
        writer.seal_if_due();
    }
    info!("sink drained");
    Ok(())
}

/// Batches written at once. At this many the sink stops taking rows, so partitions wait
/// and the consumer pauses: back-pressure, with memory bounded by this many batches.
const MAX_WRITES: usize = 6;

/// The writes in flight and the barriers waiting for them. Batches are numbered as
/// they are sealed; a barrier waits for every batch up to the one its rows went into.
struct Writer {
    out: Box<dyn RowSink>,
    writes: FuturesOrdered<BoxFuture<'static, (u64, Result<FlushStats, SinkError>)>>,
    /// Batches sealed so far.
    sealed: u64,
    /// Batches written so far: all of `0..written`, as `writes` yields in order.
    written: u64,
    /// Barriers and how many batches must be written before each is acknowledged.
    barriers: VecDeque<(u64, BarrierAck)>,
    /// Seal the buffered rows without waiting for a batch to fill.
    drain: bool,
}

impl Writer {
    fn new(out: Box<dyn RowSink>) -> Writer {
        Writer {
            out,
            writes: FuturesOrdered::new(),
            sealed: 0,
            written: 0,
            barriers: VecDeque::new(),
            drain: false,
        }
    }

    fn busy(&self) -> bool {
        !self.writes.is_empty() || self.out.buffered_rows() > 0
    }

    fn has_room(&self) -> bool {
        self.writes.len() < MAX_WRITES
    }

    /// Whether to take more rows: not at [`MAX_WRITES`], and not while a write fails.
    fn takes_rows(&self) -> bool {
        self.has_room() && !self.out.is_failing()
    }

    fn barrier(&mut self, ack: BarrierAck, drain: bool) {
        let needed = self.sealed + u64::from(self.out.buffered_rows() > 0);
        if needed <= self.written {
            let _ = ack.send(Ok(()));
            return;
        }
        self.drain |= drain && needed > self.sealed;
        self.barriers.push_back((needed, ack));
    }

    fn seal_if_due(&mut self) {
        let rows = self.out.buffered_rows();
        if rows == 0 || !self.has_room() || !(self.drain || self.out.should_flush(Instant::now())) {
            return;
        }
        self.drain = false;
        let seq = self.sealed;
        self.sealed += 1;
        let write = self.out.seal();
        self.writes.push_back(async move { (seq, write.await) }.boxed());
    }

    fn written(&mut self, seq: u64, result: Result<FlushStats, SinkError>) -> Result<(), PipelineError> {
        debug_assert_eq!(seq, self.written, "batches are written in order");
        match result {
            Ok(stats) => {
                debug!(
                    seq,
                    rows = stats.rows,
                    inserts = stats.inserts,
                    ms = stats.elapsed.as_millis() as u64,
                    "batch written"
                );
                self.written = seq + 1;
                while self.barriers.front().is_some_and(|(needed, _)| *needed <= self.written) {
                    let (_, ack) = self.barriers.pop_front().expect("checked");
                    let _ = ack.send(Ok(()));
                }
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, retryable = e.is_retryable(), "sink write failed");
                let e = Arc::new(e);
                self.fail_barriers(&e);
                Err(PipelineError::Sink(e))
            }
        }
    }

    fn fail_barriers(&mut self, e: &Arc<SinkError>) {
        for (_, ack) in self.barriers.drain(..) {
            let _ = ack.send(Err(e.clone()));
        }
    }
}

async fn migrate_until_done(
    cfg: &ClickHouseConfig,
    status: &Status,
    abort: &CancellationToken,
) -> Result<(), PipelineError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match livefunnel_clickhouse::migrate(cfg).await {
            Ok(report) => {
                info!(server = %report.server_version, applied = ?report.applied, "clickhouse ready");
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "clickhouse not reachable yet");
                *status.sink_detail.lock().expect("poisoned") = format!("clickhouse: {e}");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = abort.cancelled() => return Err(PipelineError::StoppedBeforeReachable),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// `clickhouse.retention` on every server, 18.16 included: drops the expired month
/// partitions an hour after the start (not at once: a restart loop would hammer
/// ClickHouse), then every day. A failure is logged and tried again the next day;
/// rows are never lost by it, only kept longer.
async fn prune_daily(cfg: ClickHouseConfig, abort: CancellationToken) {
    let mut wait = Duration::from_secs(3_600);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = abort.cancelled() => return,
        }
        match livefunnel_clickhouse::prune(&cfg, super::now_ms()).await {
            Ok(dropped) => info!(partitions = dropped.len(), "clickhouse retention applied"),
            Err(e) => warn!(error = %e, "clickhouse retention not applied; trying again tomorrow"),
        }
        wait = Duration::from_secs(86_400);
    }
}

/// Keeps `/readyz` and `livefunnel_clickhouse_up` honest about ClickHouse.
async fn watch_clickhouse(
    cfg: ClickHouseConfig,
    status: Arc<Status>,
    metrics: ClickHouseMetrics,
    abort: CancellationToken,
) {
    loop {
        let result = livefunnel_clickhouse::ping(&cfg).await;
        metrics.set_up(result.is_ok());
        match result {
            Ok(()) => {
                status.sink_reachable.store(true, Ordering::Relaxed);
                let url = livefunnel_clickhouse::redact_url(&cfg.url);
                *status.sink_detail.lock().expect("poisoned") = format!("clickhouse at {url}");
            }
            Err(e) => {
                status.sink_reachable.store(false, Ordering::Relaxed);
                *status.sink_detail.lock().expect("poisoned") = format!("clickhouse unreachable: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = abort.cancelled() => return,
        }
    }
}
