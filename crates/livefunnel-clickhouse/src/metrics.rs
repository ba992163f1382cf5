//! The sink's Prometheus series (contract §4, pipeline health), registered in a
//! registry the caller owns.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::schema::Table;

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
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<ClickHouseMetrics, prometheus::Error> {
        let insert_rows = IntCounterVec::new(
            Opts::new("livefunnel_clickhouse_insert_rows_total", "Rows inserted into ClickHouse."),
            &["table"],
        )?;
        let insert_errors = IntCounterVec::new(
            Opts::new(
                "livefunnel_clickhouse_insert_errors_total",
                "Failed insert attempts; retryable=\"true\" ones are retried.",
            ),
            &["table", "retryable"],
        )?;
        let insert_duration = HistogramVec::new(
            HistogramOpts::new(
                "livefunnel_clickhouse_insert_duration_seconds",
                "Duration of one insert statement, successful or not.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["table"],
        )?;
        let batches = IntCounterVec::new(
            Opts::new("livefunnel_clickhouse_batches_total", "Insert statements that succeeded."),
            &["table"],
        )?;
        registry.register(Box::new(insert_rows.clone()))?;
        registry.register(Box::new(insert_errors.clone()))?;
        registry.register(Box::new(insert_duration.clone()))?;
        // A gauge, not only the error counter: an outage shows while no insert is
        // attempted (the sink is idle or waiting in a retry backoff), and alerts can
        // use `min_over_time(livefunnel_clickhouse_up[5m]) == 0`.
        let up = IntGauge::new(
            "livefunnel_clickhouse_up",
            "1 when the last health check (every 2 s) reached ClickHouse, else 0.",
        )?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(up.clone()))?;
        let metrics = ClickHouseMetrics { insert_rows, insert_errors, insert_duration, batches, up };
        // Every table shows 0 from the start instead of appearing on its first insert.
        for table in Table::ALL {
            metrics.insert_rows.with_label_values(&[table.name()]);
            metrics.batches.with_label_values(&[table.name()]);
        }
        Ok(metrics)
    }

    /// Series registered in a private registry nobody scrapes, for tools and tests.
    pub fn unregistered() -> ClickHouseMetrics {
        ClickHouseMetrics::new(&Registry::new()).expect("a fresh registry has no conflicting series")
    }

    pub(crate) fn inserted(&self, table: Table, rows: u64, seconds: f64) {
        self.insert_rows.with_label_values(&[table.name()]).inc_by(rows);
        self.batches.with_label_values(&[table.name()]).inc();
        self.insert_duration.with_label_values(&[table.name()]).observe(seconds);
    }

    pub(crate) fn failed(&self, table: Table, retryable: bool, seconds: f64) {
        let retryable = if retryable { "true" } else { "false" };
        self.insert_errors.with_label_values(&[table.name(), retryable]).inc();
        self.insert_duration.with_label_values(&[table.name()]).observe(seconds);
    }

    /// Failed insert attempts of `table` so far (both labels), for tests and logs.
    pub fn insert_errors(&self, table: Table) -> u64 {
        ["true", "false"].iter().map(|r| self.insert_errors.with_label_values(&[table.name(), r]).get()).sum()
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
    pub fn insert_rows(&self, table: Table) -> u64 {
        self.insert_rows.with_label_values(&[table.name()]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_registered_with_their_labels() {
        let registry = Registry::new();
        let m = ClickHouseMetrics::new(&registry).unwrap();
        m.inserted(Table::Window, 10, 0.02);
        m.failed(Table::Window, true, 0.5);
        m.failed(Table::Session, false, 0.1);
        assert_eq!(m.insert_rows(Table::Window), 10);
        assert_eq!(m.insert_errors(Table::Window), 1);
        assert!(!m.up(), "down until a health check succeeds");
        m.set_up(true);
        assert!(m.up());
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        for name in [
            "livefunnel_clickhouse_insert_rows_total",
            "livefunnel_clickhouse_insert_errors_total",
            "livefunnel_clickhouse_insert_duration_seconds",
            "livefunnel_clickhouse_batches_total",
            "livefunnel_clickhouse_up",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(ClickHouseMetrics::new(&registry).is_err(), "registering twice is refused");
    }
}
