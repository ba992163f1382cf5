//! The Kafka checkpoint store against librdkafka's mock cluster: what one instance
//! saves another loads, chunked above the message limit; an interrupted save leaves the
//! previous checkpoint; epochs only grow; groups do not see each other's state.

use std::time::Duration;

use livefunnel_kafka::rdkafka::config::ClientConfig;
use livefunnel_kafka::rdkafka::mocking::MockCluster;
use livefunnel_kafka::rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use livefunnel_kafka::{KafkaCheckpointStore, KafkaStoreSettings};
use livefunnel_state::{epoch, Checkpoint, CheckpointStore};

const STORE: &str = "livefunnel.checkpoints";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(STORE, 3, 1).expect("store topic");
    mock
}

fn store(brokers: &str, group: &str, chunk_bytes: usize) -> KafkaCheckpointStore {
    store_with(&[("bootstrap.servers", brokers)], group, chunk_bytes)
}

/// The store opened with these `[kafka]` client properties.
fn store_with(user: &[(&str, &str)], group: &str, chunk_bytes: usize) -> KafkaCheckpointStore {
    let props = user.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    KafkaCheckpointStore::open(
        &props,
        KafkaStoreSettings {
            topic: STORE.into(),
            group: group.into(),
            chunk_bytes,
            create_partitions: 3,
            create_replication: -1,
            timeout: Duration::from_secs(10),
        },
    )
    .expect("opening the store")
}

fn ck(partition: i32, next_offset: i64, engine_len: usize) -> Checkpoint {
    Checkpoint {
        topic: "room-events".into(),
        partition,
        next_offset,
        epoch: 2,
        taken_at_ms: 1_700_000_000_000,
        engine: (0..engine_len).map(|i| (i * 31 + next_offset as usize) as u8).collect(),
        extra: vec![7; 10],
    }
}

#[test]
fn a_checkpoint_saved_by_one_instance_is_loaded_by_another_even_when_chunked() {
    let mock = cluster();
    let a = store(&mock.bootstrap_servers(), "g", 1_000);
    let b = store(&mock.bootstrap_servers(), "g", 1_000);
    assert_eq!(b.load("room-events", 0).unwrap(), None);

    let big = ck(0, 100, 25_000); // 26 chunks
    a.save(&big).unwrap();
    assert_eq!(b.load("room-events", 0).unwrap(), Some(big.clone()));

    // Newer saves win, from whichever instance; other partitions are independent.
    let newer = ck(0, 250, 3_000);
    b.save(&newer).unwrap();
    a.save(&ck(1, 9, 10)).unwrap();
    assert_eq!(a.load("room-events", 0).unwrap(), Some(newer));
    assert_eq!(b.load("room-events", 1).unwrap(), Some(ck(1, 9, 10)));
    assert_eq!(b.load("room-events", 2).unwrap(), None);
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let a = store(&brokers, "g", 100);
    let old = ck(0, 10, 500);
    a.save(&old).unwrap();

    // A save that died after some chunks of a new generation, before its manifest.
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers);
    let raw: ThreadedProducer<DefaultProducerContext> = pc.create().unwrap();
    let key = "g/room-events/0";
    let sp = store_partition("g", 0);
    for i in 0..3 {
        let k = format!("{key}#chunk/999/{i}");
        raw.send(BaseRecord::to(STORE).key(&k).payload(&[0u8; 100][..]).partition(sp)).unwrap();
    }
    raw.flush(Duration::from_secs(10)).unwrap();

    let b = store(&brokers, "g", 100);
    assert_eq!(b.load("room-events", 0).unwrap(), Some(old));
}

#[test]
fn a_manifest_whose_chunks_are_gone_is_an_error_naming_the_fix() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let a = store(&brokers, "g", 100);
    a.save(&ck(0, 10, 500)).unwrap();
    let b = store(&brokers, "g", 100);
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers);
    let raw: ThreadedProducer<DefaultProducerContext> = pc.create().unwrap();
    let key = "g/room-events/0";
    let sp = store_partition("g", 0);
    // The manifest names the generation; overwrite chunk 0 of it with garbage.
    let manifest = read_manifest_generation(&brokers, sp, &format!("{key}#manifest"));
    let k = format!("{key}#chunk/{manifest}/0");
    raw.send(BaseRecord::to(STORE).key(&k).payload(&[1u8; 100][..]).partition(sp)).unwrap();
    raw.flush(Duration::from_secs(10)).unwrap();
    let err = b.load("room-events", 0).unwrap_err();
    let msg = err.to_string();
    assert!(!err.is_retryable(), "{msg}");
    assert!(msg.contains("g/room-events/0") && msg.contains("cleanup.policy=compact"), "{msg}");
}

/// The group's own settings are the input consumer's: with a `max.poll.interval.ms`
/// below librdkafka's default `session.timeout.ms` (45 s), a reader that took them
/// could not be made at all.
#[test]
fn the_group_members_settings_do_not_reach_the_readers() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let s = store_with(
        &[
            ("bootstrap.servers", &brokers),
            // The input consumer's session.timeout.ms is livefunnel's default (10 s),
            // not a user property.
            ("max.poll.interval.ms", "15000"),
            ("heartbeat.interval.ms", "1000"),
            ("group.instance.id", "instance-1"),
            ("partition.assignment.strategy", "cooperative-sticky"),
        ],
        "g",
        1_000,
    );
    s.save(&ck(1, 42, 3_000)).unwrap();
    assert_eq!(s.load("room-events", 1).unwrap(), Some(ck(1, 42, 3_000)));
}

/// 2026-12-04T16:00:00Z, and the epoch floor then.
const NOW: i64 = 1_796_400_000_000;
fn floor() -> u32 {
    epoch::floor_at(NOW).unwrap()
}

#[test]
fn epochs_only_grow_across_instances_and_groups_are_separate() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let f = floor();
    let a = store(&brokers, "g", 1_000);
    assert_eq!(a.claim_epoch_at("room-events", 0, 0, NOW).unwrap(), f);
    assert_eq!(a.claim_epoch_at("room-events", 0, 0, NOW).unwrap(), f + 1);
    let b = store(&brokers, "g", 1_000);
    assert_eq!(b.claim_epoch_at("room-events", 0, 0, NOW).unwrap(), f + 2);
    // A checkpoint taken under a higher epoch lifts the next claim above it.
    assert_eq!(b.claim_epoch_at("room-events", 0, f + 10, NOW).unwrap(), f + 11);
    // After a load, the claim continues from what the store holds.
    let c = store(&brokers, "g", 1_000);
    assert_eq!(c.load("room-events", 0).unwrap(), None);
    assert_eq!(c.claim_epoch_at("room-events", 0, 0, NOW).unwrap(), f + 12);
    // An hour later the floor is above every claim of before.
    let d = store(&brokers, "g", 1_000);
    assert_eq!(d.claim_epoch_at("room-events", 0, 0, NOW + 3_600_000).unwrap(), f + 60);

    let other = store(&brokers, "other/group#1", 1_000);
    assert_eq!(other.claim_epoch_at("room-events", 0, 0, NOW).unwrap(), f);
    a.save(&ck(0, 5, 10)).unwrap();
    assert_eq!(other.load("room-events", 0).unwrap(), None);
}

/// The claim time travels with the epoch (in the record saved beside each manifest
/// too): an instance whose clock is behind it refuses the partition.
#[test]
fn a_clock_behind_the_last_claim_refuses_the_partition_on_any_instance() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let a = store(&brokers, "g", 1_000);
    assert_eq!(a.claim_epoch_at("room-events", 2, 0, NOW).unwrap(), floor());
    a.save(&ck(2, 7, 100)).unwrap();
    let b = store(&brokers, "g", 1_000);
    // A minute behind is another host's clock; two hours is a clock gone wrong.
    assert!(b.claim_epoch_at("room-events", 2, 0, NOW - 60_000).is_ok());
    // The latest claim is the one compared with (what compaction keeps).
    let c = store(&brokers, "g", 1_000);
    let err = c.claim_epoch_at("room-events", 2, 0, NOW - 2 * 3_600_000).unwrap_err();
    assert!(!err.is_retryable());
    let msg = err.to_string();
    for part in ["g/room-events/2", "2026-12-04T14:00:00.000Z", "2026-12-04T15:59:00.000Z", "runbook"] {
        assert!(msg.contains(part), "{part} missing: {msg}");
    }
    // The runbook's way out when the clock is right now: the epoch again, without its time.
    let epoch = floor() + 1;
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers);
    let raw: ThreadedProducer<DefaultProducerContext> = pc.create().unwrap();
    let value = epoch.to_string();
    let rec = BaseRecord::to(STORE).key("g/room-events/2#epoch").payload(value.as_bytes());
    raw.send(rec.partition(store_partition("g", 2))).unwrap();
    raw.flush(Duration::from_secs(10)).unwrap();
    let d = store(&brokers, "g", 1_000);
    assert_eq!(d.claim_epoch_at("room-events", 2, 0, NOW - 2 * 3_600_000).unwrap(), epoch + 1);
}

/// An epoch record of an older version has no claim time: it still counts as an epoch.
#[test]
fn an_epoch_record_without_a_claim_time_still_counts() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers);
    let raw: ThreadedProducer<DefaultProducerContext> = pc.create().unwrap();
    let value = (floor() + 40).to_string();
    let key = "g/room-events/1#epoch";
    raw.send(BaseRecord::to(STORE).key(key).payload(value.as_bytes()).partition(store_partition("g", 1)))
        .unwrap();
    raw.flush(Duration::from_secs(10)).unwrap();
    let a = store(&brokers, "g", 1_000);
    assert_eq!(a.claim_epoch_at("room-events", 1, 0, NOW - 3_600_000).unwrap(), floor() + 41);
}

#[test]
fn a_missing_topic_that_cannot_be_created_is_an_error_naming_the_fix() {
    // The mock cluster does not implement CreateTopics.
    let mock = MockCluster::new(1).expect("mock cluster");
    let props = [("bootstrap.servers".to_string(), mock.bootstrap_servers())].into();
    let err = KafkaCheckpointStore::open(
        &props,
        KafkaStoreSettings {
            topic: "not.there".into(),
            group: "g".into(),
            chunk_bytes: 1_000,
            create_partitions: 3,
            create_replication: -1,
            timeout: Duration::from_secs(5),
        },
    )
    .err()
    .expect("a missing topic is an error here");
    let msg = err.to_string();
    assert!(msg.contains("not.there") && msg.contains("cleanup.policy=compact"), "{msg}");
}

/// Where the store keeps `group`'s records of room-events/`partition` (3 partitions).
fn store_partition(group: &str, partition: u64) -> i32 {
    ((crc32fast::hash(format!("{group}/room-events").as_bytes()) as u64 + partition) % 3) as i32
}

fn read_manifest_generation(brokers: &str, sp: i32, key: &str) -> u64 {
    use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use livefunnel_kafka::rdkafka::message::Message;
    use livefunnel_kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set("group.id", "inspect");
    let c: BaseConsumer = cc.create().unwrap();
    let (_, high) = c.fetch_watermarks(STORE, sp, Duration::from_secs(5)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(STORE, sp, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut generation = None;
    loop {
        let m = c.poll(Duration::from_secs(5)).expect("a record").unwrap();
        if m.key() == Some(key.as_bytes()) {
            let v = m.payload().unwrap();
            generation = Some(u64::from_le_bytes(v[8..16].try_into().unwrap()));
        }
        if m.offset() + 1 >= high {
            return generation.expect("a manifest");
        }
    }
}

/// The least epoch a claim may return now.
fn minutes_now() -> u32 {
    epoch::floor_at(epoch::now_ms()).unwrap()
}

/// An emptied (or new) store topic: the claim is still at least the wall-clock floor,
/// so the rows of the new owner outrank those written before the store was lost.
#[test]
fn an_emptied_store_claims_at_least_the_wall_clock_floor() {
    let floor = minutes_now();
    let mock = cluster();
    let a = store(&mock.bootstrap_servers(), "g", 1_000);
    let first = a.claim_epoch("room-events", 0, 0).unwrap();
    assert!(first >= floor, "{first} (floor {floor})");
    assert!(a.claim_epoch("room-events", 0, 0).unwrap() > first);
    // Another cluster: the store topic is empty.
    let other = cluster();
    let b = store(&other.bootstrap_servers(), "g", 1_000);
    assert!(b.claim_epoch("room-events", 0, 0).unwrap() >= floor);
}

#[test]
fn an_epoch_beyond_24_bits_is_an_error_never_a_wrap() {
    let mock = cluster();
    let a = store(&mock.bootstrap_servers(), "g", 1_000);
    let err = a.claim_epoch("room-events", 0, (1 << 24) - 1).unwrap_err();
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("g/room-events/0") && msg.contains("16777216"), "{msg}");
}
