//! The event-time window engine of one input partition (contract §1.5, §2, §3;
//! every interpretation is written down in `docs/semantics.md`).
//!
//! A pure state machine: events and time in, rows out. The async runtime that feeds
//! it from Kafka lives elsewhere; here there is no IO and no clock.

mod agg;
mod dedupe;
mod distinct;
mod emit;
mod keyed;
mod lifecycle;
mod presence;
mod room;
mod rooms;
mod running;
mod session;
mod slots;
mod state;
mod viewers;
mod window;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{EngineConfig, TimeMode, WindowSpec};
use crate::event::{Event, Reason, Source};
use crate::row::Row;
use emit::{Scratch, EPOCH_SHIFT};
use keyed::{Interned, Keyed};
use room::Room;
use rooms::Rooms;
pub use running::{RoomTotals, RunningRoom, TouchedRoom};
pub use state::{SnapshotStats, StateError, STATE_FORMAT_VERSION};

/// What happened to one validated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted. `late` when `ts < W` (a correction of already-watermarked time).
    Accepted { late: bool },
    /// Same `room_id` + `event_id` as an accepted event still inside the horizon.
    Duplicate,
    /// `ts_out_of_range` or `too_late`.
    Rejected(Reason),
}

/// Counters the engine keeps about its own work (part of a checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineStats {
    pub accepted: u64,
    pub late_accepted: u64,
    pub duplicates: u64,
    pub too_late: u64,
    pub ts_out_of_range: u64,
    pub after_session_final: u64,
    pub rooms_retired: u64,
    // Added by state format 3, which writes them after the format-2 state.
    /// `room_limit` rejections (§1.4 reason 8).
    #[serde(skip)]
    pub room_limit: u64,
    /// Sessions ended by `session_idle_timeout` (§2).
    #[serde(skip)]
    pub sessions_timed_out: u64,
    /// Events counted under `__other__`, by breakdown kind (source, plan, product).
    #[serde(skip)]
    pub breakdown_overflow: [u64; 3],
}

/// One configured hop/tumble window.
#[derive(Debug, Clone)]
pub(crate) struct Def {
    pub size: i64,
    pub slide: i64,
    pub name: Arc<str>,
    /// Whether its rows come with source, plan and product breakdown rows.
    pub breakdowns: bool,
}

/// The configuration in the form the hot path wants it.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub ooo: i64,
    pub lateness: i64,
    pub idle_grace: i64,
    pub idle_timeout: i64,
    pub presence_timeout: i64,
    pub session_idle_timeout: i64,
    pub max_future_skew: i64,
    pub limit: usize,
    pub pane_ms: i64,
    pub max_size: i64,
    /// The largest window with breakdown rows (0 when none has them).
    pub max_breakdown_size: i64,
    /// Slide of the smallest window: live session rows are emitted at its multiples.
    pub tick: i64,
    pub defs: Vec<Def>,
    pub session_rows: bool,
    /// Some window has breakdown rows: the key cap applies.
    pub any_breakdowns: bool,
    pub max_keys: usize,
    /// `__other__`, shared by every row of it.
    pub other_key: Arc<str>,
    /// The source names, by `Source::index`, shared by every breakdown row.
    pub source_keys: Vec<Arc<str>>,
    /// The keyed hasher of the engine's tables.
    pub keyed: Keyed,
    pub max_rooms: usize,
    pub mode: TimeMode,
    /// `epoch << EPOCH_SHIFT`: added to every emitted version.
    pub version_base: u64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Params {
    fn new(cfg: &EngineConfig) -> Params {
        let defs: Vec<Def> = cfg
            .windows
            .iter()
            .filter_map(|w| match *w {
                WindowSpec::Hop { size_ms, slide_ms } => Some(Def {
                    size: size_ms,
                    slide: slide_ms,
                    name: w.name().into(),
                    breakdowns: cfg.has_breakdowns(w),
                }),
                WindowSpec::Session => None,
            })
            .collect();
        let pane_ms = defs.iter().fold(0, |g, d| gcd(g, d.slide)).max(1000);
        let tick = defs.iter().min_by_key(|d| (d.size, d.slide)).map_or(60_000, |d| d.slide);
        Params {
            ooo: cfg.out_of_orderness_ms,
            lateness: cfg.allowed_lateness_ms,
            idle_grace: cfg.idle_grace_ms,
            idle_timeout: cfg.idle_timeout_ms,
            presence_timeout: cfg.presence_timeout_ms,
            session_idle_timeout: cfg.session_idle_timeout_ms,
            max_future_skew: cfg.max_future_skew_ms,
            limit: cfg.exact_distinct_limit,
            pane_ms,
            max_size: defs.iter().map(|d| d.size).max().unwrap_or(0),
            max_breakdown_size: defs.iter().filter(|d| d.breakdowns).map(|d| d.size).max().unwrap_or(0),
            tick,
            defs,
            session_rows: cfg.session_rows(),
            any_breakdowns: cfg.any_breakdowns(),
            max_keys: cfg.max_breakdown_keys,
            other_key: Arc::from(crate::config::OTHER_KEY),
            source_keys: Source::ALL.iter().map(|s| Arc::from(s.as_str())).collect(),
            keyed: Keyed::default(),
            max_rooms: cfg.max_rooms_per_partition,
            mode: cfg.mode,
            version_base: 0,
        }
    }
}

/// One partition's engine.
pub struct Engine {
    cfg: EngineConfig,
    p: Params,
    stats: EngineStats,
    rooms: Rooms,
    /// Room ids to indexes into `rooms`, in order of first arrival.
    room_index: Interned,
    /// `partition_max_ts`; `i64::MIN` before the first accepted event.
    partition_max_ts: i64,
    seq: u64,
    /// Live mode: the wall clock of the last event passed in, and `partition_max_ts` then.
    last_input: Option<(i64, i64)>,
    /// Rooms by the emission watermark at which they next have something to emit.
    due: BTreeSet<(i64, u32)>,
    /// Rooms whose sessions all ended, by `room_max_ts + session_idle_timeout`.
    retiring: BTreeSet<(i64, u32)>,
    /// Live mode: rooms due for retirement by partition time, waiting for the wall
    /// clock, by the wall time at which they may retire.
    wall_retiring: BTreeSet<(i64, u32)>,
    /// Live sessions by `max_ts + session_idle_timeout` (a lower bound: a session's
    /// key is refreshed when it is reached, not at every event), then (room, session).
    timeouts: BTreeSet<(i64, u32, u32)>,
    /// Live mode: sessions timed out by partition time, waiting for the wall clock.
    wall_timeouts: BTreeSet<(i64, u32, u32)>,
    /// Rooms not retired: what `limits.max_rooms_per_partition` bounds.
    active_rooms: usize,
    /// Rooms changed since the last [`Engine::running`] call.
    dirty: Vec<u32>,
    /// Rooms with an accepted event since the last [`Engine::touched`] call.
    touched: Vec<u32>,
    /// Restored after a crash: the wall clock of `last_input` belongs to the process
    /// that crashed, so the next `tick` only takes the new clock as its reference.
    reanchor_wall_clock: bool,
    scratch: Scratch,
    presence: presence::Buffers,
}

impl Engine {
    /// Builds an engine; `cfg` must have passed [`EngineConfig::validate`].
    pub fn new(cfg: EngineConfig) -> Engine {
        debug_assert!(cfg.validate().is_ok(), "engine config must be validated first");
        let p = Params::new(&cfg);
        Engine {
            cfg,
            p,
            stats: EngineStats::default(),
            rooms: Rooms::default(),
            room_index: Interned::default(),
            partition_max_ts: i64::MIN,
            seq: 0,
            last_input: None,
            due: BTreeSet::new(),
            retiring: BTreeSet::new(),
            wall_retiring: BTreeSet::new(),
            timeouts: BTreeSet::new(),
            wall_timeouts: BTreeSet::new(),
            active_rooms: 0,
            dirty: Vec::new(),
            touched: Vec::new(),
            reanchor_wall_clock: false,
            scratch: Scratch::default(),
            presence: presence::Buffers::default(),
        }
    }

    /// Sets the epoch of every version emitted from now on: `version = epoch << 40 |
    /// counter`, where the counter is the key's own (1, 2, 3... in epoch 0, today's
    /// replay output). The live pipeline raises the epoch at every start, from a count
    /// it keeps durably apart from the checkpoints, so that the rows of a restored
    /// engine outrank whatever the crashed process emitted after its last checkpoint
    /// (ClickHouse keeps the highest version). Lowering the epoch would let versions go
    /// backwards, and an epoch above `MAX_EPOCH` (2^24 − 1) would wrap: both refused.
    pub fn set_version_epoch(&mut self, epoch: u32) -> Result<(), StateError> {
        let current = self.version_epoch();
        if epoch < current {
            return Err(StateError::EpochBackwards { current, requested: epoch });
        }
        if epoch > emit::MAX_EPOCH {
            return Err(StateError::EpochTooLarge { requested: epoch, max: emit::MAX_EPOCH });
        }
        self.p.version_base = u64::from(epoch) << EPOCH_SHIFT;
        Ok(())
    }

    pub fn version_epoch(&self) -> u32 {
        (self.p.version_base >> EPOCH_SHIFT) as u32
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    pub fn partition_max_ts(&self) -> Option<i64> {
        (self.partition_max_ts != i64::MIN).then_some(self.partition_max_ts)
    }

    /// Processes one validated event. `wall_clock_ms` is only read in live mode.
    /// Emitted rows are appended to `out`.
    pub fn process(&mut self, ev: &Event<'_>, wall_clock_ms: i64, out: &mut Vec<Row>) -> Outcome {
        let p = &self.p;
        let limit = match p.mode {
            TimeMode::Replay if self.partition_max_ts != i64::MIN => Some(self.partition_max_ts),
            TimeMode::Replay => None,
            TimeMode::Live => Some(wall_clock_ms),
        };
        if p.mode == TimeMode::Live {
            // Whatever happens to this event, the partition is not idle.
            self.last_input = Some((wall_clock_ms, self.partition_max_ts));
            self.reanchor_wall_clock = false;
        }
        if limit.is_some_and(|l| ev.ts > l.saturating_add(p.max_future_skew)) {
            self.stats.ts_out_of_range += 1;
            return Outcome::Rejected(Reason::TsOutOfRange);
        }
        let ri = self.room_index.get(&p.keyed, &ev.room_id);
        let known = ri.map(|ri| &self.rooms[ri as usize]);
        let w = known.map_or(i64::MIN, |r| r.watermark(p));
        let horizon = known.map_or(i64::MIN, |r| r.horizon(p));
        if ev.ts < horizon {
            self.stats.too_late += 1;
            return Outcome::Rejected(Reason::TooLate);
        }
        let digest = dedupe::digest(&ev.event_id);
        if known.is_some_and(|r| r.dedupe.contains(&p.keyed, &digest, horizon)) {
            self.stats.duplicates += 1;
            return Outcome::Duplicate;
        }
        // A new room, or a retired one coming back: it takes a place among the rooms.
        if known.is_none_or(|r| r.retired) && self.active_rooms >= p.max_rooms {
            self.stats.room_limit += 1;
            return Outcome::Rejected(Reason::RoomLimit);
        }
        let ri = match ri {
            Some(ri) => ri,
            None => {
                let id: Arc<str> = Arc::from(&*ev.room_id);
                let mut room = Room::new(id.clone(), p.pane_ms);
                // Counted as active below, like a retired room that comes back.
                room.retired = true;
                self.rooms.push(room);
                self.room_index.insert(&p.keyed, id)
            }
        };
        let room = &mut self.rooms[ri as usize];
        if room.retired {
            self.active_rooms += 1;
        }
        let late = ev.ts < w;
        self.seq += 1;
        self.stats.accepted += 1;
        self.stats.late_accepted += u64::from(late);
        room.dedupe.insert(&p.keyed, digest, ev.ts, horizon);
        let si = room.apply(ev, self.seq, p, &mut self.stats, &mut self.presence);
        room.arrival_wall = wall_clock_ms;
        room.sessions[si].arrival_wall = wall_clock_ms;
        if !room.dirty {
            room.dirty = true;
            self.dirty.push(ri);
        }
        if !room.touched {
            room.touched = true;
            self.touched.push(ri);
        }
        self.track_session(ri, si, ev.kind == crate::event::EventType::SessionEnd);

        let p = &self.p;
        let sc = &mut self.scratch;
        let room = &mut self.rooms[ri as usize];
        room.reemit_after(ev.ts, p, sc, out);
        if ev.kind == crate::event::EventType::SessionEnd {
            // Windows that end at or before the broadcast's end are shown now.
            room.advance(ev.ts, p, sc, out);
            room.emit_session(si, true, p, sc, out);
        } else if room.sessions[si].ended() {
            room.emit_session(si, false, p, sc, out);
        }
        self.partition_max_ts = self.partition_max_ts.max(ev.ts);
        if let Some(last) = &mut self.last_input {
            last.1 = self.partition_max_ts;
        }
        let e = self.partition_max_ts.saturating_sub(p.idle_grace).saturating_sub(p.ooo);
        let room = &mut self.rooms[ri as usize];
        room.advance(room.watermark(p).max(e), p, &mut self.scratch, out);
        room.collect(p, &mut self.scratch, out);
        self.requeue(ri);
        self.advance_partition(out);
        self.time_out_sessions(wall_clock_ms, out);
        self.retire_due(wall_clock_ms, out);
        Outcome::Accepted { late }
    }

    /// Live mode: lets the wall clock move a partition that has received nothing for
    /// `idle_timeout` (§1.5): its `partition_max_ts` advances by the wall clock elapsed
    /// since its last event, so quiet rooms still show their windows. Call it
    /// periodically; it does nothing in replay mode or before the first event.
    pub fn tick(&mut self, wall_clock_ms: i64, out: &mut Vec<Row>) {
        let Some((last_wall, last_max)) = self.last_input else { return };
        if self.reanchor_wall_clock {
            // The time the process was down is not idle time of the partition: its
            // events are waiting in Kafka and are about to be replayed.
            self.reanchor_wall_clock = false;
            self.last_input = Some((wall_clock_ms, last_max));
            return;
        }
        if self.p.mode != TimeMode::Live || last_max == i64::MIN {
            return;
        }
        let elapsed = wall_clock_ms.saturating_sub(last_wall);
        if elapsed < self.p.idle_timeout {
            self.time_out_sessions(wall_clock_ms, out);
            self.retire_due(wall_clock_ms, out);
            return;
        }
        let target = last_max.saturating_add(elapsed);
        if target > self.partition_max_ts {
            self.partition_max_ts = target;
            self.advance_partition(out);
        }
        // Timeouts and retirement wait for the wall clock too: check them at every
        // tick, even when the partition did not move.
        self.time_out_sessions(wall_clock_ms, out);
        self.retire_due(wall_clock_ms, out);
    }

    /// `partition_max_ts - idle_grace - out_of_orderness`: the floor of every room's `E`.
    fn partition_emission(&self) -> i64 {
        self.partition_max_ts.saturating_sub(self.p.idle_grace).saturating_sub(self.p.ooo)
    }

    /// Emits for every room whose pending emission the partition's progress has reached.
    fn advance_partition(&mut self, out: &mut Vec<Row>) {
        let e = self.partition_emission();
        while let Some(&(due, ri)) = self.due.first() {
            if due > e {
                break;
            }
            self.due.pop_first();
            let room = &mut self.rooms[ri as usize];
            room.due_key = None;
            room.advance(room.watermark(&self.p).max(e), &self.p, &mut self.scratch, out);
            self.requeue(ri);
        }
    }

    /// Puts room `ri` back in the due and retirement indexes after its state changed.
    fn requeue(&mut self, ri: u32) {
        let room = &mut self.rooms[ri as usize];
        let due = room.next_due(&self.p);
        if due != room.due_key {
            if let Some(k) = room.due_key {
                self.due.remove(&(k, ri));
            }
            if let Some(k) = due {
                self.due.insert((k, ri));
            }
            room.due_key = due;
        }
        let retire = (!room.retired && room.all_sessions_ended())
            .then(|| room.max_ts.saturating_add(self.p.session_idle_timeout));
        if retire != room.retire_key {
            if let Some(k) = room.retire_key {
                self.retiring.remove(&(k, ri));
            }
            if let Some(k) = retire {
                self.retiring.insert((k, ri));
            }
            room.retire_key = retire;
        }
    }

    /// End of a bounded input: the watermark goes to +infinity; every window and
    /// session not yet emitted in its latest state is emitted.
    pub fn finish(&mut self, out: &mut Vec<Row>) {
        self.finish_with(out, |_| {});
    }

    /// [`Engine::finish`], handing the rows to `sink` room by room, so a large input
    /// never holds all of its final rows at once.
    pub fn finish_with(&mut self, buf: &mut Vec<Row>, mut sink: impl FnMut(&mut Vec<Row>)) {
        for room in self.rooms.iter_mut() {
            room.flush(&self.p, &mut self.scratch, buf);
            sink(buf);
        }
        self.due.clear();
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v11;
