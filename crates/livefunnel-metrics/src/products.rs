//! A room's products this session, for the wall's room page: the product breakdown
//! rows of one tumbling window (`1m` by default) summed over the room's session.
//!
//! A window's rows come again with a higher version when a late event changes them,
//! so each row of a window that can still change is kept until it cannot: a new
//! version replaces its counts in the sums instead of adding to them. A window is
//! final once it ended more than `size + out_of_orderness + allowed_lateness` before
//! the latest window seen (an event late enough to reach it is `too_late`), so a
//! room keeps a few minutes of rows, not its session. The sums are in the checkpoint:
//! a restart does not start them again from zero.

use std::collections::BTreeMap;

use livefunnel_core::{BreakdownKind, BreakdownRow, EngineConfig, SessionRow, WindowSpec};
use serde::{Deserialize, Serialize};

/// Products per room on the room page (and in `/api/rooms/{id}`).
pub const TOP_PRODUCTS: usize = 10;

/// The version of the products section of a checkpoint.
const STATE_FORMAT: u8 = 1;

/// The window whose product rows are summed, and when its rows are final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductWindow {
    pub name: String,
    /// A window ending this long before the latest window seen is final.
    pub final_after_ms: i64,
}

impl ProductWindow {
    /// The smallest tumbling window with breakdown rows; `None` when no tumbling
    /// window has them (sums of overlapping hop windows would count events twice).
    pub fn from_engine(c: &EngineConfig) -> Option<ProductWindow> {
        let size = c
            .windows
            .iter()
            .filter_map(|w| match *w {
                WindowSpec::Hop { size_ms, slide_ms } if size_ms == slide_ms && c.has_breakdowns(w) => {
                    Some((size_ms, w.name()))
                }
                _ => None,
            })
            .min()?;
        Some(ProductWindow {
            name: size.1,
            final_after_ms: size.0 + c.out_of_orderness_ms + c.allowed_lateness_ms,
        })
    }
}

/// One product's sums over the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCounts {
    pub gmv_cents: i64,
    pub orders_paid: u64,
    pub items_sold: i64,
    pub product_clicks: u64,
    pub product_impressions: u64,
}

impl ProductCounts {
    fn of(b: &BreakdownRow) -> ProductCounts {
        let c = &b.counts;
        ProductCounts {
            gmv_cents: c.gmv_cents,
            orders_paid: c.orders_paid,
            items_sold: c.items_sold,
            product_clicks: c.product_clicks,
            product_impressions: c.product_impressions,
        }
    }

    fn add(&mut self, o: &ProductCounts) {
        self.gmv_cents = self.gmv_cents.saturating_add(o.gmv_cents);
        self.orders_paid = self.orders_paid.saturating_add(o.orders_paid);
        self.items_sold = self.items_sold.saturating_add(o.items_sold);
        self.product_clicks = self.product_clicks.saturating_add(o.product_clicks);
        self.product_impressions = self.product_impressions.saturating_add(o.product_impressions);
    }

    fn sub(&mut self, o: &ProductCounts) {
        self.gmv_cents = self.gmv_cents.saturating_sub(o.gmv_cents);
        self.orders_paid = self.orders_paid.saturating_sub(o.orders_paid);
        self.items_sold = self.items_sold.saturating_sub(o.items_sold);
        self.product_clicks = self.product_clicks.saturating_sub(o.product_clicks);
        self.product_impressions = self.product_impressions.saturating_sub(o.product_impressions);
    }
}

/// A product on the room page: `product_id` as the events name it (`__other__` for
/// the products beyond `limits.max_breakdown_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductLine {
    pub product_id: String,
    pub counts: ProductCounts,
}

/// One room's product sums this session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RoomProducts {
    /// The session summed: its id and start; rows of windows that ended before it are
    /// skipped.
    session: Option<(String, i64)>,
    sums: BTreeMap<String, ProductCounts>,
    /// Rows of windows that can still change, by (window end, product): their version
    /// and the counts they added to `sums`.
    open: BTreeMap<(i64, String), (u64, ProductCounts)>,
    /// Windows ending at or before this are final; a row of one is not summed again.
    final_until: i64,
    #[serde(skip)]
    pub(crate) dirty: bool,
}

/// Equal content; whether it is to be published again is this process's matter.
impl PartialEq for RoomProducts {
    fn eq(&self, o: &RoomProducts) -> bool {
        (&self.session, &self.sums, &self.open, self.final_until)
            == (&o.session, &o.sums, &o.open, o.final_until)
    }
}

impl RoomProducts {
    /// A session row: a new session starts the sums again.
    pub(crate) fn on_session(&mut self, r: &SessionRow) {
        if self.session.as_ref().is_some_and(|(id, _)| **id == *r.session_id) {
            return;
        }
        let had = self.session.is_some();
        self.session = Some((r.session_id.to_string(), r.session_start_ts));
        if had {
            self.sums.clear();
            self.open.clear();
            self.dirty = true;
        } else {
            // Rows that came before the room's first session row, of an older session.
            let before = r.session_start_ts;
            let old: Vec<_> = self.open.keys().filter(|(end, _)| *end <= before).cloned().collect();
            for k in old {
                let (_, c) = self.open.remove(&k).expect("listed above");
                self.sums.entry(k.1).or_default().sub(&c);
            }
        }
    }

    /// A product row of the summed window.
    pub(crate) fn on_row(&mut self, b: &BreakdownRow, w: &ProductWindow) {
        debug_assert_eq!(b.kind, BreakdownKind::Product);
        // A window the session started in is the session's (its orders are).
        let before_session = self.session.as_ref().is_some_and(|(_, start)| b.window_end <= *start);
        if b.window_end <= self.final_until || before_session {
            return;
        }
        let counts = ProductCounts::of(b);
        let key = (b.window_end, b.key.to_string());
        match self.open.get_mut(&key) {
            Some((v, _)) if *v > b.version => return,
            Some((v, was)) => {
                let sum = self.sums.get_mut(&key.1).expect("an open row is in the sums");
                sum.sub(was);
                sum.add(&counts);
                (*v, *was) = (b.version, counts);
            }
            None => {
                self.sums.entry(key.1.clone()).or_default().add(&counts);
                self.open.insert(key, (b.version, counts));
            }
        }
        self.dirty = true;
        let final_until = b.window_end - w.final_after_ms;
        if final_until > self.final_until {
            self.final_until = final_until;
            self.open = self.open.split_off(&(final_until + 1, String::new()));
        }
    }

    /// The products by GMV, then orders, then clicks, largest first; at most `n`.
    pub(crate) fn top(&self, n: usize) -> Vec<ProductLine> {
        let mut v: Vec<ProductLine> = self
            .sums
            .iter()
            .filter(|(_, c)| **c != ProductCounts::default())
            .map(|(id, c)| ProductLine { product_id: id.clone(), counts: *c })
            .collect();
        let rank = |p: &ProductLine| (p.counts.gmv_cents, p.counts.orders_paid, p.counts.product_clicks);
        v.sort_by(|a, b| rank(b).cmp(&rank(a)).then_with(|| a.product_id.cmp(&b.product_id)));
        v.truncate(n);
        v
    }

    /// Rows kept for windows that can still change (bounded by the lateness).
    #[cfg(test)]
    pub(crate) fn open_rows(&self) -> usize {
        self.open.len()
    }
}

/// The products section of a checkpoint, after the detectors' section.
pub(crate) fn save(rooms: &BTreeMap<String, RoomProducts>, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    out.push(STATE_FORMAT);
    out.extend(postcard::to_stdvec(rooms)?);
    Ok(())
}

/// Reads what [`save`] wrote; `rest` is empty in a checkpoint from before it.
pub(crate) fn restore(rest: &[u8]) -> Result<BTreeMap<String, RoomProducts>, crate::CheckpointError> {
    let Some((&found, rest)) = rest.split_first() else { return Ok(BTreeMap::new()) };
    if found != STATE_FORMAT {
        return Err(crate::CheckpointError::Format { found, expected: STATE_FORMAT });
    }
    let mut rooms: BTreeMap<String, RoomProducts> = postcard::from_bytes(rest)?;
    for r in rooms.values_mut() {
        r.dirty = true;
    }
    Ok(rooms)
}

#[cfg(test)]
#[path = "products_tests.rs"]
mod tests;
