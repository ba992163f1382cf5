//! `livefunnel bench`: the pipeline end to end, in one process, through librdkafka's
//! mock cluster (a real Kafka-protocol broker on loopback) into ClickHouse.
//!
//! - throughput: the simulator's stream is generated in memory first; then the
//!   pipeline starts and a producer sends the stream through a fresh topic as fast as
//!   the pipeline takes it (librdkafka's mock broker keeps only 5 MB per partition, so
//!   the stream cannot be produced ahead); the clock runs from the first message
//!   consumed until every message went through an engine and, after a clean shutdown,
//!   every partition's final checkpoint is taken, which means every row was
//!   acknowledged by the sink;
//! - freshness: a fresh topic and pipeline; the simulator at a steady rate plus, every
//!   100 ms, a probe `order_paid` in a room of its own; `/metrics` is scraped over HTTP
//!   until the probe room's GMV counter shows each probe: freshness is the time from
//!   handing a probe to the producer to seeing it counted.
//!
//! The figures are printed and written (`--json`), never checked: they depend on the
//! machine and on what else runs on it (hence the machine-wide CPU figure).

mod freshness;
mod procstat;
mod produce;
mod report;
mod running;
mod scrape;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use livefunnel::config::{self, Loaded, Sources};
use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_core::TimeMode;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_pipeline::config::PropValue;
use livefunnel_pipeline::{self as pipeline, Settings, SinkKind};
use livefunnel_sim::SimParams;

use report::{Freshness, Machine, Report, Setup, Throughput};
use running::Running;

const TOPIC: &str = "room-events";
/// No message consumed for this long: the pipeline is stuck, the bench gives up.
const STALL: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// ClickHouse HTTP interface to write to; default: `clickhouse.url` of the
    /// configuration (http://127.0.0.1:8123).
    #[arg(long, value_name = "URL")]
    pub clickhouse_url: Option<String>,
    /// Database of the bench's tables (created by the migrations), kept apart from the
    /// configuration's so a bench never writes into production tables.
    #[arg(long, default_value = "livefunnel_bench")]
    pub database: String,
    /// Where rows go: `clickhouse`, `jsonl` files in the data directory, or `null`
    /// (rows dropped: the pipeline's own cost, to compare).
    #[arg(long, value_enum, default_value_t = BenchSink::Clickhouse)]
    pub sink: BenchSink,
    /// Configuration file (windows, time, checkpoint interval, clickhouse batching);
    /// LIVEFUNNEL_* environment variables override it, e.g. LIVEFUNNEL_WINDOWS__SET.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Partitions of each phase's topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Messages sent in the throughput phase (simulated beforehand).
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Simulated rooms, in both phases.
    #[arg(long, default_value_t = 1_000)]
    pub rooms: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Messages per second produced in the freshness phase.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u32,
    /// Length of the freshness phase's production.
    #[arg(long, default_value_t = 30)]
    pub freshness_seconds: u64,
    /// One probe order every this many milliseconds.
    #[arg(long, default_value_t = 100)]
    pub probe_every_ms: u64,
    /// `/metrics` is scraped every this many milliseconds, or less often so that
    /// scraping takes at most a quarter of the time (rendering every room's series is
    /// not free, and the scraped pipeline pays for it).
    #[arg(long, default_value_t = 20)]
    pub scrape_every_ms: u64,
    /// The consumer's `fetch.wait.max.ms`. librdkafka's mock broker holds a fetch that
    /// finds no data for this long even when data arrives meanwhile (a real broker
    /// answers at once), which would count as pipeline latency; librdkafka's default is 500.
    #[arg(long, default_value_t = 10)]
    pub fetch_wait_ms: u32,
    /// The phases to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "throughput,freshness")]
    pub phases: Vec<Phase>,
    /// Producer compression (`none`, `lz4`, `zstd`, ...): what the mock broker stores
    /// and the consumer decompresses.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Also report the CPU time of this process (the ClickHouse server) per phase.
    #[arg(long, value_name = "PID")]
    pub clickhouse_pid: Option<u32>,
    /// Checkpoints (and JSONL output); default: a temporary directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchSink {
    Clickhouse,
    Jsonl,
    Null,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Throughput,
    Freshness,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    check_args(args)?;
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    let (data_dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("livefunnel-bench-{}", std::process::id())), true),
    };
    let clickhouse = match args.sink {
        BenchSink::Clickhouse => {
            let mut c = loaded.config.clickhouse.clone();
            if let Some(url) = &args.clickhouse_url {
                c.url = url.clone();
            }
            c.database = args.database.clone();
            Some(c)
        }
        BenchSink::Jsonl | BenchSink::Null => None,
    };
    let rt = crate::run_cmd::runtime()?;
    if let Some(c) = &clickhouse {
        // The tables exist before the clock starts, as in production.
        let migrated = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), livefunnel_clickhouse::migrate(c)).await
        });
        match migrated {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!(
                "clickhouse at {}: {e}; start one (scripts/bench-pipeline.sh does), pass --clickhouse-url, or use --sink jsonl",
                livefunnel_clickhouse::redact_url(&c.url)
            ),
            Err(_) => anyhow::bail!(
                "clickhouse at {} did not answer within 60 s",
                livefunnel_clickhouse::redact_url(&c.url)
            ),
        }
    }
    let setup = Setup {
        sink: match &clickhouse {
            Some(c) => {
                format!("clickhouse {} (database {})", livefunnel_clickhouse::redact_url(&c.url), c.database)
            }
            None if args.sink == BenchSink::Null => "null (rows dropped)".to_owned(),
            None => "jsonl".to_owned(),
        },
        windows: loaded.config.windows.set.0.clone(),
        breakdowns: loaded.config.windows.breakdowns.as_ref().map(|b| b.0.clone()),
        partitions: args.partitions,
        rooms: args.rooms,
        seed: args.seed,
        compression: args.compression.clone(),
        fetch_wait_ms: args.fetch_wait_ms,
        checkpoint_interval_ms: loaded.config.checkpoint.interval.as_ms(),
        clickhouse_batch_rows: loaded.config.clickhouse.batch_rows,
        clickhouse_batch_interval_ms: loaded.config.clickhouse.batch_interval.as_unsigned_ms(),
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = procstat::load_average();
    println!(
        "livefunnel bench: {cpus} cpus, load average {}",
        load_start.map_or("?".into(), |l| format!("{l:.2}"))
    );
    println!(
        "  sink {}; windows {}; breakdowns {}; {} partitions; {} rooms; checkpoint every {} ms; fetch wait {} ms",
        setup.sink,
        setup.windows.join(", "),
        setup.breakdowns.as_ref().map_or("all".into(), |b| b.join(", ")),
        setup.partitions,
        setup.rooms,
        setup.checkpoint_interval_ms,
        setup.fetch_wait_ms
    );
    if temporary && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let bench =
        Bench { args, loaded: &loaded, clickhouse: clickhouse.as_ref(), data_dir: &data_dir, rt: &rt };
    let result = bench.phases();
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let (throughput, freshness) = result?;
    let report = Report {
        machine: Machine {
            cpus,
            load_average_1m_at_start: load_start,
            load_average_1m_at_end: procstat::load_average(),
        },
        setup,
        throughput,
        freshness,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the figures")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "\nload average at the end: {}",
        report.machine.load_average_1m_at_end.map_or("?".into(), |l| format!("{l:.2}"))
    );
    Ok(())
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    let positive = [
        ("--partitions", args.partitions.max(0) as u64),
        ("--events", args.events),
        ("--rooms", u64::from(args.rooms)),
        ("--rate", u64::from(args.rate)),
        ("--freshness-seconds", args.freshness_seconds),
        ("--probe-every-ms", args.probe_every_ms),
        ("--scrape-every-ms", args.scrape_every_ms),
    ];
    for (flag, v) in positive {
        if v == 0 {
            anyhow::bail!("{flag} must be at least 1");
        }
    }
    if args.phases.is_empty() {
        anyhow::bail!("--phases names no phase: use throughput, freshness or both");
    }
    Ok(())
}

pub(crate) struct Bench<'a> {
    args: &'a BenchArgs,
    loaded: &'a Loaded,
    clickhouse: Option<&'a ClickHouseConfig>,
    data_dir: &'a Path,
    rt: &'a tokio::runtime::Runtime,
}

impl Bench<'_> {
    fn phases(&self) -> anyhow::Result<(Option<Throughput>, Option<Freshness>)> {
        let throughput = if self.args.phases.contains(&Phase::Throughput) {
            let t = self.throughput()?;
            report::print_throughput(&t);
            Some(t)
        } else {
            None
        };
        let freshness = if self.args.phases.contains(&Phase::Freshness) {
            let f = self.freshness()?;
            report::print_freshness(&f);
            Some(f)
        } else {
            None
        };
        Ok((throughput, freshness))
    }

    /// The pipeline's settings for one phase: its own broker, group and checkpoints.
    fn settings(&self, brokers: &str, phase: &str) -> Settings {
        let mut loaded = self.loaded.clone();
        loaded.config.kafka.brokers = brokers.to_owned();
        loaded.config.kafka.topics = vec![TOPIC.to_owned()];
        loaded.config.kafka.group_id = format!("livefunnel-bench-{phase}");
        loaded
            .config
            .kafka
            .properties
            .insert("fetch.wait.max.ms".to_owned(), PropValue::Int(i64::from(self.args.fetch_wait_ms)));
        loaded.config.checkpoint.dir = self.data_dir.join(phase).join("state");
        let sink = match self.clickhouse {
            Some(c) => SinkKind::ClickHouse(c.clone()),
            None if self.args.sink == BenchSink::Null => SinkKind::Null,
            None => SinkKind::Jsonl(self.data_dir.join(phase).join("output")),
        };
        loaded.pipeline_settings(sink)
    }

    /// A stream that ends now and holds at least `events` messages: the simulator
    /// makes 80 to 150 per room and simulated minute (fewer in short streams, where
    /// broadcasts are still ramping up); events are never in the future.
    fn sim_params(&self, events: u64) -> anyhow::Result<SimParams> {
        let minutes = events.div_ceil(u64::from(self.args.rooms) * 60).max(5);
        let duration_ms = i64::try_from(minutes).unwrap_or(i64::MAX / 120_000) * 60_000;
        let params = SimParams {
            rooms: self.args.rooms,
            duration_ms,
            seed: self.args.seed,
            start_ms: pipeline::now_ms() - duration_ms,
            ..SimParams::default()
        };
        params.validate().map_err(|e| anyhow::anyhow!("simulation: {e}"))?;
        Ok(params)
    }

    fn throughput(&self) -> anyhow::Result<Throughput> {
        let args = self.args;
        println!("\nthroughput: simulating {} events in memory ...", report::thousands(args.events));
        let t0 = Instant::now();
        let generated = produce::Generated::new(self.sim_params(args.events)?, args.events);
        let generate_seconds = t0.elapsed().as_secs_f64();
        let events = generated.len();
        if events < args.events {
            println!("  the simulated stream ended after {} events", report::thousands(events));
        }
        println!(
            "  {} events, {} MB; now sending them through the mock cluster and the pipeline ...",
            report::thousands(events),
            generated.bytes() / 1_000_000
        );
        let mut parts = procstat::Parts::default();
        let before = procstat::thread_ids();
        let mock = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
        mock.create_topic(TOPIC, args.partitions, 1).context("creating the throughput topic")?;
        let brokers = mock.bootstrap_servers();
        parts.mock_broker_since(&before);
        let before = procstat::thread_ids();
        let producer = produce::connect(&brokers, &args.compression, TOPIC)?;
        parts.producer_since(&before);
        let settings = self.settings(&brokers, "throughput");
        let rss_before_mb = procstat::rss_mb().0;
        let peak_rss_reset = procstat::reset_peak_rss();
        let t = self.rt.block_on(async {
            let started = Instant::now();
            let mut p = Running::start(settings, false).await?;
            let consumed = p.consumed_counters(args.partitions);
            let mut feeder = Some({
                std::thread::Builder::new()
                    .name("bench-producer".into())
                    .spawn(move || {
                        let mut f = produce::Feeder::new(producer, TOPIC, consumed);
                        let t = Instant::now();
                        generated.send_all(&mut f)?;
                        // The producer's threads end with it, before the phase's
                        // last sample: their CPU so far.
                        let last = procstat::sample(None);
                        anyhow::Ok((t.elapsed(), f.waited, procstat::this_thread_seconds(), last))
                    })
                    .context("starting the producer thread")?
            });
            let mut fed = None;
            let mut first = None;
            // CPU is counted from the first message: the group's join before it is idle
            // time, which made the process look half idle when it was not.
            let mut cpu0 = None;
            let mut progress = (0u64, Instant::now());
            // The end is every message through an engine, not just read from Kafka:
            // a stop drops what the consumer loop has not handed over yet.
            let all_processed = loop {
                let now = Instant::now();
                if first.is_none() && p.status.events_consumed.load(Ordering::Relaxed) > 0 {
                    first = Some(now);
                    cpu0 = Some(procstat::sample(args.clickhouse_pid));
                }
                if feeder.as_ref().is_some_and(|f| f.is_finished()) {
                    let joined = feeder.take().expect("checked").join();
                    match joined.map_err(|_| anyhow::anyhow!("the producer thread panicked")).and_then(|r| r)
                    {
                        Ok(stats) => fed = Some(stats),
                        Err(e) => {
                            p.abort.cancel();
                            return Err(e);
                        }
                    }
                }
                let n = p.processed();
                if n >= events {
                    break now;
                }
                if n != progress.0 {
                    progress = (n, now);
                } else if now - progress.1 > STALL {
                    p.abort.cancel();
                    anyhow::bail!("no message processed for {} s, at {n} of {events}", STALL.as_secs());
                }
                if p.finished() {
                    p.stop().await?;
                    anyhow::bail!("the pipeline stopped after {n} of {events} messages");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let cpu_processed = procstat::sample(args.clickhouse_pid);
            p.stop().await?;
            let done = Instant::now();
            let mut cpu1 = procstat::sample(args.clickhouse_pid);
            cpu1.keep_ended_threads(&cpu_processed);
            if let Some(f) = feeder.take() {
                let joined = tokio::task::spawn_blocking(move || f.join()).await?;
                fed = Some(joined.map_err(|_| anyhow::anyhow!("the producer thread panicked"))??);
            }
            let (fed_in, waited, producer_cpu, producer_last) = fed.context("the producer's figures")?;
            cpu1.keep_ended_threads(&producer_last);
            let written = {
                let (brokers, partitions) = (brokers.clone(), args.partitions as usize);
                tokio::task::spawn_blocking(move || produce::messages_in(&brokers, TOPIC, partitions))
                    .await??
            };
            let counts = p.counts();
            if written != events || counts.accepted + counts.duplicates + counts.rejected != events {
                anyhow::bail!(
                    "{events} messages sent, {written} in the topic, {} accepted, {} duplicates, {} rejected",
                    counts.accepted,
                    counts.duplicates,
                    counts.rejected
                );
            }
            let first = first.unwrap_or(all_processed);
            let wall = (done - first).as_secs_f64();
            let cpu = procstat::between(&cpu0.unwrap_or(cpu_processed), &cpu1, &parts);
            let cpu_cores = cpu.process_seconds / wall;
            let pipeline_cpu_us_per_event = 1e6 * cpu.pipeline_seconds() / events as f64;
            anyhow::Ok(Throughput {
                events,
                generate_seconds,
                startup_seconds: (first - started).as_secs_f64(),
                consume_seconds: (all_processed - first).as_secs_f64(),
                drain_seconds: (done - all_processed).as_secs_f64(),
                wall_seconds: wall,
                events_per_second: events as f64 / wall,
                rows_per_second: counts.rows_emitted_total as f64 / wall,
                producer_seconds: fed_in.as_secs_f64(),
                producer_waited_seconds: waited.as_secs_f64(),
                producer_cpu_seconds: producer_cpu,
                counts,
                cpu,
                cpu_cores,
                pipeline_cpu_us_per_event,
                rss_before_mb,
                peak_rss_mb: procstat::rss_mb().1,
                peak_rss_reset,
            })
        })?;
        drop(mock);
        Ok(t)
    }
}
