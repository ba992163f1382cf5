//! Pipeline health series (contract §4, last bullet). No room labels: their
//! cardinality is bounded by partitions, reasons and row kinds.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// `kind` of `livefunnel_dead_letter_errors_total`: `retryable` (the destination:
/// brokers, the topic, permissions, timeouts; retried until it works), `too_large` (the
/// message is above the producer's limit; sent again truncated), `permanent` (this
/// message can never be produced; a few attempts, then lost).
pub const DEAD_LETTER_ERROR_KINDS: [&str; 3] = ["retryable", "too_large", "permanent"];

/// `kind` of `livefunnel_offset_jumps_total`: `gap` (the next message came after the
/// expected offset: messages missing), `beyond_end` (a checkpoint's offset is past the
/// partition's end: a recreated or truncated topic), `rewind` (a message below the
/// expected offset: seen already, skipped).
pub const OFFSET_JUMP_KINDS: [&str; 3] = ["gap", "beyond_end", "rewind"];

/// `how` of `livefunnel_snapshot_rooms_total`: `encoded` (changed since the
/// partition's last snapshot), `kept` (unchanged: the bytes of the last one reused).
pub const SNAPSHOT_ROOM_KINDS: [&str; 2] = ["encoded", "kept"];

#[derive(Clone)]
pub struct PipelineMetrics {
    /// Messages read from Kafka, valid or not.
    pub events_consumed: IntCounterVec,
    pub events_accepted: IntCounter,
    pub events_rejected: IntCounterVec,
    pub events_duplicate: IntCounter,
    /// Accepted with `ts < W`: corrections to windows possibly already shown.
    pub events_late_accepted: IntCounter,
    pub events_after_session_final: IntCounter,
    pub dead_letters: IntCounterVec,
    /// Failed attempts to produce a dead letter, by [`DEAD_LETTER_ERROR_KINDS`].
    pub dead_letter_errors: IntCounterVec,
    /// Dead letters sent as a prefix of the message: too large for the producer.
    pub dead_letters_truncated: IntCounter,
    /// Dead letters given up on (an error no retry can fix), by reason.
    pub dead_letters_lost: IntCounterVec,
    /// Offsets that did not follow on, by [`OFFSET_JUMP_KINDS`].
    pub offset_jumps: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    /// Wall clock minus the partition's event-time watermark, in seconds.
    pub watermark_lag_seconds: prometheus::GaugeVec,
    pub rows_emitted: IntCounterVec,
    pub checkpoints: IntCounterVec,
    pub checkpoint_duration_seconds: Histogram,
    /// Time a partition's engine thread spent encoding the state for a checkpoint:
    /// the partition (and the others on its thread) handle no event meanwhile.
    pub snapshot_duration_seconds: Histogram,
    /// Rooms written by snapshots, by [`SNAPSHOT_ROOM_KINDS`]: encoded (changed since
    /// the partition's last snapshot) or kept (unchanged, their bytes reused).
    pub snapshot_rooms: IntCounterVec,
    pub checkpoint_age_seconds: prometheus::GaugeVec,
    /// Wall clock of the partition's last checkpoint saved and committed (or of its
    /// assignment, before the first): alerts use `time() - x`, which grows even when the
    /// partition's task is blocked and cannot update anything.
    pub checkpoint_last_success_timestamp_seconds: prometheus::GaugeVec,
    /// Wall clock of the last batch or tick the partition's task got through; a blocked
    /// task (a sink that takes nothing, a hung save) stops moving it.
    pub partition_last_progress_timestamp_seconds: prometheus::GaugeVec,
    pub partitions_assigned: IntGauge,
    pub live_rooms: IntGauge,
    /// Events counted under `__other__` by the breakdown key cap, by kind.
    pub breakdown_overflow: IntCounterVec,
    /// Sessions ended by `session_idle_timeout` without a `session_end`.
    pub sessions_timed_out: IntCounter,
    /// Seconds partition tasks waited to hand rows or a barrier to the sink: the
    /// sink's back-pressure (ClickHouse slow or down), summed over partitions.
    pub sink_wait_seconds: prometheus::Counter,
    /// Set by `/metrics` after each render: the next scrape shows how long the one
    /// before it took to render, transfer not included.
    pub metrics_render_seconds: prometheus::Gauge,
}

impl PipelineMetrics {
    pub fn new(registry: &Registry) -> Result<PipelineMetrics, prometheus::Error> {
        let part = &["topic", "partition"];
        let m = PipelineMetrics {
            events_consumed: IntCounterVec::new(
                Opts::new("livefunnel_events_consumed_total", "messages read from the input topics"),
                part,
            )?,
            events_accepted: IntCounter::new("livefunnel_events_accepted_total", "events accepted")?,
            events_rejected: IntCounterVec::new(
                Opts::new("livefunnel_events_rejected_total", "events rejected, by contract reason"),
                &["reason"],
            )?,
            events_duplicate: IntCounter::new(
                "livefunnel_events_duplicate_total",
                "events dropped as duplicates inside the acceptance horizon",
            )?,
            events_late_accepted: IntCounter::new(
                "livefunnel_events_late_accepted_total",
                "events accepted behind the acceptance watermark (corrections)",
            )?,
            events_after_session_final: IntCounter::new(
                "livefunnel_events_after_session_final_total",
                "accepted events of a session whose row is already final",
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new("livefunnel_dead_letters_total", "messages written to the dead-letter topic"),
                &["reason"],
            )?,
            dead_letter_errors: IntCounterVec::new(
                Opts::new(
                    "livefunnel_dead_letter_errors_total",
                    "failed attempts to write to the dead-letter topic, by kind",
                ),
                &["kind"],
            )?,
            dead_letters_truncated: IntCounter::new(
                "livefunnel_dead_letters_truncated_total",
                "dead letters too large for the producer, sent as a prefix of the message",
            )?,
            dead_letters_lost: IntCounterVec::new(
                Opts::new(
                    "livefunnel_dead_letters_lost_total",
                    "dead letters given up on after an error no retry can fix, by reason",
                ),
                &["reason"],
            )?,
            offset_jumps: IntCounterVec::new(
                Opts::new(
                    "livefunnel_offset_jumps_total",
                    "input offsets that did not follow on from the expected one, by kind",
                ),
                &["kind"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("livefunnel_kafka_consumer_lag", "messages behind the partition's high watermark"),
                part,
            )?,
            watermark_lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "livefunnel_watermark_lag_seconds",
                    "wall clock minus the partition's event-time watermark",
                ),
                part,
            )?,
            rows_emitted: IntCounterVec::new(
                Opts::new("livefunnel_rows_emitted_total", "result rows emitted, by kind"),
                &["kind"],
            )?,
            checkpoints: IntCounterVec::new(
                Opts::new("livefunnel_checkpoints_total", "checkpoints taken, by result"),
                &["result"],
            )?,
            checkpoint_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "livefunnel_checkpoint_duration_seconds",
                    "from the snapshot to the committed offset",
                )
                .buckets(exponential_buckets(0.005, 2.0, 14)?),
            )?,
            snapshot_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "livefunnel_snapshot_duration_seconds",
                    "time a partition's engine thread spent encoding its state for a checkpoint",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 14)?),
            )?,
            snapshot_rooms: IntCounterVec::new(
                Opts::new(
                    "livefunnel_snapshot_rooms_total",
                    "rooms written by checkpoint snapshots: encoded (changed since the last) or kept (bytes reused)",
                ),
                &["how"],
            )?,
            checkpoint_age_seconds: prometheus::GaugeVec::new(
                Opts::new("livefunnel_checkpoint_age_seconds", "seconds since the last completed checkpoint"),
                part,
            )?,
            checkpoint_last_success_timestamp_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "livefunnel_checkpoint_last_success_timestamp_seconds",
                    "wall clock of the partition's last checkpoint saved and committed (of its assignment before)",
                ),
                part,
            )?,
            partition_last_progress_timestamp_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "livefunnel_partition_last_progress_timestamp_seconds",
                    "wall clock of the last batch or tick the partition's task got through",
                ),
                part,
            )?,
            partitions_assigned: IntGauge::new(
                "livefunnel_partitions_assigned",
                "input partitions this process owns",
            )?,
            live_rooms: IntGauge::new("livefunnel_live_rooms", "rooms with a live session")?,
            breakdown_overflow: IntCounterVec::new(
                Opts::new(
                    "livefunnel_breakdown_overflow_total",
                    "events counted under the breakdown key __other__ (limits.max_breakdown_keys), by kind",
                ),
                &["kind"],
            )?,
            sessions_timed_out: IntCounter::new(
                "livefunnel_sessions_timed_out_total",
                "sessions ended by session_idle_timeout without a session_end",
            )?,
            sink_wait_seconds: prometheus::Counter::new(
                "livefunnel_sink_wait_seconds_total",
                "seconds partition tasks waited to hand rows to the sink (its back-pressure), summed over partitions",
            )?,
            metrics_render_seconds: prometheus::Gauge::new(
                "livefunnel_metrics_render_seconds",
                "seconds the previous /metrics took to render, transfer not included",
            )?,
        };
        registry.register(Box::new(m.events_consumed.clone()))?;
        registry.register(Box::new(m.events_accepted.clone()))?;
        registry.register(Box::new(m.events_rejected.clone()))?;
        registry.register(Box::new(m.events_duplicate.clone()))?;
        registry.register(Box::new(m.events_late_accepted.clone()))?;
        registry.register(Box::new(m.events_after_session_final.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.dead_letter_errors.clone()))?;
        registry.register(Box::new(m.dead_letters_truncated.clone()))?;
        registry.register(Box::new(m.dead_letters_lost.clone()))?;
        registry.register(Box::new(m.offset_jumps.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.watermark_lag_seconds.clone()))?;
        registry.register(Box::new(m.rows_emitted.clone()))?;
        registry.register(Box::new(m.checkpoints.clone()))?;
        registry.register(Box::new(m.checkpoint_duration_seconds.clone()))?;
        registry.register(Box::new(m.snapshot_duration_seconds.clone()))?;
        registry.register(Box::new(m.snapshot_rooms.clone()))?;
        registry.register(Box::new(m.checkpoint_age_seconds.clone()))?;
        registry.register(Box::new(m.checkpoint_last_success_timestamp_seconds.clone()))?;
        registry.register(Box::new(m.partition_last_progress_timestamp_seconds.clone()))?;
        registry.register(Box::new(m.partitions_assigned.clone()))?;
        registry.register(Box::new(m.live_rooms.clone()))?;
        registry.register(Box::new(m.breakdown_overflow.clone()))?;
        registry.register(Box::new(m.sessions_timed_out.clone()))?;
        registry.register(Box::new(m.sink_wait_seconds.clone()))?;
        registry.register(Box::new(m.metrics_render_seconds.clone()))?;
        for kind in ["source", "plan", "product"] {
            m.breakdown_overflow.with_label_values(&[kind]);
        }
        for reason in livefunnel_core::Reason::ALL {
            // Every reason shows from the start, so `rate()` sees the first rejection.
            m.events_rejected.with_label_values(&[reason.as_str()]);
            m.dead_letters.with_label_values(&[reason.as_str()]);
            m.dead_letters_lost.with_label_values(&[reason.as_str()]);
        }
        for kind in DEAD_LETTER_ERROR_KINDS {
            m.dead_letter_errors.with_label_values(&[kind]);
        }
        for kind in OFFSET_JUMP_KINDS {
            m.offset_jumps.with_label_values(&[kind]);
        }
        for how in SNAPSHOT_ROOM_KINDS {
            m.snapshot_rooms.with_label_values(&[how]);
        }
        Ok(m)
    }

    /// Drops a partition's series when it is revoked.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let labels = [topic, p.as_str()];
        let _ = self.consumer_lag.remove_label_values(&labels);
        let _ = self.watermark_lag_seconds.remove_label_values(&labels);
        let _ = self.checkpoint_age_seconds.remove_label_values(&labels);
        let _ = self.checkpoint_last_success_timestamp_seconds.remove_label_values(&labels);
        let _ = self.partition_last_progress_timestamp_seconds.remove_label_values(&labels);
    }
}
