//! Health series that cannot freeze: checkpoints that keep failing (the state directory
//! gone, replaced by a file: writes fail for root too) leave the run going, each failure
//! counted and logged, while the last-success timestamp stays where it was and the
//! partitions' progress timestamps move on, so `time() - last_success` crosses the
//! LivefunnelCheckpointTooOld threshold. Checkpoints resume once the directory is back.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use livefunnel_pipeline::SinkKind;

const PARTITIONS: i32 = 2;
/// The alert's threshold, shortened: three checkpoint intervals.
const THRESHOLD_S: f64 = 3.0;

fn unix_secs() -> f64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64()
}

/// Per partition, a series' value.
fn per_partition(text: &str, name: &str) -> BTreeMap<i32, Option<f64>> {
    (0..PARTITIONS)
        .map(|p| {
            let ps = p.to_string();
            (p, series_value(text, name, &[("topic", TOPIC), ("partition", ps.as_str())]))
        })
        .collect()
}

fn checkpoints(text: &str, result: &str) -> f64 {
    series_value(text, "livefunnel_checkpoints_total", &[("result", result)]).unwrap_or(0.0)
}

/// Waits for two checkpoints of every partition.
async fn checkpointed(addr: std::net::SocketAddr) {
    let t0 = Instant::now();
    while checkpoints(&scrape(addr).await, "ok") < 2.0 * PARTITIONS as f64 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoints:\n{}", scrape(addr).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sample on `PARTITIONS` partitions, into JSONL files; checkpoints in the state
/// directory returned.
fn jsonl_fixture(group: &str) -> (Fixture, std::path::PathBuf, livefunnel_pipeline::Settings) {
    let f = Fixture::new(PARTITIONS);
    let state = f.dir.path().join("state");
    let mut settings =
        test_settings(&f.brokers, group, livefunnel_clickhouse::ClickHouseConfig::default(), &state);
    settings.sink = SinkKind::Jsonl(f.dir.path().join("out"));
    (f, state, settings)
}

#[test]
fn failing_checkpoints_keep_the_run_going_and_their_age_growing() {
    let (f, state, settings) = jsonl_fixture("health");
    f.rt.block_on(async {
        produce(&f.brokers, &f.inputs).await;
        let r = start_pipeline(settings).await;

        // Healthy: checkpoints complete.
        checkpointed(r.addr).await;

        // The directory becomes a file: every save fails, for root too.
        std::fs::remove_dir_all(&state).unwrap();
        std::fs::write(&state, "not a directory").unwrap();
        let failed_before = checkpoints(&scrape(r.addr).await, "failed");
        let mut frozen: Option<BTreeMap<i32, Option<f64>>> = None;
        let t1 = Instant::now();
        loop {
            assert!(!r.handle.is_finished(), "a retryable checkpoint error stopped the run");
            let text = scrape(r.addr).await;
            let failed = checkpoints(&text, "failed") - failed_before;
            let age = per_partition(&text, "livefunnel_checkpoint_age_seconds");
            let success = per_partition(&text, "livefunnel_checkpoint_last_success_timestamp_seconds");
            let progress = per_partition(&text, "livefunnel_partition_last_progress_timestamp_seconds");
            // Once every partition failed twice, no save is in flight from before.
            if failed >= 2.0 * PARTITIONS as f64 {
                match &frozen {
                    None => frozen = Some(success.clone()),
                    Some(f) => assert_eq!(f, &success, "a failed checkpoint moved the last success"),
                }
            }
            let now = unix_secs();
            let alert = |p: &i32| success[p].is_some_and(|s| now - s > THRESHOLD_S);
            let aged = |p: &i32| age[p].is_some_and(|a| a > THRESHOLD_S);
            let moving = |p: &i32| {
                progress[p]
                    .zip(success[p])
                    .is_some_and(|(pr, s)| pr - s > THRESHOLD_S && now - pr < THRESHOLD_S)
            };
            let all = |c: &dyn Fn(&i32) -> bool| (0..PARTITIONS).all(|p| c(&p));
            if frozen.is_some() && all(&alert) && all(&aged) && all(&moving) {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(60),
                "after {failed} failed checkpoints: age {age:?}, last success {success:?}, last \
                 progress {progress:?}, now {now}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // The directory is back: checkpoints complete again.
        std::fs::remove_file(&state).unwrap();
        std::fs::create_dir(&state).unwrap();
        let frozen = frozen.unwrap();
        let t2 = Instant::now();
        loop {
            let text = scrape(r.addr).await;
            let success = per_partition(&text, "livefunnel_checkpoint_last_success_timestamp_seconds");
            if (0..PARTITIONS).all(|p| success[&p] > frozen[&p]) {
                break;
            }
            assert!(t2.elapsed() < Duration::from_secs(30), "checkpoints did not resume: {success:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        r.shutdown.cancel();
        r.handle.await.unwrap().unwrap();
    });

    // The rule whose expression this test evaluates on the scraped values.
    let rules =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/rules/livefunnel-pipeline-alerts.yml"))
            .unwrap();
    assert!(
        rules.contains("expr: time() - livefunnel_checkpoint_last_success_timestamp_seconds > 300"),
        "LivefunnelCheckpointTooOld changed: update this test"
    );
}

/// Messages the partitions got through: accepted, dropped as duplicates or rejected.
fn processed(text: &str) -> f64 {
    series_sum(text, "livefunnel_events_accepted_total")
        + series_sum(text, "livefunnel_events_duplicate_total")
        + series_sum(text, "livefunnel_events_rejected_total")
}

/// FIFOs standing in for checkpoint files: a writer opening one waits for a reader.
/// Dropped (the test ends, passing or not), each gets a reader that takes everything,
/// so no save stays blocked and the runtime can shut down.
struct Fifos(Vec<std::path::PathBuf>);

impl Fifos {
    fn release(&mut self) {
        for tmp in self.0.drain(..) {
            // Detached: with no save waiting on it, the open never returns, and the
            // thread ends with the process.
            std::thread::spawn(move || {
                if let Ok(mut f) = std::fs::File::open(&tmp) {
                    let _ = std::io::Read::read_to_end(&mut f, &mut Vec::new());
                }
            });
        }
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        // A failed test: the hanging saves return (failing), and the next ones, a
        // second later, find no FIFO to hang on.
        let paths = self.0.clone();
        self.release();
        std::thread::sleep(Duration::from_millis(200));
        for tmp in paths {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A save that hangs (a disk that takes seconds to sync: the checkpoint's temporary
/// file is a FIFO nobody reads, so opening it blocks) does not stall its partition: new
/// messages are processed while it hangs, and checkpoints go on once it returns.
#[test]
fn a_hanging_checkpoint_save_does_not_stall_its_partition() {
    let (f, state, settings) = jsonl_fixture("health-hang");
    let dir = livefunnel_state::StateDir::open(&state).unwrap();
    f.rt.block_on(async {
        produce(&f.brokers, &f.inputs).await;
        let r = start_pipeline(settings).await;
        checkpointed(r.addr).await;

        let mut fifos = Fifos(Vec::new());
        fifos.0 = (0..PARTITIONS)
            .map(|p| {
                let path = dir.checkpoint_path(TOPIC, p);
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("state").to_owned();
                let tmp = path.with_extension(format!("{ext}.tmp"));
                let made = std::process::Command::new("mkfifo").arg(&tmp).status().expect("running mkfifo");
                assert!(made.success(), "mkfifo {}", tmp.display());
                tmp
            })
            .collect();
        // Three intervals: every partition's next save is hanging on its FIFO by then.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ok_hung = checkpoints(&scrape(r.addr).await, "ok");
        let before = processed(&scrape(r.addr).await);
        let now = livefunnel_pipeline::now_ms();
        let more: Vec<Input> = (0..200)
            .map(|i| {
                let room = format!("hang-room-{}", i % 10);
                let payload = format!(
                    r#"{{"event_id":"hang-{i}","type":"comment","ts":{now},"room_id":"{room}","session_id":"s","user_id":"u{i}"}}"#
                );
                Input { partition: partition_of(&room, PARTITIONS), key: room.into_bytes(), payload: payload.into_bytes() }
            })
            .collect();
        produce(&f.brokers, &more).await;
        let t1 = Instant::now();
        loop {
            let text = scrape(r.addr).await;
            if processed(&text) >= before + more.len() as f64 {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(20),
                "messages not processed while a save hangs: {} of {}\n{}",
                processed(&text) - before,
                more.len(),
                text.lines().filter(|l| l.starts_with("livefunnel_events") || l.starts_with("livefunnel_checkpoints")).collect::<Vec<_>>().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(checkpoints(&scrape(r.addr).await, "ok"), ok_hung, "the saves were hanging meanwhile");

        // The disk answers: the hanging saves return (failing: a FIFO cannot be
        // synced), and with the FIFOs gone the next ones succeed.
        let paths = fifos.0.clone();
        let failed_hung = checkpoints(&scrape(r.addr).await, "failed");
        fifos.release();
        let t2 = Instant::now();
        while checkpoints(&scrape(r.addr).await, "failed") < failed_hung + PARTITIONS as f64 {
            assert!(t2.elapsed() < Duration::from_secs(30), "the hanging saves did not return");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for tmp in paths {
            std::fs::remove_file(tmp).unwrap();
        }
        let t2 = Instant::now();
        while checkpoints(&scrape(r.addr).await, "ok") < ok_hung + 2.0 * PARTITIONS as f64 {
            assert!(t2.elapsed() < Duration::from_secs(30), "checkpoints did not go on after the saves returned");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        r.shutdown.cancel();
        r.handle.await.unwrap().unwrap();
    });
}
