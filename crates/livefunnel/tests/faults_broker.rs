//! Broker faults while the pipeline runs: a 3-broker mock cluster
//! (replication factor 3), five renamed copies of the sample interleaved (about 34,000
//! messages over 6 partitions, bad lines included), and meanwhile brokers down and up
//! (a partition leader, a failover to another leader, the group coordinator briefly and
//! past the session timeout, every broker at once) plus request errors on Produce (while
//! the dead-letter producer is the only producer), Fetch and OffsetCommit.
//!
//! At the end: ClickHouse's latest rows equal `replay`'s, and the dead-letter topic
//! holds exactly the messages replay rejects, once each, with their reasons.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::mocking::{MockCluster, MockCoordinator};
use livefunnel_kafka::rdkafka::producer::DefaultProducerContext;
use livefunnel_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use livefunnel_kafka::rdkafka::ClientConfig;
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

const PARTITIONS: i32 = 6;
const BROKERS: i32 = 3;
const COPIES: usize = 5;
const GROUP: &str = "faults-broker";
/// Where the group coordinator starts; broker ids of the mock run from 1.
const COORDINATOR: i32 = 3;

type Mock = MockCluster<'static, DefaultProducerContext>;

/// The leader every input partition starts with.
fn leader_of(p: i32) -> i32 {
    p % BROKERS + 1
}

/// `line` with every `from` replaced by `to`, byte for byte (bad lines may not be UTF-8).
fn replace(line: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        if line[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

/// The sample's lines, each in `COPIES` copies with renamed rooms, interleaved so every
/// copy keeps the sample's time order; a malformed message every 250 lines, spread over
/// the partitions; then the clock events of [`sample_input`] per partition.
fn stream() -> Vec<Input> {
    let text = std::fs::read(repo_root().join("data/sample.jsonl")).expect("reading data/sample.jsonl");
    let mut out = Vec::new();
    let mut max_ts = 0i64;
    let lines =
        text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty());
    for (n, line) in lines.enumerate() {
        if let Some(ts) = serde_json::from_slice::<Value>(line).ok().and_then(|v| v.get("ts")?.as_i64()) {
            max_ts = max_ts.max(ts);
        }
        for c in 0..COPIES {
            let payload = replace(line, b"room-", format!("c{c}-room-").as_bytes());
            let room = room_of(&payload);
            let partition =
                room.as_deref().map_or((n + c) as i32 % PARTITIONS, |r| partition_of(r, PARTITIONS));
            out.push(Input { partition, key: room.unwrap_or_default().into_bytes(), payload });
        }
        if n % 250 == 0 {
            let payload = format!(r#"{{"event_id":"bad-{n}","type":"comment","ts":}}"#).into_bytes();
            out.push(Input { partition: (n / 250) as i32 % PARTITIONS, key: Vec::new(), payload });
        }
    }
    out.extend(clock_inputs(max_ts, PARTITIONS));
    out
}

/// Produces `inputs` in order with an idempotent producer (a retried request is never
/// appended twice), `chunk` messages at a time with `pause` in between, so the stream
/// lasts through the faults.
async fn produce_paced(brokers: String, inputs: Vec<Input>, chunk: usize, pause: Duration) {
    let producer = producer(&brokers);
    for part in inputs.chunks(chunk) {
        produce_with(&producer, part).await;
        tokio::time::sleep(pause).await;
    }
}

fn high_watermarks(brokers: &str) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..PARTITIONS)
        .map(|p| c.fetch_watermarks(TOPIC, p, Duration::from_secs(10)).expect("watermarks").1)
        .collect()
}

/// The fault schedule's log: what was done when, printed as it goes.
struct Steps(Instant);

impl Steps {
    fn note(&self, what: &str) {
        eprintln!("[faults_broker +{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

fn errors(codes: &[RDKafkaRespErr], times: usize) -> Vec<RDKafkaRespErr> {
    codes.iter().copied().cycle().take(codes.len() * times).collect()
}

use RDKafkaRespErr::*;

/// Brokers down and up, leaders and the coordinator moved, with request errors on
/// Fetch and OffsetCommit; returns when every broker is up again.
async fn broker_faults(mock: &Mock, steps: &Steps) {
    let sleep = |s: f64| tokio::time::sleep(Duration::from_secs_f64(s));
    steps.note("fetch and offset-commit errors armed");
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &errors(
            &[
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
                RD_KAFKA_RESP_ERR__TRANSPORT,
            ],
            5,
        ),
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &errors(
            &[
                RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            ],
            5,
        ),
    );
    sleep(3.0).await;

    let l = leader_of(0);
    steps.note(&format!("broker {l} (leader of partitions 0 and 3) down, leaders unchanged"));
    mock.broker_down(l).unwrap();
    sleep(4.0).await;
    mock.broker_up(l).unwrap();
    steps.note(&format!("broker {l} up"));
    sleep(2.0).await;

    let (down, to) = (2, 1);
    steps.note(&format!("broker {down} down, its partitions fail over to broker {to}"));
    mock.broker_down(down).unwrap();
    for p in (0..PARTITIONS).filter(|&p| leader_of(p) == down) {
        mock.partition_leader(TOPIC, p, Some(to)).unwrap();
    }
    sleep(4.0).await;
    mock.broker_up(down).unwrap();
    for p in (0..PARTITIONS).filter(|&p| leader_of(p) == down) {
        mock.partition_leader(TOPIC, p, Some(down)).unwrap();
    }
    steps.note(&format!("broker {down} up and leader again"));
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &errors(&[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT], 5),
    );
    sleep(2.0).await;

    steps.note(&format!("coordinator (broker {COORDINATOR}) down for 4 s, within the session timeout"));
    mock.broker_down(COORDINATOR).unwrap();
    sleep(4.0).await;
    mock.broker_up(COORDINATOR).unwrap();
    steps.note("coordinator up");
    sleep(3.0).await;

    steps.note(&format!("coordinator (broker {COORDINATOR}) down for 14 s, past the 10 s session timeout"));
    mock.broker_down(COORDINATOR).unwrap();
    sleep(14.0).await;
    mock.coordinator(MockCoordinator::Group(GROUP.into()), 1).unwrap();
    steps.note("group coordinator moved to broker 1");
    sleep(2.0).await;
    mock.broker_up(COORDINATOR).unwrap();
    steps.note(&format!("broker {COORDINATOR} up"));
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &errors(&[RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT], 3),
    );
    sleep(3.0).await;

    steps.note("every broker down for 3 s");
    mock.broker_down(-1).unwrap();
    sleep(3.0).await;
    mock.broker_up(-1).unwrap();
    steps.note("every broker up");
}

#[test]
fn faultsuite_broker_faults_lose_and_duplicate_nothing() {
    init_logs();
    let steps = Steps(Instant::now());
    let server = ClickHouseServer::spawn();
    let mock = MockCluster::new(BROKERS).expect("starting the mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, BROKERS).expect("creating the input topic");
    mock.create_topic(DLQ_TOPIC, 3, BROKERS).expect("creating the dead-letter topic");
    for p in 0..PARTITIONS {
        mock.partition_leader(TOPIC, p, Some(leader_of(p))).unwrap();
    }
    mock.coordinator(MockCoordinator::Group(GROUP.into()), COORDINATOR).unwrap();
    let brokers = mock.bootstrap_servers();
    let inputs = stream();
    let expected = latest(&replay_inputs(&inputs).rows);
    let want_dead = expected_dead_letters(&inputs, &fresh_offsets(&inputs));
    assert!(inputs.len() > 30_000, "{}", inputs.len());
    assert!(want_dead.len() > 100, "{}", want_dead.len());
    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "faults_broker");
    let rt = runtime();
    let (first, rest) = inputs.split_at(inputs.len() / 4);
    let first_dead = want_dead.len() - replay_inputs(rest).rejected.len();
    steps.note(&format!(
        "{} messages, {} rejected by replay, {} latest rows",
        inputs.len(),
        want_dead.len(),
        expected.len()
    ));

    rt.block_on(async {
        produce_paced(brokers.clone(), first.to_vec(), 2_000, Duration::ZERO).await;
        // The pipeline is not running yet and the test producer is done: these Produce
        // errors can only hit the dead-letter producer.
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &errors(
                &[
                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                    RD_KAFKA_RESP_ERR__TRANSPORT,
                ],
                3,
            ),
        );
        steps.note(&format!(
            "first quarter produced ({first_dead} bad); produce errors armed; pipeline starting"
        ));
        let Pipeline { shutdown, addr, handle } =
            start_pipeline(test_settings(&brokers, GROUP, ch.clone(), dir.path())).await;
        let t = Instant::now();
        loop {
            let text = scrape(addr).await;
            if series_sum(&text, "livefunnel_dead_letters_total") >= first_dead as f64 {
                break;
            }
            assert!(!handle.is_finished(), "the pipeline stopped");
            assert!(t.elapsed() < Duration::from_secs(90), "the first quarter's dead letters never left");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        mock.clear_request_errors(RDKafkaApiKey::Produce);
        steps.note("first quarter's dead letters sent through the produce errors");

        let producer =
            tokio::spawn(produce_paced(brokers.clone(), rest.to_vec(), 1_000, Duration::from_millis(700)));
        broker_faults(&mock, &steps).await;
        tokio::time::timeout(Duration::from_secs(120), producer)
            .await
            .expect("the test producer did not finish within 120 s after the faults")
            .expect("the test producer failed");
        steps.note("everything produced");
        for k in [RDKafkaApiKey::Produce, RDKafkaApiKey::Fetch, RDKafkaApiKey::OffsetCommit] {
            mock.clear_request_errors(k);
        }
        assert!(!handle.is_finished(), "the pipeline stopped during the faults");

        // Nothing produced twice: the input partitions hold each message once.
        let b = brokers.clone();
        let hw = tokio::task::spawn_blocking(move || high_watermarks(&b)).await.unwrap();
        let per_partition = partition_ends(&inputs, PARTITIONS);
        assert_eq!(hw, per_partition, "input messages per partition");

        wait_for_clickhouse(&ch, &expected, Duration::from_secs(180)).await;
        steps.note("clickhouse equals replay");

        let b = brokers.clone();
        let n = want_dead.len();
        let got = tokio::task::spawn_blocking(move || {
            read_dead_letters(&b, n, Duration::from_secs(5), Duration::from_secs(120))
        })
        .await
        .unwrap();
        let mut seen = BTreeMap::<(i32, i64), (String, usize)>::new();
        for d in &got {
            assert_eq!(d.source_topic, TOPIC);
            seen.entry((d.source_partition, d.source_offset)).or_insert((d.reason.clone(), 0)).1 += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, (_, n))| *n > 1).collect();
        let missing: Vec<_> = want_dead.keys().filter(|k| !seen.contains_key(k)).take(10).collect();
        let extra: Vec<_> = seen.keys().filter(|k| !want_dead.contains_key(k)).take(10).collect();
        let wrong: Vec<_> =
            want_dead.iter().filter(|(k, r)| seen.get(k).is_some_and(|(s, _)| s != *r)).take(10).collect();
        let by_reason = |m: &mut dyn Iterator<Item = &String>| {
            let mut out = BTreeMap::<String, usize>::new();
            for r in m {
                *out.entry(r.clone()).or_default() += 1;
            }
            out
        };
        steps.note(&format!(
            "dead letters: {} read, {} distinct, {} expected; by reason {:?}",
            got.len(),
            seen.len(),
            want_dead.len(),
            by_reason(&mut got.iter().map(|g| &g.reason))
        ));
        assert!(missing.is_empty(), "dead letters missing (partition, offset): {missing:?}");
        assert!(extra.is_empty(), "dead letters replay does not reject: {extra:?}");
        assert!(wrong.is_empty(), "dead letters with another reason: {wrong:?}");
        // Where each copy sits in the dead-letter topic, and what the outbox counted:
        // read twice, sent again after an error, or rejected again after a handover.
        let copies: Vec<_> = twice
            .iter()
            .take(10)
            .map(|(k, _)| {
                let at: Vec<_> = got.iter().filter(|d| (d.source_partition, d.source_offset) == **k).map(|d| d.at).collect();
                (k, at)
            })
            .collect();
        assert!(
            twice.is_empty(),
            "dead letters written more than once: {} e.g. {:?}; (source, [(dlq partition, offset)]): {copies:?}; \
             dead-letter errors by kind: {:?}",
            twice.len(),
            &twice[..twice.len().min(10)],
            {
                let text = scrape(addr).await;
                ["retryable", "too_large", "permanent"]
                    .map(|k| (k, series_value(&text, "livefunnel_dead_letter_errors_total", &[("kind", k)])))
            }
        );
        assert_eq!(
            by_reason(&mut got.iter().map(|g| &g.reason)),
            by_reason(&mut want_dead.values()),
            "dead letters by reason"
        );

        let text = scrape(addr).await;
        steps.note(&format!(
            "consumed {} accepted {} duplicate {} checkpoints ok {} failed {}",
            series_sum(&text, "livefunnel_events_consumed_total"),
            series_sum(&text, "livefunnel_events_accepted_total"),
            series_sum(&text, "livefunnel_events_duplicate_total"),
            series_value(&text, "livefunnel_checkpoints_total", &[("result", "ok")]).unwrap_or(0.0),
            series_value(&text, "livefunnel_checkpoints_total", &[("result", "failed")]).unwrap_or(0.0),
        ));
        shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the pipeline did not stop within 60 s")
            .unwrap();
        r.expect("the pipeline ends without an error");
        // The stop commits every partition's end, whatever commits failed before.
        let b = brokers.clone();
        let committed =
            tokio::task::spawn_blocking(move || committed_offsets(&b, GROUP, PARTITIONS)).await.unwrap();
        let committed: Vec<Option<i64>> = committed.into_iter().map(|o| o.to_raw()).collect();
        let ends: Vec<Option<i64>> = per_partition.iter().map(|&e| Some(e)).collect();
        assert_eq!(committed, ends, "committed offsets after the stop");
    });
}
