//! The bench's producers: the throughput phase's stream (generated in memory first,
//! then sent as fast as the pipeline takes it) and the freshness phase's (simulated
//! on the fly at a steady rate, with probe events). Both run on plain threads so the
//! pipeline's runtime is left alone.
//!
//! librdkafka's mock broker keeps only the newest 5 MB of each partition's log (not
//! configurable), so a stream cannot be produced ahead of the pipeline: messages
//! would be dropped before being read. [`Feeder`] therefore keeps what is produced
//! but not yet consumed under [`BACKLOG_BYTES`] per partition, from the pipeline's
//! own consumed counters, and counts how long it waited for the pipeline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use livefunnel_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use livefunnel_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use livefunnel_kafka::rdkafka::message::DeliveryResult;
use livefunnel_kafka::rdkafka::producer::{BaseRecord, Producer, ProducerContext};
use livefunnel_kafka::rdkafka::{ClientConfig, ClientContext};
use livefunnel_sim::{SimParams, Simulator};
use prometheus::IntCounter;

/// The probe room: one broadcast whose GMV counter only the probes move.
pub const PROBE_ROOM: &str = "bench-probe";
/// Every probe is an `order_paid` of this amount, so the counter's value says how
/// many probes the pipeline has counted.
pub const PROBE_CENTS: u64 = 100;
/// Unconsumed bytes allowed per partition: half the mock broker's 5 MB log, so
/// nothing unread is ever dropped, and plenty for the consumer (thousands of messages).
pub const BACKLOG_BYTES: u64 = 2_500_000;
/// A producer waiting this long for the pipeline gives up.
const STALL: Duration = Duration::from_secs(120);

/// Counts deliveries, so a message the broker never stored is an error, not a
/// silently smaller benchmark.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error.lock().expect("poisoned").get_or_insert_with(|| e.to_string());
        }
    }
}

pub type BaseProducer = livefunnel_kafka::rdkafka::producer::BaseProducer<Deliveries>;

/// A producer that never runs more than [`BACKLOG_BYTES`] ahead of the consumer on
/// any partition. Messages go to explicit partitions so the backlog is known per
/// partition.
pub struct Feeder {
    producer: BaseProducer,
    topic: String,
    /// Per partition: the pipeline's consumed counter, how many of it were already
    /// subtracted, the sizes of the messages not yet known consumed, their sum.
    consumed: Vec<IntCounter>,
    accounted: Vec<u64>,
    sizes: Vec<VecDeque<u32>>,
    unconsumed: Vec<u64>,
    pub sent: u64,
    /// Time spent waiting for the pipeline to consume.
    pub waited: Duration,
}

/// A producer for the bench, connected: its threads exist once this returns, so
/// the caller can tell them from the pipeline's (see `procstat::Parts`).
pub fn connect(brokers: &str, compression: &str, topic: &str) -> anyhow::Result<BaseProducer> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // librdkafka's default; a producing service batches about this long too,
        // so it is part of the freshness measured.
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", compression)
        .create_with_context(Deliveries::default())
        .context("creating the bench producer")?;
    // The broker's own thread starts when the metadata names it.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .context("the bench producer's first metadata")?;
    Ok(producer)
}

impl Feeder {
    /// `producer` from [`connect`]; `consumed[p]`: the pipeline's consumed counter of
    /// partition `p`.
    pub fn new(producer: BaseProducer, topic: &str, consumed: Vec<IntCounter>) -> Feeder {
        let n = consumed.len();
        let accounted = consumed.iter().map(IntCounter::get).collect();
        Feeder {
            producer,
            topic: topic.to_owned(),
            consumed,
            accounted,
            sizes: vec![VecDeque::new(); n],
            unconsumed: vec![0; n],
            sent: 0,
            waited: Duration::ZERO,
        }
    }

    pub fn partitions(&self) -> usize {
        self.consumed.len()
    }

    /// Sends one message to `partition`, after waiting for room in its backlog.
    pub fn send(&mut self, partition: usize, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
        let len = payload.len() as u64;
        let mut since: Option<Instant> = None;
        loop {
            self.account(partition);
            if self.sizes[partition].is_empty() || self.unconsumed[partition] + len <= BACKLOG_BYTES {
                break;
            }
            let t = *since.get_or_insert_with(Instant::now);
            if t.elapsed() > STALL {
                anyhow::bail!(
                    "the pipeline consumed nothing of partition {partition} for {} s",
                    STALL.as_secs()
                );
            }
            self.producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some(t) = since {
            self.waited += t.elapsed();
        }
        let mut rec = BaseRecord::to(&self.topic).partition(partition as i32).key(key).payload(payload);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    self.producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("producing a bench message"),
            }
        }
        self.sizes[partition].push_back(payload.len() as u32);
        self.unconsumed[partition] += len;
        self.sent += 1;
        if self.sent % 1024 == 0 {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Forgets the messages of `partition` the pipeline has consumed since last time.
    fn account(&mut self, partition: usize) {
        let now = self.consumed[partition].get();
        let mut fresh = now.saturating_sub(self.accounted[partition]);
        self.accounted[partition] = now;
        while fresh > 0 {
            let Some(size) = self.sizes[partition].pop_front() else { break };
            self.unconsumed[partition] -= u64::from(size);
            fresh -= 1;
        }
    }

    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every message is delivered; an error if any was not.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.producer.flush(Duration::from_secs(300)).context("flushing the bench producer")?;
        let d = self.producer.context();
        match d.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => anyhow::bail!(
                "{n} messages were not delivered to the mock cluster, the first: {}",
                d.first_error.lock().expect("poisoned").as_deref().unwrap_or("?")
            ),
        }
    }
}

/// The start of the simulator's stream, generated before the clock starts so that
/// simulating does not compete with the pipeline for the CPU.
pub struct Generated {
    data: Vec<u8>,
    /// Per message: its end in `data`, its room and its event time.
    index: Vec<(usize, u32, i64)>,
    room_ids: Vec<String>,
    start_ms: i64,
}

impl Generated {
    /// The first `events` messages of the simulator's stream (fewer when it is shorter).
    pub fn new(params: SimParams, events: u64) -> Generated {
        let start_ms = params.start_ms;
        let mut sim = Simulator::new(params);
        let mut data = Vec::new();
        let mut index = Vec::new();
        while (index.len() as u64) < events {
            let Some(meta) = sim.next_with_meta(&mut data) else { break };
            index.push((data.len(), meta.room, meta.ts_ms));
        }
        let room_ids = (0..sim.rooms()).map(|r| sim.room_id(r).to_owned()).collect();
        Generated { data, index, room_ids, start_ms }
    }

    /// Every message in order: (room, key, payload, event time).
    fn messages(&self) -> impl Iterator<Item = (u32, &[u8], &[u8], i64)> + '_ {
        let mut start = 0;
        self.index.iter().map(move |&(end, room, ts)| {
            let payload = &self.data[start..end];
            start = end;
            (room, self.room_ids[room as usize].as_bytes(), payload, ts)
        })
    }

    pub fn len(&self) -> u64 {
        self.index.len() as u64
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Sends every message, each room to partition `room % partitions`.
    pub fn send_all(&self, feeder: &mut Feeder) -> anyhow::Result<()> {
        for (room, key, payload, _) in self.messages() {
            feeder.send(room as usize % feeder.partitions(), key, payload)?;
        }
        feeder.flush()
    }
}

/// The freshness phase's producer.
pub struct Paced {
    pub rate: f64,
    pub duration: Duration,
    pub probe_every: Duration,
    pub stream: Generated,
    /// Makes the probes' event and session ids unique to this run.
    pub tag: String,
}

/// What the paced producer did.
pub struct PacedResult {
    /// Simulator messages sent (probes not included).
    pub sent: u64,
    /// When each probe (1, 2, ...) was handed to the producer.
    pub probes: Vec<Instant>,
    pub elapsed: Duration,
    /// Time the producer waited because the pipeline had not consumed its backlog.
    pub waited: Duration,
    /// CPU seconds of the producing thread.
    pub cpu_seconds: f64,
    /// The simulator ran out of messages before the time was up.
    pub stream_ended: bool,
}

impl Paced {
    /// Sends simulator messages at `rate` for `duration` and a probe every
    /// `probe_every`, then waits until everything is delivered.
    pub fn run(&self, feeder: &mut Feeder) -> anyhow::Result<PacedResult> {
        let mut stream = self.stream.messages();
        let start_ts = self.stream.start_ms;
        // The probe room's events keep to the simulated clock, so they do not move
        // their partition's event time ahead of the other rooms'.
        let mut sim_ts = start_ts;
        let mut probe_ts = start_ts;
        for ev in probe_opening(&self.tag, start_ts) {
            feeder.send(0, PROBE_ROOM.as_bytes(), ev.as_bytes())?;
        }
        // At most 10 ms of messages at once, so a producer that fell behind does not
        // hold the probes back.
        let burst = ((self.rate / 100.0) as u64).max(1);
        let start = Instant::now();
        let mut next_probe = start + self.probe_every;
        let mut sent = 0u64;
        let mut probes = Vec::new();
        let mut stream_ended = false;
        loop {
            let now = Instant::now();
            let elapsed = now - start;
            if elapsed >= self.duration {
                break;
            }
            if now >= next_probe {
                probe_ts = (probe_ts + 1).max(sim_ts);
                let ev = probe_order(&self.tag, probes.len() + 1, probe_ts);
                probes.push(Instant::now());
                feeder.send(0, PROBE_ROOM.as_bytes(), ev.as_bytes())?;
                next_probe += self.probe_every;
                if next_probe < now {
                    next_probe = now + self.probe_every;
                }
            }
            let due = (self.rate * elapsed.as_secs_f64()) as u64;
            let mut n = 0;
            while sent < due && n < burst && !stream_ended {
                match stream.next() {
                    Some((room, key, payload, ts)) => {
                        sim_ts = sim_ts.max(ts);
                        feeder.send(room as usize % feeder.partitions(), key, payload)?;
                        sent += 1;
                        n += 1;
                    }
                    None => stream_ended = true,
                }
            }
            feeder.poll();
            if n < burst {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let elapsed = start.elapsed();
        feeder.flush()?;
        let cpu_seconds = super::procstat::this_thread_seconds();
        Ok(PacedResult { sent, probes, elapsed, waited: feeder.waited, cpu_seconds, stream_ended })
    }
}

/// The probe room's `session_start` and its buyer's `enter`, sent before any probe.
fn probe_opening(tag: &str, ts: i64) -> [String; 2] {
    [
        format!(
            r#"{{"event_id":"{tag}-start","type":"session_start","ts":{ts},"room_id":"{PROBE_ROOM}","session_id":"{tag}"}}"#
        ),
        format!(
            r#"{{"event_id":"{tag}-enter","type":"enter","ts":{ts},"room_id":"{PROBE_ROOM}","session_id":"{tag}","user_id":"probe-buyer","source":"share_link"}}"#
        ),
    ]
}

/// Probe `k`: an `order_paid` of [`PROBE_CENTS`].
fn probe_order(tag: &str, k: usize, ts: i64) -> String {
    format!(
        r#"{{"event_id":"{tag}-{k}","type":"order_paid","ts":{ts},"room_id":"{PROBE_ROOM}","session_id":"{tag}","user_id":"probe-buyer","product_id":"probe-product","order_id":"{tag}-{k}","amount_cents":{PROBE_CENTS}}}"#
    )
}

/// Messages ever written to `topic`: the sum of its partitions' high watermarks
/// (offsets start at 0; the mock broker drops old ones, which lowers only the low mark).
pub fn messages_in(brokers: &str, topic: &str, partitions: usize) -> anyhow::Result<u64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "livefunnel-bench-watermarks")
        .create()
        .context("creating a consumer to read the topic's watermarks")?;
    let mut total = 0u64;
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p as i32, Duration::from_secs(10))
            .with_context(|| format!("reading the watermarks of {topic}/{p}"))?;
        total += u64::try_from(high).unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe the pipeline rejected would show as "never seen", not as an error.
    #[test]
    fn probes_are_valid_events_in_order() {
        use livefunnel_core::{Engine, EngineConfig, EventType, Outcome};
        let ts = SimParams::default().start_ms;
        let mut engine = Engine::new(EngineConfig::default());
        let mut rows = Vec::new();
        let mut events: Vec<String> = probe_opening("run-1", ts).into();
        events.extend((1..=3).map(|k| probe_order("run-1", k, ts + k as i64)));
        for (i, text) in events.iter().enumerate() {
            let ev = livefunnel_core::decode(text.as_bytes()).unwrap_or_else(|r| panic!("{text}: {r:?}"));
            assert_eq!(&*ev.room_id, PROBE_ROOM);
            if i >= 2 {
                assert_eq!(ev.kind, EventType::OrderPaid);
                assert_eq!(ev.amount_cents(), PROBE_CENTS as i64);
            }
            let outcome = engine.process(&ev, ts, &mut rows);
            assert!(matches!(outcome, Outcome::Accepted { .. }), "{text}: {outcome:?}");
        }
    }

    #[test]
    fn generated_messages_are_the_simulators_stream() {
        let params = SimParams { rooms: 3, duration_ms: 5 * 60_000, ..SimParams::default() };
        let g = Generated::new(params.clone(), 500);
        assert_eq!(g.len(), 500);
        let mut sim = Simulator::new(params);
        let mut bytes = 0;
        for (room, key, payload, ts) in g.messages() {
            let mut buf = Vec::new();
            let meta = sim.next_with_meta(&mut buf).expect("as long as the stream");
            assert_eq!(payload, &buf[..]);
            assert_eq!((room, ts), (meta.room, meta.ts_ms));
            assert_eq!(key, sim.room_id(meta.room).as_bytes());
            bytes += payload.len();
        }
        assert_eq!(g.bytes(), bytes);
        assert!(sim.next_with_meta(&mut Vec::new()).is_some(), "500 messages of a longer stream");
    }
}
