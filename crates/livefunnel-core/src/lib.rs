//! livefunnel's pure core: the event model, decoding and validation, the
//! event-time window engine and every measure of the contract
//! (`../shared/spec/contract.md`). No IO, no async runtime, no clock reads:
//! time comes in as arguments, so everything here is tested without sleeps.

pub mod config;
pub mod decode;
pub mod duration;
pub mod engine;
pub mod errors;
pub mod event;
mod json;
pub mod row;

pub use config::{
    env_var_name, ConfigError, EngineConfig, TimeMode, WindowSpec, ENV_PREFIX, ENV_SPLIT, USER_IDS_CLEAR,
};
pub use decode::decode;
pub use duration::Duration;
pub use engine::{
    Engine, EngineStats, Outcome, RoomTotals, RunningRoom, SnapshotStats, StateError, TouchedRoom,
    STATE_FORMAT_VERSION,
};
pub use event::{Event, EventType, Platform, Reason, Rejection, Source, SourceClass};
pub use row::{
    BreakdownCounts, BreakdownKind, BreakdownRow, Counts, Identity, Measure, Row, SessionRow, WindowRow,
};
