//! Configuration sections of the live pipeline (`run`, `demo`, `bench`, `migrate`):
//! `[kafka]`, `[clickhouse]`, `[checkpoint]`, `[http]` and `[signals]`. Loaded and
//! layered with the rest of the configuration (see `config`).

use livefunnel_core::ConfigError;
use std::collections::BTreeMap;
use std::path::PathBuf;

use livefunnel_core::WindowSpec;
use livefunnel_metrics::{SignalWindow, SignalWindows};
use serde::{Deserialize, Serialize};

use livefunnel_core::Duration;

/// `[kafka]`: the input topics, the consumer group and the dead-letter topic. Every
/// other key of the table is a librdkafka property passed through unchanged, so SASL
/// and SSL are configured exactly as for any librdkafka client:
/// `"security.protocol" = "SASL_SSL"` (quoted, or as nested tables `security.protocol`).
/// Secret properties (`sasl.password`, `ssl.key.pem`, ...: see
/// [`livefunnel_kafka::is_secret_property`]) are redacted by `Debug` and `Serialize`
/// (`check-config`); set them from the environment to keep them out of files, e.g.
/// `LIVEFUNNEL_KAFKA__SASL__PASSWORD` (nested keys flatten to `sasl.password`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `group.id`: instances with the same group share the partitions.
    pub group_id: String,
    /// Input topics; message key `room_id` keeps a room on one partition.
    pub topics: Vec<String>,
    /// Dead-letter topic; empty: `<input topic>.dlq` for each input topic.
    pub dlq_topic: String,
    /// A dead letter too large for the producer (`message.max.bytes`, or the topic's
    /// limit on the broker) is sent as its first this many bytes, with its size and
    /// checksum in headers.
    pub dlq_truncate_bytes: usize,
    /// Where a partition without a checkpoint starts: `earliest` (rebuild its state from
    /// everything Kafka retains: correct windows) or `latest` (only new messages).
    pub start_without_checkpoint: StartWithout,
    /// librdkafka properties, passed through.
    #[serde(flatten, serialize_with = "serialize_redacted")]
    pub properties: BTreeMap<String, PropValue>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("dlq_topic", &self.dlq_topic)
            .field("dlq_truncate_bytes", &self.dlq_truncate_bytes)
            .field("start_without_checkpoint", &self.start_without_checkpoint)
            .field("properties", &redacted(&self.properties, ""))
            .finish()
    }
}

/// The properties with every secret value (its dotted name, nested tables
/// included) replaced by `[redacted]`.
fn redacted(props: &BTreeMap<String, PropValue>, prefix: &str) -> BTreeMap<String, PropValue> {
    props
        .iter()
        .map(|(k, v)| {
            let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            let v = match v {
                PropValue::Table(t) => PropValue::Table(redacted(t, &name)),
                _ if livefunnel_kafka::is_secret_property(&name) => {
                    PropValue::Str(livefunnel_kafka::REDACTED.to_owned())
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn serialize_redacted<S: serde::Serializer>(
    props: &BTreeMap<String, PropValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    redacted(props, "").serialize(s)
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "livefunnel".into(),
            topics: vec!["room-events".into()],
            dlq_topic: String::new(),
            dlq_truncate_bytes: 65_536,
            start_without_checkpoint: StartWithout::Earliest,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartWithout {
    Earliest,
    Latest,
}

/// A librdkafka property value as TOML writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropValue {
    Bool(bool),
    Int(i64),
    Str(String),
    Table(BTreeMap<String, PropValue>),
}

impl KafkaConfig {
    /// The full librdkafka property list: nested tables flattened to dotted names.
    pub fn librdkafka_properties(&self) -> BTreeMap<String, String> {
        fn flatten(prefix: &str, v: &PropValue, out: &mut BTreeMap<String, String>) {
            match v {
                PropValue::Bool(b) => {
                    out.insert(prefix.to_owned(), b.to_string());
                }
                PropValue::Int(i) => {
                    out.insert(prefix.to_owned(), i.to_string());
                }
                PropValue::Str(s) => {
                    out.insert(prefix.to_owned(), s.clone());
                }
                PropValue::Table(t) => {
                    for (k, v) in t {
                        flatten(&format!("{prefix}.{k}"), v, out);
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for (k, v) in &self.properties {
            flatten(k, v, &mut out);
        }
        out.insert("bootstrap.servers".into(), self.brokers.clone());
        out.insert("group.id".into(), self.group_id.clone());
        out
    }

    /// The dead-letter topic for messages of `input_topic`.
    pub fn dlq_topic_for(&self, input_topic: &str) -> String {
        if self.dlq_topic.is_empty() {
            format!("{input_topic}.dlq")
        } else {
            self.dlq_topic.clone()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::at(
                "kafka.brokers",
                "is empty: set it to host:port[,host:port...]".into(),
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::at(
                "kafka.group_id",
                "is empty: name the consumer group, like \"livefunnel\"".into(),
            ));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::at(
                "kafka.topics",
                "needs at least one non-empty topic name, like [\"room-events\"]".into(),
            ));
        }
        for key in ["bootstrap.servers", "group.id"] {
            if self.properties.contains_key(key)
                || self.properties.contains_key(key.split('.').next().unwrap_or(""))
            {
                return Err(ConfigError::at(
                    "kafka",
                    format!("sets `{key}` directly: use kafka.brokers / kafka.group_id instead"),
                ));
            }
        }
        if self.topics.iter().any(|t| self.dlq_topic_for(t) == *t) {
            return Err(ConfigError::at(
                "kafka.dlq_topic",
                "is one of the input topics: choose another name".into(),
            ));
        }
        // librdkafka's default `message.max.bytes`, and room for a key and the headers.
        const DEFAULT_MAX: usize = 1_000_000;
        const ROOM: usize = 16_384;
        let max_key = "message.max.bytes";
        let max = match self.librdkafka_properties().get(max_key).map(|v| v.parse::<usize>()) {
            Some(Ok(max)) => max,
            Some(Err(_)) => {
                return Err(ConfigError::at("kafka", format!("{max_key} is not a number of bytes")))
            }
            None => DEFAULT_MAX,
        };
        if self.dlq_truncate_bytes == 0 || self.dlq_truncate_bytes.saturating_add(ROOM) > max {
            return Err(ConfigError::at(
                "kafka.dlq_truncate_bytes",
                format!(
                    "is {}: set it between 1 and {} ({max_key} {max} minus {ROOM} bytes for the key and headers), \
                     like 65536",
                    self.dlq_truncate_bytes,
                    max.saturating_sub(ROOM)
                ),
            ));
        }
        Ok(())
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Where checkpoints live: `dir` (files in `dir`, one host) or `kafka` (a compacted
    /// topic every instance of the group reads: several instances, any host).
    pub store: CheckpointStoreKind,
    /// Local directory of the per-partition checkpoint files (`store = "dir"`).
    pub dir: PathBuf,
    /// How often each partition takes a checkpoint (rows acknowledged by ClickHouse,
    /// engine state written, then the Kafka offset committed).
    pub interval: Duration,
    /// The shared store (`store = "kafka"`), on the cluster of `[kafka]`.
    pub kafka: CheckpointKafkaConfig,
}

impl Default for CheckpointConfig {
    fn default() -> CheckpointConfig {
        CheckpointConfig {
            store: CheckpointStoreKind::Dir,
            dir: PathBuf::from("livefunnel-state"),
            interval: Duration::from_ms(10_000),
            kafka: CheckpointKafkaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointStoreKind {
    Dir,
    Kafka,
}

/// `[checkpoint.kafka]`: checkpoints on a compacted topic, keyed by consumer group,
/// input topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointKafkaConfig {
    /// The topic; created compacted when missing (`cleanup.policy=compact`).
    pub topic: String,
    /// A state larger than this is split into chunks of this size; keep it below the
    /// broker's `message.max.bytes` (1 MB by default).
    pub chunk_bytes: u32,
    /// Partitions when livefunnel creates the topic. Never change them afterwards: a
    /// partition's records are found by a hash of its key modulo this count.
    pub partitions: i32,
    /// Replication factor when livefunnel creates the topic; -1: the broker's default.
    pub replication_factor: i32,
    /// How long a load or save may take; a failed save is retried at the next interval.
    pub timeout: Duration,
}

impl Default for CheckpointKafkaConfig {
    fn default() -> CheckpointKafkaConfig {
        CheckpointKafkaConfig {
            topic: "livefunnel.checkpoints".into(),
            chunk_bytes: 512 * 1024,
            partitions: 12,
            replication_factor: -1,
            timeout: Duration::from_ms(30_000),
        }
    }
}

impl CheckpointConfig {
    /// The error is `(dotted key, message)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.as_ms() < 100 {
            return Err(ConfigError::at(
                "checkpoint.interval",
                "must be at least 100ms, like \"10s\"".into(),
            ));
        }
        match self.store {
            CheckpointStoreKind::Dir if self.dir.as_os_str().is_empty() => Err(ConfigError::at(
                "checkpoint.dir",
                "is empty: name a local directory for checkpoints".into(),
            )),
            CheckpointStoreKind::Dir => Ok(()),
            CheckpointStoreKind::Kafka => {
                let k = &self.kafka;
                if k.topic.trim().is_empty() {
                    return Err(ConfigError::at(
                        "checkpoint.kafka.topic",
                        "is empty: name a topic, like \"livefunnel.checkpoints\"".into(),
                    ));
                }
                if !(1024..=64 * 1024 * 1024).contains(&k.chunk_bytes) {
                    return Err(ConfigError::at(
                        "checkpoint.kafka.chunk_bytes",
                        format!(
                            "is {}: keep it between 1024 and the broker's message.max.bytes, like 524288",
                            k.chunk_bytes
                        ),
                    ));
                }
                if k.partitions < 1 {
                    return Err(ConfigError::at(
                        "checkpoint.kafka.partitions",
                        "must be at least 1, like 12".into(),
                    ));
                }
                if k.replication_factor == 0 || k.replication_factor < -1 {
                    return Err(ConfigError::at(
                        "checkpoint.kafka.replication_factor",
                        "must be -1 (broker default) or at least 1".into(),
                    ));
                }
                if k.timeout.as_ms() < 1_000 {
                    return Err(ConfigError::at(
                        "checkpoint.kafka.timeout",
                        "must be at least 1s, like \"30s\"".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The shared store's settings, when `store = "kafka"`.
    pub fn kafka_store(&self, group: &str) -> Option<livefunnel_kafka::KafkaStoreSettings> {
        (self.store == CheckpointStoreKind::Kafka).then(|| livefunnel_kafka::KafkaStoreSettings {
            topic: self.kafka.topic.clone(),
            group: group.to_owned(),
            chunk_bytes: self.kafka.chunk_bytes as usize,
            create_partitions: self.kafka.partitions,
            create_replication: self.kafka.replication_factor,
            timeout: self.kafka.timeout.as_std(),
        })
    }
}

/// `[http]`: the Prometheus and health endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// A room's series are removed this long after its session ends.
    pub series_ttl: Duration,
    /// Rooms with series on this instance, at most; more rooms are computed and
    /// written to ClickHouse without series, counted in `livefunnel_room_series_dropped_total`.
    pub max_room_series: u64,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            series_ttl: Duration::from_ms(900_000),
            max_room_series: livefunnel_metrics::DEFAULT_MAX_ROOMS as u64,
        }
    }
}

/// `[runtime]`: the process's threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads running the partitions' engines (decoding, windows, room series,
    /// snapshots), apart from the ones serving HTTP and talking to Kafka and ClickHouse;
    /// 0 is one per core the process may use.
    pub engine_threads: u32,
}

impl RuntimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.engine_threads > 1024 {
            return Err(ConfigError::at(
                "runtime.engine_threads",
                format!(
                    "is {}: at most 1024; 0 is one per core, which is the usual choice",
                    self.engine_threads
                ),
            ));
        }
        Ok(())
    }
}

/// `[signals]`: the windows behind the alert-signal series (docs/metrics.md): values of
/// a room's latest closed window, computed in event time, so alert rules are thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsConfig {
    /// A hop or tumble window of `windows.set`: its latest closed row against the row one
    /// window size earlier (`livefunnel_room_signal_gpm`, `..._previous`, ...); `""`: off.
    pub compare_window: String,
    /// A hop or tumble window of `windows.set`: `livefunnel_room_signal_online_avg`; `""`: off.
    pub online_window: String,
}

impl Default for SignalsConfig {
    fn default() -> SignalsConfig {
        SignalsConfig { compare_window: "10m/1m".into(), online_window: "5m/10s".into() }
    }
}

impl SignalsConfig {
    /// Checks both windows against `windows` (the parsed `windows.set`); the error is
    /// `(dotted key, message)`. A value that is not a hop or tumble window of
    /// `windows.set` is an error when `set_by_user(key)` (a file or the environment set
    /// it); a default whose window is not configured becomes `""` (off) instead, so a
    /// smaller `windows.set` like `["1m", "session"]` needs no `[signals]` section.
    pub fn check(
        &mut self,
        windows: &[WindowSpec],
        set_by_user: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        let configured = || {
            let names: Vec<String> = windows
                .iter()
                .filter(|w| **w != WindowSpec::Session)
                .map(|w| format!("\"{}\"", w.name()))
                .collect();
            names.join(", ")
        };
        for (key, value) in [
            ("signals.compare_window", &mut self.compare_window),
            ("signals.online_window", &mut self.online_window),
        ] {
            if value.is_empty() {
                continue;
            }
            let spec = WindowSpec::parse(value).map_err(|m| {
                let fix = "name a hop or tumble window of windows.set, like \"10m/1m\", or \"\" for off";
                ConfigError::at(key, format!("window `{value}`: {m}; {fix}"))
            })?;
            if windows.contains(&spec) && spec != WindowSpec::Session {
                continue;
            }
            if !set_by_user(key) {
                value.clear();
                continue;
            }
            let why = if spec == WindowSpec::Session {
                "is not a hop or tumble window"
            } else {
                "is not in windows.set"
            };
            return Err(ConfigError::at(
                key.to_owned(),
                format!(
                    "window `{value}` {why}: set it to one of windows.set's hop/tumble windows ({}), add it to windows.set, or set it to \"\" to turn this signal off",
                    configured()
                ),
            ));
        }
        Ok(())
    }

    /// The signal windows; `None` for one that is off (`""`, or not a hop or tumble
    /// window of `windows`).
    pub fn resolve(&self, windows: &[WindowSpec]) -> SignalWindows {
        let pick = |value: &str| {
            WindowSpec::parse(value)
                .ok()
                .filter(|s| windows.contains(s))
                .and_then(|s| SignalWindow::from_spec(&s))
        };
        SignalWindows { compare: pick(&self.compare_window), online: pick(&self.online_window) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_quoted_properties_flatten_to_librdkafka_names() {
        let toml = r#"
            brokers = "b:9092"
            topics = ["t"]
            "sasl.mechanism" = "PLAIN"
            security.protocol = "SASL_SSL"
            "fetch.min.bytes" = 1024
            "check.crcs" = true
        "#;
        let k: KafkaConfig = toml::from_str(toml).unwrap();
        let p = k.librdkafka_properties();
        assert_eq!(p["sasl.mechanism"], "PLAIN");
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["fetch.min.bytes"], "1024");
        assert_eq!(p["check.crcs"], "true");
        assert_eq!(p["bootstrap.servers"], "b:9092");
        assert_eq!(p["group.id"], "livefunnel");
        assert!(k.validate().is_ok());
        assert_eq!(k.dlq_topic_for("t"), "t.dlq");
    }

    #[test]
    fn secret_properties_are_redacted_in_debug_and_serialize_but_reach_librdkafka() {
        let toml = r#"
            "sasl.password" = "kafka-pw-1"
            sasl.oauthbearer.client.secret = "kafka-pw-2"
            ssl.key.password = "kafka-pw-3"
            "sasl.mechanism" = "SCRAM-SHA-256"
        "#;
        let k: KafkaConfig = toml::from_str(toml).unwrap();
        let shown = format!("{k:?} {}", toml::to_string(&k).unwrap());
        for pw in ["kafka-pw-1", "kafka-pw-2", "kafka-pw-3"] {
            assert!(!shown.contains(pw), "{pw} in {shown}");
        }
        assert!(shown.contains("SCRAM-SHA-256") && shown.contains("[redacted]"), "{shown}");
        let p = k.librdkafka_properties();
        assert_eq!(p["sasl.password"], "kafka-pw-1");
        assert_eq!(p["sasl.oauthbearer.client.secret"], "kafka-pw-2");
        assert_eq!(p["ssl.key.password"], "kafka-pw-3");
    }

    #[test]
    fn the_dead_letter_truncation_fits_below_the_producer_limit() {
        let k: KafkaConfig = toml::from_str("").unwrap();
        assert_eq!(k.dlq_truncate_bytes, 65_536);
        assert!(k.validate().is_ok());
        for (toml, ok) in [
            ("dlq_truncate_bytes = 0", false),
            ("dlq_truncate_bytes = 983616", true),
            ("dlq_truncate_bytes = 983617", false),
            ("dlq_truncate_bytes = 2000000\n\"message.max.bytes\" = 4000000", true),
        ] {
            let k: KafkaConfig = toml::from_str(toml).unwrap();
            match k.validate() {
                Ok(()) => assert!(ok, "{toml}"),
                Err(ConfigError { key, message: msg }) => {
                    assert!(!ok, "{toml}: {msg}");
                    assert_eq!(key, "kafka.dlq_truncate_bytes");
                    assert!(msg.contains("message.max.bytes"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn direct_bootstrap_servers_is_refused_with_the_fix() {
        let k: KafkaConfig = toml::from_str("\"bootstrap.servers\" = \"x:1\"").unwrap();
        let ConfigError { key, message: msg } = k.validate().unwrap_err();
        assert_eq!(key, "kafka");
        assert!(msg.contains("kafka.brokers"), "{msg}");
    }
}
