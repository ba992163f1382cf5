//! livefunnel's deterministic event simulator: live-commerce rooms (直播带货)
//! on 视频号 / 抖音 / 快手 / 淘宝, as a stream of contract §1 JSON messages in
//! arrival order.
//!
//! Pure: no IO, no clock, no OS randomness. The PRNG (xoshiro256** seeded by
//! splitmix64) and the little floating-point maths it needs are implemented
//! here with IEEE basic operations only, so the bytes for a given
//! [`SimParams`] never change.
//!
//! It streams: events are planned per room over simulated time in a priority
//! queue (a viewer's visit is planned when the viewer arrives), and delivered
//! through a second queue ordered by arrival time. Memory grows with the
//! number of rooms and of viewers online at once, not with the stream length.
//!
//! What the stream looks like (what agency operators report):
//! - each room runs one broadcast: `session_start` (with `home_city`) at a
//!   start staggered over the first minutes, `session_end` at its end;
//! - private-domain viewers (社群, 朋友圈, 公众号, 企微, share links, and
//!   reservation reminders: `reservation_open` then `enter`, many in the first
//!   minutes) arrive first and pull in public traffic (推荐, 直播广场, 关注,
//!   短视频, 搜索, 橱窗, 同城): public arrivals follow the recent private ones,
//!   about 1:1 in the first minutes, rising to 80–90 % public in public-led
//!   rooms and staying near 1:1 in private-led ones; public viewers are shown
//!   the room first (`room_impression`, impressions ≫ enters);
//! - view→pay conversion about 10 % in private-led rooms and about 1 % in
//!   public-led ones, average order about 200 yuan, quantity mostly 1, along
//!   product_impression → product_click → order_created → order_paid on a
//!   catalogue of 10–30 products per room, with `product_pin` rotation, flash
//!   sales at minutes 10, 18 and 30, lucky bags at minutes 5 and 20 (minutes of
//!   the room's broadcast), paid boost plans (`plan-<room>-<k>`: 3–8 minute
//!   bursts of `paid_boost` viewers, 60–180 % on top of the room's usual
//!   enters, with their own click and comment rates), some unpaid orders and
//!   later refunds, out-of-city buyers;
//! - dwell 1–20 min (private viewers longest) with heartbeats every 30–60 s,
//!   likes, comments, shares, follows, fan-club joins;
//! - delivery: 0–2 s jitter, `late_share` delayed 10–100 s, `duplicate_share`
//!   re-sent with the same `event_id` up to 15 s later, `malformed_share` of
//!   the messages bad (invalid JSON, missing field, unknown type, bad field).
//!   Every valid message is accepted by the engine with the default
//!   configuration (lateness stays well inside `allowed_lateness`);
//! - per-room [`Scenario`]s: `gpm_drop`, `viewer_cliff`, `sales_stall`,
//!   `late_and_duplicates`, `malformed`, and `audience` (a room `scale` times
//!   as big, every rate per viewer the same; see [`scenario`]).
//!
//! Room `k` (from 1) is `room-{k:04}`; its profile and its messages depend on
//! the seed, the duration, the start and its own scenarios only, not on the
//! number of rooms or on the other rooms.

pub mod dense;
mod json;
mod model;
mod profile;
mod rng;
pub mod scenario;
mod viewer;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use json::Break;
use model::{Arrival, Ev, Room, Sink, K_SESSION_END, K_SESSION_START, SEC};
pub use profile::RoomProfile;
use rng::mix64;
pub use scenario::{parse_duration_ms, RoomScenario, RoomSet, Scenario, ScenarioSpecError, AUDIENCE_SCALES};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimParams {
    /// Number of rooms, one broadcast each.
    pub rooms: u32,
    /// Length of the simulated stream; broadcasts fit inside it.
    pub duration_ms: i64,
    pub seed: u64,
    /// Event time of the start of the stream, epoch milliseconds UTC.
    pub start_ms: i64,
    /// Share of events delivered 10–100 s late.
    pub late_share: f64,
    /// Share of events sent twice with the same `event_id`.
    pub duplicate_share: f64,
    /// Share of the messages that are bad, on top of the valid events (below 1).
    pub malformed_share: f64,
    /// Per-room scenarios, applied in order (see [`scenario`]).
    pub scenarios: Vec<RoomScenario>,
}

/// Parameters the simulator cannot run with (retrying does not help).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamsError {
    /// A share outside its range (`what` names the parameter).
    Share { what: String, value: f64 },
    /// `duration_ms` is not positive.
    Duration(i64),
    /// A scenario names a room above `rooms`.
    NoSuchRoom { scenario: String, room: u32, rooms: u32 },
    /// A scenario's time is not inside the stream.
    At { scenario: String, at_ms: i64, duration_ms: i64 },
    /// An `audience` scale outside [`AUDIENCE_SCALES`].
    Scale(f64),
}

impl std::fmt::Display for ParamsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamsError::Share { what, value } => write!(f, "{what} must be a fraction, got {value}"),
            ParamsError::Duration(d) => write!(f, "duration must be positive, got {d} ms"),
            ParamsError::NoSuchRoom { scenario, room, rooms } => write!(
                f,
                "scenario {scenario} names room {room} (room-{room:04}) but there are only {rooms} rooms"
            ),
            ParamsError::At { scenario, at_ms, duration_ms } => write!(
                f,
                "scenario {scenario} at {} is not inside the {} stream",
                human_ms(*at_ms),
                human_ms(*duration_ms)
            ),
            ParamsError::Scale(s) => write!(
                f,
                "scenario audience scale must be a number from {} to {}, got {s}",
                AUDIENCE_SCALES.start(),
                AUDIENCE_SCALES.end()
            ),
        }
    }
}

impl std::error::Error for ParamsError {}

/// `25m`, `90s`, `1500ms`: the largest unit that is exact.
fn human_ms(ms: i64) -> String {
    match ms {
        _ if ms != 0 && ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms != 0 && ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms != 0 && ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

impl SimParams {
    /// Checks what [`Simulator::new`] would otherwise clamp or ignore.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let share = |what: &str, value: f64, top_open: bool| {
            let ok = value >= 0.0 && if top_open { value < 1.0 } else { value <= 1.0 };
            if ok {
                Ok(())
            } else {
                Err(ParamsError::Share { what: what.to_owned(), value })
            }
        };
        share("late_share", self.late_share, false)?;
        share("duplicate_share", self.duplicate_share, false)?;
        share("malformed_share", self.malformed_share, true)?;
        if self.duration_ms <= 0 {
            return Err(ParamsError::Duration(self.duration_ms));
        }
        for rs in &self.scenarios {
            let kind = rs.scenario.kind();
            if let Some(room) = rs.rooms.max().filter(|&m| m > self.rooms) {
                return Err(ParamsError::NoSuchRoom { scenario: kind.to_owned(), room, rooms: self.rooms });
            }
            match rs.scenario {
                Scenario::GpmDrop { at_ms, .. }
                | Scenario::ViewerCliff { at_ms }
                | Scenario::SalesStall { at_ms }
                    if at_ms <= 0 || at_ms >= self.duration_ms =>
                {
                    return Err(ParamsError::At {
                        scenario: kind.to_owned(),
                        at_ms,
                        duration_ms: self.duration_ms,
                    });
                }
                Scenario::LateAndDuplicates { share: s } => share(kind, s, false)?,
                Scenario::Malformed { share: s } => share(kind, s, true)?,
                Scenario::Audience { scale } if !AUDIENCE_SCALES.contains(&scale) => {
                    return Err(ParamsError::Scale(scale));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The kind of traffic: the standard rooms described above, or [`dense`] ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// Rooms as agency operators report them, small and large.
    #[default]
    Standard,
    /// Every room big and busy for the whole stream: ~1,000 events per minute, ~1,000
    /// viewers online, 200 products ([`dense`]).
    Dense,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "standard" => Some(Profile::Standard),
            "dense" => Some(Profile::Dense),
            _ => None,
        }
    }
}

/// Where a message belongs, returned with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageMeta {
    /// The event's `ts` (also for a bad message: the `ts` of the event it was made from).
    pub ts_ms: i64,
    /// When the message reaches the pipeline in simulated time (`ts_ms` plus
    /// its delivery delay); never decreases from one message to the next, so
    /// it is what a paced sender waits for.
    pub due_ms: i64,
    /// The room's index (`room-0001` is 0); [`Simulator::room_id`] gives its id,
    /// the message key.
    pub room: u32,
}

impl Default for SimParams {
    fn default() -> SimParams {
        SimParams {
            rooms: 50,
            duration_ms: 30 * 60_000,
            seed: 1,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            late_share: 0.002,
            duplicate_share: 0.002,
            malformed_share: 0.0,
            scenarios: Vec::new(),
        }
    }
}

enum What {
    Start(u32),
    Tick(u32),
    Arrive(u32, Arrival),
    Ev(Ev),
    /// The next viewer event of a dense room.
    Dense(u32),
}

/// Planned in simulated event time.
struct Gen {
    ts: i64,
    seq: u64,
    what: What,
}

impl PartialEq for Gen {
    fn eq(&self, o: &Gen) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Gen {}
impl PartialOrd for Gen {
    fn partial_cmp(&self, o: &Gen) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Gen {
    fn cmp(&self, o: &Gen) -> Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// Waiting to be delivered, in arrival order.
struct Arr {
    at: i64,
    seq: u64,
    id: u64,
    ev: Ev,
    brk: Break,
}

impl PartialEq for Arr {
    fn eq(&self, o: &Arr) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Arr {}
impl PartialOrd for Arr {
    fn partial_cmp(&self, o: &Arr) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Arr {
    fn cmp(&self, o: &Arr) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Planner<'a> {
    gen: &'a mut BinaryHeap<Reverse<Gen>>,
    seq: &'a mut u64,
}

impl Sink for Planner<'_> {
    fn event(&mut self, ev: Ev) {
        *self.seq += 1;
        self.gen.push(Reverse(Gen { ts: ev.ts, seq: *self.seq, what: What::Ev(ev) }));
    }

    fn arrival(&mut self, ts: i64, room: u32, a: Arrival) {
        *self.seq += 1;
        self.gen.push(Reverse(Gen { ts, seq: *self.seq, what: What::Arrive(room, a) }));
    }
}

/// The simulator: call [`Simulator::next_with_meta`] (or
/// [`Simulator::next_message`]) until the stream ends.
pub struct Simulator {
    rooms: Vec<Room>,
    /// One per room in the dense profile, none in the standard one.
    dense: Vec<dense::DenseRoom>,
    gen: BinaryHeap<Reverse<Gen>>,
    arr: BinaryHeap<Reverse<Arr>>,
    seq: u64,
    emitted: u64,
}

impl Simulator {
    /// Plans the rooms. It never fails on what [`SimParams::validate`]
    /// rejects: shares act as if clamped to [0, 1], the duration is at least a
    /// minute, scenarios for rooms or times that do not exist do nothing, and
    /// an `audience` scale is clamped into [`AUDIENCE_SCALES`] (NaN is 1).
    pub fn new(p: SimParams) -> Simulator {
        Simulator::with_profile(p, Profile::Standard)
    }

    /// [`Simulator::new`] with the rooms of `profile`.
    pub fn with_profile(p: SimParams, profile: Profile) -> Simulator {
        let n_orgs = 2 + (mix64(p.seed ^ 0x4F52_4753) % 3) as usize;
        let duration = p.duration_ms.max(60_000);
        let mut rooms: Vec<Room> = (0..p.rooms)
            .map(|i| {
                let fx = scenario::Effects::for_room(&p, i + 1);
                Room::new(p.seed, i, n_orgs, p.start_ms, duration, fx)
            })
            .collect();
        let dense: Vec<dense::DenseRoom> = match profile {
            Profile::Standard => Vec::new(),
            Profile::Dense => {
                rooms.iter_mut().map(|r| dense::DenseRoom::new(r, p.start_ms, duration)).collect()
            }
        };
        let mut gen = BinaryHeap::new();
        let mut seq = 0;
        for r in &rooms {
            seq += 1;
            gen.push(Reverse(Gen { ts: r.start, seq, what: What::Start(r.idx) }));
        }
        Simulator { rooms, dense, gen, arr: BinaryHeap::new(), seq, emitted: 0 }
    }

    /// Appends the next message (one JSON object, no newline) in arrival order;
    /// false when the stream is over.
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> bool {
        self.next_with_meta(out).is_some()
    }

    /// Appends the next message (one JSON object, no newline) in arrival
    /// order and says when and where it belongs; `None` when the stream is over.
    pub fn next_with_meta(&mut self, out: &mut Vec<u8>) -> Option<MessageMeta> {
        loop {
            if let Some(Reverse(a)) = self.arr.peek() {
                // Everything not yet planned has ts, hence arrival, >= the next planned ts.
                let ready = self.gen.peek().is_none_or(|Reverse(g)| a.at <= g.ts);
                if ready {
                    let Reverse(a) = self.arr.pop().expect("peeked");
                    json::write_event(out, &self.rooms[a.ev.room as usize], &a.ev, a.id, a.brk);
                    self.emitted += 1;
                    return Some(MessageMeta { ts_ms: a.ev.ts, due_ms: a.at, room: a.ev.room });
                }
            }
            let Reverse(g) = self.gen.pop()?;
            self.step(g);
        }
    }

    /// The id of room index `room` (`room-0001` for 0): the message key.
    pub fn room_id(&self, room: u32) -> &str {
        &self.rooms[room as usize].id
    }

    /// Room index `room`'s profile and steady-state volumes (`room-0001` is 0).
    pub fn room_profile(&self, room: u32) -> RoomProfile {
        self.rooms[room as usize].profile()
    }

    /// Number of rooms.
    pub fn rooms(&self) -> u32 {
        self.rooms.len() as u32
    }

    /// Messages appended so far (duplicates and malformed ones included).
    pub fn events_emitted(&self) -> u64 {
        self.emitted
    }

    fn step(&mut self, g: Gen) {
        let mut planner = Planner { gen: &mut self.gen, seq: &mut self.seq };
        match g.what {
            What::Start(r) if !self.dense.is_empty() => {
                let (room, dense) = (&self.rooms[r as usize], &mut self.dense[r as usize]);
                dense.open(room, &mut planner);
                let first = dense.first(room);
                planner.push(first, What::Dense(r));
            }
            What::Dense(r) => {
                let (ev, next) = self.dense[r as usize].step(&mut self.rooms[r as usize], g.ts);
                if next < self.rooms[r as usize].end - SEC {
                    planner.push(next, What::Dense(r));
                }
                self.deliver(ev);
            }
            What::Start(r) => {
                let room = &mut self.rooms[r as usize];
                room.open(&mut planner);
                planner.push_tick(room.start + 1_000, r);
            }
            What::Tick(r) => {
                let room = &mut self.rooms[r as usize];
                room.tick(g.ts, &mut planner);
                if room.ticks_after(g.ts) {
                    planner.push_tick(g.ts + 1_000, r);
                }
            }
            What::Arrive(r, a) => self.rooms[r as usize].arrive(g.ts, a, &mut planner),
            What::Ev(ev) => self.deliver(ev),
        }
    }

    fn deliver(&mut self, ev: Ev) {
        let room = &mut self.rooms[ev.room as usize];
        let id = room.next_event;
        room.next_event += 1;
        let fx = &room.fx;
        let d = &mut room.delivery;
        let at = match ev.kind {
            K_SESSION_START => ev.ts,
            // After the jitter of the room's last events.
            K_SESSION_END => ev.ts + 2_500,
            _ if d.chance(fx.late_share) => ev.ts + d.range(10_000, 100_001),
            _ => ev.ts + d.range(0, 2_001),
        };
        self.seq += 1;
        self.arr.push(Reverse(Arr { at, seq: self.seq, id, ev, brk: Break::None }));
        if d.chance(fx.duplicate_share) {
            self.seq += 1;
            let at2 = at + d.range(200, 15_001);
            self.arr.push(Reverse(Arr { at: at2, seq: self.seq, id, ev, brk: Break::None }));
        }
        // A share `m` of all messages bad: `m / (1 - m)` bad ones per event.
        let m = fx.malformed_share.clamp(0.0, 0.999);
        if d.chance(m / (1.0 - m)) {
            let brk = match d.below(4) {
                0 if d.chance(0.5) => Break::Truncate(d.next_u64() as u32),
                0 => Break::TrailingComma,
                1 => Break::Omit(d.below(3) as u8),
                2 => Break::UnknownType(d.below(4) as u8),
                _ => {
                    let n = if ev.amount >= 0 { 4 } else { 3 };
                    match d.below(n) {
                        0 => Break::TsString,
                        1 => Break::BadPlatform,
                        2 => Break::EmptyId,
                        _ => Break::NegativeAmount,
                    }
                }
            };
            self.seq += 1;
            let at3 = at + d.range(0, 2_001);
            self.arr.push(Reverse(Arr { at: at3, seq: self.seq, id, ev, brk }));
        }
    }
}

impl Planner<'_> {
    fn push_tick(&mut self, ts: i64, room: u32) {
        self.push(ts, What::Tick(room));
    }

    fn push(&mut self, ts: i64, what: What) {
        *self.seq += 1;
        self.gen.push(Reverse(Gen { ts, seq: *self.seq, what }));
    }
}

#[cfg(test)]
mod tests;
