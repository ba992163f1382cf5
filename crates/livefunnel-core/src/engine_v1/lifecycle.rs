//! The end of broadcasts and rooms (§2): sessions that end by `session_idle_timeout`,
//! and rooms that retire once every session ended and their partition moved on.
//!
//! Both wait for partition time; in live mode they also wait for the wall clock, so a
//! single event dated far ahead cannot end other rooms' broadcasts or retire them (and
//! so make their next broadcast `too_late`). Partition time only moves with events and
//! idle ticks, and the wall clock only with calls, so each is checked after an event and
//! at every tick.

use super::Engine;
use crate::config::TimeMode;
use crate::row::Row;

/// Where a live session waits to end by timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKey {
    /// In `Engine::timeouts`, keyed by partition time (`max_ts + session_idle_timeout`).
    Partition(i64),
    /// In `Engine::wall_timeouts`, keyed by the wall clock
    /// (`arrival_wall + session_idle_timeout`).
    Wall(i64),
}

impl Engine {
    fn live(&self) -> bool {
        self.p.mode == TimeMode::Live
    }

    /// After an accepted event of session `si` of room `ri`: a new live session starts
    /// waiting for its timeout; one that a `session_end` closed stops waiting. The key of
    /// a waiting session is not moved at each of its events: it is a lower bound, checked
    /// against the session when reached.
    pub(super) fn track_session(&mut self, ri: u32, si: usize, session_end: bool) {
        let sit = self.p.session_idle_timeout;
        let s = &mut self.rooms[ri as usize].sessions[si];
        if session_end {
            match s.timeout_key.take() {
                Some(TimeoutKey::Partition(k)) => self.timeouts.remove(&(k, ri, si as u32)),
                Some(TimeoutKey::Wall(k)) => self.wall_timeouts.remove(&(k, ri, si as u32)),
                None => false,
            };
        } else if s.is_live() && s.timeout_key.is_none() {
            let k = s.max_ts.saturating_add(sit);
            s.timeout_key = Some(TimeoutKey::Partition(k));
            self.timeouts.insert((k, ri, si as u32));
        }
    }

    /// Ends by timeout every live session with no accepted event for
    /// `session_idle_timeout` of partition time (and, live, of wall clock).
    pub(super) fn time_out_sessions(&mut self, wall: i64, out: &mut Vec<Row>) {
        let pt = self.partition_max_ts;
        while let Some(&(k, ri, si)) = self.timeouts.first() {
            // Due when partition_max_ts > max_ts + session_idle_timeout.
            if k >= pt {
                break;
            }
            self.timeouts.pop_first();
            self.wait_or_time_out(ri, si, pt, wall, out);
        }
        if !self.live() {
            return;
        }
        while let Some(&(k, ri, si)) = self.wall_timeouts.first() {
            if k > wall {
                break;
            }
            self.wall_timeouts.pop_first();
            self.wait_or_time_out(ri, si, pt, wall, out);
        }
    }

    /// Session `si` of room `ri` left its index: it ends now if both clocks say so,
    /// otherwise it waits again for the clock that does not.
    fn wait_or_time_out(&mut self, ri: u32, si: u32, pt: i64, wall: i64, out: &mut Vec<Row>) {
        let sit = self.p.session_idle_timeout;
        let live = self.live();
        let s = &mut self.rooms[ri as usize].sessions[si as usize];
        debug_assert!(s.is_live(), "only live sessions wait for a timeout");
        let k = s.max_ts.saturating_add(sit);
        if k >= pt {
            s.timeout_key = Some(TimeoutKey::Partition(k));
            self.timeouts.insert((k, ri, si));
            return;
        }
        if live {
            let w = s.arrival_wall.saturating_add(sit);
            if w > wall {
                s.timeout_key = Some(TimeoutKey::Wall(w));
                self.wall_timeouts.insert((w, ri, si));
                return;
            }
        }
        s.timeout_key = None;
        s.timed_out = true;
        self.stats.sessions_timed_out += 1;
        let room = &mut self.rooms[ri as usize];
        room.emit_session(si as usize, true, &self.p, &mut self.scratch, out);
        if !room.dirty {
            room.dirty = true;
            self.dirty.push(ri);
        }
        self.requeue(ri);
    }

    /// Retires every room whose sessions all ended and whose partition moved past
    /// `room_max_ts + session_idle_timeout` (live: and as much wall clock since its latest
    /// accepted event arrived).
    pub(super) fn retire_due(&mut self, wall: i64, out: &mut Vec<Row>) {
        let sit = self.p.session_idle_timeout;
        while let Some(&(at, ri)) = self.retiring.first() {
            if self.partition_max_ts <= at {
                break;
            }
            self.retiring.pop_first();
            let room = &mut self.rooms[ri as usize];
            room.retire_key = None;
            if self.p.mode == TimeMode::Live {
                let w = room.arrival_wall.saturating_add(sit);
                if w > wall {
                    if let Some(old) = room.wall_retire_key.replace(w) {
                        self.wall_retiring.remove(&(old, ri));
                    }
                    self.wall_retiring.insert((w, ri));
                    continue;
                }
            }
            self.retire(ri, out);
        }
        if !self.live() {
            return;
        }
        while let Some(&(w, ri)) = self.wall_retiring.first() {
            if w > wall {
                break;
            }
            self.wall_retiring.pop_first();
            let room = &mut self.rooms[ri as usize];
            room.wall_retire_key = None;
            let due = !room.retired
                && room.all_sessions_ended()
                && self.partition_max_ts > room.max_ts.saturating_add(sit);
            if !due {
                // A later event moved the room on: the partition-time index has it.
                self.requeue(ri);
                continue;
            }
            let w = room.arrival_wall.saturating_add(sit);
            if w > wall {
                room.wall_retire_key = Some(w);
                self.wall_retiring.insert((w, ri));
                continue;
            }
            if let Some(k) = room.retire_key.take() {
                self.retiring.remove(&(k, ri));
            }
            self.retire(ri, out);
        }
    }

    fn retire(&mut self, ri: u32, out: &mut Vec<Row>) {
        let room = &mut self.rooms[ri as usize];
        debug_assert!(!room.retired && room.all_sessions_ended(), "retiring a room that cannot retire");
        if let Some(w) = room.wall_retire_key.take() {
            self.wall_retiring.remove(&(w, ri));
        }
        room.flush(&self.p, &mut self.scratch, out);
        room.retire(&self.p);
        if !room.dirty {
            room.dirty = true;
            self.dirty.push(ri);
        }
        self.stats.rooms_retired += 1;
        self.active_rooms -= 1;
        self.requeue(ri);
    }
}
