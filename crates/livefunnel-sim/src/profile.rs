//! What a room is like, and how much it sells and holds online in its steady state
//! (after the reservation wave, the ramp-up and the flash sales): for sizing rooms in
//! experiments such as `livefunnel eval-alerts`, which scale rooms to a target volume.
//! The estimates follow the rates of `model.rs` and `viewer.rs`; measured volumes of
//! simulated rooms are within about 15 % of them (tests/model.rs).

use crate::model::Room;

/// Mean of a log-uniform draw on [lo, hi] (a visit's length, seconds).
fn log_uniform_mean(lo: f64, hi: f64) -> f64 {
    (hi - lo) / crate::rng::ln(hi / lo)
}

/// A room's profile and its steady-state volumes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomProfile {
    /// Private-domain-led (私域主导): about 10 % view→pay, else about 1 %.
    pub private_led: bool,
    /// Event time of its `session_start` and `session_end`.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Its org (`org_id`).
    pub org: &'static str,
    /// Steady-state paid orders per minute of viewers from private and public sources.
    pub organic_orders_per_minute: f64,
    /// Steady-state viewers online.
    pub online: f64,
}

impl Room {
    pub(crate) fn profile(&self) -> RoomProfile {
        let b = self.base;
        let ratio = self.pub_ratio_end();
        // Private enters: arrivals plus the friends who open a shared link, which
        // private (8 %) and public (2 %) viewers send, 40 % of them opened; public
        // enters follow the private ones at the room's ratio.
        let private = 0.8 * b / (1.0 - 0.4 * 0.08 - 0.4 * 0.02 * ratio);
        let public = ratio * private;
        let (p_private, p_public) = if self.private_led {
            (1.4 * self.conv, 0.6 * self.conv)
        } else {
            (3.0 * self.conv, 0.9 * self.conv)
        };
        // About one buyer in 30 comes back for a second item.
        let orders_per_s = (private * p_private + public * p_public) * 1.03;
        let dwell = log_uniform_mean;
        let paid = if self.has_ads() { 0.25 * b } else { 0.0 };
        let online = private * dwell(90.0, 1_200.0) + public * dwell(60.0, 960.0) + paid * dwell(60.0, 720.0);
        RoomProfile {
            private_led: self.private_led,
            start_ms: self.start,
            end_ms: self.end,
            org: self.org,
            organic_orders_per_minute: orders_per_s * 60.0,
            online,
        }
    }
}
