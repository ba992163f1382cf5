//! `livefunnel run` as a process, stopped in the middle — a clean SIGTERM, then a
//! `kill -9` at a random moment — and started again: ClickHouse ends up with exactly
//! what an uninterrupted run (and `replay`) computes, and the room counters on
//! `/metrics` continue from their checkpointed values instead of restarting at 0.

mod common;

use std::time::{Duration, Instant};

use common::*;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;

fn checkpoints(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".ckpt")).count()
    })
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
