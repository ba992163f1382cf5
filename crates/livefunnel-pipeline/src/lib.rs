//! The live pipeline: Kafka in, one engine per assigned partition, rows out to
//! ClickHouse (or JSONL files), Prometheus series and health on HTTP, and the wall.
//! The `livefunnel` binary builds [`Settings`] from its layered configuration and hands
//! [`run`] its [`World`]; the sections of that configuration this crate reads are in
//! [`config`] (Kafka, checkpoints, HTTP, runtime, signals), [`privacy`] and [`wall`].
//!
//! ```text
//! consumer loop ──batches──▶ partition task (engine, DLQ, checkpoints) ──rows──▶ sink task
//!      ▲  rebalance callback: restore / final checkpoint          │ barrier ack
//!      └──────────── commit requests ◀────────────────────────────┘
//! ```
//!
//! Every channel is bounded: a slow sink stops the partition tasks, which stop the
//! consumer loop, so memory stays flat and Kafka keeps the backlog.
//!
//! A checkpoint (per partition, every `checkpoint.interval`): the engine state is
//! snapshotted at offset `o`; a barrier goes to the sink behind every row emitted
//! before `o`; when ClickHouse has acknowledged them, the state is written to disk;
//! only then is `o` committed to Kafka. A restart resumes from the checkpoint file.
//!
//! [docs/architecture.md](../../../docs/architecture.md) draws the threads and queues
//! and follows one event through them.
//!
//! Nothing fails quietly: a sink that stops, or a partition task that ends with an
//! error or panics, is a fatal error ([`Status::fatal`]): the consumer stops, the
//! healthy partitions take their final checkpoints (for a bounded time), and `run`
//! returns the error, so the process exits naming it.

mod batch;
pub mod config;
mod consumer;
mod dead_letters;
mod engines;
mod error;
mod fence;
mod http;
mod partition;
pub mod privacy;
mod sink;
mod test_hooks;
pub mod wall;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use livefunnel_clickhouse::{ClickHouseConfig, ClickHouseMetrics};
use livefunnel_core::EngineConfig;
use livefunnel_metrics::{PipelineMetrics, RoomKey, RoomMetrics, SignalWindows};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Fatal, PipelineError};
pub use http::serve as serve_http;

/// The git commit this build was made from (`unknown` when built outside a checkout
/// without `GIT_SHA`), as in `livefunnel_build_info`.
pub const GIT_SHA: &str = env!("BUILD_GIT_SHA");

/// `--version`'s text: the release and the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_GIT_SHA"), ")");

/// How long a stop (SIGTERM) waits for the partitions' final checkpoints, at most; the
/// sink then writes what it holds. Orchestrators must give a stopping process longer.
pub const DRAIN_LIMIT: std::time::Duration = consumer::REVOKE_TIMEOUT;

/// How long the sink may take, once the partitions have stopped, to write what it
/// holds. Past it the sink is aborted: a stop never waits for ever on a server that
/// does not answer. Its rows are not lost: their offsets are not committed. A stop
/// ends within `DRAIN_LIMIT + SINK_STOP_LIMIT`.
pub const SINK_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);
pub use sink::SinkKind;

use crate::config::{KafkaConfig, StartWithout};

/// Everything `run` needs to know, already checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: EngineConfig,
    pub kafka: KafkaConfig,
    pub sink: SinkKind,
    pub state_dir: PathBuf,
    /// `checkpoint.store = "kafka"`: the shared store's settings; `None`: files in `state_dir`.
    pub shared_store: Option<livefunnel_kafka::KafkaStoreSettings>,
    pub checkpoint_interval_ms: i64,
    pub series_ttl_ms: i64,
    /// `http.max_room_series`: rooms with series on this instance, at most.
    pub max_room_series: usize,
    /// `runtime.engine_threads`: threads running the partitions' engines; 0 is one per core.
    pub engine_threads: usize,
    /// The windows behind the alert-signal series (`[signals]`).
    pub signals: SignalWindows,
    /// The room alert detectors (`[detectors]`); `None`: off.
    pub detectors: Option<livefunnel_metrics::DetectorConfig>,
    /// `[privacy]`: the `user_id` hasher when hashing is on.
    pub privacy: Option<crate::privacy::UserIdHasher>,
    /// `[wall]`: the wall served beside `/metrics` (when `enabled`).
    pub wall: crate::wall::WallConfig,
}

/// What `run` gets from its caller: its registry, its listener, its stop signals.
pub struct World {
    pub registry: Registry,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: not served.
    pub http: Option<TcpListener>,
    /// Cancelled to stop: the pipeline stops consuming, takes final checkpoints, returns.
    pub shutdown: CancellationToken,
    /// Cancelled to stop without waiting for the sink (a second Ctrl-C).
    pub abort: CancellationToken,
}

/// Per input partition (topic, partition).
type PerPartition<T> = Mutex<std::collections::BTreeMap<(String, i32), T>>;

/// Live counters shared by the tasks, for `/readyz` and the demo's summary line.
#[derive(Default)]
pub struct Status {
    /// The consumer has joined its group: it received an assignment, possibly an empty
    /// one (a group with more members than partitions has members without any).
    pub group_joined: AtomicBool,
    /// The consumer holds at least one partition (false again once all are revoked).
    pub kafka_assigned: AtomicBool,
    /// The sink answered its last health check.
    pub sink_reachable: AtomicBool,
    pub sink_detail: Mutex<String>,
    pub events_consumed: AtomicU64,
    /// Per partition: its rooms by GMV, refreshed every second.
    pub top_rooms: PerPartition<Vec<(RoomKey, u64)>>,
    pub live_rooms: PerPartition<usize>,
    /// The first fatal error; set once, then the pipeline stops.
    pub fatal: Mutex<Option<Fatal>>,
}

impl Status {
    pub fn top_rooms(&self, n: usize) -> Vec<(RoomKey, u64)> {
        let mut all: Vec<_> = self.top_rooms.lock().expect("poisoned").values().flatten().cloned().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    pub fn live_rooms(&self) -> usize {
        self.live_rooms.lock().expect("poisoned").values().sum()
    }
}

/// Metrics of every component, registered once on the world's registry.
#[derive(Clone)]
pub struct Metrics {
    pub pipeline: PipelineMetrics,
    pub rooms: RoomMetrics,
    pub clickhouse: ClickHouseMetrics,
}

impl Metrics {
    pub fn new(registry: &Registry, settings: &Settings) -> Result<Metrics, prometheus::Error> {
        let windows = settings
            .engine
            .windows
            .iter()
            .filter(|w| !matches!(w, livefunnel_core::WindowSpec::Session))
            .map(|w| w.name())
            .collect();
        livefunnel_metrics::register_process_series(registry, env!("CARGO_PKG_VERSION"), GIT_SHA)?;
        let rooms = RoomMetrics::new(registry, windows)?.with_max_rooms(settings.max_room_series);
        if let Some(d) = &settings.detectors {
            rooms.export_detector_config(d);
        }
        Ok(Metrics {
            pipeline: PipelineMetrics::new(registry)?,
            rooms,
            clickhouse: ClickHouseMetrics::new(registry)?,
        })
    }
}

/// Records the first fatal error (the one `run` returns) and stops the pipeline.
fn fail(status: &Status, shutdown: &CancellationToken, fatal: Fatal) {
    let mut f = status.fatal.lock().expect("poisoned");
    if f.is_none() {
        tracing::error!(error = %fatal, retryable = fatal.retryable, "pipeline stopping on a fatal error");
        *f = Some(fatal);
    } else {
        tracing::debug!(error = %fatal, "another error while stopping");
    }
    shutdown.cancel();
}

/// What a panic said, for the fatal error it becomes.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// The sink task's end, as a fatal error when it is one.
fn sink_failure(ended: Result<Result<(), Fatal>, tokio::task::JoinError>) -> Option<Fatal> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(Fatal::new(format!("the sink task failed: {e}"), false)),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the pipeline until `world.shutdown` is cancelled (then drains and returns
/// `Ok`) or a fatal error (returned).
pub async fn run(settings: Settings, world: World, status: Arc<Status>) -> Result<(), Fatal> {
    let metrics =
        Metrics::new(&world.registry, &settings).map_err(|e| Fatal::of(None, &PipelineError::Metrics(e)))?;
    run_with_metrics(settings, world, status, metrics).await
}

pub async fn run_with_metrics(
    settings: Settings,
    world: World,
    status: Arc<Status>,
    metrics: Metrics,
) -> Result<(), Fatal> {
    let shutdown = world.shutdown.clone();
    for (what, w) in [("compare", &settings.signals.compare), ("online", &settings.signals.online)] {
        match w {
            Some(w) => tracing::info!(signal = what, window = %w.name, "alert signals"),
            None => tracing::warn!(
                signal = what,
                "alert signals off: signals.{what}_window is \"\" or not a window of windows.set"
            ),
        }
    }
    if let Some(listener) = world.http {
        let registry = world.registry.clone();
        let st = status.clone();
        let (abort, done) = (world.abort.clone(), shutdown.clone());
        // Cancelled with the server: ends the wall's event streams, which would hold
        // its graceful shutdown open.
        let http_stop = CancellationToken::new();
        let wall = match settings.wall.enabled {
            true => Some(
                crate::wall::Wall::start(&settings.wall, metrics.rooms.clone(), &registry, http_stop.clone())
                    .map_err(|e| Fatal::of(None, &e))?,
            ),
            false => None,
        };
        let (rooms, render_seconds) =
            (metrics.rooms.clone(), metrics.pipeline.metrics_render_seconds.clone());
        tokio::spawn(async move {
            // Served until the pipeline is completely done, so a drain is observable.
            let stop = async move {
                tokio::select! { _ = abort.cancelled() => {}, _ = done.cancelled() => {} }
                http_stop.cancel();
            };
            if let Err(e) = http::serve(listener, registry, rooms, render_seconds, st, wall, stop).await {
                tracing::error!(error = %e, "http server failed");
            }
        });
    }
    let engines =
        Arc::new(engines::EnginePool::start(settings.engine_threads).map_err(|e| Fatal::of(None, &e))?);
    tracing::info!(threads = engines.threads(), "engine threads");
    let (sink_tx, sink_rx) = tokio::sync::mpsc::channel(sink::CHANNEL_BATCHES);
    let mut sink_task = tokio::spawn(sink::run(
        settings.sink.clone(),
        sink_rx,
        metrics.clone(),
        status.clone(),
        world.abort.clone(),
        shutdown.clone(),
    ));
    let start_without = match settings.kafka.start_without_checkpoint {
        StartWithout::Earliest => livefunnel_kafka::StartAt::Beginning,
        StartWithout::Latest => livefunnel_kafka::StartAt::End,
    };
    let consumer = consumer::run(consumer::ConsumerSettings {
        settings: settings.clone(),
        start_without,
        sink: sink_tx,
        engines: engines.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        shutdown: shutdown.clone(),
        abort: world.abort.clone(),
    });
    tokio::pin!(consumer);
    // The sink ends before the consumer loop only when it fails: that stops everything
    // at once, instead of a consumer that keeps reading what nobody writes.
    let (consumer_result, sink_ended) = tokio::select! {
        r = &mut consumer => (r, None),
        ended = &mut sink_task => {
            let why = sink_failure(ended)
                .unwrap_or_else(|| Fatal::new("the sink stopped while the pipeline ran", false));
            fail(&status, &shutdown, why);
            (consumer.await, Some(()))
        }
    };
    if let Err(e) = &consumer_result {
        fail(&status, &shutdown, Fatal::of(None, e));
    }
    // The consumer loop has stopped every partition task; the sink drains what they sent.
    if sink_ended.is_none() {
        let ended = match tokio::time::timeout(SINK_STOP_LIMIT, &mut sink_task).await {
            Ok(ended) => ended,
            Err(_) => {
                // Recorded before the abort, so it is the error `run` returns rather
                // than the sink's "aborted".
                let why = format!(
                    "the sink ({}) did not write its last rows within {} s of the stop ({}); their offsets \
                     are not committed: a restart resumes from the last checkpoints and computes them again",
                    settings.sink.describe(),
                    SINK_STOP_LIMIT.as_secs(),
                    status.sink_detail.lock().expect("poisoned"),
                );
                // The sink may be waiting for a server that comes back.
                fail(&status, &shutdown, Fatal::new(why, true));
                world.abort.cancel();
                sink_task.await
            }
        };
        if let Some(why) = sink_failure(ended) {
            fail(&status, &shutdown, why);
        }
    }
    // Every partition task has ended, unless a fatal error gave some of them up.
    drop(engines);
    shutdown.cancel();
    let fatal = status.fatal.lock().expect("poisoned").clone();
    match fatal {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// The ClickHouse settings, when the sink is ClickHouse.
pub fn clickhouse_config(kind: &SinkKind) -> Option<&ClickHouseConfig> {
    match kind {
        SinkKind::ClickHouse(c) => Some(c),
        SinkKind::Jsonl(_) | SinkKind::Null => None,
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM and `abort` on the second.
pub fn stop_on_signals(shutdown: CancellationToken, abort: CancellationToken) {
    tokio::spawn(async move {
        for round in 0..2 {
            let sig = async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = tokio::signal::ctrl_c().await;
                    "ctrl-c"
                }
            };
            let name = sig.await;
            if round == 0 {
                tracing::info!(
                    signal = name,
                    "stopping: draining and taking final checkpoints (again to abort)"
                );
                shutdown.cancel();
            } else {
                tracing::warn!(signal = name, "aborting without waiting for the sink");
                abort.cancel();
            }
        }
    });
}
