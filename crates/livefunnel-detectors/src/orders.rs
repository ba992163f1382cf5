//! The order detectors of one session: a one-sided Poisson CUSUM on organic paid orders
//! per organic exposure (GPMDrop), expected organic orders since the last one
//! (SalesStall), and the expected orders of rooms too small for either (pooled).
//!
//! One update per closed minute. Arithmetic per minute is `+ − × ÷ √` and constants
//! computed from the configuration, so results are the same on every IEEE machine.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::DetectorConfig;

/// Closed minutes a correction (a later version of their row) can still change; older
/// corrections are ignored. The engine re-emits a minute while events up to
/// `time.allowed_lateness` (2 minutes by default) behind the watermark are accepted.
pub const CORRECTABLE_MINUTES: usize = 4;

/// Missing minutes (no row: nobody present, no event) filled in as empty, at most.
const MAX_GAP_MINUTES: i64 = 120;

const MINUTE_MS: i64 = 60_000;

/// One closed minute as the detectors read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// Paid orders of viewers who came in through private or public sources.
    pub organic_orders: u64,
    /// Enters (`watch_pv`) through private or public sources.
    pub organic_views: u64,
    /// Every enter, paid sources included.
    pub views: u64,
    /// Viewer-milliseconds present during the minute.
    pub watch_ms: f64,
    /// GMV of the organic orders, for the baseline GPM shown beside the evidence.
    pub organic_gmv_cents: i64,
}

/// A minute waiting to enter the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Delayed {
    minute: i64,
    orders: f64,
    exposure: f64,
    views: f64,
    gmv_cents: f64,
}

/// A consumed minute that a correction may still change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Recent {
    end: i64,
    orders: f64,
    /// Organic share of recent enters when the minute was consumed.
    share: f64,
    exposure: f64,
    /// The baseline rate the minute was tested against; `None`: not armed.
    lambda: Option<f64>,
    /// The rate its pooled expectation was computed with (rooms not armed on their own).
    pool_lambda: Option<f64>,
}

/// The statistics after a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fold {
    /// GPM-drop evidence (nats).
    pub s: f64,
    /// Expected organic orders since the last one.
    pub t: f64,
    /// Organic orders and expected orders since `s` last left 0.
    pub drop_orders: f64,
    pub drop_expected: f64,
}

impl Fold {
    fn step(self, r: &Recent, c: &DetectorConfig) -> Fold {
        let Some(lambda) = r.lambda else { return Fold::default() };
        let mu = lambda * r.exposure;
        let s = (self.s + mu * (1.0 - c.design_ratio) + r.orders * c.ln_ratio()).clamp(0.0, c.evidence_cap());
        let t = if r.orders > 0.0 { 0.0 } else { self.t + mu };
        let (drop_orders, drop_expected) =
            if s > 0.0 { (self.drop_orders + r.orders, self.drop_expected + mu) } else { (0.0, 0.0) };
        Fold { s, t, drop_orders, drop_expected }
    }
}

/// What a minute added to the pooled counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PooledDelta {
    pub observed: u64,
    pub expected: f64,
}

/// The order detectors of one session. State is O(1): a few numbers and two short rings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderDetector {
    /// End of the last consumed minute.
    last_end: Option<i64>,
    /// Session minute of the last consumed minute.
    last_minute: i64,
    /// Exponentially weighted organic and all enters: the organic share of exposure.
    l_org: f64,
    l_all: f64,
    /// The baseline: exponentially weighted organic orders, exposure, views and GMV of
    /// the minutes learnt.
    o_bar: f64,
    e_bar: f64,
    v_bar: f64,
    g_bar: f64,
    /// Consecutive minutes the evidence has been above half the threshold.
    high_for: u32,
    /// Recent exposure, smoothed, for the expected orders per minute.
    e_fast: f64,
    delay: VecDeque<Delayed>,
    recent: VecDeque<Recent>,
    /// The statistics before `recent[0]`, and after the last minute.
    pre: Fold,
    cur: Fold,
}

impl OrderDetector {
    pub fn last_end(&self) -> Option<i64> {
        self.last_end
    }

    /// Whether the per-room detectors tested the last minute.
    pub fn armed(&self) -> bool {
        self.recent.back().is_some_and(|r| r.lambda.is_some())
    }

    pub(crate) fn fold(&self) -> Fold {
        self.cur
    }

    /// The baseline's organic paid orders per unit of exposure, once learnt.
    fn lambda(&self) -> Option<f64> {
        (self.e_bar > 0.0).then(|| self.o_bar / self.e_bar)
    }

    /// Expected organic orders per minute at the room's recent exposure; `None` before
    /// the arming minute or without a baseline.
    pub fn expected_per_minute(&self, c: &DetectorConfig) -> Option<f64> {
        if self.last_end.is_none() || self.last_minute < i64::from(c.arm_minutes) {
            return None;
        }
        self.lambda().map(|l| l * self.e_fast)
    }

    /// GPM of the baseline (organic GMV per thousand organic views), yuan.
    pub fn baseline_gpm(&self) -> Option<f64> {
        (self.v_bar > 0.0).then(|| self.g_bar / 100.0 / self.v_bar * 1000.0)
    }

    /// Expected seconds to detect a 50 % drop at the room's current volume; +∞ when
    /// the room is not armed (below the floor) or the drop is not detectable.
    pub fn horizon_seconds(&self, c: &DetectorConfig) -> f64 {
        let drift = c.drift(0.5);
        match self.expected_per_minute(c) {
            Some(mu) if self.armed() && mu > 0.0 && drift > 0.0 => {
                60.0 * (c.gpm_drop_threshold / (drift * mu) + 1.0)
            }
            _ => f64::INFINITY,
        }
    }

    /// Consumes the closed minute ending at `end` (after every earlier one): minutes
    /// without a row in between count as empty. Returns what the pooled counters gain.
    pub fn consume(
        &mut self,
        end: i64,
        counts: &MinuteCounts,
        session_start: i64,
        c: &DetectorConfig,
    ) -> PooledDelta {
        let mut delta = PooledDelta::default();
        if let Some(last) = self.last_end {
            if end <= last {
                debug_assert!(false, "minutes are consumed in order");
                return delta;
            }
            let mut gap = last + MINUTE_MS;
            let mut filled = 0;
            while gap < end && filled < MAX_GAP_MINUTES {
                let d = self.step(gap, &MinuteCounts::default(), session_start, c);
                delta.observed += d.observed;
                delta.expected += d.expected;
                gap += MINUTE_MS;
                filled += 1;
            }
        }
        let d = self.step(end, counts, session_start, c);
        delta.observed += d.observed;
        delta.expected += d.expected;
        delta
    }

    fn step(&mut self, end: i64, m: &MinuteCounts, session_start: i64, c: &DetectorConfig) -> PooledDelta {
        let minute = (end - MINUTE_MS - session_start).div_euclid(MINUTE_MS).max(0);
        let k = (-1.0 / c.exposure_minutes).exp();
        self.l_org = k * self.l_org + m.organic_views as f64;
        self.l_all = k * self.l_all + m.views as f64;
        let share = if self.l_all > 0.0 { self.l_org / self.l_all } else { 1.0 };
        let exposure = m.watch_ms / MINUTE_MS as f64 * share;
        let orders = m.organic_orders as f64;
        self.e_fast = k * self.e_fast + (1.0 - k) * exposure;

        // The baseline learns the minute leaving the delay line, unless it belongs to
        // the warm-up or the evidence says a drop may be under way (for a while).
        let high = self.cur.s > c.gpm_drop_threshold / 2.0;
        let frozen = high && self.high_for < c.max_freeze_minutes;
        self.high_for = if high { self.high_for.saturating_add(1) } else { 0 };
        self.delay.push_back(Delayed {
            minute,
            orders,
            exposure,
            views: m.organic_views as f64,
            gmv_cents: m.organic_gmv_cents as f64,
        });
        if self.delay.len() > c.baseline_delay_minutes as usize {
            let j = self.delay.pop_front().expect("not empty");
            if j.minute >= i64::from(c.warmup_minutes) && !frozen {
                self.learn(&j, c);
            }
        }

        let lambda = self.lambda();
        let past_warmup = minute >= i64::from(c.arm_minutes);
        let armed = past_warmup && self.o_bar >= c.arm_orders && lambda.is_some();
        let pool_lambda = if armed || !past_warmup { None } else { lambda };
        let r =
            Recent { end, orders, share, exposure, lambda: if armed { lambda } else { None }, pool_lambda };
        let mut delta = PooledDelta::default();
        if let Some(pl) = pool_lambda {
            delta.observed = m.organic_orders;
            delta.expected = pl * exposure;
        }
        self.recent.push_back(r);
        if self.recent.len() > CORRECTABLE_MINUTES {
            let f = self.recent.pop_front().expect("not empty");
            self.pre = self.pre.step(&f, c);
        }
        self.refold(c);
        self.last_end = Some(end);
        self.last_minute = minute;
        delta
    }

    fn learn(&mut self, j: &Delayed, c: &DetectorConfig) {
        let a = 0.5f64.powf(1.0 / c.baseline_half_life_minutes);
        // Once armed, one minute cannot move the baseline far (a flash sale's burst).
        let orders = match (self.armed(), self.lambda()) {
            (true, Some(l)) => {
                let mu = l * j.exposure;
                j.orders.min(mu + 3.0 * mu.sqrt() + 2.0)
            }
            _ => j.orders,
        };
        self.o_bar = a * self.o_bar + orders;
        self.e_bar = a * self.e_bar + j.exposure;
        self.v_bar = a * self.v_bar + j.views;
        self.g_bar = a * self.g_bar + j.gmv_cents;
    }

    fn refold(&mut self, c: &DetectorConfig) {
        self.cur = self.recent.iter().fold(self.pre, |f, r| f.step(r, c));
    }

    /// A later version of the consumed minute ending at `end`: the statistics are
    /// recomputed from the minute on, and the minute is corrected where it waits for
    /// the baseline. `None` when the minute is too old to correct. Returns what the
    /// pooled counters gain (counters only go up: a correction down is not taken back).
    pub fn correct(
        &mut self,
        end: i64,
        m: &MinuteCounts,
        session_start: i64,
        c: &DetectorConfig,
    ) -> Option<PooledDelta> {
        let r = self.recent.iter_mut().find(|r| r.end == end)?;
        let exposure = m.watch_ms / MINUTE_MS as f64 * r.share;
        let orders = m.organic_orders as f64;
        let mut delta = PooledDelta::default();
        if let Some(pl) = r.pool_lambda {
            delta.observed = (orders - r.orders).max(0.0) as u64;
            delta.expected = (pl * (exposure - r.exposure)).max(0.0);
        }
        r.orders = orders;
        r.exposure = exposure;
        let minute = (end - MINUTE_MS - session_start).div_euclid(MINUTE_MS).max(0);
        if let Some(d) = self.delay.iter_mut().find(|d| d.minute == minute) {
            d.orders = orders;
            d.exposure = exposure;
            d.views = m.organic_views as f64;
            d.gmv_cents = m.organic_gmv_cents as f64;
        }
        self.refold(c);
        Some(delta)
    }
}
