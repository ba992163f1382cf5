//! The consumer context: rebalances go through the pipeline, which owns where each
//! partition resumes (its checkpoint, not Kafka's committed offset) and must take a
//! final checkpoint before a partition moves to another consumer.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tracing::{error, info, warn};

/// One input partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Assignment {
    pub topic: String,
    pub partition: i32,
}

/// Where a newly assigned partition resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The checkpoint's next offset.
    Offset(i64),
    /// No state: rebuild from the earliest retained message.
    Beginning,
    /// No state, and history is not wanted: only new messages.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Messages between what the consumer handed to the pipeline and the high watermark.
    pub lag: i64,
}

/// The pipeline's side of a rebalance. Both calls run on the thread polling the
/// consumer, inside librdkafka's rebalance callback: they may block, but no
/// message is delivered meanwhile.
pub trait AssignmentHandler: Send + Sync + 'static {
    /// Partitions are about to be assigned; returns where each one resumes, in order.
    fn assigned(&self, parts: &[Assignment]) -> Vec<StartAt>;
    /// A partition was to resume at `start`, past its end offset `end`: its topic was
    /// deleted and created again, or truncated. Returns where it starts instead.
    fn beyond_end(&self, a: &Assignment, start: i64, end: i64) -> StartAt;
    /// Partitions are about to be taken away: stop them and take their final
    /// checkpoints; returns the next offsets to commit.
    fn revoked(&self, parts: &[Assignment]) -> Vec<(Assignment, i64)>;
    /// Consumer lag per partition, from librdkafka's statistics.
    fn lag(&self, _lags: &[PartitionLag]) {}
}

pub struct GroupContext<H> {
    handler: H,
}

impl<H: AssignmentHandler> GroupContext<H> {
    pub fn new(handler: H) -> GroupContext<H> {
        GroupContext { handler }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }
}

fn parts_of(tpl: &TopicPartitionList) -> Vec<Assignment> {
    tpl.elements()
        .iter()
        .map(|e| Assignment { topic: e.topic().to_owned(), partition: e.partition() })
        .collect()
}

impl<H: AssignmentHandler> ClientContext for GroupContext<H> {
    fn stats(&self, s: Statistics) {
        let mut lags = Vec::new();
        for (name, t) in &s.topics {
            for (&p, ps) in &t.partitions {
                // Partition -1 is librdkafka's internal unassigned-messages queue.
                if p < 0 || !ps.desired || ps.hi_offset < 0 || ps.app_offset < 0 {
                    continue;
                }
                lags.push(PartitionLag {
                    topic: name.clone(),
                    partition: p,
                    lag: (ps.hi_offset - ps.app_offset).max(0),
                });
            }
        }
        self.handler.lag(&lags);
    }
}

/// How long an assignment waits for the end offsets of its partitions.
const END_OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the brokers for the end offset of every partition that resumes at an offset,
/// in one request: an offset past the end would otherwise go to `auto.offset.reset`
/// (the beginning, by default) while the pipeline skips every message below its
/// checkpoint's offset as seen already, silently.
fn check_ends<C: ConsumerContext, H: AssignmentHandler>(
    consumer: &BaseConsumer<C>,
    handler: &H,
    parts: &[Assignment],
    starts: &mut [StartAt],
) {
    let mut tpl = TopicPartitionList::new();
    for (p, s) in parts.iter().zip(starts.iter()) {
        if matches!(s, StartAt::Offset(o) if *o > 0) {
            // The offset of timestamp -1 (`Offset::End`) is the partition's end.
            let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::End);
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let ends = match consumer.offsets_for_times(tpl, END_OFFSETS_TIMEOUT) {
        Ok(ends) => ends,
        Err(e) => {
            warn!(error = %e, "end offsets unknown: not checking the start offsets against them");
            return;
        }
    };
    for e in ends.elements() {
        let (Offset::Offset(end), None) = (e.offset(), e.error().err()) else { continue };
        let Some(i) = parts.iter().position(|p| p.topic == e.topic() && p.partition == e.partition()) else {
            continue;
        };
        if let StartAt::Offset(start) = starts[i] {
            if start > end {
                starts[i] = handler.beyond_end(&parts[i], start, end);
            }
        }
    }
}

impl<H: AssignmentHandler> ConsumerContext for GroupContext<H> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts = parts_of(tpl);
                let mut starts = self.handler.assigned(&parts);
                debug_assert_eq!(starts.len(), parts.len());
                check_ends(consumer, &self.handler, &parts, &mut starts);
                for (p, s) in parts.iter().zip(starts) {
                    let offset = match s {
                        StartAt::Offset(o) => Offset::Offset(o),
                        StartAt::Beginning => Offset::Beginning,
                        StartAt::End => Offset::End,
                    };
                    if let Err(e) = tpl.set_partition_offset(&p.topic, p.partition, offset) {
                        error!(topic = %p.topic, partition = p.partition, error = %e, "cannot set the start offset");
                    }
                }
                info!(partitions = ?parts, "partitions assigned");
                let r = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = r {
                    error!(error = %e, "assigning partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts = parts_of(tpl);
                info!(partitions = ?parts, "partitions revoked");
                let commits = self.handler.revoked(&parts);
                if !commits.is_empty() && !consumer.assignment_lost() {
                    let mut c = TopicPartitionList::new();
                    for (a, off) in &commits {
                        let _ = c.add_partition_offset(&a.topic, a.partition, Offset::Offset(*off));
                    }
                    // Only informative: the checkpoint, not this commit, is where a
                    // partition resumes.
                    if let Err(e) = consumer.commit(&c, CommitMode::Sync) {
                        warn!(error = %e, "committing offsets of revoked partitions failed");
                    }
                }
                let r = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = r {
                    error!(error = %e, "unassigning partitions failed");
                }
            }
            other => {
                error!(error = ?other, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}
