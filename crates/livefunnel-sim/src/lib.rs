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
//!   短视频, 搜索, 橱窗, 同城), about 1:1 early and rising to 80–90 % public in
//!   public-led rooms; public viewers are shown the room first
//!   (`room_impression`, impressions ≫ enters);
//! - view→pay conversion about 10 % in private-led rooms and about 1 % in
//!   public-led ones, average order about 200 yuan, quantity mostly 1, along
//!   product_impression → product_click → order_created → order_paid on a
//!   catalogue of 10–30 products per room, with `product_pin` rotation, flash
//!   sales at minutes 10, 18 and 30, lucky bags at minutes 5 and 20, paid boost
//!   plans (`plan-<room>-<k>`) with their own click and comment rates, some
//!   unpaid orders and later refunds, out-of-city buyers;
//! - dwell 1–20 min with heartbeats every 30–60 s, likes, comments, shares,
//!   follows, fan-club joins;
//! - delivery: 0–2 s jitter, `late_share` delayed 10–100 s, `duplicate_share`
//!   re-sent with the same `event_id` up to 15 s later, `malformed_share` extra
//!   bad messages (invalid JSON, missing field, unknown type, bad field).
//!   Every valid message is accepted by the engine with the default
//!   configuration (lateness stays well inside `allowed_lateness`).

mod json;
mod model;
mod rng;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use json::Break;
use model::{Arrival, Ev, Room, Sink, K_SESSION_END, K_SESSION_START};
use rng::{mix64, Rng};

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
    /// Extra bad messages, as a share of events.
    pub malformed_share: f64,
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
        }
    }
}

enum What {
    Start(u32),
    Tick(u32),
    Arrive(u32, Arrival),
    Ev(Ev),
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

/// The simulator: call [`Simulator::next_message`] until it returns false.
pub struct Simulator {
    params: SimParams,
    rooms: Vec<Room>,
    gen: BinaryHeap<Reverse<Gen>>,
    arr: BinaryHeap<Reverse<Arr>>,
    seq: u64,
    delivery: Rng,
    emitted: u64,
}

impl Simulator {
    pub fn new(p: SimParams) -> Simulator {
        let n_orgs = 2 + (mix64(p.seed ^ 0x4F52_4753) % 3) as usize;
        let duration = p.duration_ms.max(60_000);
        let rooms: Vec<Room> =
            (0..p.rooms).map(|i| Room::new(p.seed, i, n_orgs, p.start_ms, duration)).collect();
        let mut gen = BinaryHeap::new();
        let mut seq = 0;
        for r in &rooms {
            seq += 1;
            gen.push(Reverse(Gen { ts: r.start, seq, what: What::Start(r.idx) }));
        }
        Simulator {
            delivery: Rng::new(mix64(p.seed ^ 0x4445_4C49_5645_5259)),
            params: p,
            rooms,
            gen,
            arr: BinaryHeap::new(),
            seq,
            emitted: 0,
        }
    }

    /// Appends the next message (one JSON object, no newline) in arrival order;
    /// false when the stream is over.
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> bool {
        loop {
            if let Some(Reverse(a)) = self.arr.peek() {
                // Everything not yet planned has ts, hence arrival, >= the next planned ts.
                let ready = self.gen.peek().is_none_or(|Reverse(g)| a.at <= g.ts);
                if ready {
                    let Reverse(a) = self.arr.pop().expect("peeked");
                    json::write_event(out, &self.rooms[a.ev.room as usize], &a.ev, a.id, a.brk);
                    self.emitted += 1;
                    return true;
                }
            }
            match self.gen.pop() {
                None => return false,
                Some(Reverse(g)) => self.step(g),
            }
        }
    }

    /// Messages appended so far (duplicates and malformed ones included).
    pub fn events_emitted(&self) -> u64 {
        self.emitted
    }

    fn step(&mut self, g: Gen) {
        let mut planner = Planner { gen: &mut self.gen, seq: &mut self.seq };
        match g.what {
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
        let d = &mut self.delivery;
        let at = match ev.kind {
            K_SESSION_START => ev.ts,
            // After the jitter of the room's last events.
            K_SESSION_END => ev.ts + 2_500,
            _ if d.chance(self.params.late_share) => ev.ts + d.range(10_000, 100_001),
            _ => ev.ts + d.range(0, 2_001),
        };
        self.seq += 1;
        self.arr.push(Reverse(Arr { at, seq: self.seq, id, ev, brk: Break::None }));
        if d.chance(self.params.duplicate_share) {
            self.seq += 1;
            let at2 = at + d.range(200, 15_001);
            self.arr.push(Reverse(Arr { at: at2, seq: self.seq, id, ev, brk: Break::None }));
        }
        if d.chance(self.params.malformed_share) {
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
        *self.seq += 1;
        self.gen.push(Reverse(Gen { ts, seq: *self.seq, what: What::Tick(room) }));
    }
}

#[cfg(test)]
mod tests;
