//! DLQ outage: while dead letters cannot be produced (the DLQ topic does not exist for
//! the producer), a partition's committed offset does not move past its first
//! undelivered dead letter; once the topic is there, everything is delivered and the
//! partitions are committed to their ends.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::time::{Duration, Instant};

use common::*;
use faults::*;
use livefunnel_kafka::rdkafka::types::RDKafkaRespErr;
use livefunnel_testkit::ClickHouseServer;

const PARTITIONS: i32 = 2;
/// How long the DLQ stays unavailable once dead letters are waiting.
const OUTAGE: Duration = Duration::from_secs(10);

/// Phase A: the sample's first half without the lines replay rejects (no dead
/// letters); phase B: one malformed message first on every partition, then the rest
/// of the sample, its bad lines included.
fn phases() -> (Vec<Input>, usize) {
    let base = sample_input(PARTITIONS);
    let rejected: std::collections::BTreeSet<usize> =
        Expect::new(base.clone(), PARTITIONS).dead.values().map(|(n, _)| *n).collect();
    let half = base.len() / 2;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for p in 0..PARTITIONS {
        b.push(Input {
            partition: p,
            key: b"poison".to_vec(),
            payload: format!("not json {p}").into_bytes(),
        });
    }
    for (i, input) in base.into_iter().enumerate() {
        if i < half && !rejected.contains(&i) {
            a.push(input);
        } else {
            b.push(input);
        }
    }
    let n = a.len();
    a.extend(b);
    (a, n)
}

#[test]
fn faultsuite_undeliverable_dead_letters_hold_the_committed_offset() {
    init_logs();
    let server = ClickHouseServer::spawn();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).expect("creating the input topic");
    // "The DLQ topic does not exist and is not auto-created": metadata says so.
    mock.topic_error(DLQ_TOPIC, RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART).unwrap();
    let brokers = mock.bootstrap_servers();
    let (inputs, a_len) = phases();
    let e = Expect::new(inputs, PARTITIONS);
    let (a, b) = e.inputs.split_at(a_len);
    let a_ends = partition_ends(a, PARTITIONS);
    // Phase A has no dead letter; the first of each partition is its malformed marker.
    for p in 0..PARTITIONS {
        let first = e.dead.keys().filter(|k| k.0 == p).map(|k| k.1).min();
        assert_eq!(first, Some(a_ends[p as usize]), "partition {p}");
        assert_eq!(e.dead[&(p, a_ends[p as usize])].1, "malformed_json");
    }

    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "faults_dlq");
    let group = "faults-dlq";
    // Failures surface within seconds instead of librdkafka's defaults (30 s to call a
    // topic missing, 5 min per message), and the healed topic is seen within a second.
    let kafka = [
        ("topic.metadata.propagation.max.ms", "1000"),
        ("topic.metadata.refresh.interval.ms", "1000"),
        ("message.timeout.ms", "5000"),
    ];
    let addr = free_local_addr();
    let config = write_run_config(
        dir.path(),
        &RunConfig { idle_timeout: Some("10m"), kafka: &kafka, ..RunConfig::new(&brokers, &ch, group, addr) },
    );
    let rt = runtime();
    rt.block_on(async {
        let p = producer(&brokers);
        produce_with(&p, a).await;
        let mut run = Run::start(&config, addr, &dir.path().join("run.log"));
        let (brokers_ref, a_ends_ref) = (&brokers, &a_ends);
        wait_for(
            &run,
            "phase A committed",
            Duration::from_secs(60),
            Duration::from_millis(300),
            move || async move {
                let got = committed(brokers_ref, group, PARTITIONS).await;
                (got != *a_ends_ref).then(|| format!("committed {got:?}, want {a_ends_ref:?}"))
            },
        )
        .await;

        // Phase B while the DLQ is unavailable: the pipeline reads past the dead
        // letters, but no checkpoint can include them.
        produce_with(&p, b).await;
        let start = Instant::now();
        let mut polls = 0;
        while start.elapsed() < OUTAGE {
            let got = committed(&brokers, group, PARTITIONS).await;
            for (p, (&c, &first_dead)) in got.iter().zip(&a_ends).enumerate() {
                if c > first_dead {
                    run.fail(format!(
                        "partition {p} committed {c}, past its undelivered dead letter at offset {first_dead}"
                    ));
                }
            }
            polls += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let text = scrape(addr).await;
        let consumed = series_sum(&text, "livefunnel_events_consumed_total") as i64;
        let errors = series_sum(&text, "livefunnel_dead_letter_errors_total");
        let held = committed(&brokers, group, PARTITIONS).await;
        eprintln!(
            "dlq outage: {polls} polls over {OUTAGE:?}; consumed {consumed} of {} (phase A {a_len}), \
             dead-letter errors {errors}, committed {held:?}",
            e.lines
        );
        assert!(consumed > a_len as i64, "the pipeline read the dead letters' messages: {consumed}");
        assert!(errors > 0.0, "dead-letter deliveries failed during the outage\n{}", run.log_tail(30));
        assert_eq!(held, a_ends, "offsets stay at the first undelivered dead letter");
        let (code, body) = http_get(addr, "/readyz").await.unwrap();
        eprintln!("/readyz during the dlq outage: {code} {body:?}");

        // Heal: the topic exists. Everything is delivered once, partitions move on.
        mock.topic_error(DLQ_TOPIC, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).unwrap();
        let healed = Instant::now();
        common_check(&e, &run, &brokers, &ch, group).await;
        eprintln!("dlq healed: common check passed {:.1} s later", healed.elapsed().as_secs_f64());
        let st = run.terminate();
        assert!(st.success(), "exit {st:?}\n{}", run.log_tail(40));
    });
    drop(server);
}
