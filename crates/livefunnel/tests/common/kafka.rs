//! The tests' side of Kafka: producing the inputs, where they land, a group's committed
//! offsets and what the dead-letter topic holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::message::{Headers, Message};
use livefunnel_kafka::rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use livefunnel_kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use livefunnel_kafka::rdkafka::ClientConfig;

use super::{Input, TOPIC};

/// Where `run` dead-letters by default: the input topic's name with `.dlq`.
pub const DLQ_TOPIC: &str = "room-events.dlq";
/// `message.max.bytes` of the test producer and of `run`'s dead-letter producer: room
/// for the 10 MiB poison message (librdkafka's default is 1,000,000).
pub const MAX_MESSAGE_BYTES: &str = "16777216";

/// Queues `i` in the producer at once, waiting only while its queue is full; the
/// returned future resolves on delivery. (`send` would queue only once awaited, so
/// awaiting sends one by one waits for each delivery before queueing the next.)
pub async fn enqueue(producer: &FutureProducer, i: &Input) -> DeliveryFuture {
    let mut rec = FutureRecord::to(TOPIC).partition(i.partition).key(&i.key[..]).payload(&i.payload[..]);
    loop {
        match producer.send_result(rec) {
            Ok(d) => return d,
            Err((_, r)) => {
                rec = r;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// An idempotent producer that can send the 10 MiB poison message. Offsets are
/// computed from the input order, so a retried request must not reorder or repeat.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.max.bytes", MAX_MESSAGE_BYTES)
        .set("enable.idempotence", "true")
        .create()
        .expect("creating the test producer")
}

/// Produces `inputs` in order with `producer` and waits for every delivery.
pub async fn produce_with(producer: &FutureProducer, inputs: &[Input]) {
    let mut pending = Vec::new();
    for i in inputs {
        pending.push(enqueue(producer, i).await);
        if pending.len() >= 1000 {
            for f in pending.drain(..) {
                f.await.expect("delivery").expect("producing a test message");
            }
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("producing a test message");
    }
}

/// Produces `inputs` in order with a plain producer.
pub async fn produce(brokers: &str, inputs: &[Input]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating the test producer");
    produce_with(&producer, inputs).await;
}

/// Where each input lands when produced in order to a fresh topic: (partition, offset).
pub fn fresh_offsets(inputs: &[Input]) -> Vec<(i32, i64)> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    inputs
        .iter()
        .map(|i| {
            let n = next.entry(i.partition).or_default();
            *n += 1;
            (i.partition, *n - 1)
        })
        .collect()
}

/// The committed offset of `group` on every partition of the input topic.
pub fn committed_offsets(brokers: &str, group: &str, partitions: i32) -> Vec<Offset> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("creating the offsets reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(TOPIC, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).expect("reading committed offsets");
    got.elements().iter().map(|e| e.offset()).collect()
}

/// One message of the dead-letter topic: its headers (empty, or -1 for a number, when
/// one is missing) and a hash of its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenDeadLetter {
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub payload_hash: u64,
    pub payload_len: usize,
    /// `livefunnel.original.size` and `livefunnel.original.xxh3`: empty unless the
    /// dead letter is truncated.
    pub original_size: String,
    pub original_xxh3: String,
    /// Where it sits in the dead-letter topic: two copies at one place were read
    /// twice; at two places, written twice.
    pub at: (i32, i64),
}

fn seen_dead_letter(m: &impl Message) -> SeenDeadLetter {
    let h = m.headers().expect("dead letters carry headers");
    let get = |name: &str| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    SeenDeadLetter {
        reason: get("livefunnel.reason"),
        source_topic: get("livefunnel.source.topic"),
        source_partition: get("livefunnel.source.partition").parse().unwrap_or(-1),
        source_offset: get("livefunnel.source.offset").parse().unwrap_or(-1),
        payload_hash: xxhash_rust::xxh3::xxh3_64(m.payload().unwrap_or_default()),
        payload_len: m.payload().map_or(0, <[u8]>::len),
        original_size: get("livefunnel.original.size"),
        original_xxh3: get("livefunnel.original.xxh3"),
        at: (m.partition(), m.offset()),
    }
}

/// The dead-letter topic from its start: read until at least `expect` messages came
/// and then `quiet` passed without a new one (so extra ones, duplicates, show too), or
/// until `limit`. Blocking.
pub fn read_dead_letters(
    brokers: &str,
    expect: usize,
    quiet: Duration,
    limit: Duration,
) -> Vec<SeenDeadLetter> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("dlq-check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("creating the dead-letter reader");
    c.subscribe(&[DLQ_TOPIC]).expect("subscribing to the dead-letter topic");
    let mut out = Vec::new();
    let (start, mut last) = (Instant::now(), Instant::now());
    while start.elapsed() < limit && (out.len() < expect || last.elapsed() < quiet) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(seen_dead_letter(&m));
            last = Instant::now();
        }
    }
    out
}
