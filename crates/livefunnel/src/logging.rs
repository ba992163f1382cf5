//! `[log]`: how the process writes its log, to standard error. `text` (the default) is
//! for people; `json` is one object per line with the event's `tracing` fields as keys,
//! for log collectors (Loki, Elasticsearch, a cloud's log agent).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `"text"` or `"json"`.
    pub format: LogFormat,
}

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format [`init`] installed (text before it).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), standard error.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).init(),
        // Fields at the top level next to `timestamp`, `level`, `target` and `message`,
        // and the spans a line happened in.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}
