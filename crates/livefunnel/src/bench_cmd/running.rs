//! The pipeline under measurement, on the bench's runtime, with its registry and
//! counters at hand.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use livefunnel_pipeline::{self as pipeline, Metrics, Settings, Status, World};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use super::report::Counts;
use super::{scrape, TOPIC};

/// A clean stop (drain, final checkpoints) taking longer than this is reported as a failure.
const STOP_TIMEOUT: Duration = Duration::from_secs(300);

/// A pipeline running on the bench's runtime, with its registry and counters at hand.
pub struct Running {
    pub shutdown: CancellationToken,
    pub abort: CancellationToken,
    pub status: Arc<Status>,
    pub metrics: Metrics,
    pub registry: Registry,
    pub addr: Option<SocketAddr>,
    handle: Option<tokio::task::JoinHandle<Result<(), pipeline::Fatal>>>,
}

impl Running {
    pub async fn start(settings: Settings, http: bool) -> anyhow::Result<Running> {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry, &settings)?;
        let listener = match http {
            true => {
                Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?)
            }
            false => None,
        };
        let addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
        let status = Arc::new(Status::default());
        let world = World {
            registry: registry.clone(),
            http: listener,
            shutdown: shutdown.clone(),
            abort: abort.clone(),
        };
        let handle =
            tokio::spawn(pipeline::run_with_metrics(settings, world, status.clone(), metrics.clone()));
        Ok(Running { shutdown, abort, status, metrics, registry, addr, handle: Some(handle) })
    }

    /// The pipeline's consumed counter of each partition of the bench topic.
    pub fn consumed_counters(&self, partitions: i32) -> Vec<prometheus::IntCounter> {
        (0..partitions)
            .map(|p| {
                self.metrics.pipeline.events_consumed.with_label_values(&[TOPIC, p.to_string().as_str()])
            })
            .collect()
    }

    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Until `/readyz` answers 200: partitions assigned, the sink reachable.
    pub async fn wait_ready(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = tokio::task::spawn_blocking(move || scrape::get(addr, "/readyz")).await?;
            if ready.is_ok() {
                return Ok(());
            }
            if self.finished() || Instant::now() > deadline {
                anyhow::bail!("the pipeline did not become ready within 60 s: {}", ready.unwrap_err());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A clean stop: consumption ends, the queues drain, final checkpoints are taken
    /// (their rows acknowledged by the sink) and committed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut handle) = self.handle.take() else { return Ok(()) };
        self.shutdown.cancel();
        match tokio::time::timeout(STOP_TIMEOUT, &mut handle).await {
            Ok(joined) => Ok(joined.context("the pipeline task failed")??),
            Err(_) => {
                self.abort.cancel();
                let _ = handle.await;
                anyhow::bail!("the pipeline did not stop within {} s", STOP_TIMEOUT.as_secs())
            }
        }
    }

    /// Messages an engine has accepted, dropped as duplicates or rejected.
    pub fn processed(&self) -> u64 {
        let m = &self.metrics.pipeline;
        m.events_accepted.get() + m.events_duplicate.get() + rejected(m)
    }

    pub fn counts(&self) -> Counts {
        let m = &self.metrics.pipeline;
        let families = self.registry.gather();
        let family = |name: &'static str| series(&families, name);
        let counter_sum = |name| family(name).map(|m| m.get_counter().get_value()).sum::<f64>() as u64;
        let mut rows_emitted = std::collections::BTreeMap::new();
        for metric in family("livefunnel_rows_emitted_total") {
            let kind = metric.get_label().iter().find(|l| l.name() == "kind").map_or("?", |l| l.value());
            rows_emitted.insert(kind.to_owned(), metric.get_counter().get_value() as u64);
        }
        Counts {
            consumed: self.status.events_consumed.load(Ordering::Relaxed),
            accepted: m.events_accepted.get(),
            duplicates: m.events_duplicate.get(),
            rejected: rejected(m),
            rows_emitted_total: rows_emitted.values().sum(),
            rows_emitted,
            rows_inserted: counter_sum("livefunnel_clickhouse_insert_rows_total"),
            insert_batches: counter_sum("livefunnel_clickhouse_batches_total"),
            insert_seconds: family("livefunnel_clickhouse_insert_duration_seconds")
                .map(|m| m.get_histogram().get_sample_sum())
                .sum(),
            checkpoints: m.checkpoints.with_label_values(&["ok"]).get(),
            checkpoint_seconds: m.checkpoint_duration_seconds.get_sample_sum(),
            snapshot_seconds: m.snapshot_duration_seconds.get_sample_sum(),
            snapshot_max_seconds: histogram_max(&m.snapshot_duration_seconds),
            snapshot_rooms_encoded: m.snapshot_rooms.with_label_values(&["encoded"]).get(),
            snapshot_rooms_kept: m.snapshot_rooms.with_label_values(&["kept"]).get(),
            sink_wait_seconds: m.sink_wait_seconds.get(),
        }
    }
}

fn rejected(m: &livefunnel_metrics::PipelineMetrics) -> u64 {
    livefunnel_core::Reason::ALL
        .iter()
        .map(|r| m.events_rejected.with_label_values(&[r.as_str()]).get())
        .sum()
}

/// Every series of the metric family `name`.
fn series<'a>(
    families: &'a [prometheus::proto::MetricFamily],
    name: &'a str,
) -> impl Iterator<Item = &'a prometheus::proto::Metric> + 'a {
    families.iter().filter(move |f| f.name() == name).flat_map(|f| f.get_metric())
}

/// The upper bound of the lowest bucket holding every observation (0 with none;
/// infinite when some fell above the last bound).
fn histogram_max(h: &prometheus::Histogram) -> f64 {
    let m = prometheus::core::Metric::metric(h);
    let h = m.get_histogram();
    let total = h.get_sample_count();
    if total == 0 {
        return 0.0;
    }
    h.get_bucket().iter().find(|b| b.cumulative_count() == total).map_or(f64::INFINITY, |b| b.upper_bound())
}
