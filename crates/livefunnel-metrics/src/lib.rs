//! Every Prometheus series livefunnel exports, declared in one place and registered on
//! a registry passed in (never the global one).
//!
//! - [`RoomMetrics`]: the per-room series of contract §4, labels `org_id`, `room_id`,
//!   `platform` (plus `window` on the window gauges).
//!   Their alert signals ([`signals`]) are computed in event time from the emitted rows.
//! - [`PipelineMetrics`]: pipeline health, without room labels.
//! - [`RoomInfoMetrics`]: the room directory's names and GMV targets, for Grafana.
//! - [`RoomMetrics::read`]: the room series read back, for the wall.
//!
//! ClickHouse insert series live with the ClickHouse sink (`livefunnel-clickhouse`).

mod clickhouse;
mod detection;
mod pipeline;
mod process;
mod products;
mod relay;
mod room;
mod room_info;
mod room_metrics;
mod room_reading;
mod series;
mod signal_series;
pub mod signals;
pub mod text_family;

pub use clickhouse::ClickHouseMetrics;
pub use detection::CheckpointError;
pub use livefunnel_detectors::{DetectorConfig, DetectorValues, RoomDetectors};
pub use pipeline::{PipelineMetrics, DEAD_LETTER_ERROR_KINDS, OFFSET_JUMP_KINDS, SNAPSHOT_ROOM_KINDS};
pub use process::register_process_series;
pub use products::{ProductCounts, ProductLine, ProductWindow, TOP_PRODUCTS};
pub use relay::{RelayMetrics, RELAY_RESULTS};
pub use room::{CounterTotals, RoomKey, RoomTracker};
pub use room_info::{RoomInfo, RoomInfoMetrics};
pub use room_metrics::{RoomMetrics, DEFAULT_MAX_ROOMS};
pub use room_reading::RoomReading;
pub use signals::{RoomSignals, SignalWindow, SignalWindows};

/// Renders a registry and the room series in the Prometheus text format: `/metrics`.
pub fn render_all(registry: &prometheus::Registry, rooms: &RoomMetrics) -> String {
    let mut out = render(registry);
    // Tens of MiB at thousands of rooms: grown by doubling, the text would be copied
    // a few times over; the last render's length is a close guess of this one's.
    out.reserve(rooms.last_render_len() + rooms.last_render_len() / 16);
    rooms.render_into(&mut out);
    out
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding into a vec cannot fail");
    String::from_utf8(buf).expect("the text format is utf-8")
}

#[cfg(test)]
mod tests;
