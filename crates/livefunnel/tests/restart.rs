//! `livefunnel run` as a process, stopped in the middle — a clean SIGTERM, then a
//! `kill -9` at a random moment — and started again: ClickHouse ends up with exactly
//! what an uninterrupted run (and `replay`) computes, and the room counters on
//! `/metrics` continue from their checkpointed values instead of restarting at 0. The
//! state directory deleted between two runs: the second run's rows still win.

mod common;

use std::time::{Duration, Instant};

use common::*;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;

fn checkpoints(dir: &std::path::Path) -> usize {
    files_ending(dir, ".ckpt").len()
}

fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).map_or(Vec::new(), |d| {
        d.map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(suffix)).collect()
    })
}

/// The largest version epoch claimed in a state directory (the first number of each
/// `.epoch` file).
fn largest_epoch(dir: &std::path::Path) -> u32 {
    files_ending(dir, ".epoch")
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("an epoch file")
        })
        .max()
        .expect("epoch files")
}

/// The next offset of a partition's checkpoint, 0 without one.
fn checkpointed_offset(state: &std::path::Path, partition: i32) -> i64 {
    livefunnel_state::read_file(&state.join(format!("{TOPIC}-{partition}.ckpt"))).map_or(0, |c| c.next_offset)
}

/// Minutes since 2025-01-01T00:00:00Z, the unit of the epochs' wall-clock floor.
fn minutes_now() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    ((now - 1_735_689_600_000) / 60_000) as u32
}

#[test]
fn sigterm_and_kill9_restarts_give_the_uninterrupted_results() {
    let server = ClickHouseServer::spawn();
    let f = Fixture::new(PARTITIONS);
    let (brokers, inputs, expected, dir) = (&f.brokers, &f.inputs, &f.expected, &f.dir);
    let ch = ch_config(&server, "restart");
    let http = free_local_addr();
    let config = write_run_config(
        dir.path(),
        &RunConfig { idle_timeout: Some("1s"), ..RunConfig::new(brokers, &ch, "restart", http) },
    );
    let log = dir.path().join("run.log");
    let state = dir.path().join("state");
    let dump_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let (first, rest) = inputs.split_at(inputs.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    f.rt.block_on(async {
        // 1. The first third, then a clean SIGTERM once both partitions checkpointed.
        produce(brokers, first).await;
        let mut p = Run::start(&config, http, &log);
        let t0 = Instant::now();
        while checkpoints(&state) < PARTITIONS as usize {
            assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoints; log:\n{}", dump_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.signal(15);
        let st = p.wait_exit(Duration::from_secs(30));
        assert!(st.success(), "SIGTERM must exit 0, got {st:?}; log:\n{}", dump_log());

        // 2. The second third with a new process, killed -9 at a random moment.
        produce(brokers, second).await;
        let mut p = Run::start(&config, http, &log);
        let ms = 1_500 + (std::process::id() as u64 * 7919 + t0.elapsed().as_nanos() as u64) % 2_500;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        p.signal(9);
        let st = p.wait_exit(Duration::from_secs(10));
        assert!(!st.success());

        // 3. The rest, and a third process that runs to the end.
        produce(brokers, third).await;
        let mut p = Run::start(&config, http, &log);
        wait_for_clickhouse_or(&ch, expected, Duration::from_secs(150), dump_log).await;
        // Counters continue from their checkpoints: they show the whole input's totals.
        let totals = room_totals(expected);
        let t2 = Instant::now();
        loop {
            let (_, text) = http_get(p.addr, "/metrics").await.unwrap_or((0, String::new()));
            let wrong: Vec<_> = totals
                .iter()
                .filter(|(room, _)| !room.starts_with("clock-"))
                .filter(|(room, (gmv, _, _))| {
                    series_value(&text, "livefunnel_room_gmv_cents_total", &[("room_id", room.as_str())])
                        != Some(*gmv as f64)
                })
                .map(|(room, t)| {
                    (
                        room.clone(),
                        *t,
                        series_value(&text, "livefunnel_room_gmv_cents_total", &[("room_id", room.as_str())]),
                    )
                })
                .collect();
            if wrong.is_empty() {
                break;
            }
            assert!(t2.elapsed() < Duration::from_secs(20), "room counters after restarts: {wrong:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        p.signal(15);
        let st = p.wait_exit(Duration::from_secs(30));
        assert!(st.success(), "{st:?}; log:\n{}", dump_log());
    });
}

/// The state directory deleted between two runs (as after a lost disk, or by an
/// operator): the next run starts over from the earliest offsets, and its rows must
/// outrank every row written before, whose versions came from the lost epoch files.
/// The sessions still open when the earlier runs stopped were written with their
/// counts of then; only the last run's rows have the final counts.
#[test]
fn a_deleted_state_directory_still_gives_the_uninterrupted_results() {
    let server = ClickHouseServer::spawn();
    let f = Fixture::new(PARTITIONS);
    let (brokers, inputs, expected, dir) = (&f.brokers, &f.inputs, &f.expected, &f.dir);
    let ch = ch_config(&server, "state_deleted");
    let http = free_local_addr();
    let config = write_run_config(
        dir.path(),
        &RunConfig { idle_timeout: Some("1s"), ..RunConfig::new(brokers, &ch, "state-deleted", http) },
    );
    let log = dir.path().join("run.log");
    let state = dir.path().join("state");
    let dump_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let (first, rest) = inputs.split_at(inputs.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    f.rt.block_on(async {
        // Two runs, each stopped cleanly once it checkpointed what it was given: the
        // second claims a higher epoch than the first.
        for (part, produced) in [(first, first.len()), (second, first.len() + second.len())] {
            produce(brokers, part).await;
            let ends = partition_ends(&inputs[..produced], PARTITIONS);
            let mut p = Run::start(&config, http, &log);
            let t0 = Instant::now();
            while (0..PARTITIONS).any(|i| checkpointed_offset(&state, i) < ends[i as usize]) {
                assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoints; log:\n{}", dump_log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let st = p.terminate();
            assert!(st.success(), "SIGTERM must exit 0, got {st:?}; log:\n{}", dump_log());
        }
        // The state is lost. Rows claim epochs no lower than the minutes since
        // 2025-01-01 (docs/semantics.md): once the clock has passed the last claim,
        // a new run's rows outrank every row written before.
        let lost = largest_epoch(&state);
        std::fs::remove_dir_all(&state).unwrap();
        let t1 = Instant::now();
        while minutes_now() <= lost {
            assert!(
                t1.elapsed() < Duration::from_secs(190),
                "epoch {lost} runs ahead of the clock ({})",
                minutes_now()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        produce(brokers, third).await;
        let mut p = Run::start(&config, http, &log);
        wait_for_clickhouse_or(&ch, expected, Duration::from_secs(150), dump_log).await;
        let st = p.terminate();
        assert!(st.success(), "{st:?}; log:\n{}", dump_log());
    });
}
