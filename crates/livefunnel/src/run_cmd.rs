//! `livefunnel run` and `livefunnel migrate`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use livefunnel::config::{self, Sources};
use livefunnel_core::TimeMode;
use livefunnel_pipeline::{self as pipeline, SinkKind, Status, World};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TOML configuration file; LIVEFUNNEL_* environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // At least two workers: a rebalance blocks the consumer loop's worker while the
    // partition tasks finish their checkpoints on the others.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    let settings = loaded.pipeline_settings(SinkKind::ClickHouse(loaded.config.clickhouse.clone()));
    runtime()?.block_on(async {
        let listen = &loaded.config.http.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding http.listen {listen}: is another process using it?"))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            metrics = %format!("http://{addr}/metrics"),
            readyz = %format!("http://{addr}/readyz"),
            clickhouse = %livefunnel_clickhouse::redact_url(&loaded.config.clickhouse.url),
            state = %settings.state_dir.display(),
            "livefunnel run starting"
        );
        let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
        pipeline::stop_on_signals(shutdown.clone(), abort.clone());
        let world = World { registry: prometheus::Registry::new(), http: Some(listener), shutdown, abort };
        Ok(pipeline::run(settings, world, Arc::new(Status::default())).await?)
    })
}

pub fn migrate(args: &RunArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    let ch = loaded.config.clickhouse;
    let url = livefunnel_clickhouse::redact_url(&ch.url);
    runtime()?.block_on(async {
        let report = livefunnel_clickhouse::migrate(&ch).await.with_context(|| format!("migrating {url}"))?;
        println!(
            "clickhouse {} at {url}, database {}: migrations applied now {:?}, already applied {:?}",
            report.server_version, ch.database, report.applied, report.already_applied
        );
        for sql in &report.retention {
            println!("retention: {sql}");
        }
        for moved in &report.moved {
            println!(
                "moved {} to its new sort key; the table as it was is kept as {}: drop it once checked (docs/runbook.md)",
                moved.table, moved.backup
            );
        }
        Ok(())
    })
}

/// `livefunnel prune`: drops the month partitions older than `clickhouse.retention`
/// (what `run` does once a day), then exits.
pub fn prune(args: &RunArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    let ch = loaded.config.clickhouse;
    let url = livefunnel_clickhouse::redact_url(&ch.url);
    runtime()?.block_on(async {
        let dropped = livefunnel_clickhouse::prune(&ch, pipeline::now_ms())
            .await
            .with_context(|| format!("pruning {url}"))?;
        for d in &dropped {
            println!("dropped {}.{} partition {}", ch.database, d.table.name(), d.month);
        }
        let r = &ch.retention;
        println!(
            "clickhouse at {url}, database {}: {} partitions dropped (retention: windows {} days, breakdowns {} days, annotations {} days; 0 keeps forever; sessions are kept forever)",
            ch.database,
            dropped.len(),
            r.windows_days,
            r.breakdowns_days,
            r.annotations_days
        );
        Ok(())
    })
}

/// `livefunnel alert-relay`: Alertmanager's webhook in, WeCom group robots out, until
/// SIGINT or SIGTERM.
pub fn alert_relay(args: &RunArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    let cfg = loaded.config.alert_relay;
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| {
            format!("binding alert_relay.listen {}: is another process using it?", cfg.listen)
        })?;
        let addr = listener.local_addr()?;
        let robots: Vec<&String> = cfg.robots.keys().collect();
        tracing::info!(
            webhook = %format!("http://{addr}/wecom/<robot>"),
            robots = ?robots,
            "alert relay starting"
        );
        let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
        pipeline::stop_on_signals(shutdown.clone(), abort);
        let registry = prometheus::Registry::new();
        livefunnel_metrics::register_process_series(&registry, env!("CARGO_PKG_VERSION"), pipeline::GIT_SHA)?;
        livefunnel::alert_relay::serve(cfg, listener, registry, async move { shutdown.cancelled().await })
            .await
    })
}
