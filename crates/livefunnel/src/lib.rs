//! The `livefunnel` program's library part: layered configuration and the
//! `replay` command, usable in-process by tests. The binary (`main.rs`) is a thin
//! command-line layer over it.

pub mod alert_relay;
pub mod config;
mod config_renamed;
pub mod detectors_config;
pub mod eval_alerts;
pub mod logging;
pub mod pacing;
pub mod replay;
pub mod sim_cmd;

pub use config::{load, Config, ConfigLoadError, Loaded, Sources};
pub use replay::{replay, replay_with, ReplayError, RowCounts, Summary};
