//! One partition's dead letters on their way to the dead-letter topic. A checkpoint
//! waits for every one of them ([`Outbox::flush`]): bad input is never lost, so an
//! offset moves past a rejected message only once Kafka has its dead letter. What
//! cannot be delivered must not hold the partition back for good, so a failure is
//! handled by its kind ([`Failure`]):
//!
//! - the destination (brokers down, the topic missing, a permission, a timeout): sent
//!   again, with backoff, until it works; the partition's checkpoints wait meanwhile
//!   (its checkpoint age and `livefunnel_dead_letter_errors_total{kind="retryable"}`
//!   show it);
//! - too large for the producer (`message.max.bytes`, or the topic's limit): sent
//!   again as its first `kafka.dlq_truncate_bytes` bytes, with the original size and
//!   checksum in headers (`livefunnel_dead_letters_truncated_total`);
//! - this message can never be produced (an invalid record, a policy violation, still
//!   too large once truncated): a few attempts, then it is given up — logged as an
//!   error with its source topic, partition and offset, counted in
//!   `livefunnel_dead_letters_lost_total{reason}` — and the partition moves on;
//! - the producer itself is unusable (librdkafka's fatal error): the pipeline stops.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use livefunnel_kafka::{DeadLetter, DeadLetters, Failure};
use livefunnel_metrics::PipelineMetrics;
use tracing::{error, warn};

use crate::PipelineError;

/// Attempts at a dead letter that no retry can fix, before it is given up.
const PERMANENT_ATTEMPTS: u32 = 5;

/// One attempt at a dead letter, over.
struct Attempted {
    d: DeadLetter,
    /// Failed attempts before this one.
    before: u32,
    failed: Option<(Failure, String)>,
}

pub struct Outbox {
    dlq: DeadLetters,
    truncate_bytes: usize,
    metrics: PipelineMetrics,
    inflight: FuturesUnordered<BoxFuture<'static, Attempted>>,
}

impl Outbox {
    pub fn new(dlq: DeadLetters, truncate_bytes: usize, metrics: PipelineMetrics) -> Outbox {
        debug_assert!(truncate_bytes > 0, "checked with the configuration");
        Outbox { dlq, truncate_bytes, metrics, inflight: FuturesUnordered::new() }
    }

    pub fn send(&mut self, d: DeadLetter) {
        self.attempt(d, 0);
    }

    /// The next attempt that ended, handled: delivered, sent again, truncated or given
    /// up. `None` when nothing is on its way; an error when the producer is unusable.
    pub async fn next(&mut self) -> Option<Result<(), PipelineError>> {
        let a = self.inflight.next().await?;
        Some(self.handle(a))
    }

    /// Waits until every dead letter is delivered or given up.
    pub async fn flush(&mut self) -> Result<(), PipelineError> {
        while let Some(r) = self.next().await {
            r?;
        }
        Ok(())
    }

    /// Sends `d` after `before` failed attempts (waiting first, when there were some).
    fn attempt(&mut self, d: DeadLetter, before: u32) {
        let dlq = self.dlq.clone();
        self.inflight.push(Box::pin(async move {
            if before > 0 {
                tokio::time::sleep(retry_delay(before)).await;
            }
            let mut backoff = Duration::from_millis(50);
            loop {
                let failed = match dlq.send(&d) {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => None,
                        Ok(Err((e, _))) => Some((Failure::of(&e), e.to_string())),
                        Err(_) => Some((Failure::Retryable, "the delivery report was lost".to_owned())),
                    },
                    // A full local queue: wait for deliveries to make room.
                    Err(e) if Failure::of(&e) == Failure::QueueFull => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                    Err(e) => Some((Failure::of(&e), e.to_string())),
                };
                return Attempted { d, before, failed };
            }
        }));
    }

    fn handle(&mut self, a: Attempted) -> Result<(), PipelineError> {
        let Some((failure, error)) = a.failed else { return Ok(()) };
        let (d, attempts) = (a.d, a.before + 1);
        self.metrics.dead_letter_errors.with_label_values(&[failure.kind()]).inc();
        let too_long = |b: &[u8]| b.len() > self.truncate_bytes;
        match failure {
            Failure::TooLarge if too_long(&d.payload) || d.key.as_deref().is_some_and(too_long) => {
                self.metrics.dead_letters_truncated.inc();
                warn!(
                    topic = %d.source_topic, partition = d.source_partition, offset = d.source_offset,
                    reason = d.reason, bytes = d.payload.len(), sent_bytes = self.truncate_bytes, error = %error,
                    "dead letter too large for the producer: sending its first kafka.dlq_truncate_bytes bytes, \
                     with its size and checksum in headers"
                );
                self.attempt(d.truncated(self.truncate_bytes), 0);
            }
            Failure::TooLarge | Failure::Permanent if attempts >= PERMANENT_ATTEMPTS => {
                self.metrics.dead_letters_lost.with_label_values(&[d.reason]).inc();
                error!(
                    topic = %d.source_topic, partition = d.source_partition, offset = d.source_offset,
                    reason = d.reason, bytes = d.payload.len(), attempts, error = %error,
                    "dead letter lost: the dead-letter topic does not take it; the original message is at \
                     this topic, partition and offset while the input topic retains it"
                );
            }
            Failure::Fatal => return Err(PipelineError::DeadLetters(error)),
            Failure::QueueFull | Failure::Retryable | Failure::TooLarge | Failure::Permanent => {
                warn!(
                    topic = %d.source_topic, partition = d.source_partition, offset = d.source_offset,
                    error = %error, kind = failure.kind(), attempts,
                    retry_in_ms = retry_delay(attempts).as_millis() as u64,
                    "dead letter not delivered, sending again"
                );
                self.attempt(d, attempts);
            }
        }
        Ok(())
    }
}

/// The wait before the `attempts`-th resend of a dead letter: 100 ms, doubling, at most
/// 5 s. A failure librdkafka reports at once (an unknown topic, an authorization
/// error) would otherwise be retried in a busy loop.
fn retry_delay(attempts: u32) -> Duration {
    debug_assert!(attempts > 0, "the first send does not wait");
    Duration::from_millis(100u64.saturating_mul(1 << attempts.saturating_sub(1).min(10)))
        .min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livefunnel_kafka::rdkafka::mocking::MockCluster;
    use livefunnel_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    fn letter(payload: Vec<u8>) -> DeadLetter {
        DeadLetter {
            dlq_topic: "in.dlq".into(),
            reason: "malformed_json",
            source_topic: "in".into(),
            source_partition: 0,
            source_offset: 7,
            key: None,
            payload,
            original: None,
        }
    }

    /// An outbox on `mock` with livefunnel's producer settings (librdkafka's default
    /// `message.max.bytes`), dead letters truncated to 1000 bytes.
    fn outbox(
        mock: &MockCluster<'_, impl livefunnel_kafka::rdkafka::ClientContext>,
    ) -> (Outbox, PipelineMetrics) {
        let props = [("bootstrap.servers".to_owned(), mock.bootstrap_servers())].into_iter().collect();
        let dlq = DeadLetters::new(&livefunnel_kafka::producer_config(&props)).unwrap();
        let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
        (Outbox::new(dlq, 1000, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn a_dead_letter_too_large_for_the_producer_goes_out_truncated() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("in.dlq", 1, 1).unwrap();
        let (mut outbox, m) = outbox(&mock);
        outbox.send(letter(vec![b'x'; 1_100_000]));
        outbox.flush().await.unwrap();
        assert_eq!(m.dead_letters_truncated.get(), 1);
        assert_eq!(m.dead_letter_errors.with_label_values(&["too_large"]).get(), 1);
        assert_eq!(m.dead_letters_lost.with_label_values(&["malformed_json"]).get(), 0);
    }

    #[tokio::test]
    async fn a_dead_letter_the_broker_refuses_for_good_is_given_up_and_counted() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("in.dlq", 1, 1).unwrap();
        let refused = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; PERMANENT_ATTEMPTS as usize];
        mock.request_errors(RDKafkaApiKey::Produce, &refused);
        let (mut outbox, m) = outbox(&mock);
        outbox.send(letter(b"not json".to_vec()));
        // Returns: the partition is not held back for good.
        outbox.flush().await.unwrap();
        assert_eq!(
            m.dead_letter_errors.with_label_values(&["permanent"]).get(),
            u64::from(PERMANENT_ATTEMPTS)
        );
        assert_eq!(m.dead_letters_lost.with_label_values(&["malformed_json"]).get(), 1);
        // The next one goes through.
        outbox.send(letter(b"not json either".to_vec()));
        outbox.flush().await.unwrap();
        assert_eq!(m.dead_letters_lost.with_label_values(&["malformed_json"]).get(), 1);
    }

    #[test]
    fn dead_letter_retries_back_off_to_five_seconds() {
        let ms = |a| retry_delay(a).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(6), ms(7), ms(40), ms(u32::MAX)],
            [100, 200, 400, 3_200, 5_000, 5_000, 5_000]
        );
    }
}
