//! The wall: live pages served by livefunnel itself on `http.listen`, beside `/metrics`.
//!
//! - `GET /`: every live room visible to the viewer, a grid for a 1920×1080 TV; rooms in
//!   alert red and on top, the rest by GMV; pages turn by themselves.
//! - `GET /rooms/{room_id}`: one room: funnel, traffic by source class, its session so far.
//! - `GET /api/rooms`, `GET /api/rooms/{room_id}`: the same data as JSON (docs in the
//!   README), `GET /api/stream`: Server-Sent Events pushing it at most once a second.
//! - `GET /runbook`: docs/runbook.md, which alert annotations link to.
//!
//! Everything comes from one [`board::Snapshot`], rebuilt once a second from the room
//! series as `/metrics` shows them (no second computation) and the room directory.
//! The pages are plain HTML, CSS and JavaScript compiled into the binary
//! (`assets/`): nothing is fetched from anywhere else.
//!
//! Access ([`config::Access`]): a per-org token shows that org's rooms, the admin token
//! every room, anything else gets 401. With no token configured the wall answers
//! loopback clients only (403 otherwise).

mod alerts;
mod api;
pub mod board;
pub mod config;
pub mod directory;
mod history;
mod runbook;

use std::sync::Arc;

use livefunnel_metrics::{RoomInfoMetrics, RoomMetrics};
use prometheus::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::PipelineError;

pub use api::routes;
pub use config::WallConfig;

/// What the handlers share.
pub struct Wall {
    pub(crate) config: WallConfig,
    pub(crate) access: config::Access,
    pub(crate) snapshots: watch::Receiver<Arc<board::Snapshot>>,
}

impl Wall {
    /// Loads the room directory (an error here stops the start: the file named is
    /// wrong), registers the directory's series and starts rebuilding the snapshot
    /// every second until `stop`.
    pub fn start(
        config: &WallConfig,
        rooms: RoomMetrics,
        registry: &Registry,
        stop: CancellationToken,
    ) -> Result<Arc<Wall>, PipelineError> {
        let directory = match config.rooms_path() {
            Some(path) => Some(directory::watch(path, stop.clone()).map_err(PipelineError::Directory)?),
            None => None,
        };
        let info = RoomInfoMetrics::new(registry).map_err(PipelineError::Metrics)?;
        let snapshots = board::run(board::Builder::new(rooms, info, directory), stop);
        Ok(Arc::new(Wall { config: config.clone(), access: config.access(), snapshots }))
    }
}
