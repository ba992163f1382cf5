//! `livefunnel eval-alerts`: the room alerts measured at CPU speed, without Kafka,
//! ClickHouse or Prometheus. Events go through the pipeline's own decode, engine and
//! detectors ([`livefunnel_metrics::RoomTracker`]), and the shipped rules' conditions
//! (the same thresholds, from `[detectors]`) with Alertmanager's inhibition decide
//! what fires, in event time.
//!
//! - `--input FILE.jsonl`: recorded or real events, one partition; every firing printed.
//! - Otherwise a simulated run: `--normal-rooms N` normal rooms for `--hours H`, and the
//!   incident cells of `--cells` (`--rooms-per-cell` each), from `--seed`. Rooms are
//!   independent one-room simulations, run on every core; the results are the same
//!   for the same arguments whatever the number of threads.
//!
//! The last line of standard output is `normal_room_alerts=N` and each cell's median
//! delay; `--json FILE` writes every room's results. Windows that no detector reads
//! are not computed ([`detector_windows_only`]).

mod input;
mod plan;
mod report;
mod runner;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use livefunnel_core::{EngineConfig, TimeMode, WindowSpec};
use livefunnel_metrics::{DetectorConfig, SignalWindows};
use serde::Serialize;

use crate::config::{self, Sources};
pub use plan::{all_cells, Cell};
use plan::{incident_rooms, normal_rooms, select_cells, RoomSpec};
use report::{cell_summary, normal_summary, CellSummary, NormalSummary};
use runner::{run_room, RoomResult};

/// Measure the room alerts on simulated rooms (or a JSONL file of events) at CPU speed.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Events as JSONL (contract §1) in arrival order instead of a simulation: every
    /// firing is printed.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Normal rooms (no incident), whole sessions, warm-up included.
    #[arg(long, default_value_t = 100)]
    pub normal_rooms: u32,
    /// Length of the normal rooms' sessions, hours.
    #[arg(long, default_value_t = 10.0)]
    pub hours: f64,
    /// Seed of the plan and of every room: the same arguments give the same results.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Incident cells: `all`, `none`, or names separated by commas, like
    /// `gpm_drop_50@30opm,sales_stall@3opm,viewer_cliff@150online`.
    #[arg(long, default_value = "all")]
    pub cells: String,
    /// Rooms per incident cell.
    #[arg(long, default_value_t = 8)]
    pub rooms_per_cell: u32,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the results (every room) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// TOML configuration file (`[windows]`, `[time]`, `[signals]`, `[detectors]`);
    /// LIVEFUNNEL_* environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// One room of the JSON results.
#[derive(Serialize)]
struct RoomOut<'a> {
    label: &'a str,
    cell: Option<&'a str>,
    sim: String,
    private_led: bool,
    org: &'a str,
    scale: f64,
    target: f64,
    estimated_orders_per_minute: f64,
    estimated_online: f64,
    start_ms: i64,
    onset_ms: Option<i64>,
    #[serde(flatten)]
    result: &'a RoomResult,
}

#[derive(Serialize)]
struct Results<'a> {
    seed: u64,
    normal_rooms: u32,
    hours: f64,
    rooms_per_cell: u32,
    detectors: &'a DetectorConfig,
    normal: Option<&'a NormalSummary>,
    cells: &'a [CellSummary],
    rooms: Vec<RoomOut<'a>>,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let loaded = config::load(&Sources::cli(args.config.as_deref()), TimeMode::Replay)?;
    let detectors = loaded.config.detectors.resolve().context(
        "the detectors are off (detectors.enabled = false, or windows.set without \"1m\"): nothing to \
         evaluate",
    )?;
    let windows = SignalWindows { compare: None, ..loaded.config.signals.resolve(&loaded.engine.windows) };
    let engine = detector_windows_only(&loaded.engine, &windows);
    if let Some(path) = &args.input {
        return input::run(path, &engine, &windows, &detectors);
    }
    anyhow::ensure!(args.hours > 0.0 && args.hours <= 48.0, "--hours must be above 0 and at most 48");
    let cells = select_cells(&args.cells).map_err(|e| anyhow::anyhow!("--cells: {e}"))?;
    let started = Instant::now();
    let mut rooms = normal_rooms(args.normal_rooms, args.hours, args.seed);
    rooms.extend(incident_rooms(&cells, args.rooms_per_cell, args.seed));
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    eprintln!(
        "eval-alerts: {} normal rooms x {} h and {} incident rooms in {} cells, {} threads",
        args.normal_rooms,
        args.hours,
        rooms.len() - args.normal_rooms as usize,
        cells.len(),
        threads
    );
    let results = run_all(&rooms, threads, &engine, &windows, &detectors);
    let events: u64 = results.iter().map(|r| r.events).sum();

    let normal: Vec<_> = rooms.iter().zip(&results).filter(|(s, _)| s.cell.is_none()).collect();
    let normal = (!normal.is_empty()).then(|| normal_summary(&normal, args.hours, &detectors));
    let cell_sums: Vec<CellSummary> = cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let rs: Vec<_> = rooms.iter().zip(&results).filter(|(s, _)| s.cell == Some(i)).collect();
            cell_summary(cell, &rs, &detectors)
        })
        .collect();
    if let Some(path) = &args.json {
        let out = Results {
            seed: args.seed,
            normal_rooms: args.normal_rooms,
            hours: args.hours,
            rooms_per_cell: args.rooms_per_cell,
            detectors: &detectors,
            normal: normal.as_ref(),
            cells: &cell_sums,
            rooms: rooms.iter().zip(&results).map(|(s, r)| room_out(s, r, &cells)).collect(),
        };
        let text = serde_json::to_string_pretty(&out).context("encoding the results")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", report::render(normal.as_ref(), &cell_sums, &detectors));
    println!(
        "{} events in {:.0} s ({:.0} events/s)",
        events,
        started.elapsed().as_secs_f64(),
        events as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
    println!("{}", report::summary_line(normal.as_ref(), &cell_sums));
    Ok(())
}

/// The engine configuration without the windows no detector reads (the compare window
/// and any other): every window is computed on its own, so the rows of `1m`, of the
/// online window and of sessions are the same as with all of them, for less work.
fn detector_windows_only(engine: &EngineConfig, windows: &SignalWindows) -> EngineConfig {
    let minute = WindowSpec::Hop { size_ms: 60_000, slide_ms: 60_000 };
    let online = windows.online.as_ref().and_then(|w| WindowSpec::parse(&w.name).ok());
    let mut e = engine.clone();
    e.windows.retain(|w| *w == minute || *w == WindowSpec::Session || Some(w) == online.as_ref());
    e
}

fn room_out<'a>(s: &'a RoomSpec, r: &'a RoomResult, cells: &'a [Cell]) -> RoomOut<'a> {
    RoomOut {
        label: &s.label,
        cell: s.cell.map(|i| cells[i].name.as_str()),
        sim: s.sim_command(),
        private_led: s.profile.private_led,
        org: s.profile.org,
        scale: s.scale,
        target: s.target,
        estimated_orders_per_minute: s.profile.organic_orders_per_minute,
        estimated_online: s.profile.online,
        start_ms: s.profile.start_ms,
        onset_ms: s.onset_ms,
        result: r,
    }
}

/// Runs every room on `threads` threads, the biggest first; results in room order.
fn run_all(
    rooms: &[RoomSpec],
    threads: usize,
    engine: &EngineConfig,
    windows: &SignalWindows,
    c: &DetectorConfig,
) -> Vec<RoomResult> {
    // Longest jobs first, so no thread is left with a big room at the end.
    let mut order: Vec<usize> = (0..rooms.len()).collect();
    let weight = |s: &RoomSpec| s.profile.online * s.params.duration_ms as f64;
    order.sort_by(|&a, &b| weight(&rooms[b]).total_cmp(&weight(&rooms[a])));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RoomResult>>> = Mutex::new(vec![None; rooms.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let r = run_room(&rooms[i], engine, windows, c);
                results.lock().expect("poisoned")[i] = Some(r);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 10 == 0 || n == rooms.len() {
                    eprintln!("eval-alerts: {n}/{} rooms", rooms.len());
                }
            });
        }
    });
    results.into_inner().expect("poisoned").into_iter().map(|r| r.expect("every room ran")).collect()
}
