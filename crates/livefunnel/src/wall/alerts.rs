//! The room's alert state on the wall: the conditions of the shipped room alert rules
//! (`deploy/prometheus/rules/livefunnel-room-alerts.yml`), evaluated on the same signal
//! values Prometheus scrapes, so a wall without Prometheus (`livefunnel demo`, a
//! single instance) still turns a room red. The `for:` durations count event time (the
//! room's session age), as the signals do, so the wall agrees with the rules at any
//! replay speed; RoomSilent is about the wall clock, as its rule is.
//!
//! SalesStall needs an hour of scraped history (`avg_over_time`): Prometheus only.
//! The detectors of the alerts work replace this module when they land.

use livefunnel_metrics::signals::{Series, SignalValues};
use serde::Serialize;

/// A rule and the values it compares (NaN, a missing series, compares false).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    GPMDrop,
    OnlineViewersCliff,
    ConversionDrop,
    RoomSilent,
}

impl Rule {
    const ALL: [Rule; 4] = [Rule::GPMDrop, Rule::OnlineViewersCliff, Rule::ConversionDrop, Rule::RoomSilent];

    /// The rule's `for:`, in seconds of its clock.
    fn hold_s(self) -> f64 {
        match self {
            Rule::GPMDrop | Rule::ConversionDrop => 120.0,
            Rule::OnlineViewersCliff => 60.0,
            Rule::RoomSilent => 30.0,
        }
    }

    /// Whether it counts the wall clock (else the session's event time).
    fn wall_clock(self) -> bool {
        self == Rule::RoomSilent
    }
}

/// What one evaluation looks at.
pub struct Inputs<'a> {
    pub signals: &'a SignalValues,
    pub online: f64,
    pub live: bool,
    /// Wall clock, unix seconds.
    pub now_s: f64,
}

impl Inputs<'_> {
    fn get(&self, s: Series) -> f64 {
        self.signals[s].unwrap_or(f64::NAN)
    }

    /// The rule's condition now, and the value its annotation reports.
    fn check(&self, rule: Rule) -> (bool, f64) {
        use Series::*;
        let age = self.get(SessionAge);
        match rule {
            Rule::GPMDrop => {
                let prev = self.get(Gpm) / self.get(GpmPrevious);
                let session = self.get(Gpm) / self.get(SessionGpm);
                let on = prev < 0.6
                    && session < 0.6
                    && self.get(WatchPv) >= 50.0
                    && self.get(WatchPvPrevious) >= 50.0
                    && self.get(OrdersPaidPrevious) >= 20.0
                    && age >= 1800.0;
                (on, prev)
            }
            Rule::OnlineViewersCliff => {
                let ratio = self.online / self.get(OnlineAvg);
                (ratio < 0.7 && self.get(OnlineAvg) >= 100.0 && age >= 600.0, ratio)
            }
            Rule::ConversionDrop => {
                let w2p = self.get(WatchToPayRate) / self.get(WatchToPayRatePrevious);
                let c2p = self.get(ClickToPayRate) / self.get(ClickToPayRatePrevious);
                let on = (w2p <= 0.5 || c2p <= 0.5)
                    && self.get(ProductClickUv) >= 20.0
                    && self.get(ProductClickUvPrevious) >= 20.0
                    && self.get(OrdersPaidPrevious) >= 20.0
                    && age >= 1800.0;
                (on, if w2p <= 0.5 { w2p } else { c2p })
            }
            Rule::RoomSilent => {
                let silent = self.now_s - self.get(LastReceived);
                (silent > 90.0 && self.live, silent)
            }
        }
    }
}

/// A firing alert, as the wall shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Firing {
    pub rule: Rule,
    /// The rule's value: the ratio that fell, or the seconds of silence.
    pub value: Option<f64>,
    /// When its condition began: session age (s), or wall clock for RoomSilent.
    pub since: f64,
}

/// One room's rule states.
#[derive(Debug, Clone, Default)]
pub struct RoomAlerts {
    /// Per rule, the clock value at which its condition became true.
    since: [Option<f64>; 4],
    last_age: Option<f64>,
}

impl RoomAlerts {
    /// Evaluates every rule and returns those firing.
    pub fn update(&mut self, i: &Inputs<'_>) -> Vec<Firing> {
        let age = i.signals[Series::SessionAge].filter(|a| !a.is_nan());
        // A new session (its age went back): event-time holds start over.
        if let (Some(a), Some(last)) = (age, self.last_age) {
            if a < last {
                for (k, r) in Rule::ALL.iter().enumerate() {
                    if !r.wall_clock() {
                        self.since[k] = None;
                    }
                }
            }
        }
        self.last_age = age.or(self.last_age);
        let mut firing = Vec::new();
        for (k, rule) in Rule::ALL.into_iter().enumerate() {
            let clock = if rule.wall_clock() { Some(i.now_s) } else { age };
            let (on, value) = i.check(rule);
            let Some(clock) = clock.filter(|_| on) else {
                self.since[k] = None;
                continue;
            };
            let since = *self.since[k].get_or_insert(clock);
            if clock - since >= rule.hold_s() {
                firing.push(Firing { rule, value: value.is_finite().then_some(value), since });
            }
        }
        firing
    }
}

#[cfg(test)]
mod tests {
    use livefunnel_metrics::signals::SERIES_COUNT;

    use super::*;

    fn signals(pairs: &[(Series, f64)]) -> SignalValues {
        let mut v = SignalValues([None; SERIES_COUNT]);
        for (s, x) in pairs {
            v.0[*s as usize] = Some(*x);
        }
        v
    }

    fn cliff(age: f64, online_avg: f64) -> SignalValues {
        signals(&[(Series::SessionAge, age), (Series::OnlineAvg, online_avg), (Series::LastReceived, 1000.0)])
    }

    #[test]
    fn a_cliff_fires_after_its_hold_in_event_time_and_clears() {
        let mut a = RoomAlerts::default();
        let at = |a: &mut RoomAlerts, age: f64, online: f64| {
            a.update(&Inputs { signals: &cliff(age, 400.0), online, live: true, now_s: 1000.0 })
        };
        assert!(at(&mut a, 1000.0, 390.0).is_empty(), "normal");
        assert!(at(&mut a, 1010.0, 100.0).is_empty(), "the condition starts: held 0 s");
        assert!(at(&mut a, 1069.0, 100.0).is_empty(), "held 59 s");
        let f = at(&mut a, 1070.0, 100.0);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].rule, f[0].value, f[0].since), (Rule::OnlineViewersCliff, Some(0.25), 1010.0));
        assert!(at(&mut a, 1080.0, 300.0).is_empty(), "recovered");
        assert!(at(&mut a, 1090.0, 100.0).is_empty(), "a new hold starts");
    }

    #[test]
    fn guards_keep_small_and_young_rooms_quiet() {
        let mut a = RoomAlerts::default();
        for age in [0.0, 100.0, 500.0] {
            let s = cliff(age, 400.0);
            assert!(a.update(&Inputs { signals: &s, online: 10.0, live: true, now_s: 0.0 }).is_empty());
        }
        let mut a = RoomAlerts::default();
        for age in [1000.0, 2000.0] {
            let s = cliff(age, 99.0);
            assert!(a.update(&Inputs { signals: &s, online: 1.0, live: true, now_s: 0.0 }).is_empty());
        }
        // No signals at all (windows off, no session): nothing fires.
        let s = signals(&[]);
        assert!(RoomAlerts::default()
            .update(&Inputs { signals: &s, online: 0.0, live: true, now_s: 1e9 })
            .is_empty());
    }

    #[test]
    fn gpm_drop_needs_both_baselines_and_volume() {
        use Series::*;
        let base = [
            (SessionAge, 2000.0),
            (Gpm, 500.0),
            (GpmPrevious, 1000.0),
            (SessionGpm, 1000.0),
            (WatchPv, 60.0),
            (WatchPvPrevious, 60.0),
            (OrdersPaidPrevious, 20.0),
        ];
        let run = |pairs: &[(Series, f64)]| {
            let mut a = RoomAlerts::default();
            let mut last = Vec::new();
            for dt in [0.0, 60.0, 120.0] {
                let mut p = pairs.to_vec();
                p[0].1 += dt;
                last = a.update(&Inputs { signals: &signals(&p), online: 0.0, live: true, now_s: 0.0 });
            }
            last
        };
        assert_eq!(run(&base).iter().map(|f| f.rule).collect::<Vec<_>>(), [Rule::GPMDrop]);
        for (i, v) in [(3, 700.0), (5, 49.0), (6, 19.0)] {
            let mut p = base.to_vec();
            p[i].1 = v;
            assert!(run(&p).is_empty(), "{p:?}");
        }
    }

    #[test]
    fn a_silent_live_room_fires_on_the_wall_clock() {
        let s = signals(&[(Series::LastReceived, 1000.0)]);
        let mut a = RoomAlerts::default();
        assert!(a.update(&Inputs { signals: &s, online: 0.0, live: true, now_s: 1091.0 }).is_empty());
        let f = a.update(&Inputs { signals: &s, online: 0.0, live: true, now_s: 1121.0 });
        assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), [Rule::RoomSilent]);
        let mut a = RoomAlerts::default();
        for now in [1091.0, 1200.0] {
            assert!(a.update(&Inputs { signals: &s, online: 0.0, live: false, now_s: now }).is_empty());
        }
    }
}
