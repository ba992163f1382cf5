//! What one accepted event adds to a slot, a breakdown or a session: plain integers.

use serde::{Deserialize, Serialize};

use crate::event::{EventType, Source, SourceClass};
use crate::row::{BreakdownCounts, Counts};

/// Whether an `order_paid` counts as known-city / out-of-city (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum City {
    Unknown,
    Same,
    Different,
}

/// A breakdown key: the kind in the top two bits, the room's key index below.
pub type Key = u32;
const KIND_SHIFT: u32 = 30;
/// The index of `__other__` within a kind.
pub const OTHER_INDEX: u32 = (1 << KIND_SHIFT) - 1;

pub fn key(kind: u32, index: u32) -> Key {
    debug_assert!(kind < 3 && index <= OTHER_INDEX);
    kind << KIND_SHIFT | index
}

pub fn key_kind(k: Key) -> u32 {
    k >> KIND_SHIFT
}

pub fn key_index(k: Key) -> u32 {
    k & OTHER_INDEX
}

pub const SOURCE: u32 = 0;
pub const PLAN: u32 = 1;
pub const PRODUCT: u32 = 2;

/// One accepted event as the aggregates see it: attribution already resolved.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Facts {
    pub kind: EventType,
    /// The viewer's index in the room, for viewer events with a `user_id`.
    pub viewer: Option<u32>,
    pub source: Source,
    /// Breakdown keys after the key cap: the plan (source kinds), the product (product kinds).
    pub plan: Option<Key>,
    pub product: Option<Key>,
    pub amount: i64,
    pub quantity: i64,
    pub city: City,
}

pub fn class_index(c: SourceClass) -> usize {
    match c {
        SourceClass::Private => 0,
        SourceClass::Public => 1,
        SourceClass::Paid => 2,
    }
}

/// Bits of the distinct-counted measures a viewer has in a slot or a session.
pub mod uv {
    pub const WATCH: u8 = 1;
    /// `WATCH_CLASS << class_index`: private, public, paid.
    pub const WATCH_CLASS: u8 = 2;
    pub const CLICK: u8 = 16;
    pub const BUYER: u8 = 32;
    pub const COMMENT: u8 = 64;
    pub const COUNT: usize = 7;
}

/// The distinct-measure bits an event gives its viewer.
pub fn uv_bits(f: &Facts) -> u8 {
    match f.kind {
        EventType::Enter => uv::WATCH | uv::WATCH_CLASS << class_index(f.source.class()),
        EventType::ProductClick => uv::CLICK,
        EventType::OrderPaid => uv::BUYER,
        EventType::Comment => uv::COMMENT,
        _ => 0,
    }
}

/// Distinct counts by bit of [`uv`], written into a row's counts.
pub fn write_uvs(n: &[u64; uv::COUNT], c: &mut Counts) {
    c.watch_uv = n[0];
    c.watch_uv_private = n[1];
    c.watch_uv_public = n[2];
    c.watch_uv_paid = n[3];
    c.product_click_uv = n[4];
    c.buyer_uv = n[5];
    c.comment_uv = n[6];
}

/// The additive counts of §3.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub events: u64,
    pub room_impressions: u64,
    pub watch_pv: u64,
    pub product_impressions: u64,
    pub product_clicks: u64,
    pub orders_created: u64,
    pub orders_paid: u64,
    pub items_sold: i64,
    pub gmv: i64,
    pub refund: i64,
    pub comments: u64,
    pub likes: u64,
    pub shares: u64,
    pub follows: u64,
    pub fan_club_joins: u64,
    pub reservation_creates: u64,
    pub reservation_opens: u64,
    pub gmv_class: [i64; 3],
    pub known_city: u64,
    pub out_of_city: u64,
}

impl Tally {
    pub fn add(&mut self, f: &Facts) {
        self.events += 1;
        match f.kind {
            EventType::RoomImpression => self.room_impressions += 1,
            EventType::Enter => self.watch_pv += 1,
            EventType::ProductImpression => self.product_impressions += 1,
            EventType::ProductClick => self.product_clicks += 1,
            EventType::OrderCreated => self.orders_created += 1,
            EventType::OrderPaid => {
                self.orders_paid += 1;
                self.items_sold = self.items_sold.saturating_add(f.quantity);
                self.gmv = self.gmv.saturating_add(f.amount);
                let c = &mut self.gmv_class[class_index(f.source.class())];
                *c = c.saturating_add(f.amount);
                if f.city != City::Unknown {
                    self.known_city += 1;
                    if f.city == City::Different {
                        self.out_of_city += 1;
                    }
                }
            }
            EventType::Refund => self.refund = self.refund.saturating_add(f.amount),
            EventType::Comment => self.comments += 1,
            EventType::Like => self.likes += 1,
            EventType::Share => self.shares += 1,
            EventType::Follow => self.follows += 1,
            EventType::FanClubJoin => self.fan_club_joins += 1,
            EventType::ReservationCreate => self.reservation_creates += 1,
            EventType::ReservationOpen => self.reservation_opens += 1,
            EventType::SessionStart
            | EventType::SessionEnd
            | EventType::Leave
            | EventType::Heartbeat
            | EventType::ProductPin
            | EventType::LuckyBag => {}
        }
    }

    pub fn merge(&mut self, o: &Tally) {
        self.events += o.events;
        self.room_impressions += o.room_impressions;
        self.watch_pv += o.watch_pv;
        self.product_impressions += o.product_impressions;
        self.product_clicks += o.product_clicks;
        self.orders_created += o.orders_created;
        self.orders_paid += o.orders_paid;
        self.items_sold = self.items_sold.saturating_add(o.items_sold);
        self.gmv = self.gmv.saturating_add(o.gmv);
        self.refund = self.refund.saturating_add(o.refund);
        self.comments += o.comments;
        self.likes += o.likes;
        self.shares += o.shares;
        self.follows += o.follows;
        self.fan_club_joins += o.fan_club_joins;
        self.reservation_creates += o.reservation_creates;
        self.reservation_opens += o.reservation_opens;
        for i in 0..3 {
            self.gmv_class[i] = self.gmv_class[i].saturating_add(o.gmv_class[i]);
        }
        self.known_city += o.known_city;
        self.out_of_city += o.out_of_city;
    }

    pub fn write(&self, c: &mut Counts) {
        c.room_impressions = self.room_impressions;
        c.watch_pv = self.watch_pv;
        c.product_impressions = self.product_impressions;
        c.product_clicks = self.product_clicks;
        c.orders_created = self.orders_created;
        c.orders_paid = self.orders_paid;
        c.items_sold = self.items_sold;
        c.gmv_cents = self.gmv;
        c.refund_cents = self.refund;
        c.comments = self.comments;
        c.likes = self.likes;
        c.shares = self.shares;
        c.follows = self.follows;
        c.fan_club_joins = self.fan_club_joins;
        c.reservation_creates = self.reservation_creates;
        c.reservation_opens = self.reservation_opens;
        c.gmv_cents_private = self.gmv_class[0];
        c.gmv_cents_public = self.gmv_class[1];
        c.gmv_cents_paid = self.gmv_class[2];
        c.orders_paid_known_city = self.known_city;
        c.orders_paid_out_of_city = self.out_of_city;
    }
}

/// The additive counts of one breakdown key in one slot (distinct ones are counted
/// from the slot's viewer entries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BdTally {
    pub watch_pv: u64,
    pub product_impressions: u64,
    pub product_clicks: u64,
    pub orders_created: u64,
    pub orders_paid: u64,
    pub items_sold: i64,
    pub gmv: i64,
    pub comments: u64,
}

impl BdTally {
    /// Adds a fact; the caller has checked the event kind counts for this breakdown.
    pub fn add(&mut self, f: &Facts) {
        match f.kind {
            EventType::Enter => self.watch_pv += 1,
            EventType::ProductImpression => self.product_impressions += 1,
            EventType::ProductClick => self.product_clicks += 1,
            EventType::OrderCreated => self.orders_created += 1,
            EventType::OrderPaid => {
                self.orders_paid += 1;
                self.items_sold = self.items_sold.saturating_add(f.quantity);
                self.gmv = self.gmv.saturating_add(f.amount);
            }
            EventType::Comment => self.comments += 1,
            _ => {}
        }
    }

    pub fn merge(&mut self, o: &BdTally) {
        self.watch_pv += o.watch_pv;
        self.product_impressions += o.product_impressions;
        self.product_clicks += o.product_clicks;
        self.orders_created += o.orders_created;
        self.orders_paid += o.orders_paid;
        self.items_sold = self.items_sold.saturating_add(o.items_sold);
        self.gmv = self.gmv.saturating_add(o.gmv);
        self.comments += o.comments;
    }

    pub fn counts(&self, uvs: [u64; 3]) -> BreakdownCounts {
        BreakdownCounts {
            watch_pv: self.watch_pv,
            watch_uv: uvs[0],
            product_impressions: self.product_impressions,
            product_clicks: self.product_clicks,
            product_click_uv: uvs[1],
            orders_created: self.orders_created,
            orders_paid: self.orders_paid,
            buyer_uv: uvs[2],
            items_sold: self.items_sold,
            gmv_cents: self.gmv,
            comments: self.comments,
        }
    }
}

/// Bits of a breakdown's distinct measures: watch, click, buyer.
pub fn bd_uv_bits(kind: EventType) -> u8 {
    match kind {
        EventType::Enter => 1,
        EventType::ProductClick => 2,
        EventType::OrderPaid => 4,
        _ => 0,
    }
}

/// Event kinds that make a source or plan breakdown row exist (§3).
pub fn counts_for_source(kind: EventType) -> bool {
    matches!(kind, EventType::Enter | EventType::ProductClick | EventType::OrderPaid | EventType::Comment)
}

/// Event kinds that make a product breakdown row exist (§3).
pub fn counts_for_product(kind: EventType) -> bool {
    matches!(
        kind,
        EventType::ProductImpression
            | EventType::ProductClick
            | EventType::OrderCreated
            | EventType::OrderPaid
    )
}
