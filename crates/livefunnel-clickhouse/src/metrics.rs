//! The sink's Prometheus series (contract §4, pipeline health), registered in a
//! registry the caller owns.

use prometheus::Registry;

use crate::schema::Table;

/// Insert counters and timings, labelled by `table`, and the server's reachability:
/// the series of `livefunnel-metrics` (where every series is declared), with this
/// crate's table type.
#[derive(Debug, Clone)]
pub struct ClickHouseMetrics(livefunnel_metrics::ClickHouseMetrics);

impl ClickHouseMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<ClickHouseMetrics, prometheus::Error> {
        let tables = Table::ALL.map(Table::name);
        livefunnel_metrics::ClickHouseMetrics::new(registry, &tables).map(ClickHouseMetrics)
    }

    /// Series registered in a private registry nobody scrapes, for tools and tests.
    pub fn unregistered() -> ClickHouseMetrics {
        ClickHouseMetrics::new(&Registry::new()).expect("a fresh registry has no conflicting series")
    }

    pub(crate) fn inserted(&self, table: Table, rows: u64, seconds: f64) {
        self.0.inserted(table.name(), rows, seconds);
    }

    pub(crate) fn failed(&self, table: Table, retryable: bool, seconds: f64) {
        self.0.failed(table.name(), retryable, seconds);
    }

    /// Failed insert attempts of `table` so far (both labels), for tests and logs.
    pub fn insert_errors(&self, table: Table) -> u64 {
        self.0.insert_errors(table.name())
    }

    /// Records the outcome of a health check: whether ClickHouse answered.
    pub fn set_up(&self, up: bool) {
        self.0.set_up(up);
    }

    /// Whether the last health check reached ClickHouse (0 before the first one).
    pub fn up(&self) -> bool {
        self.0.up()
    }

    /// Rows inserted into `table` so far.
    pub fn insert_rows(&self, table: Table) -> u64 {
        self.0.insert_rows(table.name())
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
