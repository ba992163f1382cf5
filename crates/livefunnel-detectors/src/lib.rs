//! livefunnel's room alert detectors, in event time, one state per room.
//!
//! - **GPMDrop**: a one-sided Poisson CUSUM on organic paid orders per organic
//!   exposure against the room's own baseline (learnt after the warm-up, ten minutes
//!   late, frozen for a while when a drop may be under way).
//! - **SalesStall**: organic orders the baseline expected since the last one.
//! - **OnlineViewersCliff**: the fall of viewers online over 60 s in Poisson units.
//! - **Pooled**: observed and expected organic orders of the rooms too small to be
//!   armed on their own, summed per org by the rules.
//!
//! Pure: no IO, no clock. The pipeline and `livefunnel eval-alerts` feed the same rows
//! through the same code. `docs/alerts.md` has the design, its measured delays and
//! false-alarm rates; `docs/metrics.md` the series.

mod cliff;
mod config;
mod orders;
mod room;

pub use cliff::{CliffDetector, CliffValues};
pub use config::{DetectorConfig, ParamError};
pub use orders::{MinuteCounts, OrderDetector, PooledDelta, CORRECTABLE_MINUTES};
pub use room::{DetectorValues, Firing, MinuteTotals, PaidPart, PaidSource, RoomDetectors};

/// Version of the serialized [`RoomDetectors`]: a checkpoint written with another is
/// refused with a clear error rather than misread.
pub const STATE_FORMAT: u8 = 1;

#[cfg(test)]
mod tests;
