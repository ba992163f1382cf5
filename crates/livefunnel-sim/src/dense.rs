//! The `dense` profile: every room is big and busy for the whole stream, the load the
//! engine is sized by (README, "Performance"). Per room:
//! - one broadcast over the whole stream (`session_start` within its first 10 s,
//!   `session_end` within its last 5 s);
//! - a pool of [`VIEWERS`] viewers, most of them online at once: a viewer offline is
//!   shown the room (`room_impression`, 30 %) or enters (private, public or paid
//!   sources, paid ones with one of three boost plans); a viewer online sends
//!   heartbeats, likes, product impressions and clicks, comments, orders (created,
//!   paid, some refunded), shares, follows, fan-club joins, or leaves;
//! - a catalogue of [`PRODUCTS`] products, the popular ones picked most;
//! - about [`EVENTS_PER_MINUTE`] events per minute (exponential gaps), plus a
//!   `product_pin` every minute and a `lucky_bag` at minute 2.
//!
//! Delivery delays, duplicates and bad messages follow [`crate::SimParams`] as in the
//! standard profile. The stream is the same for the same parameters, and room `k`
//! does not depend on the other rooms.

use crate::model::*;
use crate::rng::{exp, ln, Rng};

/// Viewers of a room, nearly all online at once.
pub const VIEWERS: u32 = 1_000;
/// Products in a room's catalogue.
pub const PRODUCTS: u8 = 200;
/// Events per room per minute, on average.
pub const EVENTS_PER_MINUTE: f64 = 1_000.0;
const MEAN_GAP_MS: f64 = 60_000.0 / EVENTS_PER_MINUTE;

/// Private, public and paid sources a viewer enters through.
const PRIVATE: [u8; 5] = [0, 1, 2, 3, 4];
const PUBLIC: [u8; 7] = [6, 7, 8, 9, 10, 11, 12];

#[derive(Debug, Clone, Copy, Default)]
struct Viewer {
    online: bool,
    /// The boost plan it entered through (0 = none): half its orders carry it.
    plan: u8,
}

/// One dense room's behaviour; the room's identity and schedule are its [`Room`]'s.
pub(crate) struct DenseRoom {
    rng: Rng,
    viewers: Vec<Viewer>,
    /// Cumulative weights of the catalogue: product `i` is picked with weight `1 / (i + 8)`.
    popularity: Vec<u32>,
}

impl DenseRoom {
    /// Reshapes `room` (drawn as in the standard profile) into a dense one: its whole
    /// stream long, with a catalogue of [`PRODUCTS`] products.
    pub(crate) fn new(room: &mut Room, start_ms: i64, duration_ms: i64) -> DenseRoom {
        let mut rng = Rng::new(crate::rng::mix64(room.rng.next_u64() ^ 0x0044_454E_5345));
        room.start = start_ms + rng.range(0, 10_000);
        room.end = (start_ms + duration_ms - rng.range(0, 5_000)).max(room.start + MIN);
        room.products = (0..PRODUCTS)
            .map(|_| {
                let yuan = exp(ln(129.0) + 0.5 * rng.normal()).clamp(9.0, 1999.0) as i64;
                Product { price_cents: ((yuan / 10) * 10 + 9) * 100 }
            })
            .collect();
        let mut total = 0u32;
        let popularity = (0..u32::from(PRODUCTS))
            .map(|i| {
                total += 100_000 / (i + 8);
                total
            })
            .collect();
        DenseRoom { rng, viewers: vec![Viewer::default(); VIEWERS as usize], popularity }
    }

    /// The room's operator schedule and broadcast markers, planned at its start.
    pub(crate) fn open(&mut self, room: &Room, sink: &mut impl Sink) {
        let mut ev = Ev::new(room.start, room.idx, K_SESSION_START);
        ev.city = room.home_city;
        sink.event(ev);
        sink.event(Ev::new(room.end, room.idx, K_SESSION_END));
        let mut t = room.start + 30 * SEC;
        while t < room.end - SEC {
            let mut ev = Ev::new(t, room.idx, K_PRODUCT_PIN);
            ev.product = self.product();
            sink.event(ev);
            t += MIN;
        }
        if room.start + 2 * MIN < room.end - SEC {
            sink.event(Ev::new(room.start + 2 * MIN, room.idx, K_LUCKY_BAG));
        }
    }

    /// When the first viewer event of the room happens.
    pub(crate) fn first(&mut self, room: &Room) -> i64 {
        room.start + self.gap().max(1)
    }

    fn gap(&mut self) -> i64 {
        self.rng.exponential(MEAN_GAP_MS) as i64
    }

    fn product(&mut self) -> u8 {
        let total = *self.popularity.last().expect("a catalogue");
        let x = self.rng.below(u64::from(total)) as u32;
        self.popularity.partition_point(|&c| c <= x) as u8
    }

    /// The viewer event at `t`, and when the room's next one happens.
    pub(crate) fn step(&mut self, room: &mut Room, t: i64) -> (Ev, i64) {
        let user = self.rng.below(u64::from(VIEWERS)) as u32;
        let v = self.viewers[user as usize];
        let base = Ev { user, ..Ev::new(t, room.idx, K_HEARTBEAT) };
        let ev = if !v.online { self.offline(base, user) } else { self.online(room, base, user, v) };
        (ev, t + self.gap().max(1))
    }

    fn offline(&mut self, base: Ev, user: u32) -> Ev {
        let r = &mut self.rng;
        if r.chance(0.3) {
            let source = PUBLIC[r.below(PUBLIC.len() as u64) as usize];
            return Ev { kind: K_ROOM_IMPRESSION, source, ..base };
        }
        let (source, plan) = match r.below(10) {
            0..=3 => (PRIVATE[r.below(PRIVATE.len() as u64) as usize], 0),
            4..=8 => (PUBLIC[r.below(PUBLIC.len() as u64) as usize], 0),
            _ => (S_PAID_BOOST, 1 + r.below(3) as u8),
        };
        let follower = r.chance(if source_class(source) == Class::Private { 0.45 } else { 0.08 });
        self.viewers[user as usize] = Viewer { online: true, plan };
        Ev { kind: K_ENTER, source, plan, follower, ..base }
    }

    fn online(&mut self, room: &mut Room, base: Ev, user: u32, v: Viewer) -> Ev {
        let x = self.rng.below(1000);
        let kind = match x {
            0..=416 => K_HEARTBEAT,
            417..=566 => K_LIKE,
            567..=716 => K_PRODUCT_IMPRESSION,
            717..=796 => K_COMMENT,
            797..=876 => K_PRODUCT_CLICK,
            877..=916 => K_LEAVE,
            917..=941 => K_ORDER_CREATED,
            942..=961 => K_ORDER_PAID,
            962..=981 => K_SHARE,
            982..=991 => K_FOLLOW,
            992..=996 => K_FAN_CLUB_JOIN,
            _ => K_REFUND,
        };
        let mut ev = Ev { kind, ..base };
        match kind {
            K_LEAVE => self.viewers[user as usize].online = false,
            K_PRODUCT_IMPRESSION | K_PRODUCT_CLICK => ev.product = self.product(),
            K_ORDER_CREATED | K_ORDER_PAID => {
                ev.product = self.product();
                room.next_order += 1;
                ev.order = room.next_order;
                if kind == K_ORDER_PAID {
                    let qty = match self.rng.below(100) {
                        0..=84 => 1,
                        85..=96 => 2,
                        _ => 3,
                    };
                    ev.qty = qty;
                    ev.amount = room.products[ev.product as usize].price_cents * i64::from(qty);
                    ev.city = match self.rng.below(10) {
                        0 => NONE,
                        1..=4 => room.home_city,
                        _ => self.rng.below(CITIES.len() as u64) as u8,
                    };
                }
                if v.plan > 0 && self.rng.chance(0.5) {
                    ev.plan = v.plan;
                }
            }
            K_REFUND => {
                ev.order = 1 + self.rng.below(u64::from(room.next_order.max(1))) as u32;
                ev.amount = room.products[self.rng.below(u64::from(PRODUCTS)) as usize].price_cents;
                if self.rng.chance(0.5) {
                    ev.product = self.product();
                }
            }
            _ => {}
        }
        ev
    }
}
