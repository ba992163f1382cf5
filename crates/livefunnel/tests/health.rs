//! Health series that cannot freeze: checkpoints that keep failing (the state directory
//! gone, replaced by a file: writes fail for root too) leave the run going, each failure
//! counted and logged, while the last-success timestamp stays where it was and the
//! partitions' progress timestamps move on, so `time() - last_success` crosses the
//! LivefunnelCheckpointTooOld threshold. Checkpoints resume once the directory is back.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use livefunnel::pipeline::SinkKind;

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

#[test]
fn failing_checkpoints_keep_the_run_going_and_their_age_growing() {
    let f = Fixture::new(PARTITIONS);
    let state = f.dir.path().join("state");
    let mut settings =
        test_settings(&f.brokers, "health", livefunnel_clickhouse::ClickHouseConfig::default(), &state);
    settings.sink = SinkKind::Jsonl(f.dir.path().join("out"));
    f.rt.block_on(async {
        produce(&f.brokers, &f.inputs).await;
        let r = start_pipeline(settings).await;

        // Healthy: checkpoints complete.
        let t0 = Instant::now();
        while checkpoints(&scrape(r.addr).await, "ok") < 2.0 * PARTITIONS as f64 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoints:\n{}", scrape(r.addr).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

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
