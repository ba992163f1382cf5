//! One partition's task: decode, engine, dead letters, room series, checkpoints.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use livefunnel_clickhouse::Annotation;
use livefunnel_core::{decode, Engine, Outcome, Reason, Row};
use livefunnel_kafka::{Assignment, DeadLetter, DeadLetters};
use livefunnel_metrics::RoomTracker;
use livefunnel_state::{Checkpoint, CheckpointStore};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::batch::{Msg, MsgBatch};
use super::dead_letters::Outbox;
use super::fence::Fence;
use super::sink::{SinkError, SinkMsg};
use super::{fail, now_ms, panic_message, Fatal, Metrics, PipelineError, Settings, Status};

/// How often running values, idle partitions and series expiry are looked at: well
/// inside the contract's 1 s for running values to show.
const TICK: Duration = Duration::from_millis(200);

/// A partition's restored (or fresh) state.
pub struct PartitionSetup {
    a: Assignment,
    engine: Engine,
    tracker: RoomTracker,
    /// The offset of the next message; `None` until one is seen without a checkpoint.
    next_offset: Option<i64>,
    epoch: u32,
    state: Arc<dyn CheckpointStore>,
    /// `[privacy]`: applied to each event between decoding and the engine.
    privacy: Option<crate::privacy::UserIdHasher>,
}

impl PartitionSetup {
    pub fn new(
        a: Assignment,
        s: &Settings,
        ck: Option<Checkpoint>,
        epoch: u32,
        state: Arc<dyn CheckpointStore>,
    ) -> Result<PartitionSetup, PipelineError> {
        let path = state.location(&a.topic, a.partition);
        let engine_state = |source| PipelineError::EngineState { path: path.clone(), source };
        let (mut engine, mut tracker, next_offset) = match ck {
            Some(ck) => {
                let engine = Engine::restore(s.engine.clone(), &ck.engine).map_err(engine_state)?;
                let tracker = RoomTracker::from_checkpoint(&ck.extra)
                    .map_err(|source| PipelineError::RoomCounters { path: path.clone(), source })?;
                (engine, tracker, Some(ck.next_offset))
            }
            None => (Engine::new(s.engine.clone()), RoomTracker::default(), None),
        };
        tracker.set_signal_windows(s.signals.clone());
        tracker.set_detectors(s.detectors.clone());
        tracker.set_product_window(livefunnel_metrics::ProductWindow::from_engine(&s.engine));
        engine.set_version_epoch(epoch).map_err(engine_state)?;
        Ok(PartitionSetup { a, engine, tracker, next_offset, epoch, state, privacy: s.privacy.clone() })
    }
}

pub struct Ctx {
    pub dlq: DeadLetters,
    pub dlq_topic: String,
    /// `kafka.dlq_truncate_bytes`.
    pub dlq_truncate_bytes: usize,
    pub sink: mpsc::Sender<SinkMsg>,
    pub commits: mpsc::UnboundedSender<(Assignment, i64)>,
    pub metrics: Metrics,
    pub status: std::sync::Arc<Status>,
    pub checkpoint_interval_ms: i64,
    pub series_ttl_ms: i64,
    pub abort: CancellationToken,
    /// Cancelled (with [`Status::fatal`] set) when this task fails.
    pub shutdown: CancellationToken,
    /// Closed when the task is given up: nothing it sends or saves counts after that.
    pub fence: Fence,
    /// Set when the restored checkpoint's offset is past the partition's end: the
    /// first message fetched is where the partition now starts.
    pub offset_reset: Arc<AtomicBool>,
}

/// A checkpoint whose rows are on their way to the sink.
struct Pending {
    ck: Checkpoint,
    ack: oneshot::Receiver<Result<(), Arc<SinkError>>>,
    started: Instant,
}

/// A checkpoint whose rows are written, being saved on a blocking thread while the
/// task goes on processing: a save's fsync can take a second when the disk is busy
/// (ClickHouse writing parts on it), and the partition must not stall meanwhile.
struct Saving {
    save: tokio::task::JoinHandle<Option<Result<(), livefunnel_state::StateError>>>,
    off: i64,
    started: Instant,
}

struct Task {
    s: PartitionSetup,
    ctx: Ctx,
    rows: Vec<Row>,
    /// The rooms a batch touched, reused from batch to batch.
    touched: Vec<livefunnel_core::TouchedRoom>,
    annotations: Vec<Annotation>,
    dead_letters: Outbox,
    /// Messages below the expected offset are being skipped (reported once per run).
    rewinding: bool,
    /// When the last checkpoint was attempted: the next one is due an interval later.
    last_checkpoint: Instant,
    /// Wall clock (ms) of the last checkpoint saved, or of the start before the first.
    last_success_ms: i64,
    partition_label: String,
    /// The engine's counters as already added to the pipeline's.
    stats_counted: livefunnel_core::EngineStats,
}

/// [`run`], whose failure stops the pipeline: an error or a panic of a partition
/// task is reported with [`fail`], naming the partition (an error because the sink
/// stopped is the sink's to report). A task that is not processing its partition must
/// not leave the process looking alive.
pub async fn supervise(
    setup: PartitionSetup,
    ctx: Ctx,
    rx: mpsc::Receiver<MsgBatch>,
    stop: oneshot::Receiver<()>,
) -> Result<Option<i64>, PipelineError> {
    let a = setup.a.clone();
    let (status, shutdown) = (ctx.status.clone(), ctx.shutdown.clone());
    let result = match AssertUnwindSafe(run(setup, ctx, rx, stop)).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => Err(PipelineError::TaskPanicked(panic_message(&*panic))),
    };
    result.map_err(|e| {
        if !matches!(e, PipelineError::SinkStopped(_)) {
            let partition = format!("partition {}/{}", a.topic, a.partition);
            fail(&status, &shutdown, Fatal::of(Some(&partition), &e));
        }
        e
    })
}

/// Runs until `stop` fires or the consumer loop drops `rx`; then takes a final
/// checkpoint and returns its offset (`None` when nothing was ever consumed).
async fn run(
    mut setup: PartitionSetup,
    ctx: Ctx,
    mut rx: mpsc::Receiver<MsgBatch>,
    mut stop: oneshot::Receiver<()>,
) -> Result<Option<i64>, PipelineError> {
    setup.tracker.publish(&ctx.metrics.rooms);
    let partition_label = setup.a.partition.to_string();
    let (checkpoint_interval, partition) =
        (Duration::from_millis(ctx.checkpoint_interval_ms.max(0) as u64), setup.a.partition);
    let stats_counted = setup.engine.stats().clone();
    let dead_letters = Outbox::new(ctx.dlq.clone(), ctx.dlq_truncate_bytes, ctx.metrics.pipeline.clone());
    let mut t = Task {
        s: setup,
        ctx,
        rows: Vec::new(),
        touched: Vec::new(),
        annotations: Vec::new(),
        dead_letters,
        rewinding: false,
        last_checkpoint: staggered(Instant::now(), checkpoint_interval, partition),
        last_success_ms: now_ms(),
        partition_label,
        stats_counted,
    };
    t.checkpoint_succeeded();
    let mut pending: Option<Pending> = None;
    let mut saving: Option<Saving> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(r) = t.dead_letters.next() => r?,
            ack = async { (&mut pending.as_mut().expect("guarded").ack).await }, if pending.is_some() => {
                let p = pending.take().expect("guarded");
                saving = Some(t.start_save(p, ack)?);
            }
            saved = async { (&mut saving.as_mut().expect("guarded").save).await }, if saving.is_some() => {
                let sv = saving.take().expect("guarded");
                t.finish_save(sv.off, sv.started, saved)?;
            }
            batch = rx.recv() => match batch {
                Some(batch) => t.process(batch).await?,
                None => break,
            },
            _ = tick.tick() => {
                t.on_tick().await?;
                if pending.is_none()
                    && saving.is_none()
                    && t.last_checkpoint.elapsed().as_millis() as i64 >= t.ctx.checkpoint_interval_ms
                {
                    pending = t.begin_checkpoint(false).await?;
                }
            }
        }
    }
    // Drain: the messages already handed over belong to this owner's final state.
    rx.close();
    while let Some(batch) = rx.recv().await {
        t.process(batch).await?;
    }
    if let Some(Saving { save, off, started }) = saving.take() {
        t.finish_save(off, started, save.await)?;
    }
    if let Some(p) = pending.take() {
        let ack = tokio::select! {
            a = p.ack => a,
            _ = t.ctx.abort.cancelled() => return Ok(None),
        };
        let p2 = Pending { ck: p.ck, ack: oneshot::channel().1, started: p.started };
        t.complete_checkpoint(p2, ack).await?;
    }
    let last = match t.begin_checkpoint(true).await? {
        Some(p) => {
            let ack = tokio::select! {
                a = p.ack => a,
                _ = t.ctx.abort.cancelled() => return Ok(None),
            };
            let off = p.ck.next_offset;
            let p2 = Pending { ck: p.ck, ack: oneshot::channel().1, started: p.started };
            t.complete_checkpoint(p2, ack).await?;
            Some(off)
        }
        None => None,
    };
    t.s.tracker.unpublish(&t.ctx.metrics.rooms);
    t.ctx.metrics.pipeline.forget_partition(&t.s.a.topic, t.s.a.partition);
    t.ctx.status.top_rooms.lock().expect("poisoned").remove(&(t.s.a.topic.clone(), t.s.a.partition));
    t.ctx.status.live_rooms.lock().expect("poisoned").remove(&(t.s.a.topic.clone(), t.s.a.partition));
    t.ctx.metrics.pipeline.live_rooms.set(t.ctx.status.live_rooms() as i64);
    info!(topic = %t.s.a.topic, partition = t.s.a.partition, offset = ?last, "partition stopped");
    Ok(last)
}

impl Task {
    async fn process(&mut self, batch: MsgBatch) -> Result<(), PipelineError> {
        super::test_hooks::stall(&self.s.a.topic, self.s.a.partition);
        let now = now_ms();
        let m = self.ctx.metrics.clone();
        if self.ctx.offset_reset.swap(false, Ordering::Relaxed) {
            self.s.next_offset = None;
        }
        // Counted here and added once per batch: the counters are shared by every
        // partition, and an atomic add per event bounces their cache line between cores.
        let (mut accepted, mut late_accepted, mut duplicates) = (0u64, 0u64, 0u64);
        for msg in batch.iter() {
            if !self.follows_on(msg.offset) {
                continue;
            }
            super::test_hooks::panic_at(&self.s.a.topic, self.s.a.partition, msg.offset);
            self.s.next_offset = Some(msg.offset + 1);
            let payload = msg.payload.unwrap_or(&[]);
            let ev = match decode(payload) {
                Ok(mut ev) => {
                    crate::privacy::pseudonymise(self.s.privacy.as_ref(), &mut ev);
                    ev
                }
                Err(rej) => {
                    debug!(offset = msg.offset, reason = rej.reason.as_str(), detail = %rej.detail, "rejected");
                    self.dead_letter(rej.reason, &msg);
                    continue;
                }
            };
            match self.s.engine.process(&ev, now, &mut self.rows) {
                Outcome::Accepted { late } => {
                    accepted += 1;
                    late_accepted += u64::from(late);
                    if let Some(a) = Annotation::from_event(&ev) {
                        self.annotations.push(a);
                    }
                }
                Outcome::Duplicate => duplicates += 1,
                Outcome::Rejected(reason) => self.dead_letter(reason, &msg),
            }
        }
        // The room counters follow the engine's totals, once per room and batch.
        self.s.engine.touched(&mut self.touched);
        for r in self.touched.drain(..) {
            self.s.tracker.on_touched(&m.rooms, &r, now);
        }
        m.pipeline.events_accepted.inc_by(accepted);
        m.pipeline.events_late_accepted.inc_by(late_accepted);
        m.pipeline.events_duplicate.inc_by(duplicates);
        self.count_engine_stats();
        self.flush_rows().await?;
        self.progressed(now);
        Ok(())
    }

    /// The task got through a batch or a tick at `now`: ticks stop while it is blocked.
    fn progressed(&self, now: i64) {
        let labels = [self.s.a.topic.as_str(), self.partition_label.as_str()];
        let g = &self.ctx.metrics.pipeline.partition_last_progress_timestamp_seconds;
        g.with_label_values(&labels).set(now as f64 / 1000.0);
    }

    /// A checkpoint saved (or nothing to save): the age starts again.
    fn checkpoint_succeeded(&mut self) {
        self.last_success_ms = now_ms();
        let labels = [self.s.a.topic.as_str(), self.partition_label.as_str()];
        let g = &self.ctx.metrics.pipeline.checkpoint_last_success_timestamp_seconds;
        g.with_label_values(&labels).set(self.last_success_ms as f64 / 1000.0);
    }

    /// Adds what the engine counted since the last call to the pipeline's counters.
    fn count_engine_stats(&mut self) {
        let m = &self.ctx.metrics.pipeline;
        let (now, was) = (self.s.engine.stats(), &self.stats_counted);
        m.events_after_session_final.inc_by(now.after_session_final - was.after_session_final);
        m.sessions_timed_out.inc_by(now.sessions_timed_out - was.sessions_timed_out);
        for (i, kind) in ["source", "plan", "product"].into_iter().enumerate() {
            let n = now.breakdown_overflow[i] - was.breakdown_overflow[i];
            if n > 0 {
                m.breakdown_overflow.with_label_values(&[kind]).inc_by(n);
            }
        }
        self.stats_counted = now.clone();
    }

    /// Whether the message at `offset` is to be processed: not one seen already. An
    /// offset that does not follow on from the last one is logged and counted.
    fn follows_on(&mut self, offset: i64) -> bool {
        let Some(expected) = self.s.next_offset else { return true };
        let (topic, partition) = (&self.s.a.topic, self.s.a.partition);
        let jumps = &self.ctx.metrics.pipeline.offset_jumps;
        if offset < expected {
            // Offsets only go up within one assignment: a message fetched again was
            // processed already. Reported once per run of such messages.
            if !self.rewinding {
                self.rewinding = true;
                jumps.with_label_values(&["rewind"]).inc();
                warn!(
                    topic = %topic, partition, expected, got = offset,
                    "offsets went back: messages below the expected offset were processed already and are \
                     skipped"
                );
            }
            return false;
        }
        self.rewinding = false;
        // One offset more is a transaction's commit marker, which is never delivered.
        if offset > expected + 1 {
            jumps.with_label_values(&["gap"]).inc();
            warn!(
                topic = %topic, partition, expected, got = offset, missing = offset - expected,
                "offsets missing before this message: deleted by retention before they were read, or the \
                 topic was recreated"
            );
        }
        true
    }

    fn dead_letter(&mut self, reason: Reason, msg: &Msg<'_>) {
        self.ctx.metrics.pipeline.events_rejected.with_label_values(&[reason.as_str()]).inc();
        self.ctx.metrics.pipeline.dead_letters.with_label_values(&[reason.as_str()]).inc();
        let d = DeadLetter {
            dlq_topic: self.ctx.dlq_topic.clone(),
            reason: reason.as_str(),
            source_topic: self.s.a.topic.clone(),
            source_partition: self.s.a.partition,
            source_offset: msg.offset,
            key: msg.key.map(<[u8]>::to_vec),
            payload: msg.payload.map(<[u8]>::to_vec).unwrap_or_default(),
            original: None,
        };
        self.dead_letters.send(d);
    }

    async fn flush_rows(&mut self) -> Result<(), PipelineError> {
        if self.rows.is_empty() && self.annotations.is_empty() {
            return Ok(());
        }
        // Counted by kind first: a label lookup per kind, not per row.
        let mut by_kind: Vec<(&'static str, u64)> = Vec::new();
        for r in &self.rows {
            match by_kind.iter_mut().find(|(k, _)| *k == r.kind()) {
                Some((_, n)) => *n += 1,
                None => by_kind.push((r.kind(), 1)),
            }
        }
        for (kind, n) in by_kind {
            self.ctx.metrics.pipeline.rows_emitted.with_label_values(&[kind]).inc_by(n);
        }
        // Every emitted row passes here, before the sink and before any checkpoint.
        self.s.tracker.on_rows(&self.rows);
        let msg = SinkMsg::Batch {
            rows: std::mem::take(&mut self.rows),
            annotations: std::mem::take(&mut self.annotations),
            fence: self.ctx.fence.clone(),
        };
        send_to_sink(&self.ctx.sink, &self.ctx.metrics.pipeline, msg, "rows not handed over").await
    }

    async fn on_tick(&mut self) -> Result<(), PipelineError> {
        let now = now_ms();
        self.s.engine.tick(now, &mut self.rows);
        // Ticks end sessions by timeout too.
        self.count_engine_stats();
        self.flush_rows().await?;
        let rooms = &self.ctx.metrics.rooms;
        let mut running = Vec::new();
        self.s.engine.running(&mut running);
        for r in &running {
            self.s.tracker.observe_running(rooms, r, now);
        }
        self.s.tracker.publish_signals(rooms);
        self.s.tracker.expire(rooms, now, self.ctx.series_ttl_ms);
        let labels = [self.s.a.topic.as_str(), self.partition_label.as_str()];
        if let Some(pmax) = self.s.engine.partition_max_ts() {
            let wm = pmax.saturating_sub(self.s.engine.config().out_of_orderness_ms);
            self.ctx
                .metrics
                .pipeline
                .watermark_lag_seconds
                .with_label_values(&labels)
                .set((now - wm) as f64 / 1000.0);
        }
        self.ctx
            .metrics
            .pipeline
            .checkpoint_age_seconds
            .with_label_values(&labels)
            .set((now - self.last_success_ms) as f64 / 1000.0);
        self.progressed(now);
        let key = (self.s.a.topic.clone(), self.s.a.partition);
        self.ctx.status.top_rooms.lock().expect("poisoned").insert(key.clone(), self.s.tracker.top_by_gmv(5));
        self.ctx.status.live_rooms.lock().expect("poisoned").insert(key, self.s.tracker.live_rooms());
        self.ctx.metrics.pipeline.live_rooms.set(self.ctx.status.live_rooms() as i64);
        Ok(())
    }

    /// Snapshots the state and sends a barrier behind the rows emitted so far; `drain`
    /// has the sink write them at once (a final checkpoint) rather than with its next
    /// batch.
    async fn begin_checkpoint(&mut self, drain: bool) -> Result<Option<Pending>, PipelineError> {
        let Some(next_offset) = self.s.next_offset else {
            self.last_checkpoint = Instant::now();
            self.checkpoint_succeeded();
            return Ok(None);
        };
        let started = Instant::now();
        self.flush_rows().await?;
        // Dead letters are part of "nothing lost": the offset moves past them only
        // once Kafka has them (or they are given up, loudly).
        self.dead_letters.flush().await?;
        let encoding = Instant::now();
        let (engine, rooms) = self.s.engine.snapshot_incremental();
        let ck = Checkpoint {
            topic: self.s.a.topic.clone(),
            partition: self.s.a.partition,
            next_offset,
            epoch: self.s.epoch,
            taken_at_ms: now_ms(),
            engine,
            extra: self.s.tracker.to_checkpoint().map_err(PipelineError::EncodeRoomCounters)?,
        };
        let m = &self.ctx.metrics.pipeline;
        m.snapshot_duration_seconds.observe(encoding.elapsed().as_secs_f64());
        m.snapshot_rooms.with_label_values(&["encoded"]).inc_by(rooms.rooms_encoded as u64);
        m.snapshot_rooms.with_label_values(&["kept"]).inc_by(rooms.rooms_kept as u64);
        let (tx, rx) = oneshot::channel();
        let barrier = SinkMsg::Barrier { ack: tx, drain };
        send_to_sink(
            &self.ctx.sink,
            &self.ctx.metrics.pipeline,
            barrier,
            "checkpoint barrier not handed over",
        )
        .await?;
        Ok(Some(Pending { ck, ack: rx, started }))
    }

    /// [`Self::start_save`] and [`Self::finish_save`] in one: for final checkpoints.
    async fn complete_checkpoint(
        &mut self,
        p: Pending,
        ack: Result<Result<(), Arc<SinkError>>, oneshot::error::RecvError>,
    ) -> Result<(), PipelineError> {
        let Saving { save, off, started } = self.start_save(p, ack)?;
        self.finish_save(off, started, save.await)
    }

    /// The sink answered a checkpoint's barrier: on success, its save starts on a
    /// blocking thread (under the fence).
    fn start_save(
        &mut self,
        p: Pending,
        ack: Result<Result<(), Arc<SinkError>>, oneshot::error::RecvError>,
    ) -> Result<Saving, PipelineError> {
        match ack {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.ctx.metrics.pipeline.checkpoints.with_label_values(&["failed"]).inc();
                return Err(PipelineError::SinkStopped(format!("checkpoint not acknowledged: {e}")));
            }
            Err(_) => return Err(PipelineError::SinkStopped("checkpoint not acknowledged".into())),
        }
        let (state, fence) = (self.s.state.clone(), self.ctx.fence.clone());
        let ck = p.ck;
        let off = ck.next_offset;
        let save = tokio::task::spawn_blocking(move || fence.unless_closed(|| state.save(&ck)));
        Ok(Saving { save, off, started: p.started })
    }

    /// A save ended: the offset is committed, or the failure handled.
    fn finish_save(
        &mut self,
        off: i64,
        started: Instant,
        saved: Result<Option<Result<(), livefunnel_state::StateError>>, tokio::task::JoinError>,
    ) -> Result<(), PipelineError> {
        let topic = self.s.a.topic.clone();
        match saved.map_err(|source| PipelineError::Blocking { what: "checkpoint writer", source })? {
            // Given up on (its revoke timed out): the partition has another owner now.
            None => {
                debug!(topic = %topic, partition = self.s.a.partition, "fenced: checkpoint not saved");
                return Ok(());
            }
            Some(Ok(())) => {}
            // A shared store briefly unreachable, a full or failing disk: the offset stays
            // where it was and the next interval tries again with a newer state, while
            // the last success (and the alert on its age) stays where it was.
            Some(Err(e)) if e.is_retryable() => {
                self.ctx.metrics.pipeline.checkpoints.with_label_values(&["failed"]).inc();
                self.last_checkpoint = Instant::now();
                let since_success_s = (now_ms() - self.last_success_ms) / 1000;
                warn!(topic = %topic, partition = self.s.a.partition, error = %e, since_success_s, "checkpoint not saved; retrying at the next interval");
                return Ok(());
            }
            Some(Err(source)) => {
                return Err(PipelineError::Store { what: "saving a checkpoint".into(), source })
            }
        }
        let _ = self.ctx.commits.send((self.s.a.clone(), off));
        let m = &self.ctx.metrics.pipeline;
        m.checkpoints.with_label_values(&["ok"]).inc();
        m.checkpoint_duration_seconds.observe(started.elapsed().as_secs_f64());
        self.last_checkpoint = Instant::now();
        self.checkpoint_succeeded();
        debug!(topic = %topic, partition = self.s.a.partition, offset = off, "checkpoint");
        Ok(())
    }
}

/// Hands `msg` to the sink, counting the time its back-pressure holds the task.
async fn send_to_sink(
    sink: &mpsc::Sender<SinkMsg>,
    m: &livefunnel_metrics::PipelineMetrics,
    msg: SinkMsg,
    what: &'static str,
) -> Result<(), PipelineError> {
    let msg = match sink.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(PipelineError::SinkStopped(what.into())),
        Err(mpsc::error::TrySendError::Full(msg)) => msg,
    };
    let waited = Instant::now();
    let sent = sink.send(msg).await;
    m.sink_wait_seconds.inc_by(waited.elapsed().as_secs_f64());
    sent.map_err(|_| PipelineError::SinkStopped(what.into()))
}

/// When a partition's checkpoint clock starts: partitions assigned together take their
/// snapshots spread over the interval (by eighths, by partition number) rather than all
/// at once, so the engine threads do not all stall on a snapshot in the same tick.
fn staggered(now: Instant, interval: Duration, partition: i32) -> Instant {
    let eighths = partition.rem_euclid(8) as u32;
    now.checked_sub(interval * eighths / 8).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_checkpoints_are_spread_over_the_interval() {
        let now = Instant::now() + Duration::from_secs(100);
        let interval = Duration::from_secs(8);
        let due: Vec<u64> =
            (0..9).map(|p| (staggered(now, interval, p) + interval - now).as_secs()).collect();
        assert_eq!(due, [8, 7, 6, 5, 4, 3, 2, 1, 8]);
    }

    /// The claims of `livefunnel_state::epoch` and the engine agree on the layout: the
    /// largest epoch a store claims is one the engine takes, and the next is refused.
    #[test]
    fn the_engine_takes_every_epoch_a_store_claims_and_no_more() {
        use livefunnel_state::epoch::{EPOCH_SHIFT, MAX_EPOCH};
        let cfg =
            livefunnel_core::EngineConfig { mode: livefunnel_core::TimeMode::Live, ..Default::default() };
        cfg.validate().unwrap();
        let mut e = Engine::new(cfg);
        e.set_version_epoch(MAX_EPOCH).unwrap();
        assert_eq!(e.version_epoch(), MAX_EPOCH);
        let err = e.set_version_epoch(MAX_EPOCH + 1).unwrap_err();
        assert!(err.to_string().contains("16777215"), "{err}");
        assert_eq!(u64::from(MAX_EPOCH) << EPOCH_SHIFT >> EPOCH_SHIFT, u64::from(MAX_EPOCH));
    }
}
