//! The sink task: rows from every partition, batched by rows and time, written to
//! ClickHouse (or JSONL files); a barrier is acknowledged once everything before it
//! is durable.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use livefunnel_clickhouse::{Annotation, ClickHouseConfig, ClickHouseMetrics, ClickHouseSink};
use livefunnel_core::Row;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::fence::Fence;
use super::jsonl::JsonlSink;
use super::{fail, panic_message, Metrics, Status};

/// Batches queued towards the sink before the partition tasks wait.
pub const CHANNEL_BATCHES: usize = 64;
const HEALTH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub enum SinkKind {
    ClickHouse(ClickHouseConfig),
    /// JSONL files in a directory: the demo without a ClickHouse server.
    Jsonl(PathBuf),
}

impl SinkKind {
    /// Where rows go, for messages: `clickhouse at <url>` or `jsonl files in <dir>`.
    pub fn describe(&self) -> String {
        match self {
            SinkKind::ClickHouse(c) => format!("clickhouse at {}", c.url),
            SinkKind::Jsonl(dir) => format!("jsonl files in {}", dir.display()),
        }
    }
}

pub enum SinkMsg {
    /// Rows of a partition task: dropped once its `fence` is closed.
    Batch {
        rows: Vec<Row>,
        annotations: Vec<Annotation>,
        fence: Fence,
    },
    Barrier(oneshot::Sender<Result<(), String>>),
}

/// A partition task could not hand something to the sink: the sink has stopped, and
/// reports why itself (the pipeline's fatal error).
#[derive(Debug, thiserror::Error)]
#[error("the sink stopped: {0}")]
pub struct SinkStopped(pub String);

enum Out {
    ClickHouse(Box<ClickHouseSink>),
    Jsonl(JsonlSink),
}

impl Out {
    fn push(&mut self, rows: &[Row], annotations: &[Annotation]) {
        match self {
            Out::ClickHouse(s) => {
                for r in rows {
                    s.push(r);
                }
                for a in annotations {
                    s.push_annotation(a);
                }
            }
            Out::Jsonl(s) => s.push(rows, annotations),
        }
    }

    fn should_flush(&self) -> bool {
        match self {
            Out::ClickHouse(s) => s.should_flush(std::time::Instant::now()),
            Out::Jsonl(s) => s.should_flush(),
        }
    }

    async fn flush(&mut self, abort: &CancellationToken) -> Result<(), String> {
        match self {
            Out::ClickHouse(s) => tokio::select! {
                r = s.flush() => r.map(|_| ()).map_err(|e| format!("{e}")),
                _ = abort.cancelled() => Err("aborted while writing to clickhouse".into()),
            },
            Out::Jsonl(s) => s.flush().map_err(|e| format!("writing jsonl output: {e}")),
        }
    }
}

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
) -> anyhow::Result<()> {
    let served = AssertUnwindSafe(serve(kind, &mut rx, metrics, &status, &abort)).catch_unwind().await;
    let result = served.unwrap_or_else(|panic| {
        Err(anyhow::anyhow!("it panicked: {}: a bug in livefunnel, please report it", panic_message(&*panic)))
    });
    if let Err(e) = &result {
        let msg = format!(
            "the sink stopped: {e:#}; nothing more is written: fix the cause and restart livefunnel, which \
             resumes from its last checkpoints"
        );
        fail(&status, &shutdown, msg);
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
) -> anyhow::Result<()> {
    let mut out = match &kind {
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
            Out::ClickHouse(Box::new(ClickHouseSink::new(cfg.clone(), metrics.clickhouse.clone())?))
        }
        SinkKind::Jsonl(dir) => {
            status.sink_reachable.store(true, Ordering::Relaxed);
            *status.sink_detail.lock().expect("poisoned") = format!("jsonl files in {}", dir.display());
            Out::Jsonl(JsonlSink::open(dir)?)
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(SinkMsg::Batch { rows, annotations, fence }) => {
                    // Queued by a partition task given up since (its revoke timed out):
                    // the partition's new owner computes these rows again.
                    if fence.is_closed() {
                        debug!(rows = rows.len(), "rows of a fenced partition task dropped");
                        continue;
                    }
                    out.push(&rows, &annotations);
                    if out.should_flush() {
                        out.flush(abort).await.map_err(anyhow::Error::msg)?;
                    }
                }
                Some(SinkMsg::Barrier(ack)) => {
                    let r = out.flush(abort).await;
                    let fatal = r.as_ref().err().cloned();
                    let _ = ack.send(r);
                    if let Some(e) = fatal {
                        anyhow::bail!(e);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if out.should_flush() {
                    out.flush(abort).await.map_err(anyhow::Error::msg)?;
                }
            }
        }
    }
    out.flush(abort).await.map_err(anyhow::Error::msg)?;
    info!("sink drained");
    Ok(())
}

async fn migrate_until_done(
    cfg: &ClickHouseConfig,
    status: &Status,
    abort: &CancellationToken,
) -> anyhow::Result<()> {
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
            _ = abort.cancelled() => anyhow::bail!("stopped before clickhouse was reachable"),
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
