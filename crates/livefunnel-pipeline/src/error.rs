//! Why the pipeline stops. Every error here ends the process (the supervisor or
//! Kubernetes starts it again, and it resumes from its last checkpoints); what each
//! says beyond that is whether the restart alone can help, as the errors it wraps do.

use std::sync::Arc;

pub use livefunnel_core::errors::chain;

use crate::sink::SinkError;
use crate::wall::directory::DirectoryError;

/// An error of a part of the pipeline: its setup, a partition task, the sink.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A series registered twice: a bug.
    #[error("registering the pipeline's metrics")]
    Metrics(#[source] prometheus::Error),
    /// The operating system would not start a thread (out of memory or of threads).
    #[error("starting {what}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `wall.rooms_file` cannot be read or parsed.
    #[error("the wall's room directory")]
    Directory(#[source] DirectoryError),
    #[error("{what}")]
    Kafka {
        what: &'static str,
        #[source]
        source: livefunnel_kafka::KafkaError,
    },
    /// The checkpoint store: opening it, loading or saving a checkpoint, claiming an epoch.
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: livefunnel_state::StateError,
    },
    /// A checkpoint's engine state cannot be restored, or its version epoch is unusable.
    #[error("checkpoint {path}")]
    EngineState {
        path: String,
        #[source]
        source: livefunnel_core::StateError,
    },
    #[error("checkpoint {path}: room counters")]
    RoomCounters {
        path: String,
        #[source]
        source: livefunnel_metrics::CheckpointError,
    },
    #[error("encoding room counters")]
    EncodeRoomCounters(#[source] postcard::Error),
    /// Work on a blocking thread (saving a checkpoint, opening the shared store)
    /// panicked or was cancelled.
    #[error("{what}")]
    Blocking {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error(
        "the dead-letter producer failed for good ({0}): restart livefunnel; every partition resumes \
         from its last checkpoint and sends its dead letters again"
    )]
    DeadLetters(String),
    /// A partition task could not hand something to the sink: the sink has stopped,
    /// and reports why itself (that is the pipeline's fatal error, not this).
    #[error("the sink stopped: {0}")]
    SinkStopped(String),
    /// The sink's write failed; the same error answers every checkpoint waiting for it.
    #[error(transparent)]
    Sink(Arc<SinkError>),
    /// The ClickHouse sink's migrations or client could not be set up.
    #[error(transparent)]
    ClickHouse(#[from] livefunnel_clickhouse::ClickHouseError),
    #[error("stopped before clickhouse was reachable")]
    StoppedBeforeReachable,
    #[error("the jsonl sink's directory")]
    Jsonl(#[source] std::io::Error),
    #[error(
        "the task panicked: {0}: a bug in livefunnel, please report it with this log; a restart resumes \
         the partition from its last checkpoint"
    )]
    TaskPanicked(String),
    #[error("it panicked: {0}: a bug in livefunnel, please report it")]
    SinkPanicked(String),
    #[error("restoring partition {topic}/{partition}")]
    Restoring {
        topic: String,
        partition: i32,
        #[source]
        source: Box<PipelineError>,
    },
}

impl PipelineError {
    /// Whether a restart alone may get past it: an unreachable broker or server, a
    /// disk that was full. Not a bug, a corrupt checkpoint or a wrong setting.
    pub fn is_retryable(&self) -> bool {
        use PipelineError as E;
        match self {
            E::Thread { .. } | E::DeadLetters(_) | E::StoppedBeforeReachable => true,
            E::Kafka { source, .. } => source.is_retryable(),
            E::Store { source, .. } => source.is_retryable(),
            E::Sink(e) => e.is_retryable(),
            E::ClickHouse(e) => e.is_retryable(),
            E::Jsonl(e) => SinkError::io_is_retryable(e),
            E::Restoring { source, .. } => source.is_retryable(),
            E::Metrics(_)
            | E::Directory(_)
            | E::EngineState { .. }
            | E::RoomCounters { .. }
            | E::EncodeRoomCounters(_)
            | E::Blocking { .. }
            | E::SinkStopped(_)
            | E::TaskPanicked(_)
            | E::SinkPanicked(_) => false,
        }
    }
}

/// The error that stopped the pipeline: the first one, recorded in
/// [`Status::fatal`](crate::Status) (and shown by `/readyz`) and returned by
/// [`run`](crate::run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// The error and its causes, outermost first, joined by ": ".
    pub message: String,
    /// Whether a restart alone may help ([`PipelineError::is_retryable`]).
    pub retryable: bool,
}

impl Fatal {
    pub fn new(message: impl Into<String>, retryable: bool) -> Fatal {
        Fatal { message: message.into(), retryable }
    }

    /// `e` and its causes as one message; `prefix` names where it happened.
    pub fn of(prefix: Option<&str>, e: &PipelineError) -> Fatal {
        let chain = chain(e);
        let message = match prefix {
            Some(p) => format!("{p}: {chain}"),
            None => chain,
        };
        Fatal { message, retryable: e.is_retryable() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let store = livefunnel_state::StateError::Write { path: "/state/t-3.ckpt".into(), source: io };
        let e = PipelineError::Restoring {
            topic: "t".into(),
            partition: 3,
            source: Box::new(PipelineError::Store { what: "claiming an epoch".into(), source: store }),
        };
        // The store's error prints its io error and has it as its source too.
        assert_eq!(
            chain(&e),
            "restoring partition t/3: claiming an epoch: cannot write checkpoint /state/t-3.ckpt: \
             permission denied"
        );
        let f = Fatal::of(Some("partition t/3"), &e);
        assert!(f.message.starts_with("partition t/3: restoring partition t/3: claiming"), "{f}");
        assert!(f.retryable, "an io error may pass: {f:?}");
    }

    #[test]
    fn bugs_and_corrupt_state_are_not_retryable() {
        assert!(!PipelineError::TaskPanicked("index out of bounds".into()).is_retryable());
        let corrupt = livefunnel_state::StateError::Corrupt { path: "/x".into(), detail: "crc".into() };
        let e = PipelineError::Store { what: "loading".into(), source: corrupt };
        assert!(!e.is_retryable());
        assert!(!Fatal::of(None, &e).retryable);
        assert!(PipelineError::StoppedBeforeReachable.is_retryable());
    }
}
