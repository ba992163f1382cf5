//! Rebalance: instances join and leave one consumer group during a stream (a clean
//! SIGTERM hands each partition over with a final checkpoint in the shared Kafka
//! store). At the end ClickHouse equals `replay`, the dead-letter topic equals replay's
//! rejections, and on `/metrics` every room is exported by exactly one live instance —
//! the owner of its partition — with its counters continued across every move, so a
//! sum across instances gives the totals.

mod common;

#[path = "common/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::*;
use common::*;

const PARTITIONS: i32 = 16;

#[test]
fn faultsuite_instances_joining_and_leaving_hand_partitions_over_exactly() {
    let c = Cluster::new("rebalance", PARTITIONS, 2, sim_inputs(200, 6, 100_000, PARTITIONS));
    let (rt, brokers, inputs) = (&c.rt, &c.brokers, &c.inputs);
    let start = |name: &str| c.start(name, "rebalance");

    let producing = {
        let (brokers, inputs) = (brokers.clone(), inputs.clone());
        rt.spawn(async move { produce_paced(&brokers, &inputs, 2_000.0).await })
    };
    // (seconds into the stream, what happens)
    let stream_start = Instant::now();
    let mut live = vec![start("i0")];
    let mut stopped = 0;
    for (at, step) in [(8, "add i1"), (16, "add i2"), (26, "stop"), (36, "add i3"), (46, "stop")] {
        if let Some(wait) = Duration::from_secs(at).checked_sub(stream_start.elapsed()) {
            std::thread::sleep(wait);
        }
        match step.strip_prefix("add ") {
            Some(name) => live.push(start(name)),
            None => {
                // The oldest instance leaves cleanly: final checkpoints, then exit 0.
                let mut i = live.remove(0);
                let t = Instant::now();
                i.signal(15);
                let st = i.wait_exit(Duration::from_secs(90));
                assert!(st.success(), "{} must leave cleanly: {st:?}\n{}", i.name, i.log_tail(40));
                eprintln!("{} left in {:?}", i.name, t.elapsed());
                stopped += 1;
            }
        }
        assert!(!producing.is_finished(), "the stream ended before step `{step}`: make it longer");
        for i in live.iter_mut() {
            assert!(i.alive(), "{} died\n{}", i.name, i.log_tail(60));
        }
    }
    assert_eq!((live.len(), stopped), (2, 2));
    let offsets = rt.block_on(producing).expect("producer task");
    let logs = |inst: &[Instance]| inst.iter().map(|i| i.log_tail(30)).collect::<Vec<_>>().join("\n");

    c.wait_for_replay(Duration::from_secs(120), || logs(&live));
    let want = expected_dead_letters(inputs, &offsets);
    assert!(want.len() > 500, "the stream must carry malformed messages; {} here", want.len());
    let got = dead_letters_by_source(brokers, want.len());
    assert_eq!(got.len(), want.len(), "dead letters by source offset");
    assert!(got == want, "dead letters differ from replay's rejections");

    // Each room on exactly one live instance, with the whole stream's GMV.
    let totals = room_totals(&c.expected);
    let t1 = Instant::now();
    loop {
        let scrapes: Vec<String> = live
            .iter()
            .map(|i| rt.block_on(http_get(i.addr, "/metrics")).map(|r| r.1).unwrap_or_default())
            .collect();
        let wrong: Vec<String> = totals
            .iter()
            .filter_map(|(room, (gmv, _, _))| {
                let seen: Vec<f64> = scrapes
                    .iter()
                    .filter_map(|s| series_value(s, "livefunnel_room_gmv_cents_total", &[("room_id", room)]))
                    .collect();
                (seen != [*gmv as f64]).then(|| format!("{room}: want [{gmv}] on one instance, got {seen:?}"))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "room series after the rebalances: {:?}",
            &wrong[..wrong.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for mut i in live.drain(..) {
        i.signal(15);
        let st = i.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "{} must stop cleanly: {st:?}\n{}", i.name, i.log_tail(40));
    }
}
