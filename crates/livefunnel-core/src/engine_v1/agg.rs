//! Aggregates shared by panes and sessions: what one accepted event adds.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::distinct::{Distinct, DistinctUnion};
use crate::event::{EventType, Source, SourceClass};
use crate::row::{BreakdownCounts, Counts};

/// Whether an `order_paid` counts as known-city / out-of-city (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum City {
    Unknown,
    Same,
    Different,
}

/// One accepted event as the aggregates see it: attribution already resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Facts {
    pub kind: EventType,
    pub user: Option<u64>,
    pub source: Source,
    pub plan: Option<Arc<str>>,
    pub product: Option<Arc<str>>,
    pub amount: i64,
    pub quantity: i64,
    pub city: City,
}

fn class_index(c: SourceClass) -> usize {
    match c {
        SourceClass::Private => 0,
        SourceClass::Public => 1,
        SourceClass::Paid => 2,
    }
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

/// The event-based distinct columns of §3 (presence ones live with presence).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Uvs {
    pub watch: Distinct,
    pub click: Distinct,
    pub buyer: Distinct,
    pub comment: Distinct,
    pub class: [Distinct; 3],
}

impl Uvs {
    pub fn add(&mut self, f: &Facts, limit: usize) {
        let Some(user) = f.user else { return };
        match f.kind {
            EventType::Enter => {
                self.watch.insert(user, limit);
                self.class[class_index(f.source.class())].insert(user, limit);
            }
            EventType::ProductClick => self.click.insert(user, limit),
            EventType::OrderPaid => self.buyer.insert(user, limit),
            EventType::Comment => self.comment.insert(user, limit),
            _ => {}
        }
    }
}

/// Reusable union buffers for the distinct columns of one row.
#[derive(Debug, Default)]
pub struct UvsUnion {
    pub watch: DistinctUnion,
    pub click: DistinctUnion,
    pub buyer: DistinctUnion,
    pub comment: DistinctUnion,
    pub class: [DistinctUnion; 3],
}

impl UvsUnion {
    pub fn clear(&mut self) {
        self.watch.clear();
        self.click.clear();
        self.buyer.clear();
        self.comment.clear();
        self.class.iter_mut().for_each(DistinctUnion::clear);
    }

    pub fn add(&mut self, u: &Uvs, limit: usize) {
        self.watch.add(&u.watch, limit);
        self.click.add(&u.click, limit);
        self.buyer.add(&u.buyer, limit);
        self.comment.add(&u.comment, limit);
        for i in 0..3 {
            self.class[i].add(&u.class[i], limit);
        }
    }

    pub fn write(&self, c: &mut Counts) {
        c.watch_uv = self.watch.len();
        c.product_click_uv = self.click.len();
        c.buyer_uv = self.buyer.len();
        c.comment_uv = self.comment.len();
        c.watch_uv_private = self.class[0].len();
        c.watch_uv_public = self.class[1].len();
        c.watch_uv_paid = self.class[2].len();
    }
}

/// One breakdown row's aggregate (source, plan or product).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bd {
    pub c: BreakdownCounts,
    pub watch: Distinct,
    pub click: Distinct,
    pub buyer: Distinct,
}

impl Bd {
    /// Adds a fact; the caller has checked the event kind counts for this breakdown.
    pub fn add(&mut self, f: &Facts, limit: usize) {
        let c = &mut self.c;
        match f.kind {
            EventType::Enter => {
                c.watch_pv += 1;
                if let Some(u) = f.user {
                    self.watch.insert(u, limit);
                }
            }
            EventType::ProductImpression => c.product_impressions += 1,
            EventType::ProductClick => {
                c.product_clicks += 1;
                if let Some(u) = f.user {
                    self.click.insert(u, limit);
                }
            }
            EventType::OrderCreated => c.orders_created += 1,
            EventType::OrderPaid => {
                c.orders_paid += 1;
                c.items_sold = c.items_sold.saturating_add(f.quantity);
                c.gmv_cents = c.gmv_cents.saturating_add(f.amount);
                if let Some(u) = f.user {
                    self.buyer.insert(u, limit);
                }
            }
            EventType::Comment => c.comments += 1,
            _ => {}
        }
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

/// The breakdowns of one pane. A pane holds a few keys of each kind, so small
/// vectors searched in order beat hash maps in both time and memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Breakdowns {
    pub sources: Vec<(Source, Bd)>,
    pub plans: Vec<(Arc<str>, Bd)>,
    pub products: Vec<(Arc<str>, Bd)>,
}

fn slot<'a, K: PartialEq + Clone>(v: &'a mut Vec<(K, Bd)>, key: &K) -> &'a mut Bd {
    let i = match v.iter().position(|(k, _)| k == key) {
        Some(i) => i,
        None => {
            v.push((key.clone(), Bd::default()));
            v.len() - 1
        }
    };
    &mut v[i].1
}

impl Breakdowns {
    pub fn add(&mut self, f: &Facts, limit: usize) {
        if counts_for_source(f.kind) {
            slot(&mut self.sources, &f.source).add(f, limit);
            if let Some(plan) = &f.plan {
                slot(&mut self.plans, plan).add(f, limit);
            }
        }
        if counts_for_product(f.kind) {
            if let Some(product) = &f.product {
                slot(&mut self.products, product).add(f, limit);
            }
        }
    }
}

/// Merges breakdown aggregates of several panes for one key.
#[derive(Debug, Default)]
pub struct BdUnion {
    pub c: BreakdownCounts,
    pub watch: DistinctUnion,
    pub click: DistinctUnion,
    pub buyer: DistinctUnion,
}

impl BdUnion {
    pub fn clear(&mut self) {
        self.c = BreakdownCounts::default();
        self.watch.clear();
        self.click.clear();
        self.buyer.clear();
    }

    pub fn add(&mut self, b: &Bd, limit: usize) {
        let (c, o) = (&mut self.c, &b.c);
        c.watch_pv += o.watch_pv;
        c.product_impressions += o.product_impressions;
        c.product_clicks += o.product_clicks;
        c.orders_created += o.orders_created;
        c.orders_paid += o.orders_paid;
        c.items_sold = c.items_sold.saturating_add(o.items_sold);
        c.gmv_cents = c.gmv_cents.saturating_add(o.gmv_cents);
        c.comments += o.comments;
        self.watch.add(&b.watch, limit);
        self.click.add(&b.click, limit);
        self.buyer.add(&b.buyer, limit);
    }

    pub fn counts(&self) -> BreakdownCounts {
        BreakdownCounts {
            watch_uv: self.watch.len(),
            product_click_uv: self.click.len(),
            buyer_uv: self.buyer.len(),
            ..self.c.clone()
        }
    }
}
