//! CPU time and memory from `/proc`: this process as a whole, its threads by name,
//! another process (the ClickHouse server) and the whole machine. Linux only; on
//! other systems every figure reads as zero.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;

use serde::Serialize;

/// `utime` and `stime` in `/proc/*/stat` count in USER_HZ, which the kernel fixes at
/// 100 for user space on every architecture this runs on (x86-64, arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    process: u64,
    /// Per thread id: (name, ticks).
    threads: HashMap<u32, (String, u64)>,
    other: Option<u64>,
    machine_busy: u64,
    machine_total: u64,
}

/// CPU used between two samples, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// This process: the pipeline, librdkafka, the mock broker, the bench's own threads.
    pub process_seconds: f64,
    /// This process by thread name (digits stripped: `rdk:broker1` counts as `rdk:broker`);
    /// threads that ended between the samples are missing.
    pub by_thread: BTreeMap<String, f64>,
    /// The same threads by what they work for: `pipeline`, `producer`, `mock broker`,
    /// `bench` (see [`Parts`]). The pipeline's share is its CPU per event.
    pub by_part: BTreeMap<&'static str, f64>,
    /// The process given with `--clickhouse-pid`, if any.
    pub clickhouse_seconds: Option<f64>,
    /// Every process on the machine, this one and other users' included.
    pub machine_busy_seconds: f64,
    /// Core-seconds the machine had: wall time times cores.
    pub machine_available_seconds: f64,
}

pub fn sample(other_pid: Option<u32>) -> Sample {
    let (machine_busy, machine_total) = machine_ticks().unwrap_or((0, 0));
    Sample {
        process: stat_ticks("/proc/self/stat").unwrap_or(0),
        threads: threads(),
        other: other_pid.and_then(|pid| stat_ticks(&format!("/proc/{pid}/stat"))),
        machine_busy,
        machine_total,
    }
}

impl Sample {
    /// Adds the threads of `earlier` that have ended since, so that their CPU time up
    /// to `earlier` still counts (librdkafka's threads end when the pipeline stops).
    pub fn keep_ended_threads(&mut self, earlier: &Sample) {
        for (tid, t) in &earlier.threads {
            self.threads.entry(*tid).or_insert_with(|| t.clone());
        }
    }
}

/// The part of [`CpuUse::by_part`] that is the pipeline's.
pub const PIPELINE: &str = "pipeline";

impl CpuUse {
    pub fn pipeline_seconds(&self) -> f64 {
        self.by_part.get(PIPELINE).copied().unwrap_or(0.0)
    }
}

/// The threads of the bench's process that are not the pipeline's. librdkafka names
/// the threads of every client alike (`rdk:main`, `rdk:broker1`), so a client's
/// threads are told apart by when they appeared: the mock cluster's while it started,
/// the producer's while it connected, both before the pipeline started.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    mock_broker: HashSet<u32>,
    producer: HashSet<u32>,
}

impl Parts {
    /// The threads that appeared since `before` work for the mock broker.
    pub fn mock_broker_since(&mut self, before: &HashSet<u32>) {
        self.mock_broker.extend(thread_ids().difference(before));
    }

    /// The threads that appeared since `before` work for the bench's producer.
    pub fn producer_since(&mut self, before: &HashSet<u32>) {
        self.producer.extend(thread_ids().difference(before));
    }

    /// The bench's own threads are the main one (it watches the pipeline) and those it
    /// names `bench-…`; `bench-producer` sends the stream.
    fn part_of(&self, tid: u32, name: &str) -> &'static str {
        if self.mock_broker.contains(&tid) {
            "mock broker"
        } else if self.producer.contains(&tid) || name == "bench-producer" {
            "producer"
        } else if tid == std::process::id() || name.starts_with("bench-") {
            "bench"
        } else {
            PIPELINE
        }
    }
}

/// The ids of this process's threads now.
pub fn thread_ids() -> HashSet<u32> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else { return HashSet::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

pub fn between(a: &Sample, b: &Sample, parts: &Parts) -> CpuUse {
    let secs = |t: u64| t as f64 / TICKS_PER_SECOND;
    let mut by_thread: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_part: BTreeMap<&'static str, f64> = BTreeMap::new();
    for (tid, (name, ticks)) in &b.threads {
        // A thread started after `a` counts from zero.
        let before = a.threads.get(tid).filter(|(n, _)| n == name).map_or(0, |(_, t)| *t);
        let used = ticks.saturating_sub(before);
        if used > 0 {
            *by_thread.entry(name.clone()).or_default() += secs(used);
            *by_part.entry(parts.part_of(*tid, name)).or_default() += secs(used);
        }
    }
    CpuUse {
        process_seconds: secs(b.process.saturating_sub(a.process)),
        by_thread,
        by_part,
        clickhouse_seconds: match (a.other, b.other) {
            (Some(x), Some(y)) => Some(secs(y.saturating_sub(x))),
            _ => None,
        },
        machine_busy_seconds: secs(b.machine_busy.saturating_sub(a.machine_busy)),
        machine_available_seconds: secs(b.machine_total.saturating_sub(a.machine_total)),
    }
}

/// CPU seconds of the calling thread so far (for threads that end before the
/// phase's last sample).
pub fn this_thread_seconds() -> f64 {
    stat_ticks("/proc/thread-self/stat").unwrap_or(0) as f64 / TICKS_PER_SECOND
}

/// `utime + stime` of a `/proc/.../stat` file.
fn stat_ticks(path: &str) -> Option<u64> {
    parse_stat(&fs::read_to_string(path).ok()?).map(|(_, t)| t)
}

/// (name, utime + stime) from the text of a `stat` file. The name is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_whitespace();
    // After the name: state (field 3) ... utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

fn threads() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc/self/task") else { return out };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(text) = fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((name, ticks)) = parse_stat(&text) {
            out.insert(tid, (thread_group(&name), ticks));
        }
    }
    out
}

/// `rdk:broker1` and `rdk:broker-1` are both `rdk:broker`.
fn thread_group(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '#').to_owned()
}

/// (busy, total) ticks of all cores, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy, busy + idle))
}

/// (current, peak) resident memory of this process in MB, from `/proc/self/status`.
pub fn rss_mb() -> (f64, f64) {
    let text = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kb("VmRSS:") as f64 / 1024.0, kb("VmHWM:") as f64 / 1024.0)
}

/// Starts the peak-memory count again from the current resident size (`clear_refs`
/// value 5); false where the kernel does not allow it, then the peak is since start.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_names() {
        let line = "4242 (rdk:broker (x) 1) S 1 2 3 0 -1 4194304 98 0 1 0 37 5 0 0 20 0 1 0 1134417 3133440";
        assert_eq!(parse_stat(line), Some(("rdk:broker (x) 1".to_owned(), 42)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(thread_group("rdk:broker-1"), "rdk:broker");
        assert_eq!(thread_group("tokio-runtime-w"), "tokio-runtime-w");
    }

    /// This thread's id, from `/proc/thread-self` (a link to `PID/task/TID`).
    fn tid() -> u32 {
        let link = fs::read_link("/proc/thread-self").unwrap();
        link.file_name().unwrap().to_str().unwrap().parse().unwrap()
    }

    /// A thread that tells its id and lives until the sender it returns is dropped.
    fn parked_thread() -> (u32, std::sync::mpsc::Sender<()>) {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            tid_tx.send(tid()).unwrap();
            let _ = stop_rx.recv();
        });
        (tid_rx.recv().unwrap(), stop_tx)
    }

    #[test]
    fn threads_count_for_the_part_they_appeared_for() {
        let mut parts = Parts::default();
        let before = thread_ids();
        let (mock, _m) = parked_thread();
        parts.mock_broker_since(&before);
        let before = thread_ids();
        let (producer, _p) = parked_thread();
        parts.producer_since(&before);
        let (consumer, _c) = parked_thread();
        // Threads of every client share librdkafka's names.
        assert_eq!(parts.part_of(mock, "rdk:broker"), "mock broker");
        assert_eq!(parts.part_of(producer, "rdk:broker"), "producer");
        assert_eq!(parts.part_of(consumer, "rdk:broker"), PIPELINE);
        assert_eq!(parts.part_of(consumer, "lf-engine"), PIPELINE);
        assert_eq!(parts.part_of(consumer, "bench-producer"), "producer");
        assert_eq!(parts.part_of(consumer, "bench-scraper"), "bench");
        assert_eq!(parts.part_of(std::process::id(), "livefunnel"), "bench");
    }

    #[test]
    fn own_process_is_measured() {
        let a = sample(Some(std::process::id()));
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the kernel has charged ticks to the process, to a thread and to the
        // machine: they are counted apart, and one tick can show in one and not yet in
        // another (seen in CI: the process at 0.01 s, the machine's busy time at 0).
        let used = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let used = between(&a, &sample(Some(std::process::id())), &Parts::default());
            let threads: f64 = used.by_thread.values().sum();
            let charged = used.process_seconds > 0.0 && threads > 0.0 && used.machine_busy_seconds > 0.0;
            if charged || start.elapsed().as_secs() > 20 {
                break used;
            }
        };
        assert!(used.process_seconds > 0.0, "{used:?}");
        assert!(used.by_thread.values().sum::<f64>() > 0.0, "{used:?}");
        let parts: f64 = used.by_part.values().sum();
        assert!((parts - used.by_thread.values().sum::<f64>()).abs() < 1e-9, "{used:?}");
        assert!(used.clickhouse_seconds.is_some_and(|s| s > 0.0), "the watched pid is this one: {used:?}");
        assert!(used.machine_available_seconds > 0.0 && used.machine_busy_seconds > 0.0, "{used:?}");
        let (rss, peak) = rss_mb();
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
    }
}
