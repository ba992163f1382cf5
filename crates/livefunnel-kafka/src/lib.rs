//! Kafka for livefunnel, through rdkafka (librdkafka).
//!
//! - [`GroupContext`]: a consumer context whose rebalance callback asks the pipeline
//!   where each newly assigned partition resumes (its checkpoint's offset) and lets
//!   the pipeline take final checkpoints before a partition is taken away.
//! - [`DeadLetters`]: the dead-letter producer, with the contract's headers (§1.4);
//!   [`Failure`] sorts its errors into retry, truncate, give up.
//! - [`KafkaCheckpointStore`]: partition checkpoints on a compacted topic, shared by
//!   every instance of the group.
//! - [`consumer_config`], [`producer_config`]: librdkafka properties with livefunnel's
//!   required settings.

mod checkpoint;
mod context;
mod dlq;

use std::collections::BTreeMap;

pub use checkpoint::{KafkaCheckpointStore, KafkaStoreSettings};
pub use context::{Assignment, AssignmentHandler, GroupContext, PartitionLag, StartAt};
pub use dlq::{DeadLetter, DeadLetters, Failure, Original};
pub use rdkafka;

use rdkafka::config::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Built with `From`, which replaces the value of a secret property in a
    /// configuration error (rdkafka prints the value) by [`REDACTED`].
    #[error("kafka client: {0}")]
    Client(rdkafka::error::KafkaError),
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

impl From<rdkafka::error::KafkaError> for KafkaError {
    fn from(e: rdkafka::error::KafkaError) -> KafkaError {
        KafkaError::Client(redact_error(e))
    }
}

/// What a secret property's value prints as.
pub const REDACTED: &str = "[redacted]";

/// Whether a librdkafka property holds a secret: a password, a client secret, a
/// private key or its location, or credentials (`sasl.username` too: librdkafka
/// itself treats it as sensitive). Such values are never logged or put in an error.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with("password")
        || k.ends_with("secret")
        || k.ends_with("passphrase")
        || k.contains("private.key")
        || k.starts_with("ssl.key")
        || k == "ssl_key"
        || k == "ssl.ca.pem"
        || k == "sasl.username"
        || k == "sasl.oauthbearer.config"
        || k.ends_with(".jaas.config")
}

/// `props` with the value of every secret property replaced by [`REDACTED`].
pub fn redacted_properties(props: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    props
        .iter()
        .map(|(k, v)| (k.clone(), if is_secret_property(k) { REDACTED.to_owned() } else { v.clone() }))
        .collect()
}

/// rdkafka's configuration error prints the rejected value: not for secrets, nor
/// for an unknown property (it may be a misspelt secret, like `sasl.passwrod`).
pub fn redact_error(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError as E;
    use rdkafka::types::RDKafkaConfRes;
    match e {
        E::ClientConfig(code, desc, key, _)
            if is_secret_property(&key) || code == RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN =>
        {
            E::ClientConfig(code, desc, key, REDACTED.to_owned())
        }
        other => other,
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
    // librdkafka checks each property when the client is made, and rdkafka's error
    // then shows the value: check here, so a rejected secret is redacted.
    cfg.create_native_config()?;
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
    is_group_membership(key)
        || key.starts_with("auto.")
        || key.starts_with("fetch.")
        || key == "enable.partition.eof"
        || key == "isolation.level"
        || key == "check.crcs"
        || key.starts_with("queued.")
}

/// Settings of a consumer group member and of its offset commits, which a consumer
/// that only assigns itself partitions must not carry.
pub(crate) fn is_group_membership(key: &str) -> bool {
    key == "group.id"
        || key == "group.instance.id"
        || key == "group.protocol"
        || key.starts_with("enable.auto.")
        || key.starts_with("session.timeout")
        || key.starts_with("heartbeat.")
        || key.starts_with("partition.assignment")
        || key.starts_with("max.poll")
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
    fn secret_properties_are_recognised() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "ssl.key.location",
            "ssl_key",
            "sasl.oauthbearer.assertion.private.key.pem",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.username",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret_property(k), "{k}");
        }
        for k in ["security.protocol", "sasl.mechanism", "ssl.ca.location", "bootstrap.servers", "client.id"]
        {
            assert!(!is_secret_property(k), "{k}");
        }
        let mut p = BTreeMap::new();
        p.insert("sasl.password".to_string(), "pw-value-1".to_string());
        p.insert("sasl.mechanism".to_string(), "PLAIN".to_string());
        let r = redacted_properties(&p);
        assert_eq!((r["sasl.password"].as_str(), r["sasl.mechanism"].as_str()), (REDACTED, "PLAIN"));
    }

    #[test]
    fn a_rejected_secret_value_is_redacted_and_the_key_named() {
        // librdkafka refuses an unknown value of an enum property with the value in the
        // message; for a secret key the value must not survive.
        let e = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "invalid value".into(),
            "ssl.key.password".into(),
            "pw-value-2".into(),
        );
        let text = KafkaError::from(e).to_string();
        assert!(text.contains("ssl.key.password") && !text.contains("pw-value-2"), "{text}");
        // An unknown property: librdkafka rejects it, naming it (the pass-through is real).
        let mut user = BTreeMap::new();
        user.insert("sasl.passwrd".to_string(), "pw-value-3".to_string());
        let text = consumer_config(&user).unwrap_err().to_string();
        assert!(text.contains("sasl.passwrd") && !text.contains("pw-value-3"), "{text}");
        // A bad value of a plain property is shown, naming the key.
        let mut user = BTreeMap::new();
        user.insert("security.protocol".to_string(), "SASL_NOPE".to_string());
        let text = consumer_config(&user).unwrap_err().to_string();
        assert!(text.contains("security.protocol") && text.contains("SASL_NOPE"), "{text}");
    }

    /// The SASL settings reach librdkafka, which checks them when the client is made
    /// (the mock broker speaks no SASL, so this is as far as a test without a real
    /// cluster goes).
    #[test]
    fn sasl_settings_reach_librdkafka() {
        use rdkafka::consumer::BaseConsumer;
        let sasl = |mechanism: &str| {
            let mut user = BTreeMap::new();
            for (k, v) in [
                ("bootstrap.servers", "127.0.0.1:1"),
                ("group.id", "g"),
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "u"),
                ("sasl.password", "pw-value-4"),
            ] {
                user.insert(k.to_string(), v.to_string());
            }
            consumer_config(&user).unwrap().create::<BaseConsumer>().map(|_| ()).map_err(KafkaError::from)
        };
        for ok in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
            sasl(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let text = sasl("NOT-A-MECHANISM").unwrap_err().to_string();
        assert!(text.contains("NOT-A-MECHANISM") && !text.contains("pw-value-4"), "{text}");
        // GSSAPI (Kerberos) needs librdkafka built with Cyrus libsasl2: the binary's
        // `kerberos` feature (rdkafka's `sasl`). Without it the error names GSSAPI.
        let features = ClientConfig::new().create_native_config().unwrap().get("builtin.features").unwrap();
        let gssapi = sasl("GSSAPI");
        if features.contains("sasl_gssapi") {
            gssapi.expect("GSSAPI with libsasl2");
        } else {
            let text = gssapi.unwrap_err().to_string();
            assert!(text.contains("GSSAPI"), "{text}");
        }
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
