//! The consumer loop and the rebalance handler: partitions come with their restored
//! state and go with a final checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use livefunnel_kafka::rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use livefunnel_kafka::rdkafka::message::Message;
use livefunnel_kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use livefunnel_kafka::{Assignment, AssignmentHandler, DeadLetters, GroupContext, PartitionLag, StartAt};
use livefunnel_state::{CheckpointStore, StateDir};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::batch::MsgBatch;
use super::fence::Fence;
use super::partition::{self, PartitionSetup};
use super::sink::SinkMsg;
use super::{fail, Fatal, Metrics, PipelineError, Settings, Status};

/// Messages handed to a partition task at once, at most.
const BATCH: usize = 2048;
/// The least and the most room a new batch starts with, in messages and in bytes of
/// keys and payloads: as much as the last batch needed, within these. Growing from
/// the least each time copied a full batch's bytes about once more; starting small
/// keeps many partitions' queues of a few messages each small.
const BATCH_ROOM: [(usize, usize); 2] = [(128, 16 * 1024), (BATCH, 1024 * 1024)];
/// Batches queued per partition before the consumer pauses the partition. A pause is
/// for a task that is stuck (the sink cannot write), not for a burst: librdkafka drops
/// a paused partition's prefetched messages and fetches them again after the resume,
/// and a fetch after a resume arrives as a burst that filled a queue of 4 batches at
/// once. With 4 the pipeline paused and resumed itself in a loop, idle most of the
/// time: `livefunnel bench --sink null` ran at 99 k events/s on 0.72 cores; with 16 at
/// 304 k on 1.29. At most 32,768 messages per partition wait here.
const PARTITION_QUEUE: usize = 16;
/// How long a revoke (or a clean stop) waits for the partitions' final checkpoints.
pub(super) const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop on a fatal error waits for the healthy partitions' final
/// checkpoints: it is best effort, the process must end within seconds.
const FATAL_STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ConsumerSettings {
    pub settings: Settings,
    pub start_without: StartAt,
    pub sink: mpsc::Sender<SinkMsg>,
    /// Where the partition tasks run.
    pub engines: Arc<super::engines::EnginePool>,
    pub metrics: Metrics,
    pub status: Arc<Status>,
    pub shutdown: CancellationToken,
    pub abort: CancellationToken,
}

struct Running {
    tx: mpsc::Sender<MsgBatch>,
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<Option<i64>, PipelineError>>,
    fence: Fence,
    offset_reset: Arc<AtomicBool>,
}

/// The pipeline's half of the rebalance protocol.
struct Handler {
    cs: Arc<ConsumerSettings>,
    state: Arc<dyn CheckpointStore>,
    dlq: DeadLetters,
    commits: mpsc::UnboundedSender<(Assignment, i64)>,
    /// The pipeline's own runtime, on which a revoke waits for the final checkpoints.
    runtime: tokio::runtime::Handle,
    tasks: Arc<Mutex<HashMap<Assignment, Running>>>,
}

impl Handler {
    fn start(&self, a: &Assignment) -> Result<StartAt, PipelineError> {
        let s = &self.cs.settings;
        let restoring = |e: PipelineError| PipelineError::Restoring {
            topic: a.topic.clone(),
            partition: a.partition,
            source: Box::new(e),
        };
        let store = |what: &str| {
            let what = what.to_owned();
            move |source| restoring(PipelineError::Store { what, source })
        };
        let ck = self.state.load(&a.topic, a.partition).map_err(store("loading its checkpoint"))?;
        let epoch = self
            .state
            .claim_epoch(&a.topic, a.partition, ck.as_ref().map_or(0, |c| c.epoch))
            .map_err(store("claiming its version epoch"))?;
        let start = match &ck {
            Some(c) => StartAt::Offset(c.next_offset),
            None => self.cs.start_without,
        };
        let setup = PartitionSetup::new(a.clone(), s, ck, epoch, self.state.clone()).map_err(restoring)?;
        info!(topic = %a.topic, partition = a.partition, epoch, start = ?start, "partition starting");
        let (tx, rx) = mpsc::channel(PARTITION_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (fence, offset_reset) = (Fence::default(), Arc::new(AtomicBool::new(false)));
        let ctx = partition::Ctx {
            dlq: self.dlq.clone(),
            dlq_topic: s.kafka.dlq_topic_for(&a.topic),
            dlq_truncate_bytes: s.kafka.dlq_truncate_bytes,
            sink: self.cs.sink.clone(),
            commits: self.commits.clone(),
            metrics: self.cs.metrics.clone(),
            status: self.cs.status.clone(),
            checkpoint_interval_ms: s.checkpoint_interval_ms,
            series_ttl_ms: s.series_ttl_ms,
            abort: self.cs.abort.clone(),
            shutdown: self.cs.shutdown.clone(),
            fence: fence.clone(),
            offset_reset: offset_reset.clone(),
        };
        let join = self.cs.engines.spawn(partition::supervise(setup, ctx, rx, stop_rx));
        let running = Running { tx, stop: stop_tx, join, fence, offset_reset };
        self.tasks.lock().expect("poisoned").insert(a.clone(), running);
        Ok(start)
    }

    /// The partitions held, on `/metrics` and `/readyz`.
    fn count_partitions(&self) {
        let n = self.tasks.lock().expect("poisoned").len();
        self.cs.metrics.pipeline.partitions_assigned.set(n as i64);
        self.cs.status.kafka_assigned.store(n > 0, Ordering::Relaxed);
    }
}

impl AssignmentHandler for Handler {
    fn assigned(&self, parts: &[Assignment]) -> Vec<StartAt> {
        // Also with no partition: a member of a group with more members than
        // partitions is a healthy standby.
        self.cs.status.group_joined.store(true, Ordering::Relaxed);
        let starts = parts
            .iter()
            .map(|a| match self.start(a) {
                Ok(s) => s,
                Err(e) => {
                    fail(&self.cs.status, &self.cs.shutdown, Fatal::of(None, &e));
                    // Nothing of this partition is processed or committed: the
                    // pipeline is stopping.
                    StartAt::End
                }
            })
            .collect();
        self.count_partitions();
        starts
    }

    fn beyond_end(&self, a: &Assignment, start: i64, end: i64) -> StartAt {
        warn!(
            topic = %a.topic, partition = a.partition, offset = start, end,
            "the checkpoint's offset is past the end of the partition: its topic was deleted and created \
             again, or truncated; the partition keeps its state and reads the topic as a partition without \
             a checkpoint does (kafka.start_without_checkpoint)"
        );
        self.cs.metrics.pipeline.offset_jumps.with_label_values(&["beyond_end"]).inc();
        if let Some(r) = self.tasks.lock().expect("poisoned").get(a) {
            r.offset_reset.store(true, Ordering::Relaxed);
        }
        self.cs.start_without
    }

    fn revoked(&self, parts: &[Assignment]) -> Vec<(Assignment, i64)> {
        let stopping: Vec<(Assignment, Running)> = {
            let mut tasks = self.tasks.lock().expect("poisoned");
            parts.iter().filter_map(|a| tasks.remove(a).map(|r| (a.clone(), r))).collect()
        };
        self.count_partitions();
        let timeout = super::test_hooks::revoke_timeout(REVOKE_TIMEOUT);
        stop_all(stopping, timeout, &self.runtime)
    }

    fn lag(&self, lags: &[PartitionLag]) {
        for l in lags {
            let p = l.partition.to_string();
            self.cs
                .metrics
                .pipeline
                .consumer_lag
                .with_label_values(&[l.topic.as_str(), p.as_str()])
                .set(l.lag);
        }
    }
}

/// Stops partition tasks and waits, up to `timeout` for all, for their final
/// checkpoints; returns the offsets to commit. A task still running then is given
/// up: fenced (its queued rows are dropped, its checkpoint writes stop; a write in
/// progress is waited for) and aborted, so a partition that moves on has one writer.
async fn stop_and_wait(stopping: Vec<(Assignment, Running)>, timeout: Duration) -> Vec<(Assignment, i64)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut joins = Vec::new();
    for (a, r) in stopping {
        let _ = r.stop.send(());
        drop(r.tx);
        joins.push((a, r.join, r.fence));
    }
    let mut out = Vec::new();
    for (a, mut j, fence) in joins {
        match tokio::time::timeout_at(deadline, &mut j).await {
            Ok(Ok(Ok(Some(off)))) => out.push((a, off)),
            Ok(Ok(Ok(None))) => {}
            // An error of its own is the pipeline's fatal error, reported by the task.
            Ok(Ok(Err(e))) => warn!(
                topic = %a.topic, partition = a.partition, error = %super::error::chain(&e),
                "partition stopped without a final checkpoint"
            ),
            Ok(Err(e)) => {
                warn!(topic = %a.topic, partition = a.partition, error = %e, "partition task failed")
            }
            Err(_) => {
                let _ = tokio::task::spawn_blocking(move || fence.close()).await;
                j.abort();
                warn!(
                    topic = %a.topic, partition = a.partition, timeout_ms = timeout.as_millis() as u64,
                    "final checkpoint timed out: the partition's task is stopped without it, and what it \
                     had not written is dropped; the partition's next owner resumes from its last checkpoint"
                );
            }
        }
    }
    out
}

/// [`stop_and_wait`] from librdkafka's rebalance callback, which runs inside the
/// consumer loop's task on a runtime worker: the worker hands its other tasks to the
/// runtime while it blocks, so the partition tasks can finish.
fn stop_all(
    stopping: Vec<(Assignment, Running)>,
    timeout: Duration,
    rt: &tokio::runtime::Handle,
) -> Vec<(Assignment, i64)> {
    if stopping.is_empty() {
        return Vec::new();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| rt.block_on(stop_and_wait(stopping, timeout)))
        }
        Ok(_) => {
            warn!("rebalance on a single-threaded runtime: not waiting for final checkpoints");
            Vec::new()
        }
        Err(_) => rt.block_on(stop_and_wait(stopping, timeout)),
    }
}

pub async fn run(cs: ConsumerSettings) -> Result<(), PipelineError> {
    let cs = Arc::new(cs);
    let props = cs.settings.kafka.librdkafka_properties();
    let opening = |source| PipelineError::Store { what: "opening the checkpoint store".into(), source };
    let state: Arc<dyn CheckpointStore> = match cs.settings.shared_store.clone() {
        Some(store) => {
            let props = props.clone();
            tokio::task::spawn_blocking(move || livefunnel_kafka::KafkaCheckpointStore::open(&props, store))
                .await
                .map_err(|source| PipelineError::Blocking { what: "opening the checkpoint store", source })?
                .map(Arc::new)
                .map_err(opening)?
        }
        None => Arc::new(StateDir::open(&cs.settings.state_dir).map_err(opening)?),
    };
    let kafka = |what| move |source| PipelineError::Kafka { what, source };
    let dlq = DeadLetters::new(&livefunnel_kafka::producer_config(&props))
        .map_err(kafka("creating the dead-letter producer"))?;
    let (commit_tx, mut commit_rx) = mpsc::unbounded_channel::<(Assignment, i64)>();
    let tasks: Arc<Mutex<HashMap<Assignment, Running>>> = Arc::default();
    let handler = Handler {
        cs: cs.clone(),
        state,
        dlq: dlq.clone(),
        commits: commit_tx,
        runtime: tokio::runtime::Handle::current(),
        tasks: tasks.clone(),
    };
    let consumer: StreamConsumer<GroupContext<Handler>> = livefunnel_kafka::consumer_config(&props)
        .map_err(kafka("the kafka consumer's settings"))?
        .create_with_context(GroupContext::new(handler))
        .map_err(|e| kafka("creating the kafka consumer")(e.into()))?;
    let topics: Vec<&str> = cs.settings.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| kafka("subscribing to the input topics")(e.into()))?;
    info!(topics = ?topics, group = %cs.settings.kafka.group_id, "consuming");

    let mut senders: HashMap<(String, i32), mpsc::Sender<MsgBatch>> = HashMap::new();
    let mut batches: Vec<(TopicPartition, MsgBatch)> = Vec::new();
    let mut room = BATCH_ROOM[0];
    let mut held = Held::default();
    loop {
        tokio::select! {
            biased;
            _ = cs.shutdown.cancelled() => break,
            Some((a, off)) = commit_rx.recv() => commit(&consumer, &a, off, CommitMode::Async),
            Some((tp, permit)) = held.ready.next() => held.release(&consumer, tp, permit),
            m = consumer.recv() => {
                let first = match m {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "kafka consumer error");
                        continue;
                    }
                };
                // Found by a linear search over the few partitions of this poll: no
                // topic `String` per message.
                let mut push = |m: &livefunnel_kafka::rdkafka::message::BorrowedMessage<'_>| {
                    let (offset, key, payload) = (m.offset(), m.key(), m.payload());
                    match batches.iter_mut().find(|(tp, _)| tp.1 == m.partition() && tp.0 == m.topic()) {
                        Some((_, batch)) => batch.push(offset, key, payload),
                        None => {
                            let mut batch = MsgBatch::with_capacity(room.0, room.1);
                            batch.push(offset, key, payload);
                            batches.push(((m.topic().to_owned(), m.partition()), batch));
                        }
                    }
                };
                push(&first);
                drop(first);
                let mut n = 1usize;
                // Take whatever else is already here, without waiting.
                while n < BATCH {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => {
                            push(&m);
                            n += 1;
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "kafka consumer error");
                            break;
                        }
                        None => break,
                    }
                }
                cs.status.events_consumed.fetch_add(n as u64, Ordering::Relaxed);
                for (tp, batch) in batches.drain(..) {
                    let [least, most] = BATCH_ROOM;
                    room = (batch.len().clamp(least.0, most.0), batch.bytes_len().clamp(least.1, most.1));
                    let p = tp.1.to_string();
                    cs.metrics.pipeline.events_consumed.with_label_values(&[tp.0.as_str(), p.as_str()]).inc_by(batch.len() as u64);
                    let tx = match senders.get(&tp) {
                        Some(tx) if !tx.is_closed() => tx.clone(),
                        _ => {
                            let a = Assignment { topic: tp.0.clone(), partition: tp.1 };
                            match tasks.lock().expect("poisoned").get(&a) {
                                Some(r) => {
                                    senders.insert(tp.clone(), r.tx.clone());
                                    r.tx.clone()
                                }
                                // Not ours (any more): the owner resumes from its checkpoint.
                                None => continue,
                            }
                        }
                    };
                    if let Some(batch) = held.append(&tp, &tx, batch) {
                        match tx.try_send(batch) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(batch)) => held.hold(&consumer, tp, tx, batch),
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                senders.remove(&tp);
                            }
                        }
                    }
                }
            }
        }
    }
    info!("stopping: final checkpoints");
    drop(senders);
    let stopping: Vec<(Assignment, Running)> = tasks.lock().expect("poisoned").drain().collect();
    let fatal = cs.status.fatal.lock().expect("poisoned").is_some();
    let timeout = super::test_hooks::revoke_timeout(if fatal { FATAL_STOP_TIMEOUT } else { REVOKE_TIMEOUT });
    let finals = stop_and_wait(stopping, timeout).await;
    while let Ok((a, off)) = commit_rx.try_recv() {
        commit(&consumer, &a, off, CommitMode::Async);
    }
    for (a, off) in &finals {
        commit(&consumer, a, *off, CommitMode::Sync);
    }
    cs.metrics.pipeline.partitions_assigned.set(0);
    cs.status.kafka_assigned.store(false, Ordering::Relaxed);
    consumer.unsubscribe();
    drop(consumer);
    drop(dlq);
    Ok(())
}

type TopicPartition = (String, i32);
type Batch = MsgBatch;
type Permit = Result<mpsc::OwnedPermit<Batch>, mpsc::error::SendError<()>>;
type Ready = futures::future::BoxFuture<'static, (TopicPartition, Permit)>;

/// Batches of partitions whose task is behind (its queue full: the sink is slow or
/// ClickHouse is down), with the partition paused in the consumer. Waiting on the
/// queue instead would stop the consumer loop from polling, and after
/// `max.poll.interval.ms` (5 minutes by default) librdkafka leaves the group: a long
/// ClickHouse outage would move every partition, on every instance, again and again.
/// Paused, the loop keeps polling (heartbeats, rebalances, other partitions) while
/// memory stays bounded by the queues.
#[derive(Default)]
struct Held {
    /// Per partition: the task's queue it waits for, and what it holds for it.
    batches: HashMap<TopicPartition, (mpsc::Sender<Batch>, Batch)>,
    /// A permit once a held partition's queue has room (or an error once it closed).
    ready: futures::stream::FuturesUnordered<Ready>,
}

impl Held {
    /// `batch`, back when nothing is held for the partition; otherwise it joins what is
    /// held, in order. What is held for an earlier task of the partition (revoked, then
    /// assigned again) is dropped: the new task resumes from its checkpoint.
    fn append(&mut self, tp: &TopicPartition, tx: &mpsc::Sender<Batch>, batch: Batch) -> Option<Batch> {
        match self.batches.get_mut(tp) {
            Some((held_tx, held)) if held_tx.same_channel(tx) => {
                // Fetched before the pause took effect.
                held.extend(batch);
                None
            }
            Some(_) => {
                self.batches.remove(tp);
                Some(batch)
            }
            None => Some(batch),
        }
    }

    fn hold<C: Consumer<GroupContext<Handler>>>(
        &mut self,
        consumer: &C,
        tp: TopicPartition,
        tx: mpsc::Sender<Batch>,
        batch: Batch,
    ) {
        set_paused(consumer, &tp, true);
        let waiting = tx.clone();
        let key = tp.clone();
        self.ready.push(Box::pin(async move { (key, waiting.reserve_owned().await) }));
        self.batches.insert(tp, (tx, batch));
    }

    /// The partition's queue has room, or its task ended: hand over what is held and
    /// resume (after a revoke the resume fails harmlessly, or lets a reassigned
    /// partition fetch again).
    fn release<C: Consumer<GroupContext<Handler>>>(
        &mut self,
        consumer: &C,
        tp: TopicPartition,
        permit: Permit,
    ) {
        let current = self.batches.get(&tp).is_some_and(|(tx, _)| match &permit {
            Ok(p) => p.same_channel_as_sender(tx),
            Err(_) => tx.is_closed(),
        });
        if !current {
            return;
        }
        let (_, batch) = self.batches.remove(&tp).expect("checked above");
        if let Ok(permit) = permit {
            permit.send(batch);
        }
        set_paused(consumer, &tp, false);
    }
}

fn set_paused<C: Consumer<GroupContext<Handler>>>(consumer: &C, tp: &TopicPartition, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.0, tp.1);
    let r = if paused { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    match r {
        Ok(()) => debug!(topic = %tp.0, partition = tp.1, paused, "partition fetching"),
        Err(e) => {
            debug!(topic = %tp.0, partition = tp.1, paused, error = %e, "partition not paused or resumed")
        }
    }
}

fn commit<C: Consumer<GroupContext<Handler>>>(consumer: &C, a: &Assignment, off: i64, mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    if tpl.add_partition_offset(&a.topic, a.partition, Offset::Offset(off)).is_err() {
        return;
    }
    // Informative only: a partition resumes from its checkpoint file.
    if let Err(e) = consumer.commit(&tpl, mode) {
        warn!(topic = %a.topic, partition = a.partition, offset = off, error = %e, "offset commit failed");
    }
}
