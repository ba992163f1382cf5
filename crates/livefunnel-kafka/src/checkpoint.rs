//! A checkpoint store on a compacted Kafka topic, shared by every instance of a
//! consumer group: the state one instance saves for a partition is what the next
//! owner of that partition restores, on any machine.
//!
//! Records of one input partition (keys start with `<group>/<topic>/<partition>`):
//! - `…#chunk/<generation>/<i>`: slices of the framed checkpoint
//!   ([`livefunnel_state::encode`]), each below the broker's message limit;
//! - `…#manifest`: which generation is current, its chunk count, length and CRC32;
//! - `…#epoch`: the last version epoch claimed, in decimal, with the wall clock of the
//!   claim in header `livefunnel.claimed_at_ms` (older versions wrote no header).
//!
//! A save writes every chunk of a new generation, then the manifest, then tombstones
//! the previous generation's chunks; a crash at any point leaves the old manifest and
//! its intact chunks, so a load sees the old checkpoint or the new one, never a mix.
//! All records of one input partition go to the same partition of the store topic
//! (consecutive input partitions to consecutive store partitions, from a hash of group
//! and topic), so a load reads one partition up to its high watermark and keeps the
//! last value of each key, which is what compaction keeps too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use livefunnel_state::epoch::{self, EpochRecord};
use livefunnel_state::{Checkpoint, CheckpointStore, StateError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

const MANIFEST_MAGIC: &[u8; 8] = b"LFCKMAN1";
const MANIFEST_LEN: usize = 8 + 8 + 4 + 8 + 4;
/// The header of an epoch record holding the wall clock of its claim, epoch ms.
const CLAIMED_AT: &str = "livefunnel.claimed_at_ms";

/// Settings of the Kafka checkpoint store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaStoreSettings {
    /// The compacted topic, e.g. `livefunnel.checkpoints`.
    pub topic: String,
    /// The consumer group whose partitions' state is kept (part of every key).
    pub group: String,
    /// Largest chunk value, in bytes; keep it below the broker's `message.max.bytes`.
    pub chunk_bytes: usize,
    /// Partitions of the topic when livefunnel creates it.
    pub create_partitions: i32,
    /// Replication factor when livefunnel creates it; -1: the broker's default.
    pub create_replication: i32,
    /// How long a load, save or claim may take before it fails (and is retried later).
    pub timeout: Duration,
}

/// The store. Cheap to share behind an `Arc`; methods block.
pub struct KafkaCheckpointStore {
    s: KafkaStoreSettings,
    props: ClientConfig,
    producer: FutureProducer,
    partitions: i32,
    /// Per input partition: the latest generation written or read, and the latest
    /// epoch claimed, so a save can tombstone the old chunks and a claim after a load
    /// needs no second read.
    known: Mutex<HashMap<(String, i32), Known>>,
    generation: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Known {
    manifest: Option<Manifest>,
    epoch: EpochRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Manifest {
    generation: u64,
    chunks: u32,
    len: u64,
    crc: u32,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_LEN);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.chunks.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Manifest> {
        if b.len() != MANIFEST_LEN || &b[..8] != MANIFEST_MAGIC {
            return None;
        }
        Some(Manifest {
            generation: u64::from_le_bytes(b[8..16].try_into().ok()?),
            chunks: u32::from_le_bytes(b[16..20].try_into().ok()?),
            len: u64::from_le_bytes(b[20..28].try_into().ok()?),
            crc: u32::from_le_bytes(b[28..32].try_into().ok()?),
        })
    }
}

/// The last value of each of one input partition's keys, read up to the high watermark.
#[derive(Default)]
struct Scan {
    manifest: Option<Manifest>,
    /// The largest epoch of the records read, and the claim time of the last one.
    epoch: EpochRecord,
    chunks: HashMap<String, Vec<u8>>,
}

impl KafkaCheckpointStore {
    /// Connects with `user`, the `[kafka]` client properties (brokers and security
    /// included), and makes sure the topic exists, creating it compacted when it does not.
    pub fn open(
        user: &std::collections::BTreeMap<String, String>,
        s: KafkaStoreSettings,
    ) -> Result<KafkaCheckpointStore, StateError> {
        debug_assert!(s.chunk_bytes > 0);
        // The readers are plain assigned consumers: none of the group's own settings
        // (librdkafka checks them against its defaults: a user's max.poll.interval.ms
        // below the default session.timeout.ms would refuse to make a reader).
        let mut props = ClientConfig::new();
        for (k, v) in user {
            if !crate::is_group_membership(k) {
                props.set(k, v);
            }
        }
        let mut pc = crate::producer_config(user);
        pc.set("enable.idempotence", "true");
        pc.set("acks", "all");
        pc.set("linger.ms", "0");
        pc.set("message.timeout.ms", s.timeout.as_millis().max(1).to_string());
        let producer: FutureProducer =
            pc.create().map_err(|e| store_err(&s.topic, "creating the producer", e))?;
        let partitions = ensure_topic(&props, &producer, &s)?;
        info!(topic = %s.topic, partitions, group = %s.group, "kafka checkpoint store");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 40);
        Ok(KafkaCheckpointStore {
            s,
            props,
            producer,
            partitions,
            known: Mutex::default(),
            generation: AtomicU64::new(seed),
        })
    }

    fn prefix(&self, topic: &str, partition: i32) -> String {
        // Topic names cannot hold `/` or `#`; a group id can, so it is escaped.
        let group = self.s.group.replace('%', "%25").replace('/', "%2F").replace('#', "%23");
        format!("{group}/{topic}/{partition}")
    }

    /// Consecutive input partitions go to consecutive store partitions, so each store
    /// partition carries an even share of the checkpoint traffic.
    fn store_partition(&self, topic: &str, partition: i32) -> i32 {
        let base = crc32fast::hash(format!("{}/{topic}", self.s.group).as_bytes()) as u64;
        ((base + partition.max(0) as u64) % self.partitions as u64) as i32
    }

    fn err(&self, topic: &str, partition: i32, detail: String, retryable: bool) -> StateError {
        StateError::Store { location: self.location(topic, partition), detail, retryable }
    }

    /// Reads the store partition of `topic/partition` to its high watermark.
    fn scan(&self, topic: &str, partition: i32) -> Result<Scan, StateError> {
        let prefix = self.prefix(topic, partition);
        let sp = self.store_partition(topic, partition);
        let retry = |d: String| self.err(topic, partition, d, true);
        let mut cc = self.props.clone();
        cc.set("enable.auto.commit", "false");
        cc.set("enable.partition.eof", "false");
        cc.set("group.id", format!("{}.reader", self.s.group));
        let consumer: BaseConsumer = cc.create().map_err(|e| retry(format!("creating a reader: {e}")))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.s.topic, sp, self.s.timeout)
            .map_err(|e| retry(format!("reading the watermarks of partition {sp}: {e}")))?;
        let mut scan = Scan::default();
        if high <= low {
            return Ok(scan);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.s.topic, sp, Offset::Offset(low))
            .map_err(|e| retry(format!("assigning partition {sp}: {e}")))?;
        consumer.assign(&tpl).map_err(|e| retry(format!("assigning partition {sp}: {e}")))?;
        let (manifest_key, epoch_key, chunk_prefix) =
            (format!("{prefix}#manifest"), format!("{prefix}#epoch"), format!("{prefix}#chunk/"));
        let deadline = Instant::now() + self.s.timeout;
        let mut read = 0u64;
        loop {
            if Instant::now() > deadline {
                return Err(retry(format!(
                    "reading partition {sp} timed out at {read} of {} records",
                    high - low
                )));
            }
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                // The last offsets may hold no record for us to see (compacted away).
                let done = consumer
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(&self.s.topic, sp).and_then(|e| e.offset().to_raw()));
                if done.is_some_and(|o| o >= high) {
                    break;
                }
                continue;
            };
            let m = m.map_err(|e| retry(format!("reading partition {sp}: {e}")))?;
            read += 1;
            let at_end = m.offset() + 1 >= high;
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                let value = m.payload();
                if key == manifest_key {
                    scan.manifest = match value {
                        None => None,
                        Some(v) => Some(Manifest::decode(v).ok_or_else(|| {
                            self.err(
                                topic,
                                partition,
                                format!("manifest at offset {} is not one", m.offset()),
                                false,
                            )
                        })?),
                    };
                } else if key == epoch_key {
                    if let Some(e) = value.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok()) {
                        let claimed_at = m
                            .headers()
                            .and_then(|h| h.iter().find(|h| h.key == CLAIMED_AT))
                            .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
                            .unwrap_or(0);
                        // The last record is the latest claim, and what compaction keeps;
                        // the largest epoch stays, in case a record was lost.
                        scan.epoch.epoch = scan.epoch.epoch.max(e);
                        scan.epoch.claimed_at_ms = claimed_at;
                    }
                } else if let Some(rest) = key.strip_prefix(&chunk_prefix) {
                    match value {
                        Some(v) => scan.chunks.insert(rest.to_owned(), v.to_vec()),
                        None => scan.chunks.remove(rest),
                    };
                }
            }
            if at_end {
                break;
            }
        }
        debug!(topic, partition, store_partition = sp, records = read, "checkpoint store read");
        Ok(scan)
    }

    fn send(
        &self,
        key: &str,
        value: Option<&[u8]>,
        sp: i32,
    ) -> Result<rdkafka::producer::DeliveryFuture, String> {
        self.send_with(key, value, sp, None)
    }

    fn send_with(
        &self,
        key: &str,
        value: Option<&[u8]>,
        sp: i32,
        headers: Option<OwnedHeaders>,
    ) -> Result<rdkafka::producer::DeliveryFuture, String> {
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.s.topic).key(key).partition(sp);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.producer.send_result(rec).map_err(|(e, _)| format!("queueing {key}: {e}"))
    }

    /// Queues the partition's epoch record.
    fn send_epoch(
        &self,
        prefix: &str,
        sp: i32,
        e: EpochRecord,
    ) -> Result<rdkafka::producer::DeliveryFuture, String> {
        let at = e.claimed_at_ms.to_string();
        let headers = OwnedHeaders::new().insert(Header { key: CLAIMED_AT, value: Some(at.as_bytes()) });
        self.send_with(&format!("{prefix}#epoch"), Some(e.epoch.to_string().as_bytes()), sp, Some(headers))
    }

    /// Claims the partition's next version epoch at wall clock `now_ms` (see
    /// [`CheckpointStore::claim_epoch`]).
    pub fn claim_epoch_at(
        &self,
        topic: &str,
        partition: i32,
        checkpointed: u32,
        now_ms: i64,
    ) -> Result<u32, StateError> {
        let cached =
            self.known.lock().expect("poisoned").get(&(topic.to_owned(), partition)).map(|k| k.epoch);
        let stored = match cached {
            Some(e) => e,
            None => self.scan(topic, partition)?.epoch,
        };
        let next = epoch::next_epoch(&self.location(topic, partition), stored, checkpointed, now_ms)?;
        let prefix = self.prefix(topic, partition);
        let sp = self.store_partition(topic, partition);
        let fail = |d: String| self.err(topic, partition, d, true);
        let f = self.send_epoch(&prefix, sp, next).map_err(fail)?;
        self.deliver(vec![f]).map_err(fail)?;
        self.known.lock().expect("poisoned").entry((topic.to_owned(), partition)).or_default().epoch = next;
        Ok(next.epoch)
    }

    fn deliver(&self, futs: Vec<rdkafka::producer::DeliveryFuture>) -> Result<(), String> {
        for f in futs {
            match futures::executor::block_on(f) {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(format!("writing: {e}")),
                Err(_) => return Err("writing: the producer was dropped".into()),
            }
        }
        Ok(())
    }
}

impl CheckpointStore for KafkaCheckpointStore {
    fn load(&self, topic: &str, partition: i32) -> Result<Option<Checkpoint>, StateError> {
        let scan = self.scan(topic, partition)?;
        let known = Known { manifest: scan.manifest, epoch: scan.epoch };
        self.known.lock().expect("poisoned").insert((topic.to_owned(), partition), known);
        let Some(m) = scan.manifest else { return Ok(None) };
        let corrupt = |d: String| {
            self.err(
                topic,
                partition,
                format!(
                    "{d}; the store topic lost records (retention instead of compaction?): \
                     set cleanup.policy=compact on it, or delete this partition's keys to rebuild"
                ),
                false,
            )
        };
        let mut bytes = Vec::with_capacity(m.len as usize);
        for i in 0..m.chunks {
            let chunk = scan
                .chunks
                .get(&format!("{}/{i}", m.generation))
                .ok_or_else(|| corrupt(format!("chunk {i} of {} is missing", m.chunks)))?;
            bytes.extend_from_slice(chunk);
        }
        if bytes.len() as u64 != m.len || crc32fast::hash(&bytes) != m.crc {
            return Err(corrupt(format!(
                "chunks do not match their manifest ({} of {} bytes)",
                bytes.len(),
                m.len
            )));
        }
        let ck = livefunnel_state::decode(&bytes).map_err(|e| corrupt(format!("{e:?}")))?;
        if ck.topic != topic || ck.partition != partition {
            return Err(corrupt(format!("it belongs to {}/{}", ck.topic, ck.partition)));
        }
        Ok(Some(ck))
    }

    fn save(&self, ck: &Checkpoint) -> Result<(), StateError> {
        let (topic, partition) = (ck.topic.as_str(), ck.partition);
        let prefix = self.prefix(topic, partition);
        let sp = self.store_partition(topic, partition);
        let bytes = livefunnel_state::encode(ck);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let m = Manifest {
            generation,
            chunks: bytes.chunks(self.s.chunk_bytes).count() as u32,
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
        };
        let fail = |d: String| self.err(topic, partition, d, true);
        let mut futs = Vec::new();
        for (i, c) in bytes.chunks(self.s.chunk_bytes).enumerate() {
            futs.push(self.send(&format!("{prefix}#chunk/{generation}/{i}"), Some(c), sp).map_err(fail)?);
        }
        self.deliver(futs).map_err(fail)?;
        let f = self.send(&format!("{prefix}#manifest"), Some(&m.encode()), sp).map_err(fail)?;
        // The epoch is repeated next to each manifest, so a store that drops old records
        // by size (librdkafka's mock cluster) still knows the latest claim.
        let epoch = {
            let known = self.known.lock().expect("poisoned");
            let claimed =
                known.get(&(topic.to_owned(), partition)).map_or_else(EpochRecord::default, |k| k.epoch);
            // A checkpoint's epoch was claimed before it was taken.
            let checkpointed = EpochRecord { epoch: ck.epoch, claimed_at_ms: ck.taken_at_ms };
            if claimed.epoch >= ck.epoch {
                claimed
            } else {
                checkpointed
            }
        };
        let e = self.send_epoch(&prefix, sp, epoch).map_err(fail)?;
        self.deliver(vec![f, e]).map_err(fail)?;
        let previous = {
            let mut known = self.known.lock().expect("poisoned");
            let k = known.entry((topic.to_owned(), partition)).or_default();
            if epoch.epoch >= k.epoch.epoch {
                k.epoch = epoch;
            }
            k.manifest.replace(m)
        };
        // The old chunks are unreachable now; tombstones let compaction drop them.
        if let Some(old) = previous.filter(|o| o.generation != generation) {
            let tombstones: Result<Vec<_>, String> = (0..old.chunks)
                .map(|i| self.send(&format!("{prefix}#chunk/{}/{i}", old.generation), None, sp))
                .collect();
            if let Err(e) = tombstones.and_then(|f| self.deliver(f)) {
                warn!(topic, partition, error = %e, "old checkpoint chunks not tombstoned; compaction keeps them");
            }
        }
        Ok(())
    }

    fn claim_epoch(&self, topic: &str, partition: i32, checkpointed: u32) -> Result<u32, StateError> {
        self.claim_epoch_at(topic, partition, checkpointed, epoch::now_ms())
    }

    fn location(&self, topic: &str, partition: i32) -> String {
        format!("kafka topic {} key {}", self.s.topic, self.prefix(topic, partition))
    }
}

fn store_err(topic: &str, what: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Store {
        location: format!("kafka topic {topic}"),
        detail: format!("{what}: {e}"),
        retryable: true,
    }
}

/// The topic's partition count, after creating it (compacted) when it is missing.
fn ensure_topic(
    props: &ClientConfig,
    producer: &FutureProducer,
    s: &KafkaStoreSettings,
) -> Result<i32, StateError> {
    let count = |md: &rdkafka::metadata::Metadata| {
        md.topics()
            .iter()
            .find(|t| t.name() == s.topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
    };
    // Asking for every topic does not auto-create ours, so a missing one is seen as such.
    let md = producer
        .client()
        .fetch_metadata(None, s.timeout)
        .map_err(|e| store_err(&s.topic, "reading the cluster's metadata", e))?;
    if let Some(n) = count(&md).filter(|n| *n > 0) {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> =
        props.create().map_err(|e| store_err(&s.topic, "creating an admin client", e))?;
    let retention = [
        ("cleanup.policy", "compact"),
        // Compaction never touches the active segment: roll it, so old states go.
        ("segment.ms", "600000"),
        ("min.cleanable.dirty.ratio", "0.1"),
        ("delete.retention.ms", "600000"),
    ];
    let mut topic =
        NewTopic::new(&s.topic, s.create_partitions, TopicReplication::Fixed(s.create_replication));
    for (k, v) in retention {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(s.timeout)).request_timeout(Some(s.timeout));
    let created = futures::executor::block_on(admin.create_topics([&topic], &opts));
    match created.as_ref().map(|r| r.first()) {
        Ok(Some(Ok(_))) => {
            info!(topic = %s.topic, partitions = s.create_partitions, "created the compacted checkpoint topic")
        }
        Ok(Some(Err((_, code)))) if *code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists => {}
        other => {
            return Err(StateError::Store {
                location: format!("kafka topic {}", s.topic),
                detail: format!(
                    "it does not exist and could not be created ({other:?}); create it with \
                     cleanup.policy=compact, or let livefunnel's user create topics"
                ),
                retryable: false,
            })
        }
    }
    let deadline = Instant::now() + s.timeout;
    loop {
        let md = producer
            .client()
            .fetch_metadata(Some(&s.topic), s.timeout)
            .map_err(|e| store_err(&s.topic, "reading the new topic's metadata", e))?;
        if let Some(n) = count(&md).filter(|n| *n > 0) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            return Err(store_err(&s.topic, "waiting for the new topic", "it has no partitions yet"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
