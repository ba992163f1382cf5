//! Running values of open rooms for the Prometheus endpoint (contract §2 last bullet,
//! §4): what a room looks like now, computed on demand for the rooms that changed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::Facts;
use super::Engine;
use crate::event::EventType;
use crate::row::{Identity, WindowRow};

/// A room with an accepted event since the previous [`Engine::touched`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchedRoom {
    pub room_id: Arc<str>,
    /// Of the room's latest accepted event (largest `ts`, then the later arrival).
    pub identity: Arc<Identity>,
    pub totals: RoomTotals,
}

/// A room's counts since its first event, behind the `livefunnel_room_*_total`
/// counters. Part of a checkpoint, so they continue across restarts (§4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTotals {
    /// `enter` events.
    pub watch_entries: u64,
    pub product_clicks: u64,
    pub orders_paid: u64,
    pub gmv_cents: i64,
    pub refund_cents: i64,
    pub comments: u64,
}

impl RoomTotals {
    pub(crate) fn add(&mut self, f: &Facts) {
        match f.kind {
            EventType::Enter => self.watch_entries += 1,
            EventType::ProductClick => self.product_clicks += 1,
            EventType::OrderPaid => {
                self.orders_paid += 1;
                self.gmv_cents = self.gmv_cents.saturating_add(f.amount);
            }
            EventType::Refund => self.refund_cents = self.refund_cents.saturating_add(f.amount),
            EventType::Comment => self.comments += 1,
            _ => {}
        }
    }
}

/// One room's running values, as of its latest accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningRoom {
    pub room_id: Arc<str>,
    /// From the room's latest accepted event (largest `ts`, then the later arrival):
    /// `org_id` and `platform` are the series labels, `session_id` the latest session.
    pub identity: Identity,
    /// The room retired since the last call (§2): its series can go. Every other field
    /// is as it was before retirement, except `online` (0), `live` (false) and `windows`
    /// (empty). A retired room that accepts a new event is reported again, not retired.
    pub retired: bool,
    /// The `ts` of the latest accepted event.
    pub latest_ts: i64,
    /// Viewers online at instant `latest_ts`, by the presence rules of §1.5.
    pub online: u64,
    /// Some session of the room is live: started, without an accepted `session_end`,
    /// and not ended by `session_idle_timeout`.
    pub live: bool,
    /// `session_end_ts` of the latest session (`identity.session_id`), `None` while live.
    pub session_end_ts: Option<i64>,
    pub totals: RoomTotals,
    /// Per configured hop/tumble window, in configured order: the window containing
    /// `latest_ts` with the latest start, computed exactly as an emitted row would be
    /// now (`version` 0: it is not an emission; no breakdowns).
    pub windows: Vec<WindowRow>,
}

impl Engine {
    /// Appends the running values of every room whose state changed since the previous
    /// call (an accepted event, a retirement), each once; after a restore, of every room
    /// not retired. The cost is that of the changed rooms only: a few window
    /// combinations each.
    pub fn running(&mut self, out: &mut Vec<RunningRoom>) {
        let p = &self.p;
        for ri in self.dirty.drain(..) {
            let room = &mut self.rooms[ri as usize];
            room.dirty = false;
            let Some((latest_ts, _, identity)) = room.latest.clone() else {
                debug_assert!(false, "a room is dirty only after an accepted event");
                continue;
            };
            let session =
                room.session_index.get(&p.keyed, &identity.session_id).map(|i| &room.sessions[i as usize]);
            let mut r = RunningRoom {
                room_id: room.id.clone(),
                identity: (*identity).clone(),
                retired: room.retired,
                latest_ts,
                online: 0,
                live: false,
                session_end_ts: session.and_then(|s| s.end_ts()),
                totals: room.totals.clone(),
                windows: Vec::new(),
            };
            if !room.retired {
                r.live = room.sessions.iter().any(|s| s.is_live());
                r.online = room.slots.online_count_at(latest_ts);
                for (def, d) in p.defs.iter().enumerate() {
                    let end = super::slots::floor_to(latest_ts, d.slide).saturating_add(d.size);
                    if let Some(row) = room.window_row(def, end, false, p, &mut self.scratch) {
                        r.windows.push(row);
                    }
                }
            }
            out.push(r);
        }
    }

    /// Appends every room with an accepted event since the previous call, each once,
    /// with its totals now: the room counters' values, counted by the engine only. A
    /// flag and a push per event; the copy per room and call.
    pub fn touched(&mut self, out: &mut Vec<TouchedRoom>) {
        for ri in self.touched.drain(..) {
            let room = &mut self.rooms[ri as usize];
            room.touched = false;
            let Some((_, _, identity)) = &room.latest else {
                debug_assert!(false, "a room is touched only by an accepted event");
                continue;
            };
            out.push(TouchedRoom {
                room_id: room.id.clone(),
                identity: identity.clone(),
                totals: room.totals.clone(),
            });
        }
    }
}
