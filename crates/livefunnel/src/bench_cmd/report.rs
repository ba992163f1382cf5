//! The bench's figures: one structure, printed as a table and written as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::procstat::{CpuUse, PIPELINE};

/// The targets, printed next to what was reached.
pub const TARGET_EVENTS_PER_SECOND: f64 = 300_000.0;
pub const TARGET_P99_MS: f64 = 1_000.0;

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub setup: Setup,
    pub throughput: Option<Throughput>,
    pub freshness: Option<Freshness>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub load_average_1m_at_start: Option<f64>,
    pub load_average_1m_at_end: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    /// `clickhouse URL (database D)` or `jsonl`.
    pub sink: String,
    pub windows: Vec<String>,
    pub breakdowns: Option<Vec<String>>,
    pub partitions: i32,
    pub rooms: u32,
    pub seed: u64,
    pub compression: String,
    pub fetch_wait_ms: u32,
    pub checkpoint_interval_ms: i64,
    pub clickhouse_batch_rows: usize,
    pub clickhouse_batch_interval_ms: u64,
}

/// The pipeline's own counters at the end of a phase.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub consumed: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Result rows the engines emitted, by kind.
    pub rows_emitted: BTreeMap<String, u64>,
    pub rows_emitted_total: u64,
    /// Rows ClickHouse acknowledged, annotations included (0 with the JSONL sink).
    pub rows_inserted: u64,
    pub insert_batches: u64,
    /// Time spent in insert statements (the sink task waits for them).
    pub insert_seconds: f64,
    pub checkpoints: u64,
    /// From snapshot to committed offset, summed over checkpoints.
    pub checkpoint_seconds: f64,
    /// Engine threads encoding snapshots, summed over checkpoints.
    pub snapshot_seconds: f64,
    /// The upper bound of the histogram bucket of the longest snapshot.
    pub snapshot_max_seconds: f64,
    /// Rooms encoded by snapshots (changed since their partition's last one).
    pub snapshot_rooms_encoded: u64,
    /// Rooms whose bytes snapshots kept from the last one.
    pub snapshot_rooms_kept: u64,
    /// Partition tasks waiting for the sink to take rows, summed over partitions.
    pub sink_wait_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Messages sent through the mock cluster (all of them checked in the topic and
    /// through an engine).
    pub events: u64,
    /// Simulating them into memory, before the clock starts.
    pub generate_seconds: f64,
    /// Pipeline start to the first message consumed (the consumer group's join).
    pub startup_seconds: f64,
    /// First message consumed to the last one through an engine.
    pub consume_seconds: f64,
    /// Last message through an engine to the pipeline's return: the final
    /// checkpoints, their rows acknowledged by the sink, offsets committed.
    pub drain_seconds: f64,
    /// `consume_seconds + drain_seconds`: what the rates divide by.
    pub wall_seconds: f64,
    pub events_per_second: f64,
    pub rows_per_second: f64,
    /// The producer thread's start to every message delivered to the mock broker.
    pub producer_seconds: f64,
    /// Of that, waiting for the pipeline to consume (the backlog bound): close to
    /// `producer_seconds` when the pipeline is the bottleneck, near 0 when the producer is.
    pub producer_waited_seconds: f64,
    /// CPU of the producing thread (librdkafka's own threads not included): part of
    /// `cpu.process_seconds`, not of the pipeline.
    pub producer_cpu_seconds: f64,
    pub counts: Counts,
    /// First message consumed to the pipeline's return (`wall_seconds`).
    pub cpu: CpuUse,
    /// Process CPU seconds per wall second, over `wall_seconds`.
    pub cpu_cores: f64,
    /// The pipeline's threads' CPU (`cpu.by_part`, the producer, the mock broker and the
    /// bench's own threads left out) per event.
    pub pipeline_cpu_us_per_event: f64,
    /// Resident memory when the pipeline started: mostly the stream simulated
    /// beforehand (freed when it is all sent).
    pub rss_before_mb: f64,
    pub peak_rss_mb: f64,
    /// False when the peak could not be reset: it is then the process's since start.
    pub peak_rss_reset: bool,
}

#[derive(Debug, Serialize)]
pub struct Freshness {
    pub target_rate: f64,
    pub seconds: f64,
    /// Simulator messages produced (probes not included).
    pub events_produced: u64,
    pub achieved_rate: f64,
    /// Time the producer waited because the pipeline had not consumed its backlog:
    /// above 0, the pipeline did not keep up with the rate.
    pub producer_waited_seconds: f64,
    /// CPU of the producing thread (the stream is simulated beforehand): part of
    /// `cpu.process_seconds`, not of the pipeline.
    pub producer_cpu_seconds: f64,
    /// The simulated stream ran out before the time was up.
    pub stream_ended: bool,
    /// Every message produced: simulator events, the probe room's opening, the probes.
    pub messages: u64,
    /// Messages produced but not yet consumed when production stopped.
    pub lag_at_end: u64,
    pub probes_sent: usize,
    pub probes_seen: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// The same to the request of the scrape that showed the probe rather than to its
    /// complete answer: without rendering and transferring `/metrics` (a lower estimate).
    pub p50_ms_from_request: Option<f64>,
    pub p99_ms_from_request: Option<f64>,
    /// Every seen probe's freshness in sending order (ms, rounded), to see when the
    /// slow ones happened (checkpoints run every `checkpoint_interval_ms`).
    pub probe_ms: Vec<f64>,
    pub scrapes: u64,
    pub scrapes_failed: u64,
    pub scrape_ms_mean: f64,
    pub scrape_ms_max: f64,
    /// Mean time from one scrape's start to the next: the measurement's resolution.
    pub scrape_interval_ms: f64,
    pub metrics_bytes: usize,
    pub counts: Counts,
    /// The production window only.
    pub cpu: CpuUse,
    pub cpu_cores: f64,
    /// The pipeline's threads' CPU per message consumed in the production window.
    pub pipeline_cpu_us_per_event: f64,
    pub peak_rss_mb: f64,
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn line(label: &str, value: String) {
    println!("  {label:<30}{value}");
}

/// `per_event_note`: what the pipeline's CPU per event is to be read against.
fn cpu_lines(cpu: &CpuUse, wall: f64, us_per_event: f64, per_event_note: &str) {
    let mut threads: Vec<(&String, &f64)> = cpu.by_thread.iter().collect();
    threads.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = threads.iter().take(6).map(|(n, s)| format!("{n} {s:.1}")).collect();
    line(
        "CPU, this process",
        format!(
            "{:.1} s = {:.2} cores ({})",
            cpu.process_seconds,
            cpu.process_seconds / wall,
            top.join(", ")
        ),
    );
    let parts: Vec<String> = cpu
        .by_part
        .iter()
        .filter(|(part, _)| **part != PIPELINE)
        .map(|(part, s)| format!("{part} {s:.1} s"))
        .collect();
    line(
        "CPU, the pipeline",
        format!(
            "{:.1} s = {:.2} cores, {us_per_event:.2} µs per event ({per_event_note}; the rest: {})",
            cpu.pipeline_seconds(),
            cpu.pipeline_seconds() / wall,
            parts.join(", ")
        ),
    );
    if let Some(ch) = cpu.clickhouse_seconds {
        line("CPU, clickhouse server", format!("{ch:.1} s = {:.2} cores", ch / wall));
    }
    if cpu.machine_available_seconds > 0.0 {
        line(
            "CPU, whole machine",
            format!(
                "{:.1} of {:.1} core-s busy ({:.0} %; other users included)",
                cpu.machine_busy_seconds,
                cpu.machine_available_seconds,
                100.0 * cpu.machine_busy_seconds / cpu.machine_available_seconds
            ),
        );
    }
}

fn counts_lines(c: &Counts) {
    line(
        "events",
        format!(
            "{} consumed: {} accepted, {} duplicates, {} rejected",
            thousands(c.consumed),
            thousands(c.accepted),
            thousands(c.duplicates),
            thousands(c.rejected)
        ),
    );
    let kinds: Vec<String> = c.rows_emitted.iter().map(|(k, n)| format!("{k} {}", thousands(*n))).collect();
    line("rows emitted", format!("{} ({})", thousands(c.rows_emitted_total), kinds.join(", ")));
    if c.insert_batches > 0 {
        line(
            "clickhouse",
            format!(
                "{} rows acknowledged in {} inserts, {:.1} s inside inserts",
                thousands(c.rows_inserted),
                thousands(c.insert_batches),
                c.insert_seconds
            ),
        );
    }
    line(
        "checkpoints",
        format!(
            "{}, {:.1} s snapshot-to-commit in all; snapshots {:.2} s in all, longest ≤ {} ms, {} rooms encoded, {} kept",
            c.checkpoints,
            c.checkpoint_seconds,
            c.snapshot_seconds,
            c.snapshot_max_seconds * 1000.0,
            thousands(c.snapshot_rooms_encoded),
            thousands(c.snapshot_rooms_kept)
        ),
    );
    line(
        "sink back-pressure",
        format!("{:.1} s of partition tasks waiting for the sink", c.sink_wait_seconds),
    );
}

pub fn print_throughput(t: &Throughput) {
    println!(
        "\nthroughput: {} events through the mock cluster and the pipeline, as fast as it goes",
        thousands(t.events)
    );
    line("simulated beforehand in", format!("{:.1} s", t.generate_seconds));
    line("start-up", format!("{:.1} s to the first message", t.startup_seconds));
    line(
        "consumed + drained in",
        format!(
            "{:.1} s ({:.1} s to the last event through an engine, {:.1} s final checkpoints)",
            t.wall_seconds, t.consume_seconds, t.drain_seconds
        ),
    );
    let verdict = if t.events_per_second >= TARGET_EVENTS_PER_SECOND {
        "target >= 300,000: reached".to_owned()
    } else {
        format!(
            "target >= 300,000: NOT reached, {:.1}x short",
            TARGET_EVENTS_PER_SECOND / t.events_per_second
        )
    };
    line("events/s", format!("{} ({verdict})", thousands(t.events_per_second as u64)));
    line("rows/s", thousands(t.rows_per_second as u64));
    line(
        "producer",
        format!(
            "all sent in {:.1} s, {:.1} s of it waiting for the pipeline ({}); {:.1} s CPU",
            t.producer_seconds,
            t.producer_waited_seconds,
            if t.producer_waited_seconds > 0.5 * t.producer_seconds {
                "the pipeline was the bottleneck"
            } else {
                "the producer side limited the rate"
            },
            t.producer_cpu_seconds
        ),
    );
    counts_lines(&t.counts);
    cpu_lines(&t.cpu, t.wall_seconds, t.pipeline_cpu_us_per_event, "target <= 3.3");
    line(
        "memory",
        format!(
            "{:.0} MB before the pipeline (mostly the stream simulated beforehand), peak {:.0} MB{}",
            t.rss_before_mb,
            t.peak_rss_mb,
            if t.peak_rss_reset { "" } else { " (peak since process start)" }
        ),
    );
}

pub fn print_freshness(f: &Freshness) {
    println!(
        "\nfreshness: {:.0} events/s for {:.0} s, a probe order every {} ms, /metrics scraped over HTTP",
        f.target_rate,
        f.seconds,
        if f.probes_sent > 0 {
            format!("{:.0}", f.seconds * 1000.0 / f.probes_sent as f64)
        } else {
            "-".into()
        }
    );
    let short = match () {
        _ if f.achieved_rate >= 0.95 * f.target_rate => "",
        _ if f.producer_waited_seconds > 0.05 * f.seconds => {
            " (NOT the asked rate: the pipeline did not keep up)"
        }
        _ => " (NOT the asked rate: the producer could not go faster on this machine)",
    };
    line(
        "produced",
        format!(
            "{} events = {:.0} events/s{}{}",
            thousands(f.events_produced),
            f.achieved_rate,
            short,
            if f.stream_ended { " (the simulated stream ended early)" } else { "" }
        ),
    );
    line(
        "pipeline behind",
        format!(
            "{} messages unconsumed when production stopped; producer held back {:.1} s",
            thousands(f.lag_at_end),
            f.producer_waited_seconds
        ),
    );
    line("producer CPU", format!("{:.1} s (part of this process's CPU below)", f.producer_cpu_seconds));
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
    let verdict = match f.p99_ms {
        Some(p) if p < TARGET_P99_MS && f.probes_seen == f.probes_sent => {
            "target p99 < 1 s: reached".to_owned()
        }
        Some(p) if f.probes_seen == f.probes_sent => {
            format!("target p99 < 1 s: NOT reached, {:.0} ms over", p - TARGET_P99_MS)
        }
        _ => "target p99 < 1 s: NOT reached, probes missing".to_owned(),
    };
    line("probes", format!("{} sent, {} seen on /metrics", f.probes_sent, f.probes_seen));
    line("freshness p50", ms(f.p50_ms));
    line("freshness p99", format!("{} ({verdict})", ms(f.p99_ms)));
    line("freshness max / mean", format!("{} / {}", ms(f.max_ms), ms(f.mean_ms)));
    line(
        "  to the scrape's request",
        format!(
            "p50 {}, p99 {} (without rendering /metrics)",
            ms(f.p50_ms_from_request),
            ms(f.p99_ms_from_request)
        ),
    );
    line(
        "scrapes",
        format!(
            "{} ({} failed), one every {:.0} ms; each {:.1} ms mean, {:.1} ms max, {} kB",
            f.scrapes,
            f.scrapes_failed,
            f.scrape_interval_ms,
            f.scrape_ms_mean,
            f.scrape_ms_max,
            f.metrics_bytes / 1000
        ),
    );
    counts_lines(&f.counts);
    // Scrapes and the running values' ticks cost the same per second at any rate.
    cpu_lines(
        &f.cpu,
        f.seconds,
        f.pipeline_cpu_us_per_event,
        "the /metrics scrapes and the running values' ticks included, which do not grow with the rate",
    );
    line("memory", format!("peak {:.0} MB (the stream simulated beforehand included)", f.peak_rss_mb));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_000_000), "2,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
