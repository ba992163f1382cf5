//! The dead-letter output of contract §1.4: the original bytes as value, and headers
//! `livefunnel.reason`, `livefunnel.source.topic`, `livefunnel.source.partition`,
//! `livefunnel.source.offset`.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
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
    /// A full local queue is returned as an error (retryable) without blocking.
    pub fn send(&self, d: &DeadLetter) -> Result<DeliveryFuture, KafkaError> {
        let partition = d.source_partition.to_string();
        let offset = d.source_offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: "livefunnel.reason", value: Some(d.reason) })
            .insert(Header { key: "livefunnel.source.topic", value: Some(d.source_topic.as_str()) })
            .insert(Header { key: "livefunnel.source.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "livefunnel.source.offset", value: Some(offset.as_str()) });
        let mut rec: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&d.dlq_topic).payload(&d.payload[..]).headers(headers);
        if let Some(k) = &d.key {
            rec = rec.key(&k[..]);
        }
        self.producer.send_result(rec).map_err(|(e, _)| KafkaError::Client(e))
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}
