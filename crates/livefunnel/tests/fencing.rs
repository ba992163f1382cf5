//! A revoke that times out fences the old owner: with ClickHouse down, a rebalance
//! asks `livefunnel run` to give its partitions up, their final checkpoints cannot
//! complete (the rows before them are not written), and the revoke gives up after
//! `TESTKIT_REVOKE_TIMEOUT_MS`. The partition goes to another group member (here a
//! plain consumer that processes nothing). Once ClickHouse is back, nothing of the
//! old owner reaches the partition's checkpoint, and rows it had queued for the sink
//! but the sink had not taken yet are never written.
//!
//! Rows are made visible by annotations: every `session_start` writes one, with its
//! room, as soon as the event is processed.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use faults::*;
use livefunnel_clickhouse::Table;
use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::ClientConfig;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;
const GROUP: &str = "fencing";

/// A `session_start` of `room` on partition `p`: one annotation row once processed.
fn session_start(p: i32, room: &str) -> Input {
    let ts = livefunnel_pipeline::now_ms();
    let payload = format!(
        r#"{{"event_id":"{room}-start","type":"session_start","ts":{ts},"room_id":"{room}","session_id":"s"}}"#
    );
    Input { partition: p, key: room.as_bytes().to_vec(), payload: payload.into_bytes() }
}

fn on_every_partition(room: &str) -> Vec<Input> {
    (0..PARTITIONS).map(|p| session_start(p, &format!("{room}-{p}"))).collect()
}

/// The rooms of the annotations in ClickHouse ("" while it does not answer).
async fn annotated_rooms(ch: &livefunnel_clickhouse::ClickHouseConfig) -> Vec<String> {
    let rows = livefunnel_clickhouse::latest_rows(ch, Table::Annotations).await.unwrap_or_default();
    rows.iter().map(|r| r["room_id"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A member of the group that holds what it is assigned and processes nothing; its
/// partition (or -1) in `holds`.
fn idle_member(brokers: &str, holds: Arc<AtomicI32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the idle member");
    c.subscribe(&[TOPIC]).expect("subscribing");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = c.poll(Duration::from_millis(100));
            let parts: Vec<i32> = c
                .assignment()
                .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            holds.store(if parts.len() == 1 { parts[0] } else { -1 }, Ordering::Relaxed);
        }
    })
}

#[test]
fn faultsuite_a_timed_out_revoke_leaves_no_writer_behind() {
    init_logs();
    let mut server = ClickHouseServer::spawn();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "fencing");
    let addr = free_local_addr();
    let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, GROUP, addr));
    let state = livefunnel_state::StateDir::open(dir.path().join("state")).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let log = dir.path().join("run.log");
        let mut cmd = run_command(&config, &log);
        cmd.env("TESTKIT_REVOKE_TIMEOUT_MS", "2000");
        let mut run = Run::spawn(cmd, addr, &log);
        produce(&brokers, &on_every_partition("before")).await;
        wait_committed(&run, "both partitions committed", &brokers, GROUP, &[1, 1], Duration::from_secs(60))
            .await;

        server.stop();
        // The sink takes these and gets stuck writing them...
        produce(&brokers, &on_every_partition("stuck")).await;
        wait_for(&run, "an insert failed", Duration::from_secs(60), Duration::from_millis(200), || async {
            let errors = series_sum(&scrape(addr).await, "livefunnel_clickhouse_insert_errors_total");
            (errors == 0.0).then(|| "no insert error yet".to_owned())
        })
        .await;
        // ...so these wait in its queue.
        produce(&brokers, &on_every_partition("queued")).await;
        wait_for(
            &run,
            "the queued rooms processed",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                let text = scrape(addr).await;
                let live = (0..PARTITIONS)
                    .filter(|p| {
                        series_value(&text, "livefunnel_room_live", &[("room_id", &format!("queued-{p}"))])
                            == Some(1.0)
                    })
                    .count();
                (live != PARTITIONS as usize).then(|| format!("{live} queued rooms live"))
            },
        )
        .await;

        // Another member joins: every partition is revoked, no final checkpoint can
        // complete, the revoke times out; the member gets one of them.
        let (holds, stop) = (Arc::new(AtomicI32::new(-1)), Arc::new(AtomicBool::new(false)));
        let member = idle_member(&brokers, holds.clone(), stop.clone());
        let log_ref = &log;
        let holds_ref = &holds;
        wait_for(
            &run,
            "the revoke timed out",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async move {
                let text = std::fs::read_to_string(log_ref).unwrap_or_default();
                let timed_out = text.contains("timed out");
                let held = holds_ref.load(Ordering::Relaxed);
                (!timed_out || held < 0).then(|| format!("timed out: {timed_out}, member holds {held}"))
            },
        )
        .await;
        let moved = holds.load(Ordering::Relaxed);
        let kept = 1 - moved;
        let checkpoint = state.checkpoint_path(TOPIC, moved);
        let before = std::fs::read(&checkpoint).expect("the moved partition's checkpoint");

        server.start();
        // The partition kept is processed again by its new task, behind everything
        // the old tasks queued: once its queued room is written, the old queue is done.
        wait_for(
            &run,
            "the kept partition written",
            Duration::from_secs(90),
            Duration::from_millis(300),
            || async {
                let rooms = annotated_rooms(&ch).await;
                (!rooms.contains(&format!("queued-{kept}"))).then(|| format!("annotations of {rooms:?}"))
            },
        )
        .await;
        // A stale task would save its checkpoint right after its rows are written.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rooms = annotated_rooms(&ch).await;
        assert!(
            !rooms.contains(&format!("queued-{moved}")),
            "rows the revoked owner of partition {moved} had queued were written: {rooms:?}\n{}",
            run.log_tail(40)
        );
        let after = std::fs::read(&checkpoint).unwrap();
        assert!(
            before == after,
            "the revoked owner of partition {moved} saved a checkpoint\n{}",
            run.log_tail(40)
        );
        assert!(run.alive(), "{}", run.log_tail(40));

        stop.store(true, Ordering::Relaxed);
        member.join().unwrap();
        run.stop(Duration::from_secs(60));
    });
    drop(server);
}
