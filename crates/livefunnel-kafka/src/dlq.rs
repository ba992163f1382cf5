//! The dead-letter output of contract §1.4: the original bytes as value, and headers
//! `livefunnel.reason`, `livefunnel.source.topic`, `livefunnel.source.partition`,
//! `livefunnel.source.offset`.
//!
//! A message too large for the producer (`message.max.bytes`, or the topic's limit on
//! the broker) is sent as its first bytes instead ([`DeadLetter::truncated`]), with
//! two more headers: `livefunnel.original.size` (its length in bytes) and
//! `livefunnel.original.xxh3` (the XXH3-64 of the whole message, 16 hex digits).

use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode as C;
use rdkafka::ClientConfig;

use crate::KafkaError;

/// One rejected message, owned so a failed delivery can be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub dlq_topic: String,
    pub reason: &'static str,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Set when `payload` is only the start of the message.
    pub original: Option<Original>,
}

/// What a truncated dead letter says about the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    pub size: usize,
    pub xxh3: u64,
}

impl DeadLetter {
    /// The same dead letter with only the first `max_bytes` of its message (and of its
    /// key), and the whole message's size and checksum in its headers.
    pub fn truncated(&self, max_bytes: usize) -> DeadLetter {
        let original = self.original.unwrap_or(Original {
            size: self.payload.len(),
            xxh3: xxhash_rust::xxh3::xxh3_64(&self.payload),
        });
        let cut = |b: &[u8]| b[..b.len().min(max_bytes)].to_vec();
        DeadLetter {
            payload: cut(&self.payload),
            key: self.key.as_deref().map(cut),
            original: Some(original),
            ..self.clone()
        }
    }
}

/// What a failed attempt to produce a dead letter calls for, from librdkafka's error
/// code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The producer's local queue is full: wait for deliveries to make room.
    QueueFull,
    /// Something about the destination (brokers, the topic, permissions, a timeout):
    /// the same message can go through once it is fixed, so it is sent again.
    Retryable,
    /// The message is above the producer's or the broker's size limit.
    TooLarge,
    /// This message can never be produced as it is.
    Permanent,
    /// The producer itself is unusable (librdkafka's fatal error, idempotence).
    Fatal,
}

impl Failure {
    pub fn of(e: &RdError) -> Failure {
        match e.rdkafka_error_code() {
            Some(C::QueueFull) => Failure::QueueFull,
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge) => Failure::TooLarge,
            Some(
                C::InvalidMessage
                | C::InvalidMessageSize
                | C::BadMessage
                | C::InvalidRecord
                | C::InvalidTimestamp
                | C::InvalidArgument
                | C::PolicyViolation
                | C::UnsupportedForMessageFormat
                | C::InvalidRequiredAcks,
            ) => Failure::Permanent,
            Some(C::Fatal) => Failure::Fatal,
            // Unknown codes are retried: holding the partition back is loud (its
            // checkpoint ages, errors are counted) and loses nothing.
            _ => Failure::Retryable,
        }
    }

    /// The `kind` label of `livefunnel_dead_letter_errors_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Failure::QueueFull | Failure::Retryable => "retryable",
            Failure::TooLarge => "too_large",
            Failure::Permanent | Failure::Fatal => "permanent",
        }
    }
}

#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
}

impl DeadLetters {
    pub fn new(cfg: &ClientConfig) -> Result<DeadLetters, KafkaError> {
        Ok(DeadLetters { producer: cfg.create()? })
    }

    /// Queues one dead letter; the returned future resolves when the broker has it.
    /// A full local queue, or a message above `message.max.bytes`, is returned as an
    /// error at once ([`Failure::of`] says which).
    pub fn send(&self, d: &DeadLetter) -> Result<DeliveryFuture, RdError> {
        let partition = d.source_partition.to_string();
        let offset = d.source_offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header { key: "livefunnel.reason", value: Some(d.reason) })
            .insert(Header { key: "livefunnel.source.topic", value: Some(d.source_topic.as_str()) })
            .insert(Header { key: "livefunnel.source.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "livefunnel.source.offset", value: Some(offset.as_str()) });
        if let Some(o) = d.original {
            let size = o.size.to_string();
            let xxh3 = format!("{:016x}", o.xxh3);
            headers = headers
                .insert(Header { key: "livefunnel.original.size", value: Some(size.as_str()) })
                .insert(Header { key: "livefunnel.original.xxh3", value: Some(xxh3.as_str()) });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&d.dlq_topic).payload(&d.payload[..]).headers(headers);
        if let Some(k) = &d.key {
            rec = rec.key(&k[..]);
        }
        self.producer.send_result(rec).map_err(|(e, _)| e)
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: &[u8]) -> DeadLetter {
        DeadLetter {
            dlq_topic: "in.dlq".into(),
            reason: "oversize",
            source_topic: "in".into(),
            source_partition: 3,
            source_offset: 42,
            key: Some(b"room-1".to_vec()),
            payload: payload.to_vec(),
            original: None,
        }
    }

    #[test]
    fn a_truncated_letter_keeps_its_prefix_and_describes_the_whole() {
        let whole: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let t = letter(&whole).truncated(1000);
        assert_eq!(t.payload, &whole[..1000]);
        assert_eq!(t.key.as_deref(), Some(&b"room-1"[..]));
        assert_eq!(t.original, Some(Original { size: 100_000, xxh3: xxhash_rust::xxh3::xxh3_64(&whole) }));
        assert_eq!((t.source_partition, t.source_offset, t.reason), (3, 42, "oversize"));
        // Truncated again (a smaller limit), it still describes the original message.
        assert_eq!(t.truncated(10).original, t.original);
    }

    #[test]
    fn failures_are_sorted_by_librdkafka_code() {
        let produce = |c| RdError::MessageProduction(c);
        assert_eq!(Failure::of(&produce(C::QueueFull)), Failure::QueueFull);
        assert_eq!(Failure::of(&produce(C::MessageSizeTooLarge)), Failure::TooLarge);
        assert_eq!(Failure::of(&produce(C::InvalidRecord)), Failure::Permanent);
        assert_eq!(Failure::of(&produce(C::Fatal)), Failure::Fatal);
        for c in [
            C::MessageTimedOut,
            C::UnknownTopic,
            C::UnknownTopicOrPartition,
            C::TopicAuthorizationFailed,
            C::AllBrokersDown,
            C::NotEnoughReplicas,
        ] {
            assert_eq!(Failure::of(&produce(c)), Failure::Retryable, "{c:?}");
        }
        assert_eq!(Failure::TooLarge.kind(), "too_large");
    }
}
