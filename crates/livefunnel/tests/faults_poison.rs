//! Poison input: the sample stream with 5 % bad messages of every rejection reason of
//! contract §1.4 interleaved on every partition, plus one 10 MiB message. Every bad
//! message is counted under its reason and dead-lettered with it, and no partition
//! stops: each is committed to its end and ClickHouse holds what replay computes.
//!
//! librdkafka's mock broker keeps at most 5 MB (and 100,000 messages) per partition:
//! each append first deletes the oldest message sets beyond that
//! (rdkafka_mock.c, `rd_kafka_mock_msgset_new`), and when that empties the log it
//! moves the log start past the message set being appended. So a 10 MiB message is
//! readable only as the first message of its partition, and the next append to that
//! partition loses both it and itself. The 10 MiB message therefore goes alone to
//! partition [`HUGE_PARTITION`] of the input topic, produced in the middle of the
//! stream, and its key sends its dead letter to a dead-letter partition no other dead
//! letter uses.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use faults::*;
use livefunnel_core::Reason;
use livefunnel_testkit::ClickHouseServer;
use serde_json::Value;

/// The partitions of the sample and its poison.
const PARTITIONS: i32 = 2;
/// The input topic's partition holding only the 10 MiB message (see the top).
const HUGE_PARTITION: i32 = PARTITIONS;
/// The dead-letter topic's partitions, created by the test: enough that one of them
/// gets no dead letter but the 10 MiB one.
const DLQ_PARTITIONS: i32 = 16;
/// Bad messages per partition and reason: 25 × 7 × 2 = 350 on ~6,700 sample lines,
/// about 5 % of the stream.
const PER_PARTITION_AND_REASON: usize = 25;
const HUGE_BYTES: usize = 10 << 20;
/// The reasons injected: `room_limit` needs a room limit this stream reaches.
const POISON_REASONS: [Reason; 7] = [
    Reason::Oversize,
    Reason::MalformedJson,
    Reason::MissingField,
    Reason::UnknownEventType,
    Reason::BadField,
    Reason::TsOutOfRange,
    Reason::TooLate,
];

/// A bad message of `reason` (the `n`-th overall, variant `v` of that reason) made
/// next to an accepted event of room `room`, session `session`, at `ts`.
fn poison(reason: Reason, n: usize, v: usize, room: &str, session: &str, ts: i64) -> Vec<u8> {
    let id = format!("poison-{n}");
    let head = format!(r#""event_id":"{id}","room_id":"{room}","session_id":"{session}""#);
    let like = |ts: i64| format!(r#"{{{head},"type":"like","ts":{ts},"user_id":"u-{n}"}}"#);
    let now = livefunnel_pipeline::now_ms();
    let text = match reason {
        Reason::Oversize => match v % 2 {
            0 => {
                format!(r#"{{{head},"type":"like","ts":{ts},"user_id":"u","pad":"{}"}}"#, "x".repeat(70_000))
            }
            _ => "#".repeat(65_537),
        },
        Reason::MalformedJson => {
            return match v % 7 {
                0 => format!(r#"{{{head},"type":"like""#).into_bytes(),
                1 => [&b"\xff\xfe{"[..], like(ts).as_bytes()].concat(),
                2 => b"[1,2,3]".to_vec(),
                3 => format!(r#"{{{head},"event_id":"again","type":"like","ts":{ts},"user_id":"u"}}"#)
                    .into_bytes(),
                4 => format!(r#"{{{head},"type":"like","ts":1e999,"user_id":"u"}}"#).into_bytes(),
                5 => br#""just a string""#.to_vec(),
                _ => b"null".to_vec(),
            }
        }
        Reason::MissingField => match v % 5 {
            0 => format!(
                r#"{{"room_id":"{room}","session_id":"{session}","type":"like","ts":{ts},"user_id":"u"}}"#
            ),
            1 => format!(r#"{{{head},"type":"like","user_id":"u"}}"#),
            2 => format!(r#"{{{head},"type":"like","ts":{ts}}}"#),
            3 => format!(
                r#"{{{head},"type":"order_paid","ts":{ts},"user_id":"u","order_id":"o","product_id":"p"}}"#
            ),
            _ => format!(
                r#"{{"event_id":"{id}","room_id":null,"session_id":"{session}","type":"like","ts":{ts},"user_id":"u"}}"#
            ),
        },
        Reason::UnknownEventType => match v % 3 {
            0 => format!(r#"{{{head},"type":"purchase","ts":{ts},"user_id":"u"}}"#),
            1 => format!(r#"{{{head},"type":"Like","ts":{ts},"user_id":"u"}}"#),
            _ => format!(r#"{{{head},"type":"session-start","ts":{ts}}}"#),
        },
        Reason::BadField => match v % 6 {
            0 => format!(r#"{{{head},"type":"like","ts":"{ts}","user_id":"u"}}"#),
            1 => format!(
                r#"{{{head},"type":"order_paid","ts":{ts},"user_id":"u","order_id":"o","product_id":"p","amount_cents":-5}}"#
            ),
            2 => format!(
                r#"{{{head},"type":"order_paid","ts":{ts},"user_id":"u","order_id":"o","product_id":"p","amount_cents":5,"quantity":0}}"#
            ),
            3 => format!(r#"{{{head},"type":"enter","ts":{ts},"user_id":"u","source":"nowhere"}}"#),
            4 => format!(r#"{{{head},"type":"like","ts":{ts},"user_id":""}}"#),
            _ => format!(r#"{{{head},"type":"like","ts":{ts}.5,"user_id":"u"}}"#),
        },
        // Both in live mode (wall clock + 1 h) and in replay (partition max + 1 h).
        Reason::TsOutOfRange => like(now + 10 * 86_400_000),
        // The room just accepted an event at `ts`: a day before is far below its horizon.
        Reason::TooLate => like(ts - 86_400_000),
        Reason::RoomLimit => unreachable!("not among POISON_REASONS"),
    };
    text.into_bytes()
}

/// The sample with the poison interleaved after accepted events on every partition,
/// what each poison message was made to be rejected for (by input index), and the
/// sample's own rejections by reason.
fn poisoned_input() -> (Vec<Input>, BTreeMap<usize, Reason>, [u64; Reason::ALL.len()]) {
    let base = sample_input(PARTITIONS);
    let plain = Expect::new(base.clone(), PARTITIONS);
    let rejected: std::collections::BTreeSet<usize> = plain.dead.values().map(|(n, _)| *n).collect();
    // Where poison goes: after an accepted, non-clock event, past the first few.
    let mut after: BTreeMap<usize, Vec<(Reason, usize)>> = BTreeMap::new();
    let mut n = 0;
    for p in 0..PARTITIONS {
        let spots: Vec<usize> = (0..base.len())
            .filter(|&i| base[i].partition == p && i >= 30 && !rejected.contains(&i))
            .filter(|&i| !base[i].key.starts_with(b"clock-"))
            .collect();
        let count = PER_PARTITION_AND_REASON * POISON_REASONS.len();
        assert!(spots.len() > count * 2, "partition {p} has {} spots", spots.len());
        for m in 0..count {
            let reason = POISON_REASONS[m % POISON_REASONS.len()];
            after.entry(spots[m * spots.len() / count]).or_default().push((reason, m / POISON_REASONS.len()));
            n += 1;
        }
    }
    let huge_at = *after.keys().nth(after.len() / 2).unwrap();
    let mut inputs = Vec::new();
    let mut intended = BTreeMap::new();
    let mut k = 0;
    for (i, mut input) in base.into_iter().enumerate() {
        // An empty key is partitioned at random by the dead-letter producer; the
        // 10 MiB message's dead-letter partition must stay its own.
        if input.key.is_empty() {
            input.key = b"no-room".to_vec();
        }
        inputs.push(input.clone());
        if !after.contains_key(&i) && i != huge_at {
            continue;
        }
        let v: Value = serde_json::from_slice(&input.payload).expect("accepted events are json");
        let (room, session, ts) =
            (v["room_id"].as_str().unwrap(), v["session_id"].as_str().unwrap(), v["ts"].as_i64().unwrap());
        for &(reason, variant) in after.get(&i).into_iter().flatten() {
            let payload = poison(reason, k, variant, room, session, ts);
            intended.insert(inputs.len(), reason);
            inputs.push(Input { partition: input.partition, key: input.key.clone(), payload });
            k += 1;
        }
        if i == huge_at {
            let payload = format!(
                r#"{{"event_id":"poison-huge","type":"like","ts":{ts},"room_id":"{room}","session_id":"{session}","user_id":"u","pad":"{}"}}"#,
                "x".repeat(HUGE_BYTES)
            );
            intended.insert(inputs.len(), Reason::Oversize);
            inputs.push(Input { partition: HUGE_PARTITION, key: Vec::new(), payload: payload.into_bytes() });
        }
    }
    assert_eq!(k, n);
    // The dead letter keeps its message's key; librdkafka's default partitioner puts a
    // keyed message on crc32(key) % partitions.
    let used: std::collections::BTreeSet<u32> =
        inputs.iter().filter(|i| i.partition != HUGE_PARTITION).map(|i| dlq_partition(&i.key)).collect();
    let huge_key = (0..1000)
        .map(|j| format!("poison-huge-{j}").into_bytes())
        .find(|k| !used.contains(&dlq_partition(k)))
        .expect("a dead-letter partition for the 10 MiB message alone");
    let huge = inputs.iter_mut().find(|i| i.partition == HUGE_PARTITION).unwrap();
    huge.key = huge_key;
    (inputs, intended, plain.rejected)
}

/// The dead-letter partition of a message with `key` (librdkafka's `consistent_random`
/// partitioner: CRC-32 of the key).
fn dlq_partition(key: &[u8]) -> u32 {
    assert!(!key.is_empty(), "an empty key is partitioned at random");
    let mut crc = !0u32;
    for &b in key {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc % DLQ_PARTITIONS as u32
}

#[test]
fn faultsuite_poison_of_every_reason_and_a_10_mib_message_are_routed_and_stop_nothing() {
    init_logs();
    let server = ClickHouseServer::spawn();
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, PARTITIONS + 1, 1).expect("creating the input topic");
    mock.create_topic(DLQ_TOPIC, DLQ_PARTITIONS, 1).expect("creating the dead-letter topic");
    let brokers = mock.bootstrap_servers();
    let (inputs, intended, sample_rejected) = poisoned_input();
    let e = Expect::new(inputs, PARTITIONS + 1);

    // The poison is rejected for what it was made for (checks this test's generator).
    let by_index: BTreeMap<usize, &str> = e.dead.values().map(|(n, r)| (*n, r.as_str())).collect();
    for (n, reason) in &intended {
        assert_eq!(by_index.get(n).copied(), Some(reason.as_str()), "poison message {n}");
    }
    let share = intended.len() as f64 / e.lines as f64;
    assert!((0.045..0.06).contains(&share), "{share}");
    let mut injected: BTreeMap<&str, u64> = BTreeMap::new();
    for (n, reason) in &intended {
        *injected.entry(reason.as_str()).or_default() += 1;
        assert!(e.inputs[*n].payload.len() <= HUGE_BYTES + 200);
    }
    for p in 0..PARTITIONS {
        let reasons: std::collections::BTreeSet<&str> =
            intended.iter().filter(|(n, _)| e.inputs[**n].partition == p).map(|(_, r)| r.as_str()).collect();
        assert_eq!(reasons.len(), POISON_REASONS.len(), "partition {p} gets every reason");
    }
    eprintln!(
        "poison: {} of {} messages ({:.1} %), injected by reason {injected:?}; replay rejects {:?}",
        intended.len(),
        e.lines,
        share * 100.0,
        e.rejected
    );

    let dir = tempfile::tempdir().unwrap();
    let ch = ch_config(&server, "faults_poison");
    let group = "faults-poison";
    // The dead-letter producer must be able to send the 10 MiB message back out.
    let kafka = [("message.max.bytes", MAX_MESSAGE_BYTES)];
    let addr = free_local_addr();
    let config = write_run_config(
        dir.path(),
        &RunConfig { idle_timeout: Some("10m"), kafka: &kafka, ..RunConfig::new(&brokers, &ch, group, addr) },
    );
    let huge =
        *intended.keys().find(|n| e.inputs[**n].payload.len() > HUGE_BYTES).expect("the 10 MiB message");
    assert_eq!(e.ends[HUGE_PARTITION as usize], 1, "the 10 MiB message is alone on its partition");
    let rt = runtime();
    rt.block_on(async {
        let p = producer(&brokers);
        produce_with(&p, &e.inputs[..huge]).await;
        let mut run = Run::start(&config, addr, &dir.path().join("run.log"));
        // The 10 MiB message arrives while the pipeline is busy with the stream.
        wait_for(&run, "consuming started", Duration::from_secs(60), Duration::from_millis(100), || async {
            let got = series_sum(&scrape(addr).await, "livefunnel_events_consumed_total");
            (got == 0.0).then(|| "nothing consumed".to_owned())
        })
        .await;
        produce_with(&p, &e.inputs[huge..]).await;
        common_check(&e, &run, &brokers, &ch, group).await;

        // Every reason's count on /metrics is exactly the injected poison plus the
        // sample's own bad lines: the poison changed no other message's verdict.
        let text = scrape(addr).await;
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let want = sample_rejected[i] + injected.get(reason.as_str()).copied().unwrap_or(0);
            for name in ["livefunnel_events_rejected_total", "livefunnel_dead_letters_total"] {
                let got = series_value(&text, name, &[("reason", reason.as_str())]);
                assert_eq!(got, Some(want as f64), "{name} {reason:?}");
            }
        }
        let (code, body) = http_get(addr, "/readyz").await.unwrap();
        assert_eq!(code, 200, "{body}");
        let st = run.terminate();
        assert!(st.success(), "exit {st:?}\n{}", run.log_tail(40));
    });
    drop(server);
}
