//! `livefunnel`: the command line.

mod bench_cmd;
mod demo_cmd;
mod run_cmd;

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use livefunnel::config::{self, Sources};
use livefunnel::logging::LogFormat;
use livefunnel::replay::{replay_with, ReplayError};
use livefunnel::sim_cmd;
use livefunnel_core::TimeMode;

/// Real-time analytics for live-commerce rooms.
#[derive(Parser, Debug)]
#[command(name = "livefunnel", version = livefunnel_pipeline::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay a JSONL file of events through the engine and write the result rows as JSONL.
    Replay(ReplayArgs),
    /// Generate simulated live-room events as JSONL or into a Kafka topic, with per-room scenarios.
    Sim(sim_cmd::SimArgs),
    /// Load the configuration (defaults, file, LIVEFUNNEL_* environment) and print it as TOML.
    CheckConfig(CheckConfigArgs),
    /// Run the live pipeline: Kafka in, ClickHouse and Prometheus out.
    Run(run_cmd::RunArgs),
    /// Create or upgrade the ClickHouse tables, then exit.
    Migrate(run_cmd::RunArgs),
    /// Drop the ClickHouse month partitions older than clickhouse.retention, then exit
    /// (`run` does it once a day).
    Prune(run_cmd::RunArgs),
    /// Relay Alertmanager's webhook notifications to WeCom group robots (`[alert_relay]`).
    AlertRelay(run_cmd::RunArgs),
    /// Everything in one process, no services needed: a Kafka mock cluster, the
    /// simulator at real-time pace, the pipeline, and the Prometheus endpoint.
    Demo(demo_cmd::DemoArgs),
    /// Measure the pipeline end to end through a Kafka mock cluster into ClickHouse:
    /// sustained events/s, then freshness (produce to /metrics) at a steady rate.
    Bench(bench_cmd::BenchArgs),
    /// Measure the room alerts (rooms fired, delay from a known onset) on simulated rooms
    /// or a JSONL file of events, at CPU speed, without Kafka, ClickHouse or Prometheus.
    EvalAlerts(livefunnel::eval_alerts::EvalArgs),
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Input JSONL file, one event per line in arrival order, or `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    input: PathBuf,
    /// Where the result rows go, or `-` for standard output.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    output: PathBuf,
    /// Write rejected lines here as JSONL `{"reason":...,"line":N,"raw":"..."}`.
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// TOML configuration file; LIVEFUNNEL_* environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also write the counts as one JSON object to this file.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CheckConfigArgs {
    /// TOML configuration file; without it, the defaults and the environment are checked.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    livefunnel::logging::init(log_format(&cli));
    let result = match &cli.command {
        Command::Replay(args) => run_replay(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Migrate(args) => run_cmd::migrate(args),
        Command::Prune(args) => run_cmd::prune(args),
        Command::AlertRelay(args) => run_cmd::alert_relay(args),
        Command::Demo(args) => demo_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::EvalAlerts(args) => livefunnel::eval_alerts::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match livefunnel::logging::format() {
                LogFormat::Text => eprintln!("error: {err:#}"),
                // A log collector reads only JSON lines.
                LogFormat::Json => tracing::error!(error = %format!("{err:#}"), "stopped"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `log.format` of the configuration the command will load. A configuration that does
/// not load logs as text: the command then reports the error itself.
fn log_format(cli: &Cli) -> LogFormat {
    let file = match &cli.command {
        Command::Replay(a) => a.config.as_deref(),
        Command::CheckConfig(a) => a.config.as_deref(),
        Command::Run(a) | Command::Migrate(a) | Command::Prune(a) | Command::AlertRelay(a) => {
            a.config.as_deref()
        }
        Command::Demo(a) => a.config.as_deref(),
        Command::Bench(a) => a.config.as_deref(),
        Command::EvalAlerts(a) => a.config.as_deref(),
        Command::Sim(_) => None,
    };
    config::load(&Sources::cli(file), TimeMode::Live).map(|l| l.config.log.format).unwrap_or_default()
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn check_config(args: &CheckConfigArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Live)?;
    print!("{}", loaded.config.to_toml());
    Ok(())
}

fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Replay)?;
    let input_name =
        if is_stdio(&args.input) { "standard input".to_owned() } else { args.input.display().to_string() };
    let output_name =
        if is_stdio(&args.output) { "standard output".to_owned() } else { args.output.display().to_string() };

    let stdin = io::stdin();
    let input: Box<dyn io::BufRead> = if is_stdio(&args.input) {
        Box::new(stdin.lock())
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening input file {input_name}"))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let output: Box<dyn Write> = if is_stdio(&args.output) {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(&args.output).with_context(|| format!("creating output file {output_name}"))?)
    };
    let mut dead_letter = match &args.dead_letter {
        Some(path) => Some(
            File::create(path).with_context(|| format!("creating dead-letter file {}", path.display()))?,
        ),
        None => None,
    };
    let dlq: Option<&mut dyn Write> = dead_letter.as_mut().map(|f| f as &mut dyn Write);

    tracing::info!(input = %input_name, output = %output_name, "replay starting");
    let privacy = loaded.config.privacy.hasher();
    let summary = match replay_with(input, output, dlq, loaded.engine, privacy.as_ref()) {
        Ok(summary) => summary,
        Err(ReplayError::WriteOutput(e))
            if e.kind() == io::ErrorKind::BrokenPipe && is_stdio(&args.output) =>
        {
            // `livefunnel replay ... | head`: the reader has seen enough.
            tracing::debug!("standard output closed early, stopping");
            return Ok(());
        }
        Err(e) => {
            let what = match &e {
                ReplayError::Read(_) => format!("reading input {input_name}"),
                ReplayError::WriteOutput(_) => format!("writing output {output_name}"),
                ReplayError::WriteDeadLetter(_) => format!(
                    "writing dead-letter file {}",
                    args.dead_letter.as_deref().unwrap_or(Path::new("?")).display()
                ),
            };
            return Err(anyhow::Error::new(e.into_io_error()).context(what));
        }
    };
    if let Some(path) = &args.summary {
        std::fs::write(path, summary.to_json())
            .with_context(|| format!("writing summary file {}", path.display()))?;
    }
    match livefunnel::logging::format() {
        LogFormat::Text => eprintln!("{summary}"),
        LogFormat::Json => {
            let s = &summary;
            tracing::info!(
                lines = s.lines,
                blank_lines = s.blank_lines,
                accepted = s.accepted,
                late_accepted = s.late_accepted,
                duplicates = s.duplicates,
                rejected = s.rejected_total(),
                rows = s.rows.total(),
                elapsed_s = s.elapsed.as_secs_f64(),
                "replay summary"
            );
        }
    }
    Ok(())
}
