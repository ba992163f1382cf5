//! One viewer's visit, planned in full when the viewer shows up: presence,
//! engagement, clicks and orders; and how the room's scenarios change it.

use crate::model::*;

/// Share of the viewers online at a `viewer_cliff` who leave within the
/// minute, and of later arrivals who never enter.
const CLIFF_DROP: f64 = 0.4;

/// Passes a viewer's events up to `until` (inclusive): a `viewer_cliff` cuts
/// visits short. The room's draws stay the same, only what is emitted changes.
struct Cut<'s, S: Sink> {
    inner: &'s mut S,
    until: i64,
}

impl<S: Sink> Sink for Cut<'_, S> {
    fn event(&mut self, ev: Ev) {
        if ev.ts <= self.until {
            self.inner.event(ev);
        }
    }

    fn arrival(&mut self, ts: i64, room: u32, a: Arrival) {
        self.inner.arrival(ts, room, a);
    }
}

impl Room {
    fn pinned_at(&mut self, t: i64) -> u8 {
        match self.pins.partition_point(|&(p, _)| p <= t) {
            0 => self.rng.below((self.products.len() - 2) as u64) as u8,
            i => self.pins[i - 1].1,
        }
    }

    fn regular_product(&mut self) -> u8 {
        self.rng.below((self.products.len() - 2) as u64) as u8
    }

    fn city_for_buyer(&mut self) -> u8 {
        if self.rng.chance(0.1) {
            return NONE;
        }
        if self.rng.chance(self.out_of_city) {
            let k = self.rng.below(CITIES.len() as u64 - 1) as u8;
            if k >= self.home_city {
                k + 1
            } else {
                k
            }
        } else {
            self.home_city
        }
    }

    /// One viewer's whole visit, planned when the viewer shows up at `t`.
    pub(crate) fn arrive(&mut self, t: i64, a: Arrival, sink: &mut impl Sink) {
        let mut cut = Cut { inner: sink, until: i64::MAX };
        self.visit(t, a, &mut cut);
    }

    fn visit<S: Sink>(&mut self, t: i64, a: Arrival, sink: &mut Cut<'_, S>) {
        let user = self.next_user;
        self.next_user += 1;
        let class = source_class(a.source);
        // Counted before a scenario may drop the viewer: a viewer_cliff cuts
        // traffic once, it does not compound through the pull.
        if class == Class::Private && a.enters {
            self.priv_new += 1;
        }
        let base = Ev { user, ..Ev::new(t, self.idx, K_HEARTBEAT) };
        let mut te = t;
        if a.reservation {
            sink.event(Ev { kind: K_RESERVATION_OPEN, source: a.source, ..base });
            te = t + self.rng.range(SEC, 15 * SEC);
        } else if a.impression {
            sink.event(Ev { kind: K_ROOM_IMPRESSION, source: a.source, plan: a.plan, ..base });
            te = t + self.rng.range(SEC, 20 * SEC);
        }
        if !a.enters || te >= self.end - 5 * SEC {
            return;
        }
        if self.fx.cliff_at.is_some_and(|c| te > c) && self.scn.chance(CLIFF_DROP) {
            // Cut from the feed: shown, but never comes in.
            sink.until = te - 1;
        }
        let follower = match a.source {
            S_FOLLOW_FEED => true,
            S_PROFILE_SHOP => self.rng.chance(0.3),
            _ if class == Class::Private => self.rng.chance(0.45),
            _ => self.rng.chance(0.08),
        };
        sink.event(Ev { ts: te, kind: K_ENTER, source: a.source, plan: a.plan, follower, ..base });
        let plan = if a.plan > 0 { Some(self.plans[a.plan as usize - 1].clone()) } else { None };
        let (click_mult, comment_mult, conv_mult) =
            plan.as_ref().map_or((1.0, 1.0, 1.0), |p| (p.click_mult, p.comment_mult, p.conv_mult));

        // Purchase intent by room kind and source class.
        let p_buy = match (self.private_led, class) {
            (true, Class::Private) => self.conv * 1.4,
            (true, Class::Public) => self.conv * 0.6,
            (true, Class::Paid) => self.conv * 0.6 * conv_mult,
            (false, Class::Private) => self.conv * 3.0,
            (false, Class::Public) => self.conv * 0.9,
            (false, Class::Paid) => self.conv * 0.8 * conv_mult,
        };
        let buyer = self.rng.chance(p_buy);

        // Dwell 1–20 min, private viewers longest; buyers stay long enough to buy.
        let (lo, hi) = match class {
            Class::Private => (90.0 * 1e3, 1_200.0 * 1e3),
            Class::Public => (60.0 * 1e3, 960.0 * 1e3),
            Class::Paid => (60.0 * 1e3, 720.0 * 1e3),
        };
        let mut dwell = self.rng.log_uniform(lo, hi) as i64;
        if buyer {
            dwell = dwell.max(self.rng.range(150 * SEC, 400 * SEC));
        }
        let mut tl = te + dwell;
        let cut_by_end = tl >= self.end - 500;
        if cut_by_end {
            tl = self.end - 500;
        }
        if let Some(c) = self.fx.cliff_at {
            if te <= c && c < tl && self.scn.chance(CLIFF_DROP) {
                let gone = c + self.scn.range(SEC, 60 * SEC + 1);
                if gone < tl {
                    sink.until = gone - 1;
                    sink.inner.event(Ev { ts: gone, kind: K_LEAVE, ..base });
                }
            }
        }
        let ev = |ts: i64, kind: u8| Ev { ts, kind, ..base };
        let dwell_s = (tl - te) as f64 / 1000.0;

        let mut h = te + self.rng.range(30 * SEC, 60 * SEC);
        while h < tl {
            sink.event(ev(h, K_HEARTBEAT));
            h += self.rng.range(30 * SEC, 60 * SEC);
        }
        let engaged = match class {
            Class::Private => 1.5,
            _ => 0.7,
        };
        for _ in 0..self.rng.poisson(dwell_s / 120.0 * engaged) {
            sink.event(ev(self.rng.range(te + 1, tl), K_LIKE));
        }
        let p_comment = match class {
            Class::Private => 0.3,
            Class::Public => 0.07,
            Class::Paid => 0.07 * comment_mult,
        };
        if self.rng.chance(p_comment) {
            for _ in 0..1 + self.rng.below(3) {
                sink.event(ev(self.rng.range(te + 1, tl), K_COMMENT));
            }
        }
        let p_share = if class == Class::Private { 0.08 } else { 0.02 };
        if self.rng.chance(p_share) {
            let s = self.rng.range(te + 1, tl);
            sink.event(ev(s, K_SHARE));
            // A friend opens the shared link (好友分享) a little later.
            if self.rng.chance(0.4) {
                let at = s + self.rng.range(10 * SEC, 120 * SEC);
                if at < self.end - 30 * SEC && s <= sink.until {
                    let a = Arrival {
                        source: S_SHARE_LINK,
                        plan: 0,
                        reservation: false,
                        impression: false,
                        enters: true,
                    };
                    sink.arrival(at, self.idx, a);
                }
            }
        }
        let mut follows = follower;
        let p_follow = match class {
            Class::Private => 0.03,
            Class::Public => 0.05,
            Class::Paid => 0.04,
        };
        if !follows && self.rng.chance(p_follow) {
            follows = true;
            sink.event(ev(self.rng.range(te + 1, tl), K_FOLLOW));
        }
        if self.rng.chance(if follower { 0.03 } else { 0.005 }) {
            sink.event(ev(self.rng.range(te + 1, tl), K_FAN_CLUB_JOIN));
        }
        if self.rng.chance(0.015) {
            sink.event(Ev {
                kind: K_RESERVATION_CREATE,
                source: a.source,
                ..ev(self.rng.range(te + 1, tl), 0)
            });
        }
        for _ in 0..self.rng.poisson(dwell_s / 150.0) {
            let at = self.rng.range(te + 1, tl);
            let p = self.pinned_at(at);
            sink.event(Ev { product: p, ..ev(at, K_PRODUCT_IMPRESSION) });
        }
        // Lucky bags (福袋): comment the password, follow to qualify.
        for i in 0..self.lucky.len() {
            let l = self.lucky[i];
            if l >= te && l < tl {
                let p_password = if class == Class::Paid { (0.55 * comment_mult).min(0.95) } else { 0.55 };
                if self.rng.chance(p_password) {
                    let at = l + self.rng.range(2 * SEC, 60 * SEC);
                    if at < tl {
                        sink.event(ev(at, K_COMMENT));
                    }
                }
                if !follows && self.rng.chance(0.12) {
                    follows = true;
                    let at = l + self.rng.range(2 * SEC, 60 * SEC);
                    if at < tl {
                        sink.event(ev(at, K_FOLLOW));
                    }
                }
            }
        }
        // Flash sales (秒杀): a burst of clicks on the pinned flash item.
        let mut flash_buy: Option<(i64, u8)> = None;
        for i in 0..self.flash.len() {
            let (f, p) = self.flash[i];
            if f >= te && f + 60 * SEC < tl {
                let p_click = match class {
                    Class::Private => 0.45,
                    Class::Public => 0.2,
                    Class::Paid => 0.2 * click_mult,
                };
                if buyer && flash_buy.is_none() && f + 130 * SEC < tl && self.rng.chance(0.6) {
                    flash_buy = Some((f + self.rng.range(SEC, 20 * SEC), p));
                } else if self.rng.chance(p_click) {
                    let at = f + self.rng.range(SEC, 10 * SEC);
                    sink.event(Ev { product: p, ..ev(at, K_PRODUCT_IMPRESSION) });
                    sink.event(Ev { product: p, ..ev(at + self.rng.range(SEC, 15 * SEC), K_PRODUCT_CLICK) });
                }
            }
        }
        let p_click = match class {
            Class::Private => 0.3,
            Class::Public => 0.06,
            Class::Paid => 0.06 * click_mult,
        };
        if buyer {
            let (tc, product) = match flash_buy {
                Some(x) => x,
                None => {
                    let hi = tl - 110 * SEC;
                    if hi <= te + 20 * SEC {
                        return self.leave(tl, cut_by_end, base, sink);
                    }
                    let tc = self.rng.range(te + 20 * SEC, hi);
                    (tc, self.pinned_at(tc))
                }
            };
            let paid_at = self.order(tc, product, true, base, class, sink);
            // Some buyers come back for a second item.
            if let Some(p) = paid_at {
                if self.rng.chance(0.08) && p + 100 * SEC < tl - 110 * SEC {
                    let tc2 = self.rng.range(p + 100 * SEC, tl - 110 * SEC);
                    let product = self.regular_product();
                    self.order(tc2, product, true, base, class, sink);
                }
            }
        } else if self.rng.chance(p_click) {
            let hi = tl - 70 * SEC;
            if hi > te + 10 * SEC {
                let tc = self.rng.range(te + 10 * SEC, hi);
                let product = self.pinned_at(tc);
                // Some create an order and never pay (未支付).
                let pays = false;
                if self.rng.chance(0.12) {
                    self.order(tc, product, pays, base, class, sink);
                } else {
                    self.click(tc, product, base, sink);
                }
            }
        }
        self.leave(tl, cut_by_end, base, sink)
    }

    fn click(&mut self, tc: i64, product: u8, base: Ev, sink: &mut impl Sink) {
        let seen = tc - self.rng.range(2 * SEC, 10 * SEC);
        sink.event(Ev { ts: seen.max(base.ts + 1), kind: K_PRODUCT_IMPRESSION, product, ..base });
        sink.event(Ev { ts: tc.max(base.ts + 2), kind: K_PRODUCT_CLICK, product, ..base });
    }

    /// Click, create, and (if `pays`) pay an order; maybe refund it later.
    /// Returns the time the payment was planned for (even when a scenario
    /// keeps the order from being placed, so the room's draws stay the same).
    fn order(
        &mut self,
        tc: i64,
        product: u8,
        pays: bool,
        base: Ev,
        class: Class,
        sink: &mut impl Sink,
    ) -> Option<i64> {
        self.click(tc, product, base, sink);
        self.next_order += 1;
        let order = self.next_order;
        let qty = match self.rng.weighted(&[80, 14, 6]) {
            0 => 1u8,
            1 => 2,
            _ => 3,
        };
        let price = self.products[product as usize].price_cents * i64::from(qty);
        let coupon = match self.rng.weighted(&[85, 8, 5, 2]) {
            0 => 0,
            1 => 500,
            2 => 1000,
            _ => 2000,
        };
        let amount = if coupon * 2 < price { price - coupon } else { price };
        let created = tc + self.rng.range(5 * SEC, 60 * SEC);
        let stall_at = self.fx.stall_at;
        let stalled = |t: i64| stall_at.is_some_and(|s| t >= s);
        // gpm_drop: the viewer clicks but does not order.
        let dropped = pays
            && self.fx.gpm_drop_at.is_some_and(|g| created >= g)
            && !self.scn.chance(1.0 - self.fx.gpm_drop_lost);
        let placed = !dropped && !stalled(created);
        let o = Ev { product, order, qty, ..base };
        if placed {
            sink.event(Ev { ts: created, kind: K_ORDER_CREATED, ..o });
        }
        if !pays {
            return None;
        }
        let paid = created + self.rng.range(3 * SEC, 40 * SEC);
        let city = self.city_for_buyer();
        let paid_ok = placed && !stalled(paid);
        if paid_ok {
            sink.event(Ev { ts: paid, kind: K_ORDER_PAID, amount, city, ..o });
        }
        let p_refund = if class == Class::Private { 0.08 } else { 0.12 };
        if self.rng.chance(p_refund) {
            let at = paid + self.rng.range(MIN, 10 * MIN);
            if at < self.end - SEC {
                let back = if self.rng.chance(0.75) { amount } else { amount / 2 };
                if paid_ok {
                    sink.event(Ev { ts: at, kind: K_REFUND, amount: back, qty: 0, ..o });
                }
            }
        }
        Some(paid)
    }

    fn leave(&mut self, tl: i64, cut_by_end: bool, base: Ev, sink: &mut impl Sink) {
        // Session end closes presence; otherwise most viewers send a leave.
        if !cut_by_end && self.rng.chance(0.92) {
            sink.event(Ev { ts: tl, kind: K_LEAVE, ..base });
        }
    }
}
