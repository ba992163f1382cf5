//! The room's alert state on the wall: the shipped room alert rules
//! (`deploy/prometheus/rules/livefunnel-room-alerts.yml`) evaluated on the same values
//! Prometheus scrapes, so a wall without Prometheus (`livefunnel demo`, a single
//! instance) turns a room red when Prometheus would fire, and only then.
//!
//! The detector rules are `evidence >= threshold` on a live room (`for: 0s`), firing on
//! for `keep_firing_for: 5m` after the evidence falls back; the thresholds are the
//! `[detectors]` configuration the pipeline exports. The wall counts that 5 minutes in
//! event time (the room's session age), as the detectors count, so it agrees with the
//! rules at any replay speed. RoomSilent is about the wall clock, as its rule is.

use livefunnel_metrics::signals::{Series, SignalValues};
use livefunnel_metrics::DetectorConfig;
use serde::Serialize;

/// A room rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    GPMDrop,
    OnlineViewersCliff,
    SalesStall,
    RoomSilent,
}

const RULES: usize = 4;

impl Rule {
    const ALL: [Rule; RULES] = [Rule::GPMDrop, Rule::OnlineViewersCliff, Rule::SalesStall, Rule::RoomSilent];

    /// The rule's `for:`, in seconds of its clock.
    fn hold_s(self) -> f64 {
        match self {
            Rule::RoomSilent => 30.0,
            _ => 0.0,
        }
    }

    /// The rule's `keep_firing_for:`, in seconds of its clock.
    fn keep_s(self) -> f64 {
        match self {
            Rule::RoomSilent => 0.0,
            _ => 300.0,
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
    pub live: bool,
    /// Wall clock, unix seconds.
    pub now_s: f64,
    /// The detectors' configuration; `None`: the detectors are off, their rules never fire.
    pub detectors: Option<&'a DetectorConfig>,
}

impl Inputs<'_> {
    fn get(&self, s: Series) -> f64 {
        self.signals[s].unwrap_or(f64::NAN)
    }

    /// The rule's condition now, and the value its annotation reports (NaN, a missing
    /// series, compares false, as in PromQL).
    fn check(&self, rule: Rule) -> (bool, f64) {
        let evidence = |series: Series, threshold: fn(&DetectorConfig) -> f64| {
            let e = self.get(series);
            (self.live && self.detectors.is_some_and(|d| e >= threshold(d)), e)
        };
        match rule {
            Rule::GPMDrop => evidence(Series::GpmDropEvidence, |d| d.gpm_drop_threshold),
            Rule::OnlineViewersCliff => evidence(Series::OnlineCliffEvidence, |d| d.cliff_threshold),
            Rule::SalesStall => evidence(Series::SalesStallEvidence, |d| d.sales_stall_threshold),
            Rule::RoomSilent => {
                let silent = self.now_s - self.get(Series::LastReceived);
                (silent > 90.0 && self.live, silent)
            }
        }
    }
}

/// A firing alert, as the wall shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Firing {
    pub rule: Rule,
    /// The rule's value when its condition last held: the evidence, or the seconds of silence.
    pub value: Option<f64>,
    /// When its condition began: session age (s), or wall clock for RoomSilent.
    pub since: f64,
}

/// One rule's state on one room.
#[derive(Debug, Clone, Copy, Default)]
struct Hold {
    /// The clock value at which the condition became true.
    since: Option<f64>,
    /// The clock value at which it last held, and its value then.
    last_on: f64,
    value: f64,
    fired: bool,
}

/// One room's rule states.
#[derive(Debug, Clone, Default)]
pub struct RoomAlerts {
    holds: [Hold; RULES],
    last_age: Option<f64>,
}

impl RoomAlerts {
    /// Evaluates every rule and returns those firing.
    pub fn update(&mut self, i: &Inputs<'_>) -> Vec<Firing> {
        let age = i.signals[Series::SessionAge].filter(|a| !a.is_nan());
        // A new session (its age went back): event-time states start over.
        if let (Some(a), Some(last)) = (age, self.last_age) {
            if a < last {
                for (hold, rule) in self.holds.iter_mut().zip(Rule::ALL) {
                    if !rule.wall_clock() {
                        *hold = Hold::default();
                    }
                }
            }
        }
        self.last_age = age.or(self.last_age);
        let mut firing = Vec::new();
        for (hold, rule) in self.holds.iter_mut().zip(Rule::ALL) {
            let Some(clock) = (if rule.wall_clock() { Some(i.now_s) } else { age }) else {
                *hold = Hold::default();
                continue;
            };
            let (on, value) = i.check(rule);
            if on {
                hold.since.get_or_insert(clock);
                (hold.last_on, hold.value) = (clock, value);
            } else if !(hold.fired && clock - hold.last_on < rule.keep_s()) {
                *hold = Hold::default();
                continue;
            }
            let since = hold.since.expect("set while the condition holds or keeps firing");
            if clock - since >= rule.hold_s() {
                hold.fired = true;
                firing.push(Firing { rule, value: hold.value.is_finite().then_some(hold.value), since });
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

    fn rules(f: &[Firing]) -> Vec<Rule> {
        f.iter().map(|f| f.rule).collect()
    }

    /// One evaluation at session age `age` with `series` at `evidence`.
    fn at(a: &mut RoomAlerts, d: &DetectorConfig, series: Series, age: f64, evidence: f64) -> Vec<Firing> {
        let s = signals(&[(Series::SessionAge, age), (series, evidence), (Series::LastReceived, 1000.0)]);
        a.update(&Inputs { signals: &s, live: true, now_s: 1000.0, detectors: Some(d) })
    }

    #[test]
    fn each_detector_rule_fires_at_its_threshold_and_keeps_firing_for_five_minutes() {
        let d = DetectorConfig::default();
        for (series, rule, threshold) in [
            (Series::GpmDropEvidence, Rule::GPMDrop, d.gpm_drop_threshold),
            (Series::OnlineCliffEvidence, Rule::OnlineViewersCliff, d.cliff_threshold),
            (Series::SalesStallEvidence, Rule::SalesStall, d.sales_stall_threshold),
        ] {
            let mut a = RoomAlerts::default();
            let below = threshold - 1e-9;
            assert!(at(&mut a, &d, series, 3000.0, below).is_empty(), "{rule:?} just below");
            let f = at(&mut a, &d, series, 3010.0, threshold);
            assert_eq!(
                f,
                [Firing { rule, value: Some(threshold), since: 3010.0 }],
                "{rule:?} at the threshold"
            );
            // The evidence falls back: still firing for 300 s of event time, with its value.
            let f = at(&mut a, &d, series, 3309.0, 0.0);
            assert_eq!(f, [Firing { rule, value: Some(threshold), since: 3010.0 }], "{rule:?} kept");
            assert!(at(&mut a, &d, series, 3310.0, 0.0).is_empty(), "{rule:?} after keep_firing_for");
            // A condition that never held does not keep firing.
            assert!(at(&mut a, &d, series, 3320.0, below).is_empty());
        }
    }

    #[test]
    fn unarmed_detectors_detectors_off_and_ended_sessions_fire_nothing() {
        let d = DetectorConfig::default();
        let high = signals(&[
            (Series::SessionAge, 4000.0),
            (Series::GpmDropEvidence, 1e6),
            (Series::OnlineCliffEvidence, 1e6),
            (Series::SalesStallEvidence, 1e6),
            (Series::LastReceived, 1000.0),
        ]);
        let off = RoomAlerts::default().update(&Inputs {
            signals: &high,
            live: true,
            now_s: 1000.0,
            detectors: None,
        });
        assert!(off.is_empty(), "detectors off: {off:?}");
        let ended = RoomAlerts::default().update(&Inputs {
            signals: &high,
            live: false,
            now_s: 1000.0,
            detectors: Some(&d),
        });
        assert!(ended.is_empty(), "not live: {ended:?}");
        let on = RoomAlerts::default().update(&Inputs {
            signals: &high,
            live: true,
            now_s: 1000.0,
            detectors: Some(&d),
        });
        assert_eq!(rules(&on), [Rule::GPMDrop, Rule::OnlineViewersCliff, Rule::SalesStall]);
        // NaN: not armed (warm-up, below the floor).
        let mut a = RoomAlerts::default();
        assert!(at(&mut a, &d, Series::GpmDropEvidence, 4000.0, f64::NAN).is_empty());
        // No signals at all (windows off, no session): nothing fires.
        let s = signals(&[]);
        assert!(RoomAlerts::default()
            .update(&Inputs { signals: &s, live: true, now_s: 1e9, detectors: Some(&d) })
            .is_empty());
    }

    #[test]
    fn a_new_session_starts_the_event_time_states_over() {
        let d = DetectorConfig::default();
        let mut a = RoomAlerts::default();
        let f = at(&mut a, &d, Series::GpmDropEvidence, 5000.0, 1e3);
        assert_eq!(rules(&f), [Rule::GPMDrop]);
        assert!(at(&mut a, &d, Series::GpmDropEvidence, 60.0, 0.0).is_empty(), "a new session");
    }

    #[test]
    fn a_silent_live_room_fires_on_the_wall_clock() {
        let s = signals(&[(Series::LastReceived, 1000.0)]);
        let d = DetectorConfig::default();
        let mut a = RoomAlerts::default();
        let eval = |a: &mut RoomAlerts, live, now_s| {
            a.update(&Inputs { signals: &s, live, now_s, detectors: Some(&d) })
        };
        assert!(eval(&mut a, true, 1091.0).is_empty());
        assert_eq!(rules(&eval(&mut a, true, 1121.0)), [Rule::RoomSilent]);
        let mut a = RoomAlerts::default();
        for now in [1091.0, 1200.0] {
            assert!(eval(&mut a, false, now).is_empty());
        }
    }
}
