//! Fail loudly, never become a zombie: a sink that cannot write any more (a column
//! dropped by hand while `livefunnel run` writes to the table) or a partition task
//! that panics stops the process with a non-zero exit and a last line `error: ...`
//! naming the cause, after the healthy partitions took their final checkpoints.
//! Engines that are busy for long (a huge snapshot, a burst of work) never hold the
//! threads serving `/metrics`: they run on threads of their own.
//! And `/readyz` of an instance without a partition (a group with more members than
//! partitions) says so, while staying ready.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::Duration;

use common::*;
use faults::*;
use livefunnel_clickhouse::ClickHouseConfig;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;
/// How long a fatal error may take to end the process: its best-effort final
/// checkpoints are bounded by seconds, so this is a generous limit, not a measure.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// The last line of the log, which must be the process's own one-line error.
fn last_line(run: &Run) -> String {
    let text = std::fs::read_to_string(&run.log).unwrap_or_default();
    text.lines().last().unwrap_or_default().to_owned()
}

fn mock_cluster(
    partitions: i32,
) -> (MockCluster<'static, livefunnel_kafka::rdkafka::producer::DefaultProducerContext>, String) {
    init_logs();
    let mock = MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, partitions, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}

#[test]
fn faultsuite_a_column_dropped_under_the_sink_stops_the_process_naming_it() {
    let server = ClickHouseServer::spawn();
    let (_mock, brokers) = mock_cluster(PARTITIONS);
    let inputs = sample_input(PARTITIONS);
    let (first, second) = inputs.split_at(inputs.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "failsafe_column");
    let group = "failsafe-column";
    let addr = free_local_addr();
    let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, group, addr));
    let rt = runtime();
    rt.block_on(async {
        produce(&brokers, first).await;
        let mut run = Run::start(&config, addr, &dir.path().join("run.log"));
        let ends = partition_ends(first, PARTITIONS);
        wait_committed(&run, "the first half committed", &brokers, group, &ends, Duration::from_secs(60))
            .await;

        let client = clickhouse::Client::default().with_url(&ch.url).with_validation(false);
        let alter = format!("ALTER TABLE {}.room_window_stats DROP COLUMN comments", ch.database);
        client.query(&alter).execute().await.expect("dropping a column");
        produce(&brokers, second).await;

        let st = run.wait_exit(EXIT_LIMIT);
        assert!(!st.success(), "a sink that cannot write must stop the process: {st:?}");
        let line = last_line(&run);
        assert!(line.starts_with("error: "), "the last line is the error: {line}\n{}", run.log_tail(30));
        for part in ["room_window_stats", "comments", "restart"] {
            assert!(line.contains(part), "the error names {part}: {line}");
        }
    });
    drop(server);
}

#[test]
fn faultsuite_a_partition_task_panic_stops_the_process_after_final_checkpoints_of_the_others() {
    let server = ClickHouseServer::spawn();
    let (_mock, brokers) = mock_cluster(PARTITIONS);
    let inputs = sample_input(PARTITIONS);
    let (on_0, on_1): (Vec<Input>, Vec<Input>) = inputs.into_iter().partition(|i| i.partition == 0);
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "failsafe_panic");
    let group = "failsafe-panic";
    let addr = free_local_addr();
    // No periodic checkpoint: what partition 1 commits is its final checkpoint.
    let config = write_run_config(
        dir.path(),
        &RunConfig { checkpoint_interval: "1h", ..RunConfig::new(&brokers, &ch, group, addr) },
    );
    let panic_offset = on_0.len() as i64 / 2;
    let rt = runtime();
    rt.block_on(async {
        produce(&brokers, &on_1).await;
        let mut cmd = run_command(&config, &dir.path().join("run.log"));
        cmd.env("TESTKIT_PANIC_AT", format!("{TOPIC}/0@{panic_offset}"));
        let mut run = Run::spawn(cmd, addr, &dir.path().join("run.log"));
        // Partition 1 is done before partition 0 gets its first message.
        let want = on_1.len() as f64;
        wait_for(
            &run,
            "partition 1 consumed",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                let got = series_value(
                    &scrape(addr).await,
                    "livefunnel_events_consumed_total",
                    &[("partition", "1")],
                );
                (got != Some(want)).then(|| format!("consumed {got:?} of {want}"))
            },
        )
        .await;
        produce(&brokers, &on_0).await;

        let st = run.wait_exit(EXIT_LIMIT);
        assert!(!st.success(), "a panicked partition task must stop the process: {st:?}");
        let line = last_line(&run);
        assert!(line.starts_with("error: "), "the last line is the error: {line}\n{}", run.log_tail(30));
        for part in [
            format!("{TOPIC}/0"),
            "panicked".to_owned(),
            format!("injected panic at {TOPIC}/0@{panic_offset}"),
        ] {
            assert!(line.contains(&part), "the error names {part}: {line}");
        }
        // The healthy partition's final checkpoint; none for the one that panicked.
        assert_eq!(committed(&brokers, group, PARTITIONS).await, vec![-1, on_1.len() as i64]);
    });
    drop(server);
}

/// A stop while ClickHouse never answers: the final checkpoints cannot complete (their
/// rows are not written), so they time out; the sink then gets a bounded time for
/// what it holds and the process exits naming ClickHouse, instead of retrying the
/// connection for ever. Nothing is committed: a restart computes those rows again.
#[test]
fn faultsuite_a_stop_with_clickhouse_unreachable_ends_within_its_limits() {
    let (_mock, brokers) = mock_cluster(PARTITIONS);
    let inputs = sample_input(PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: every connection is refused.
    let ch = ClickHouseConfig {
        url: format!("http://127.0.0.1:{}", livefunnel_testkit::free_port()),
        database: "failsafe_unreachable".to_owned(),
        batch_interval: livefunnel_core::Duration::from_ms(200),
        ..Default::default()
    };
    let group = "failsafe-unreachable";
    let addr = free_local_addr();
    let config = write_run_config(dir.path(), &RunConfig::new(&brokers, &ch, group, addr));
    let revoke = Duration::from_secs(2);
    let rt = runtime();
    rt.block_on(async {
        produce(&brokers, &inputs).await;
        let mut cmd = run_command(&config, &dir.path().join("run.log"));
        cmd.env("TESTKIT_REVOKE_TIMEOUT_MS", revoke.as_millis().to_string());
        let mut run = Run::spawn(cmd, addr, &dir.path().join("run.log"));
        let want = inputs.len() as f64;
        wait_for(
            &run,
            "every event consumed",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                let got = series_sum(&scrape(addr).await, "livefunnel_events_consumed_total");
                (got != want).then(|| format!("consumed {got} of {want}"))
            },
        )
        .await;

        run.signal(2);
        // The bound is the checkpoints' wait plus the sink's, with a generous margin
        // for a loaded machine; before the fix the process never exited.
        let st = run.wait_exit(revoke + livefunnel_pipeline::SINK_STOP_LIMIT + Duration::from_secs(30));
        assert!(!st.success(), "rows were left unwritten: the exit says so: {st:?}");
        let line = last_line(&run);
        assert!(line.starts_with("error: "), "the last line is the error: {line}\n{}", run.log_tail(30));
        for part in ["clickhouse", "not committed", "restart"] {
            assert!(line.contains(part), "the error names {part}: {line}");
        }
        assert_eq!(committed(&brokers, group, PARTITIONS).await, vec![-1; PARTITIONS as usize]);
    });
}

/// A group with more members than partitions: the instance without a partition is
/// ready (it is a healthy member, a standby) and says it holds none; when the owner
/// leaves, it takes the partition over and says so.
#[test]
fn readyz_of_a_standby_member_says_it_holds_no_partition() {
    let server = ClickHouseServer::spawn();
    init_logs();
    let mock = MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("creating the input topic");
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "failsafe_standby");
    let group = "failsafe-standby";
    let start = |name: &str| {
        let addr = free_local_addr();
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let config = write_run_config(&sub, &RunConfig::new(&brokers, &ch, group, addr));
        Run::start(&config, addr, &sub.join("run.log"))
    };
    let rt = runtime();
    rt.block_on(async {
        let mut a = start("a");
        let readyz = |addr| async move { http_get(addr, "/readyz").await.unwrap_or((0, String::new())) };
        let assigned = |addr| async move {
            series_value(&scrape(addr).await, "livefunnel_partitions_assigned", &[]).unwrap_or(-1.0)
        };
        wait_for(&a, "a owns the partition", Duration::from_secs(60), Duration::from_millis(200), || async {
            let r = readyz(a.addr).await;
            (r.0 != 200).then(|| format!("{r:?}"))
        })
        .await;
        let mut b = start("b");
        // Both members of the group, one partition: exactly one holds it.
        let (a_addr, b_addr) = (a.addr, b.addr);
        wait_for(
            &b,
            "one owner, one standby",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async move {
                let (na, nb) = (assigned(a_addr).await, assigned(b_addr).await);
                let (ra, rb) = (readyz(a_addr).await, readyz(b_addr).await);
                let standby = |r: &(u16, String)| r.1.contains("standby");
                let done = na + nb == 1.0 && ra.0 == 200 && rb.0 == 200 && (standby(&ra) != standby(&rb));
                (!done).then(|| format!("a: {na} {ra:?}; b: {nb} {rb:?}"))
            },
        )
        .await;
        let (owner, standby) =
            if assigned(a.addr).await == 1.0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
        let body = readyz(standby.addr).await.1;
        assert!(body.contains("no partition"), "{body}");
        let st = owner.terminate();
        assert!(st.success(), "{st:?}");
        let addr = standby.addr;
        wait_for(
            standby,
            "the standby takes over",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async move {
                let r = readyz(addr).await;
                (r.0 != 200 || r.1.contains("standby") || assigned(addr).await != 1.0)
                    .then(|| format!("{r:?}"))
            },
        )
        .await;
        let st = standby.terminate();
        assert!(st.success(), "{st:?}");
    });
    drop(server);
}

/// Every engine thread blocked (by a test hook, as a long snapshot or a burst of CPU
/// work would block it): `/metrics` still answers, and once the engines go on every
/// event is counted and written. On a pipeline whose engines share the HTTP server's
/// workers, the scrape waits for as long as they are blocked.
#[test]
fn metrics_answer_while_every_engine_thread_is_blocked() {
    const PARTS: i32 = 4;
    let server = ClickHouseServer::spawn();
    let (_mock, brokers) = mock_cluster(PARTS);
    let inputs = sample_input(PARTS);
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "failsafe_busy");
    let group = "failsafe-busy";
    let addr = free_local_addr();
    let threads = 2;
    let extra = format!("\n[runtime]\nengine_threads = {threads}\n");
    let config = write_run_config(
        dir.path(),
        &RunConfig { extra: &extra, ..RunConfig::new(&brokers, &ch, group, addr) },
    );
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let stalled = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("stall."))
            .count()
    };
    let rt = runtime();
    rt.block_on(async {
        let mut cmd = run_command(&config, &dir.path().join("run.log"));
        cmd.env("TESTKIT_STALL_FILE", &stall);
        let run = Run::spawn(cmd, addr, &dir.path().join("run.log"));
        produce(&brokers, &inputs).await;
        wait_for(
            &run,
            "every engine thread blocked",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async { (stalled() < threads).then(|| format!("{} partitions blocked", stalled())) },
        )
        .await;
        // A timeout, not a measure: blocked workers would hold the scrape until the
        // file goes, i.e. for ever.
        let got = tokio::time::timeout(Duration::from_secs(20), http_get(addr, "/metrics")).await;
        let answered = matches!(&got, Ok(Ok((200, body))) if body.contains("livefunnel_build_info"));
        assert!(answered, "/metrics while the engines are blocked: {got:?}\n{}", run.log_tail(30));
        assert_eq!(stalled(), threads, "only the blocked threads' partitions are stuck");

        std::fs::remove_file(&stall).unwrap();
        let ends = partition_ends(&inputs, PARTS);
        wait_committed(
            &run,
            "every partition committed to its end",
            &brokers,
            group,
            &ends,
            Duration::from_secs(60),
        )
        .await;
        let consumed = series_sum(&scrape(addr).await, "livefunnel_events_consumed_total");
        assert_eq!(consumed, inputs.len() as f64);
        let expected = latest(&replay_inputs(&inputs).rows);
        wait_for_clickhouse_or(&ch, &expected, Duration::from_secs(60), || run.log_tail(60)).await;
    });
    drop(server);
}
