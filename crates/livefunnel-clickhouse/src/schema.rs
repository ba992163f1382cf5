//! The tables of contract §5, their columns generated from the core's measure lists.
//!
//! A measure added to [`Counts::measures`] or [`BreakdownCounts::measures`] becomes a
//! column here, in the DDL, in the insert and in the read-back, with no second list:
//! the column type follows from the measure's [`Measure`] variant.

use livefunnel_core::{BreakdownCounts, BreakdownKind, Counts, Measure, Row};

/// One of livefunnel's ClickHouse tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Window,
    Source,
    Plan,
    Product,
    Session,
    Annotations,
}

/// A column's ClickHouse type. Every type here exists on ClickHouse 18.16 and later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    String,
    NullableString,
    /// Seconds since the epoch, UTC; epoch milliseconds in replay JSON.
    DateTime,
    /// `UInt8` 0/1; a JSON boolean.
    Bool,
    UInt64,
    NullableUInt64,
    Int64,
    NullableInt64,
    Float64,
    NullableFloat64,
}

impl ColumnType {
    /// The type as ClickHouse writes it in `system.columns`.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::String => "String",
            ColumnType::NullableString => "Nullable(String)",
            ColumnType::DateTime => "DateTime('UTC')",
            ColumnType::Bool => "UInt8",
            ColumnType::UInt64 => "UInt64",
            ColumnType::NullableUInt64 => "Nullable(UInt64)",
            ColumnType::Int64 => "Int64",
            ColumnType::NullableInt64 => "Nullable(Int64)",
            ColumnType::Float64 => "Float64",
            ColumnType::NullableFloat64 => "Nullable(Float64)",
        }
    }

    /// The column type of a measure, by its variant.
    pub fn of_measure(m: Measure) -> ColumnType {
        match m {
            Measure::UInt(_) => ColumnType::UInt64,
            Measure::Int(_) => ColumnType::Int64,
            Measure::Float(_) => ColumnType::Float64,
            Measure::Ratio(_) => ColumnType::NullableFloat64,
            Measure::OptInt(_) => ColumnType::NullableInt64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.to_string(), ty }
}

fn measure_columns(
    out: &mut Vec<Column>,
    prefix: &str,
    measures: impl IntoIterator<Item = (&'static str, Measure)>,
) {
    for (name, m) in measures {
        out.push(Column { name: format!("{prefix}{name}"), ty: ColumnType::of_measure(m) });
    }
}

impl Table {
    pub const ALL: [Table; 6] =
        [Table::Window, Table::Source, Table::Plan, Table::Product, Table::Session, Table::Annotations];

    /// The tables holding result rows, i.e. all but [`Table::Annotations`].
    pub const RESULTS: [Table; 5] =
        [Table::Window, Table::Source, Table::Plan, Table::Product, Table::Session];

    pub fn name(self) -> &'static str {
        match self {
            Table::Window => "room_window_stats",
            Table::Source => "room_source_window_stats",
            Table::Plan => "room_plan_window_stats",
            Table::Product => "room_product_window_stats",
            Table::Session => "room_session_stats",
            Table::Annotations => "annotations",
        }
    }

    /// The table a row goes to.
    pub fn of_row(row: &Row) -> Table {
        match row {
            Row::Window(_) => Table::Window,
            Row::Breakdown(b) => Table::of_breakdown(b.kind),
            Row::Session(_) => Table::Session,
        }
    }

    pub fn of_breakdown(kind: BreakdownKind) -> Table {
        match kind {
            BreakdownKind::Source => Table::Source,
            BreakdownKind::Plan => Table::Plan,
            BreakdownKind::Product => Table::Product,
        }
    }

    /// The replay JSON `kind` of the table's rows (contract §6); none for annotations.
    pub fn kind(self) -> Option<&'static str> {
        match self {
            Table::Window => Some("window"),
            Table::Source => Some("source"),
            Table::Plan => Some("plan"),
            Table::Product => Some("product"),
            Table::Session => Some("session"),
            Table::Annotations => None,
        }
    }

    fn breakdown(self) -> Option<BreakdownKind> {
        match self {
            Table::Source => Some(BreakdownKind::Source),
            Table::Plan => Some(BreakdownKind::Plan),
            Table::Product => Some(BreakdownKind::Product),
            _ => None,
        }
    }

    /// Every column, in the order of the replay JSON keys (without `kind`), which is
    /// also the order rows are encoded in.
    pub fn columns(self) -> Vec<Column> {
        use ColumnType::*;
        let mut c = Vec::with_capacity(128);
        match self {
            Table::Window => {
                c.extend([
                    col("room_id", String),
                    col("window", String),
                    col("window_start", DateTime),
                    col("window_end", DateTime),
                    col("version", UInt64),
                    col("session_id", String),
                    col("org_id", String),
                    col("account_id", NullableString),
                    col("platform", String),
                ]);
                measure_columns(&mut c, "", Counts::default().measures());
            }
            Table::Source | Table::Plan | Table::Product => {
                let kind = self.breakdown().expect("a breakdown table");
                c.extend([
                    col("room_id", String),
                    col("window", String),
                    col("window_start", DateTime),
                    col("window_end", DateTime),
                    col("version", UInt64),
                    col("org_id", String),
                    col(kind.column(), String),
                ]);
                measure_columns(&mut c, "", BreakdownCounts::default().measures(kind));
            }
            Table::Session => {
                c.extend([
                    col("room_id", String),
                    col("window", String),
                    col("session_id", String),
                    col("version", UInt64),
                    col("org_id", String),
                    col("account_id", NullableString),
                    col("platform", String),
                    // Contract §6: the `*_ts` columns are UInt64 milliseconds.
                    col("session_start_ts", UInt64),
                    col("session_end_ts", NullableUInt64),
                    col("duration_s", Float64),
                    col("peak_online", UInt64),
                    col("peak_online_ts", NullableUInt64),
                ]);
                measure_columns(&mut c, "", Counts::default().measures());
                measure_columns(&mut c, "first30m_", Counts::default().measures());
                // Added by migration 7 right here, before `cold_start`, as in replay JSON.
                c.push(col("ended_by_timeout", Bool));
                c.push(col("cold_start", Bool));
            }
            Table::Annotations => c.extend([
                col("org_id", String),
                col("room_id", String),
                col("session_id", String),
                col("platform", String),
                col("kind", String),
                col("ts", DateTime),
                col("ts_ms", UInt64),
                col("event_id", String),
                // Empty when the event has none: String keeps Grafana queries simple.
                col("product_id", String),
                col("text", String),
            ]),
        }
        c
    }

    /// The sorting (and deduplication) key of contract §5. It holds no column that can
    /// change between versions of one result: a late event can re-decide `org_id`,
    /// `account_id` and `platform`, and a key holding one of them would keep the older
    /// version beside the newer one (v1.1 moved `org_id` out; migrations 8 to 13 move
    /// tables created with it).
    pub fn order_by(self) -> Vec<&'static str> {
        match self {
            Table::Window => vec!["room_id", "window", "window_start"],
            Table::Source | Table::Plan | Table::Product => {
                let dim = self.breakdown().expect("a breakdown table").column();
                vec!["room_id", "window", "window_start", dim]
            }
            Table::Session => vec!["room_id", "session_id"],
            // ts_ms and event_id make one event one row, whatever the number of replays.
            Table::Annotations => vec!["room_id", "ts", "ts_ms", "event_id"],
        }
    }

    /// Partitions by month of a key column, so every version of one key lands in the
    /// same partition and `FINAL` can collapse them. Session rows are few and their
    /// start time can move with a late `session_start`, so they are not partitioned.
    fn partition_by(self) -> Option<&'static str> {
        match self {
            Table::Window | Table::Source | Table::Plan | Table::Product => Some("toYYYYMM(`window_start`)"),
            Table::Session => None,
            Table::Annotations => Some("toYYYYMM(`ts`)"),
        }
    }

    /// `ReplacingMergeTree(version)` keeps the highest version of a key (the last
    /// inserted on ties, which carry the same numbers): re-sending a batch, or replaying
    /// after a crash, never changes the final numbers (contract §5).
    fn engine(self) -> &'static str {
        match self {
            Table::Annotations => "ReplacingMergeTree()",
            _ => "ReplacingMergeTree(`version`)",
        }
    }

    /// `CREATE TABLE IF NOT EXISTS`, valid on ClickHouse 18.16 and current releases.
    pub fn create_sql(self, database: &str) -> String {
        let columns: Vec<String> =
            self.columns().iter().map(|c| format!("    `{}` {}", c.name, c.ty.sql())).collect();
        format!(
            "CREATE TABLE IF NOT EXISTS `{database}`.`{}` (\n{}\n) {}",
            self.name(),
            columns.join(",\n"),
            self.engine_sql()
        )
    }

    /// `ENGINE = ... [PARTITION BY ...] ORDER BY (...)`: the engine, partitioning and
    /// key a table of today's schema has.
    pub fn engine_sql(self) -> String {
        let mut sql = format!("ENGINE = {}", self.engine());
        if let Some(p) = self.partition_by() {
            sql.push_str(&format!(" PARTITION BY {p}"));
        }
        sql.push_str(&format!(" ORDER BY ({})", quoted_list(&self.order_by())));
        sql
    }

    /// The insert statement rows are encoded for.
    pub fn insert_sql(self, database: &str) -> String {
        let names: Vec<String> = self.columns().into_iter().map(|c| c.name).collect();
        format!("INSERT INTO `{database}`.`{}` ({}) FORMAT RowBinary", self.name(), quoted_list(&names))
    }

    /// Reads the latest version of every key, in key order.
    pub fn select_latest_sql(self, database: &str) -> String {
        let names: Vec<String> = self.columns().into_iter().map(|c| c.name).collect();
        format!(
            "SELECT {} FROM `{database}`.`{}` FINAL ORDER BY {}",
            quoted_list(&names),
            self.name(),
            quoted_list(&self.order_by())
        )
    }
}

fn quoted_list<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn columns_are_unique_and_keys_are_columns() {
        for table in Table::ALL {
            let cols = table.columns();
            let names: HashSet<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names.len(), cols.len(), "{table:?} has a duplicate column");
            for key in table.order_by() {
                // Contract §5: a key column must not change between versions of a result.
                assert!(
                    !["org_id", "account_id", "platform"].contains(&key),
                    "{table:?}: {key} can change between versions and must not be in the key"
                );
                let c = cols.iter().find(|c| c.name == key).unwrap_or_else(|| panic!("{table:?}: key {key}"));
                assert!(
                    !matches!(c.ty, ColumnType::NullableString | ColumnType::NullableFloat64),
                    "{table:?}: nullable key column {key} is not allowed"
                );
            }
        }
    }

    #[test]
    fn window_table_follows_the_contract() {
        let sql = Table::Window.create_sql("lf");
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS `lf`.`room_window_stats` ("), "{sql}");
        assert!(sql.contains("`window_start` DateTime('UTC')"), "{sql}");
        assert!(sql.contains("`gpm` Nullable(Float64)"), "{sql}");
        assert!(sql.contains("`gmv_cents` Int64"), "{sql}");
        assert!(sql.contains("`watch_seconds` Float64"), "{sql}");
        assert!(sql.contains("`account_id` Nullable(String)"), "{sql}");
        assert!(sql.ends_with(
            "ENGINE = ReplacingMergeTree(`version`) PARTITION BY toYYYYMM(`window_start`) \
             ORDER BY (`room_id`, `window`, `window_start`)"
        ));
        assert_eq!(Table::Window.columns().len(), 9 + livefunnel_core::row::MEASURE_COUNT);
    }

    #[test]
    fn breakdown_and_session_tables_have_their_dimension_and_prefixes() {
        assert!(Table::Plan
            .create_sql("lf")
            .contains("ORDER BY (`room_id`, `window`, `window_start`, `plan_id`)"));
        let product: Vec<String> = Table::Product.columns().into_iter().map(|c| c.name).collect();
        assert!(product.contains(&"product_id".to_string()) && product.contains(&"items_sold".to_string()));
        assert!(!product.contains(&"comments".to_string()));
        let session = Table::Session.columns();
        assert_eq!(session.len(), 12 + 2 * livefunnel_core::row::MEASURE_COUNT + 2);
        let tail: Vec<&str> = session[session.len() - 2..].iter().map(|c| c.name.as_str()).collect();
        assert_eq!(tail, ["ended_by_timeout", "cold_start"]);
        assert!(session.iter().any(|c| c.name == "first30m_gpm" && c.ty == ColumnType::NullableFloat64));
        let sql = Table::Session.create_sql("lf");
        assert!(!sql.contains("PARTITION BY") && sql.contains("`session_end_ts` Nullable(UInt64)"), "{sql}");
        let ann = Table::Annotations.create_sql("lf");
        assert!(ann.contains("ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(`ts`)"), "{ann}");
    }

    #[test]
    fn insert_and_select_name_every_column() {
        let insert = Table::Source.insert_sql("lf");
        assert!(insert.starts_with("INSERT INTO `lf`.`room_source_window_stats` (`room_id`, `window`, "));
        assert!(insert.ends_with("`comments`) FORMAT RowBinary"), "{insert}");
        let select = Table::Session.select_latest_sql("lf");
        assert!(select.ends_with("FROM `lf`.`room_session_stats` FINAL ORDER BY `room_id`, `session_id`"));
    }
}
