//! Talking to the server: the HTTP client, queries with a time limit, the readiness
//! check and the read-back of the latest rows.

use std::future::Future;
use std::time::Duration;

use clickhouse::{Client, Compression};
use serde_json::Value;

use crate::config::ClickHouseConfig;
use crate::error::{classify, ClickHouseError, Context};
use crate::rowbinary::decode_rows;
use crate::schema::Table;

/// A configured client and the context its errors are reported in.
#[derive(Clone)]
pub(crate) struct Conn {
    pub client: Client,
    pub cfg: ClickHouseConfig,
}

impl Conn {
    /// Validates `cfg` and builds a client. No request is made.
    pub fn new(cfg: &ClickHouseConfig) -> Result<Conn, ClickHouseError> {
        cfg.validate()?;
        // No database on the client: the migrations create it, and every statement
        // names `database`.`table` in full. Validation off: 18.16 cannot describe
        // tables the way the crate's validation expects, and we write RowBinary ourselves.
        let client = Client::default()
            .with_url(cfg.url.clone())
            .with_user(cfg.user.clone())
            .with_password(cfg.password.expose().to_owned())
            .with_validation(false)
            .with_compression(if cfg.compression { Compression::Lz4 } else { Compression::None });
        Ok(Conn { client, cfg: cfg.clone() })
    }

    pub fn ctx(&self) -> Context<'_> {
        Context {
            url: &self.cfg.url,
            user: &self.cfg.user,
            database: &self.cfg.database,
            timeout_ms: self.cfg.request_timeout.as_unsigned_ms(),
        }
    }

    /// Runs `fut` within the request timeout, classifying its error.
    pub async fn timed<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, ClickHouseError> {
        self.timed_within(self.cfg.request_timeout.as_std(), fut).await
    }

    async fn timed_within<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, ClickHouseError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e, self.ctx())),
            Err(_) => Err(ClickHouseError::Timeout { timeout_ms: limit.as_millis() as u64 }),
        }
    }

    /// Runs a statement that returns nothing.
    pub async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.execute_within(sql, self.cfg.request_timeout.as_std()).await
    }

    /// Runs a statement that returns nothing, within `limit` rather than the request timeout.
    pub async fn execute_within(&self, sql: &str, limit: Duration) -> Result<(), ClickHouseError> {
        tracing::debug!(sql, "clickhouse statement");
        self.timed_within(limit, self.client.query_raw(sql).execute()).await
    }

    /// Runs a query and returns its whole answer in `format`.
    pub async fn fetch(&self, sql: &str, format: &str) -> Result<Vec<u8>, ClickHouseError> {
        let query = self.client.query_raw(sql);
        self.timed(async move {
            let mut cursor = query.fetch_bytes(format)?;
            Ok(cursor.collect().await?.to_vec())
        })
        .await
    }

    /// A query answering text (`TabSeparated`), one string per line.
    pub async fn fetch_lines(&self, sql: &str) -> Result<Vec<String>, ClickHouseError> {
        let bytes = self.fetch(sql, "TabSeparated").await?;
        let text = String::from_utf8(bytes).map_err(|e| ClickHouseError::Protocol(e.to_string()))?;
        Ok(text.lines().map(str::to_string).collect())
    }

    pub async fn server_version(&self) -> Result<String, ClickHouseError> {
        let lines = self.fetch_lines("SELECT version()").await?;
        lines
            .into_iter()
            .next()
            .ok_or_else(|| ClickHouseError::Protocol("empty answer to SELECT version()".into()))
    }
}

/// The server's version string, e.g. `18.16.1`.
pub async fn server_version(cfg: &ClickHouseConfig) -> Result<String, ClickHouseError> {
    Conn::new(cfg)?.server_version().await
}

/// Readiness: the server answers with these credentials and the database exists.
/// For `/readyz`; the error says what is wrong and whether waiting helps.
pub async fn ping(cfg: &ClickHouseConfig) -> Result<(), ClickHouseError> {
    let conn = Conn::new(cfg)?;
    let sql = format!("SELECT count() FROM system.databases WHERE name = '{}'", cfg.database);
    let lines = conn.fetch_lines(&sql).await?;
    match lines.first().map(String::as_str) {
        Some("1") => Ok(()),
        Some(_) => Err(ClickHouseError::Missing {
            database: cfg.database.clone(),
            detail: format!("database {} does not exist", cfg.database),
        }),
        None => Err(ClickHouseError::Protocol("empty answer to the readiness query".into())),
    }
}

/// The latest version of every row of `table` (`SELECT ... FINAL`), shaped like
/// replay JSON lines (contract §6): the same keys, `kind` added, `window_start` /
/// `window_end` as epoch milliseconds, `null` for nulls. For tests and tools: it
/// reads the whole table into memory.
pub async fn latest_rows(cfg: &ClickHouseConfig, table: Table) -> Result<Vec<Value>, ClickHouseError> {
    let conn = Conn::new(cfg)?;
    let bytes = conn.fetch(&table.select_latest_sql(&cfg.database), "RowBinary").await?;
    decode_rows(table, &bytes).map_err(ClickHouseError::Protocol)
}
