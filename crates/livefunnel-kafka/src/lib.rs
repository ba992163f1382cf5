//! Kafka for livefunnel, through rdkafka (librdkafka).
//!
//! - [`GroupContext`]: a consumer context whose rebalance callback asks the pipeline
//!   where each newly assigned partition resumes (its checkpoint's offset) and lets
//!   the pipeline take final checkpoints before a partition is taken away.
//! - [`DeadLetters`]: the dead-letter producer, with the contract's headers (§1.4).
//! - [`client_config`]: librdkafka properties with livefunnel's required settings.

mod context;
mod dlq;

use std::collections::BTreeMap;

pub use context::{Assignment, AssignmentHandler, GroupContext, PartitionLag, StartAt};
pub use dlq::{DeadLetter, DeadLetters};
pub use rdkafka;

use rdkafka::config::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(
        "librdkafka property {key} = {value:?} conflicts with livefunnel: {why}; remove it from [kafka]"
    )]
    Conflict { key: String, value: String, why: &'static str },
}

impl KafkaError {
    /// librdkafka retries transport errors itself; what reaches us is usually final.
    pub fn is_retryable(&self) -> bool {
        match self {
            KafkaError::Client(e) => e.rdkafka_error_code().is_some_and(|c| {
                use rdkafka::types::RDKafkaErrorCode as C;
                matches!(c, C::QueueFull | C::BrokerTransportFailure | C::AllBrokersDown | C::MessageTimedOut)
            }),
            KafkaError::Conflict { .. } => false,
        }
    }
}

/// Settings livefunnel's correctness depends on: offsets are committed by the
/// pipeline, only after a checkpoint, never automatically.
const FORCED_CONSUMER: [(&str, &str, &str); 2] = [
    ("enable.auto.commit", "false", "offsets are committed only after a checkpoint is durable"),
    ("enable.auto.offset.store", "false", "offsets are committed only after a checkpoint is durable"),
];

/// A consumer configuration: the user's properties, livefunnel's defaults where the
/// user set nothing, and the settings correctness needs (conflicting values are an error).
pub fn consumer_config(user: &BTreeMap<String, String>) -> Result<ClientConfig, KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in [
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "5000"),
        ("session.timeout.ms", "10000"),
        ("enable.partition.eof", "false"),
    ] {
        cfg.set(k, v);
    }
    for (k, v) in user {
        cfg.set(k, v);
    }
    for (k, v, why) in FORCED_CONSUMER {
        if let Some(u) = user.get(k) {
            if u != v {
                return Err(KafkaError::Conflict { key: k.into(), value: u.clone(), why });
            }
        }
        cfg.set(k, v);
    }
    Ok(cfg)
}

/// A producer configuration from the same user properties, without consumer-only keys.
pub fn producer_config(user: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("linger.ms", "5");
    cfg.set("enable.idempotence", "true");
    for (k, v) in user {
        if !is_consumer_only(k) {
            cfg.set(k, v);
        }
    }
    cfg
}

fn is_consumer_only(key: &str) -> bool {
    key == "group.id"
        || key == "group.instance.id"
        || key.starts_with("auto.")
        || key.starts_with("enable.auto.")
        || key.starts_with("session.timeout")
        || key.starts_with("heartbeat.")
        || key.starts_with("partition.assignment")
        || key.starts_with("max.poll")
        || key.starts_with("fetch.")
        || key == "enable.partition.eof"
        || key == "isolation.level"
        || key == "check.crcs"
        || key == "group.protocol"
        || key.starts_with("queued.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_commit_cannot_be_turned_on() {
        let mut user = BTreeMap::new();
        user.insert("enable.auto.commit".to_string(), "true".to_string());
        let err = consumer_config(&user).unwrap_err().to_string();
        assert!(err.contains("enable.auto.commit") && err.contains("checkpoint"), "{err}");
    }

    #[test]
    fn user_properties_pass_through_and_defaults_fill_the_rest() {
        let mut user = BTreeMap::new();
        user.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        user.insert("auto.offset.reset".to_string(), "latest".to_string());
        user.insert("group.id".to_string(), "g".to_string());
        let c = consumer_config(&user).unwrap();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        let p = producer_config(&user);
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("group.id"), None);
        assert_eq!(p.get("auto.offset.reset"), None);
    }
}
