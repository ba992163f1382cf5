//! `livefunnel demo`: the whole product in one process on a machine without services:
//! librdkafka's mock cluster (a real Kafka-protocol broker on loopback), the simulator
//! at real-time pace (or `--speed` times faster), the pipeline, the Prometheus
//! endpoint and the wall, whose address is the first line it prints.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use livefunnel::config::{self, Sources};
use livefunnel::pacing::Pacer;
use livefunnel::sim_cmd;
use livefunnel_core::TimeMode;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_kafka::rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use livefunnel_kafka::rdkafka::ClientConfig;
use livefunnel_pipeline::{self as pipeline, SinkKind, Status, World};
use livefunnel_sim::{RoomScenario, SimParams, Simulator};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const TOPIC: &str = "room-events";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Simulated rooms, each running one broadcast.
    #[arg(long, default_value_t = 50)]
    pub rooms: u32,
    /// Length of the simulation (broadcasts fit inside it): 30m, 1h, ...
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub duration: i64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start the simulation this far in the past, produced at once, so the rooms are
    /// already live when the walls first look (0s: start from the first broadcast).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub warmup: i64,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Write to this ClickHouse (http://host:port). Without it, a server answering on
    /// 127.0.0.1:8123 is used if there is one, otherwise JSONL files under --data-dir.
    #[arg(long, value_name = "URL")]
    pub clickhouse_url: Option<String>,
    /// Checkpoints, and the JSONL output when there is no ClickHouse.
    #[arg(long, value_name = "DIR", default_value = "livefunnel-data")]
    pub data_dir: PathBuf,
    /// Address of the wall (/), /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub http: String,
    /// Optional configuration file (windows, time, clickhouse settings).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Event time runs this many times faster than the wall clock after the warm-up
    /// (20: an hour of broadcast in 3 minutes), to watch walls and alerts move. Windows,
    /// presence and the signal series follow event time; the series TTL, idle
    /// partitions and checkpoints stay on the wall clock (docs/metrics.md).
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// A scenario for some rooms, repeatable, exactly as `livefunnel sim --scenario`:
    /// `KIND[:rooms=LIST][:at=DURATION][:share=FRACTION|:scale=F]`, e.g. `gpm_drop:rooms=1:at=20m`,
    /// `viewer_cliff:rooms=2:at=20m` (`at` counts from the room's own session_start).
    #[arg(long, value_name = "SPEC", value_parser = sim_cmd::parse_scenario)]
    pub scenario: Vec<RoomScenario>,
    /// Where rows go: `auto` (--clickhouse-url, else a ClickHouse answering on
    /// 127.0.0.1:8123, else JSONL files), `clickhouse` (--clickhouse-url or
    /// 127.0.0.1:8123, no fallback) or `jsonl` (files under --data-dir, whatever answers).
    #[arg(long, value_enum, default_value_t = DemoSink::Auto)]
    pub sink: DemoSink,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoSink {
    Auto,
    Clickhouse,
    Jsonl,
}

fn parse_duration(s: &str) -> Result<i64, String> {
    livefunnel::config::Duration::parse(s).map(|d| d.as_ms())
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1000.0 => Ok(f),
        _ => Err(format!("`{s}` is not a speed: give a factor above 0 and at most 1000, like 20")),
    }
}

/// The latest a simulated message is delivered after its room's end (late deliveries).
const LATEST_DELIVERY_MS: i64 = 120_000;

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let mut loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    if args.rooms == 0 {
        anyhow::bail!("--rooms must be at least 1");
    }
    if args.sink == DemoSink::Jsonl && args.clickhouse_url.is_some() {
        anyhow::bail!("--sink jsonl writes no ClickHouse: drop --clickhouse-url, or use --sink clickhouse");
    }
    // The mock cluster lives as long as this process: checkpoints of an earlier demo
    // point at offsets of a topic that no longer exists.
    let state_dir = args.data_dir.join("state");
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir).with_context(|| {
            format!("clearing the previous demo's checkpoints in {}", state_dir.display())
        })?;
    }
    let mock = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    mock.create_topic(TOPIC, args.partitions, 1).context("creating the demo topic")?;
    let brokers = mock.bootstrap_servers();
    loaded.config.kafka.brokers = brokers.clone();
    loaded.config.kafka.topics = vec![TOPIC.to_owned()];
    loaded.config.kafka.group_id = "livefunnel-demo".to_owned();
    loaded.config.checkpoint.dir = state_dir;
    if args.speed > 1.0 {
        // Accelerated events run ahead of the wall clock, by up to this much at the end;
        // `ts_out_of_range` is about producers' clocks, not about a fast demo.
        let span = (args.duration - args.warmup).max(0) + LATEST_DELIVERY_MS;
        let ahead = (span as f64 * (1.0 - 1.0 / args.speed)).ceil() as i64;
        loaded.engine.max_future_skew_ms = loaded.engine.max_future_skew_ms.saturating_add(ahead);
    }

    let rt = crate::run_cmd::runtime()?;
    rt.block_on(async {
        let sink = choose_sink(args, &loaded.config.clickhouse).await;
        let settings = loaded.pipeline_settings(sink.clone());
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .with_context(|| format!("binding --http {}: is another process using it? pick another port", args.http))?;
        let addr = listener.local_addr()?;
        // The first line: where to look.
        if loaded.config.wall.enabled {
            println!("wall:     http://{addr}/   <- open it in a browser: every room, live");
        } else {
            println!("wall:     off ([wall] enabled = false)");
        }
        match &sink {
            SinkKind::ClickHouse(c) => println!("sink:     clickhouse {} (database {})", c.url, c.database),
            SinkKind::Jsonl(d) if args.sink == DemoSink::Jsonl => println!("sink:     jsonl files in {}", d.display()),
            SinkKind::Jsonl(d) => println!(
                "sink:     jsonl files in {} (no ClickHouse answered on 127.0.0.1:8123; pass --clickhouse-url to use one)",
                d.display()
            ),
            SinkKind::Null => println!("sink:     none (rows are dropped)"),
        }
        println!("kafka:    mock cluster at {brokers}, topic {TOPIC} ({} partitions)", args.partitions);
        println!("metrics:  http://{addr}/metrics");
        println!("ready:    http://{addr}/readyz");
        let pace = if args.speed == 1.0 { "real-time pace".to_owned() } else { format!("{}x real time", args.speed) };
        println!(
            "rooms:    {} simulated, {pace} after a {} s warm-up; Ctrl-C stops",
            args.rooms,
            args.warmup / 1000
        );

        let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
        pipeline::stop_on_signals(shutdown.clone(), abort.clone());
        let status = Arc::new(Status::default());
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "20")
            .create()
            .context("creating the demo producer")?;
        let params = SimParams {
            rooms: args.rooms,
            duration_ms: args.duration,
            seed: args.seed,
            start_ms: pipeline::now_ms() - args.warmup,
            scenarios: args.scenario.clone(),
            ..SimParams::default()
        };
        params.validate().map_err(|e| anyhow::anyhow!("simulation: {e}"))?;
        let pacer = Pacer::realtime_at_speed(Instant::now(), pipeline::now_ms(), args.speed);
        let sim = tokio::spawn(produce_realtime(params, pacer, producer, shutdown.clone()));
        let summary = tokio::spawn(print_summary(status.clone(), shutdown.clone()));
        let world = World { registry: prometheus::Registry::new(), http: Some(listener), shutdown: shutdown.clone(), abort };
        let result = pipeline::run(settings, world, status).await.map_err(anyhow::Error::from);
        shutdown.cancel();
        let _ = sim.await;
        let _ = summary.await;
        result
    })?;
    drop(mock);
    println!("demo stopped");
    Ok(())
}

async fn choose_sink(args: &DemoArgs, base: &livefunnel_clickhouse::ClickHouseConfig) -> SinkKind {
    let mut cfg = base.clone();
    if args.sink == DemoSink::Jsonl {
        return SinkKind::Jsonl(args.data_dir.join("output"));
    }
    if let Some(url) = &args.clickhouse_url {
        cfg.url = url.clone();
        return SinkKind::ClickHouse(cfg);
    }
    cfg.url = "http://127.0.0.1:8123".to_owned();
    if args.sink == DemoSink::Clickhouse {
        return SinkKind::ClickHouse(cfg);
    }
    let probe = tokio::time::timeout(Duration::from_secs(2), livefunnel_clickhouse::ping(&cfg)).await;
    if matches!(probe, Ok(Ok(()))) {
        SinkKind::ClickHouse(cfg)
    } else {
        SinkKind::Jsonl(args.data_dir.join("output"))
    }
}

/// Sends the simulator's messages when `pacer` says their simulated arrival time has
/// come, keyed by room.
async fn produce_realtime(
    params: SimParams,
    mut pacer: Pacer,
    producer: FutureProducer,
    stop: CancellationToken,
) {
    let mut sim = Simulator::new(params);
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        let Some(meta) = sim.next_with_meta(&mut buf) else { break };
        let now = Instant::now();
        let at = pacer.send_at(now, meta.due_ms);
        if at > now {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.cancelled() => break,
            }
        } else if stop.is_cancelled() {
            break;
        }
        let key = sim.room_id(meta.room).to_owned();
        loop {
            match producer.send_result(FutureRecord::to(TOPIC).key(&key).payload(&buf[..])) {
                Ok(_delivery) => break,
                Err((e, _)) => {
                    warn!(error = %e, "demo producer queue full, waiting");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
    if !stop.is_cancelled() {
        info!(events = sim.events_emitted(), "simulation finished; the pipeline keeps running until Ctrl-C");
    }
}

async fn print_summary(status: Arc<Status>, stop: CancellationToken) {
    let every = Duration::from_secs(10);
    let mut last = status.events_consumed.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let now = status.events_consumed.load(Ordering::Relaxed);
        let rate = (now - last) as f64 / every.as_secs_f64();
        last = now;
        let top: Vec<String> = status
            .top_rooms(3)
            .into_iter()
            .map(|(k, gmv)| format!("{} ¥{}.{:02}", k.room_id, gmv / 100, gmv % 100))
            .collect();
        println!(
            "{:>7.0} events/s | {} live rooms | top GMV: {}",
            rate,
            status.live_rooms(),
            if top.is_empty() { "-".to_owned() } else { top.join(", ") }
        );
    }
}
