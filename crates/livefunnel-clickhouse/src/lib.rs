//! livefunnel's ClickHouse sink (contract §5): versioned migrations, batched
//! RowBinary inserts with retries, a readiness check, and a read-back of the latest
//! rows in the replay JSON shape (§6) for tests and tools.
//!
//! Every statement runs on ClickHouse 18.16 (the Debian package used in tests) and
//! on current releases: plain `MergeTree`-family DDL with `IF NOT EXISTS`, no
//! `LowCardinality`, no `Bool`, identifiers always back-quoted.
//!
//! Table design ([`Table`]): the columns of each result table are the replay JSON
//! keys without `kind`, generated from the core's measure lists. Result tables are
//! `ReplacingMergeTree(version)` keyed as contract §5 says; the window tables are
//! partitioned by `toYYYYMM(window_start)` (a key column, so all versions of a key
//! share a partition and `FINAL` collapses them); `room_session_stats` is not
//! partitioned, because a late `session_start` can move `session_start_ts`.
//! `annotations` is `ReplacingMergeTree()` keyed by (`room_id`, `ts`, `ts_ms`,
//! `event_id`), so a replayed annotation is stored once. No key holds `org_id`,
//! `account_id` or `platform`: a late event can re-decide them, and the older version
//! would stay beside the newer one (contract v1.1; migrations 8 to 13 move tables
//! created with `org_id` in the key, keeping the old table as a backup). Grafana:
//! `SELECT ts AS time, text, kind FROM livefunnel.annotations FINAL
//!  WHERE room_id = '$room' AND $__timeFilter(ts)`.
//!
//! Errors say whether a retry helps ([`ClickHouseError::is_retryable`]): the sink
//! retries those itself, with exponential backoff and full jitter, and returns the
//! others at once with the cause and the configuration key to fix.
//!
//! ```no_run
//! # async fn run(rows: Vec<livefunnel_core::Row>) -> Result<(), livefunnel_clickhouse::ClickHouseError> {
//! use livefunnel_clickhouse::{migrate, ClickHouseConfig, ClickHouseMetrics, ClickHouseSink};
//! let cfg = ClickHouseConfig::default();
//! migrate(&cfg).await?;
//! let mut sink = ClickHouseSink::new(cfg, ClickHouseMetrics::new(&prometheus::Registry::new()).unwrap())?;
//! for row in &rows {
//!     sink.push(row);
//! }
//! sink.flush().await?;
//! # Ok(()) }
//! ```

mod annotation;
mod client;
mod config;
mod error;
mod metrics;
mod migrate;
pub mod retention;
pub mod rowbinary;
mod schema;
mod secret;
mod sink;

pub use annotation::Annotation;
pub use client::{latest_rows, ping, server_version};
pub use config::{ClickHouseConfig, ConfigError, RetryConfig};
pub use error::ClickHouseError;
pub use metrics::ClickHouseMetrics;
pub use migrate::{
    applied_versions, migrate, migrate_on, migration_statements, Migration, MigrationReport,
    MigrationStatement, MigrationTarget, MoveStep, MovedTable, StatementRole, MIGRATIONS,
};
pub use retention::{prune, DroppedPartition, RetentionConfig};
pub use schema::{Column, ColumnType, Table};
pub use secret::{redact_url, Secret, REDACTED};
pub use sink::{ClickHouseSink, FlushStats, SealedBatch};
