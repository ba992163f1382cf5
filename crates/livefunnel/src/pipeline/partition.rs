//! One partition's task: decode, engine, dead letters, room series, checkpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{FuturesUnordered, StreamExt};
use livefunnel_clickhouse::Annotation;
use livefunnel_core::{decode, Engine, Outcome, Reason, Row};
use livefunnel_kafka::{Assignment, DeadLetter, DeadLetters};
use livefunnel_metrics::RoomTracker;
use livefunnel_state::{Checkpoint, CheckpointStore};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sink::SinkMsg;
use super::{now_ms, Metrics, Settings, Status};

/// How often running values, idle partitions and series expiry are looked at: well
/// inside the contract's 1 s for running values to show.
const TICK: Duration = Duration::from_millis(200);

/// One consumed message, copied out of librdkafka's buffer.
#[derive(Debug)]
pub struct InMsg {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

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
    ) -> anyhow::Result<PartitionSetup> {
        let path = state.location(&a.topic, a.partition);
        let (mut engine, mut tracker, next_offset) = match ck {
            Some(ck) => {
                let engine = Engine::restore(s.engine.clone(), &ck.engine)
                    .with_context(|| format!("checkpoint {path}"))?;
                let tracker = RoomTracker::from_checkpoint(&ck.extra)
                    .with_context(|| format!("checkpoint {path}: room counters"))?;
                (engine, tracker, Some(ck.next_offset))
            }
            None => (Engine::new(s.engine.clone()), RoomTracker::default(), None),
        };
        tracker.set_signal_windows(s.signals.clone());
        engine.set_version_epoch(epoch).with_context(|| format!("checkpoint {path}"))?;
        Ok(PartitionSetup { a, engine, tracker, next_offset, epoch, state, privacy: s.privacy.clone() })
    }
}

pub struct Ctx {
    pub dlq: DeadLetters,
    pub dlq_topic: String,
    pub sink: mpsc::Sender<SinkMsg>,
    pub commits: mpsc::UnboundedSender<(Assignment, i64)>,
    pub metrics: Metrics,
    pub status: std::sync::Arc<Status>,
    pub checkpoint_interval_ms: i64,
    pub series_ttl_ms: i64,
    pub abort: CancellationToken,
}

/// A checkpoint whose rows are on their way to the sink.
struct Pending {
    ck: Checkpoint,
    ack: oneshot::Receiver<Result<(), String>>,
    started: Instant,
}

struct Task {
    s: PartitionSetup,
    ctx: Ctx,
    rows: Vec<Row>,
    annotations: Vec<Annotation>,
    /// Dead letters on their way; a failed one comes back with its attempt count.
    dlq_inflight: FuturesUnordered<futures::future::BoxFuture<'static, Result<(), (DeadLetter, u32)>>>,
    last_checkpoint: Instant,
    partition_label: String,
    /// The engine's counters as already added to the pipeline's.
    stats_counted: livefunnel_core::EngineStats,
}

/// Runs until `stop` fires or the consumer loop drops `rx`; then takes a final
/// checkpoint and returns its offset (`None` when nothing was ever consumed).
pub async fn run(
    mut setup: PartitionSetup,
    ctx: Ctx,
    mut rx: mpsc::Receiver<Vec<InMsg>>,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<Option<i64>> {
    setup.tracker.publish(&ctx.metrics.rooms);
    let partition_label = setup.a.partition.to_string();
    let stats_counted = setup.engine.stats().clone();
    let mut t = Task {
        s: setup,
        ctx,
        rows: Vec::new(),
        annotations: Vec::new(),
        dlq_inflight: FuturesUnordered::new(),
        last_checkpoint: Instant::now(),
        partition_label,
        stats_counted,
    };
    let mut pending: Option<Pending> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(r) = t.dlq_inflight.next() => {
                if let Err((d, attempts)) = r {
                    t.ctx.metrics.pipeline.dead_letter_errors.inc();
                    t.send_dead_letter(d, attempts);
                }
            }
            ack = async { (&mut pending.as_mut().expect("guarded").ack).await }, if pending.is_some() => {
                let p = pending.take().expect("guarded");
                t.complete_checkpoint(p, ack).await?;
            }
            batch = rx.recv() => match batch {
                Some(batch) => t.process(batch).await?,
                None => break,
            },
            _ = tick.tick() => {
                t.on_tick().await?;
                if pending.is_none()
                    && t.last_checkpoint.elapsed().as_millis() as i64 >= t.ctx.checkpoint_interval_ms
                {
                    pending = t.begin_checkpoint().await?;
                }
            }
        }
    }
    // Drain: the messages already handed over belong to this owner's final state.
    rx.close();
    while let Some(batch) = rx.recv().await {
        t.process(batch).await?;
    }
    if let Some(p) = pending.take() {
        let ack = tokio::select! {
            a = p.ack => a,
            _ = t.ctx.abort.cancelled() => return Ok(None),
        };
        let p2 = Pending { ck: p.ck, ack: oneshot::channel().1, started: p.started };
        t.complete_checkpoint(p2, ack).await?;
    }
    let last = match t.begin_checkpoint().await? {
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
    async fn process(&mut self, batch: Vec<InMsg>) -> anyhow::Result<()> {
        let now = now_ms();
        let m = self.ctx.metrics.clone();
        for msg in batch {
            // Offsets only go up within one assignment; a message fetched again (around
            // a pause of the partition, say) was processed already.
            if self.s.next_offset.is_some_and(|next| msg.offset < next) {
                debug!(offset = msg.offset, next = ?self.s.next_offset, "message seen already, skipped");
                continue;
            }
            super::test_hooks::panic_at(&self.s.a.topic, self.s.a.partition, msg.offset);
            self.s.next_offset = Some(msg.offset + 1);
            let payload = msg.payload.as_deref().unwrap_or(&[]);
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
                    m.pipeline.events_accepted.inc();
                    if late {
                        m.pipeline.events_late_accepted.inc();
                    }
                    self.s.tracker.on_accepted(&m.rooms, &ev, now);
                    if let Some(a) = Annotation::from_event(&ev) {
                        self.annotations.push(a);
                    }
                }
                Outcome::Duplicate => m.pipeline.events_duplicate.inc(),
                Outcome::Rejected(reason) => self.dead_letter(reason, &msg),
            }
        }
        self.count_engine_stats();
        self.flush_rows().await
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

    fn dead_letter(&mut self, reason: Reason, msg: &InMsg) {
        self.ctx.metrics.pipeline.events_rejected.with_label_values(&[reason.as_str()]).inc();
        self.ctx.metrics.pipeline.dead_letters.with_label_values(&[reason.as_str()]).inc();
        let d = DeadLetter {
            dlq_topic: self.ctx.dlq_topic.clone(),
            reason: reason.as_str(),
            source_topic: self.s.a.topic.clone(),
            source_partition: self.s.a.partition,
            source_offset: msg.offset,
            key: msg.key.clone(),
            payload: msg.payload.clone().unwrap_or_default(),
        };
        self.send_dead_letter(d, 0);
    }

    /// Sends `d`, after `attempts` failed deliveries of it: a failure librdkafka reports
    /// at once (an unknown topic, an authorization error) would otherwise be retried
    /// in a busy loop, so each retry waits twice as long as the one before, up to 5 s.
    fn send_dead_letter(&mut self, d: DeadLetter, attempts: u32) {
        let dlq = self.ctx.dlq.clone();
        self.dlq_inflight.push(Box::pin(async move {
            if attempts > 0 {
                tokio::time::sleep(dead_letter_retry_delay(attempts)).await;
            }
            let mut backoff = Duration::from_millis(50);
            loop {
                match dlq.send(&d) {
                    Ok(fut) => {
                        return match fut.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => {
                                warn!(
                                    error = %e,
                                    attempts = attempts + 1,
                                    retry_in_ms = dead_letter_retry_delay(attempts + 1).as_millis() as u64,
                                    "dead letter not delivered, sending again"
                                );
                                Err((d, attempts + 1))
                            }
                            Err(_) => Err((d, attempts + 1)),
                        };
                    }
                    // A full local queue: wait for deliveries to make room.
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }));
    }

    async fn flush_rows(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() && self.annotations.is_empty() {
            return Ok(());
        }
        for r in &self.rows {
            self.ctx.metrics.pipeline.rows_emitted.with_label_values(&[r.kind()]).inc();
        }
        // Every emitted row passes here, before the sink and before any checkpoint.
        self.s.tracker.on_rows(&self.rows);
        let msg = SinkMsg::Batch {
            rows: std::mem::take(&mut self.rows),
            annotations: std::mem::take(&mut self.annotations),
        };
        self.ctx.sink.send(msg).await.map_err(|_| anyhow::anyhow!("the sink stopped"))
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
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
            .set(self.last_checkpoint.elapsed().as_secs_f64());
        let key = (self.s.a.topic.clone(), self.s.a.partition);
        self.ctx.status.top_rooms.lock().expect("poisoned").insert(key.clone(), self.s.tracker.top_by_gmv(5));
        self.ctx.status.live_rooms.lock().expect("poisoned").insert(key, self.s.tracker.live_rooms());
        self.ctx.metrics.pipeline.live_rooms.set(self.ctx.status.live_rooms() as i64);
        Ok(())
    }

    /// Snapshots the state and sends a barrier behind the rows emitted so far.
    async fn begin_checkpoint(&mut self) -> anyhow::Result<Option<Pending>> {
        let Some(next_offset) = self.s.next_offset else {
            self.last_checkpoint = Instant::now();
            return Ok(None);
        };
        let started = Instant::now();
        self.flush_rows().await?;
        // Dead letters are part of "nothing lost": the offset moves past them only
        // once Kafka has them.
        while let Some(r) = self.dlq_inflight.next().await {
            if let Err((d, attempts)) = r {
                self.ctx.metrics.pipeline.dead_letter_errors.inc();
                self.send_dead_letter(d, attempts);
            }
        }
        let ck = Checkpoint {
            topic: self.s.a.topic.clone(),
            partition: self.s.a.partition,
            next_offset,
            epoch: self.s.epoch,
            taken_at_ms: now_ms(),
            engine: self.s.engine.snapshot(),
            extra: self.s.tracker.to_checkpoint().context("encoding room counters")?,
        };
        let (tx, rx) = oneshot::channel();
        self.ctx.sink.send(SinkMsg::Barrier(tx)).await.map_err(|_| anyhow::anyhow!("the sink stopped"))?;
        Ok(Some(Pending { ck, ack: rx, started }))
    }

    async fn complete_checkpoint(
        &mut self,
        p: Pending,
        ack: Result<Result<(), String>, oneshot::error::RecvError>,
    ) -> anyhow::Result<()> {
        match ack {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.ctx.metrics.pipeline.checkpoints.with_label_values(&["failed"]).inc();
                anyhow::bail!(
                    "checkpoint of {}/{} failed: the sink: {e}",
                    self.s.a.topic,
                    self.s.a.partition
                );
            }
            Err(_) => anyhow::bail!("the sink stopped before acknowledging a checkpoint"),
        }
        let state = self.s.state.clone();
        let ck = p.ck;
        let (topic, off) = (ck.topic.clone(), ck.next_offset);
        match tokio::task::spawn_blocking(move || state.save(&ck)).await.context("checkpoint writer")? {
            Ok(()) => {}
            // A shared store that is briefly unreachable: the offset stays where it was
            // and the next interval tries again with a newer state.
            Err(e) if e.is_retryable() => {
                self.ctx.metrics.pipeline.checkpoints.with_label_values(&["failed"]).inc();
                self.last_checkpoint = Instant::now();
                warn!(topic = %topic, partition = self.s.a.partition, error = %e, "checkpoint not saved; retrying at the next interval");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let _ = self.ctx.commits.send((self.s.a.clone(), off));
        let m = &self.ctx.metrics.pipeline;
        m.checkpoints.with_label_values(&["ok"]).inc();
        m.checkpoint_duration_seconds.observe(p.started.elapsed().as_secs_f64());
        self.last_checkpoint = Instant::now();
        debug!(topic = %topic, partition = self.s.a.partition, offset = off, "checkpoint");
        Ok(())
    }
}

/// The wait before the `attempts`-th resend of a dead letter: 100 ms, doubling, at most 5 s.
fn dead_letter_retry_delay(attempts: u32) -> Duration {
    debug_assert!(attempts > 0, "the first send does not wait");
    Duration::from_millis(100u64.saturating_mul(1 << attempts.saturating_sub(1).min(10)))
        .min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_retries_back_off_to_five_seconds() {
        let ms = |a| dead_letter_retry_delay(a).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(6), ms(7), ms(40), ms(u32::MAX)],
            [100, 200, 400, 3_200, 5_000, 5_000, 5_000]
        );
    }
}
