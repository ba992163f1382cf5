//! The ClickHouse sink's series (contract §4, pipeline health), labelled by table name.
//! The sink crate wraps them with its own table type (`livefunnel_clickhouse::ClickHouseMetrics`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Insert counters and timings, labelled by `table`, and the server's reachability.
#[derive(Debug, Clone)]
pub struct ClickHouseMetrics {
    insert_rows: IntCounterVec,
    insert_errors: IntCounterVec,
    insert_duration: HistogramVec,
    batches: IntCounterVec,
    up: IntGauge,
}

impl ClickHouseMetrics {
    /// Creates the series and registers them in `registry`; every table of `tables`
    /// shows 0 from the start instead of appearing on its first insert.
    pub fn new(registry: &Registry, tables: &[&str]) -> Result<ClickHouseMetrics, prometheus::Error> {
        let insert_rows = IntCounterVec::new(
            Opts::new("livefunnel_clickhouse_insert_rows_total", "rows inserted into ClickHouse"),
            &["table"],
        )?;
        let insert_errors = IntCounterVec::new(
            Opts::new(
                "livefunnel_clickhouse_insert_errors_total",
                "failed insert attempts; retryable=\"true\" ones are retried",
            ),
            &["table", "retryable"],
        )?;
        let insert_duration = HistogramVec::new(
            HistogramOpts::new(
                "livefunnel_clickhouse_insert_duration_seconds",
                "duration of one insert statement, successful or not",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["table"],
        )?;
        let batches = IntCounterVec::new(
            Opts::new("livefunnel_clickhouse_batches_total", "insert statements that succeeded"),
            &["table"],
        )?;
        // A gauge, not only the error counter: an outage shows while no insert is
        // attempted (the sink is idle or waiting in a retry backoff), and alerts can
        // use `min_over_time(livefunnel_clickhouse_up[5m]) == 0`.
        let up = IntGauge::new(
            "livefunnel_clickhouse_up",
            "1 when the last health check (every 2 s) reached ClickHouse, else 0",
        )?;
        registry.register(Box::new(insert_rows.clone()))?;
        registry.register(Box::new(insert_errors.clone()))?;
        registry.register(Box::new(insert_duration.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(up.clone()))?;
        for table in tables {
            insert_rows.with_label_values(&[table]);
            batches.with_label_values(&[table]);
        }
        Ok(ClickHouseMetrics { insert_rows, insert_errors, insert_duration, batches, up })
    }

    /// One insert statement of `rows` rows into `table` succeeded in `seconds`.
    pub fn inserted(&self, table: &str, rows: u64, seconds: f64) {
        self.insert_rows.with_label_values(&[table]).inc_by(rows);
        self.batches.with_label_values(&[table]).inc();
        self.insert_duration.with_label_values(&[table]).observe(seconds);
    }

    /// One insert statement into `table` failed after `seconds`.
    pub fn failed(&self, table: &str, retryable: bool, seconds: f64) {
        let retryable = if retryable { "true" } else { "false" };
        self.insert_errors.with_label_values(&[table, retryable]).inc();
        self.insert_duration.with_label_values(&[table]).observe(seconds);
    }

    /// Failed insert attempts of `table` so far (both labels), for tests and logs.
    pub fn insert_errors(&self, table: &str) -> u64 {
        ["true", "false"].iter().map(|r| self.insert_errors.with_label_values(&[table, r]).get()).sum()
    }

    /// Records the outcome of a health check: whether ClickHouse answered.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    /// Whether the last health check reached ClickHouse (0 before the first one).
    pub fn up(&self) -> bool {
        self.up.get() == 1
    }

    /// Rows inserted into `table` so far.
    pub fn insert_rows(&self, table: &str) -> u64 {
        self.insert_rows.with_label_values(&[table]).get()
    }
}
