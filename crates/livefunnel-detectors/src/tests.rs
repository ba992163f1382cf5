//! The detectors on hand-made minutes: hand-computed values, and a Poisson room whose
//! drops are found within the closed-form delay.

use super::*;

const MIN: i64 = 60_000;
const START: i64 = 1_767_225_600_000;

/// splitmix64 and Knuth's Poisson: enough for test rooms, no dependency.
struct Rng(u64);

impl Rng {
    fn f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn poisson(&mut self, lambda: f64) -> u64 {
        // Sums of Poisson(≤ 20) parts keep exp(-λ) far from underflow.
        let mut n = 0;
        let mut left = lambda;
        while left > 0.0 {
            let l = left.min(20.0);
            left -= l;
            let limit = (-l).exp();
            let mut p = 1.0;
            loop {
                p *= self.f64();
                if p <= limit {
                    break;
                }
                n += 1;
            }
        }
        n
    }
}

/// A room with 100 viewers present all minute, 10 organic enters a minute and no
/// paid traffic: exposure is 100 viewer-minutes, so `orders_per_minute` is its rate.
fn minute(orders: u64) -> MinuteTotals {
    MinuteTotals {
        orders_paid: orders,
        watch_pv: 10,
        watch_ms: 100.0 * MIN as f64,
        gmv_cents: 0,
        gmv_cents_paid: 0,
    }
}

/// Feeds `minutes` minutes from minute `from` (0-based session minutes), `orders(m)` each.
fn feed(
    d: &mut RoomDetectors,
    c: &DetectorConfig,
    from: i64,
    minutes: i64,
    mut orders: impl FnMut(i64) -> u64,
) {
    for m in from..from + minutes {
        let end = START + (m + 1) * MIN;
        d.on_minute("s1", end, 1, minute(orders(m)));
        d.settle(c);
    }
}

#[test]
fn the_default_config_is_valid_and_bad_values_name_their_key() {
    let c = DetectorConfig::default();
    assert_eq!(c.validate(), Ok(()));
    assert!((c.drift(0.6)).abs() < 0.01, "the evidence is flat at 60 % of the baseline");
    let bad = |f: fn(&mut DetectorConfig)| {
        let mut c = DetectorConfig::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert_eq!(bad(|c| c.design_ratio = 1.0).key, "design_ratio");
    assert_eq!(bad(|c| c.gpm_drop_threshold = 0.0).key, "gpm_drop_threshold");
    assert_eq!(bad(|c| c.sales_stall_threshold = f64::NAN).key, "sales_stall_threshold");
    assert_eq!(bad(|c| c.cliff_min_fall = 1.5).key, "cliff_min_fall");
    let e = bad(|c| c.arm_minutes = 20);
    assert_eq!(e.key, "arm_minutes");
    assert!(e.message.contains("at least warmup_minutes + baseline_delay_minutes (50)"), "{}", e.message);
}

#[test]
fn a_steady_room_arms_after_the_warmup_and_stays_quiet() {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    let mut rng = Rng(7);
    feed(&mut d, &c, 0, 49, |_| rng.poisson(10.0));
    let v = d.values(&c);
    assert!(v.live);
    assert_eq!(v.gpm_drop_evidence, None, "not armed before minute 50");
    assert_eq!(v.gpm_drop_horizon_seconds, Some(f64::INFINITY));
    feed(&mut d, &c, 49, 600, |_| rng.poisson(10.0));
    let v = d.values(&c);
    let expected = v.orders_expected_per_minute.unwrap();
    assert!((expected - 10.0).abs() < 1.5, "expected orders per minute {expected}");
    let horizon = v.gpm_drop_horizon_seconds.unwrap();
    // 60 · (15 / (0.1174 · 10) + 1) ≈ 827 s.
    assert!((600.0..900.0).contains(&horizon), "{horizon}");
    assert!(v.gpm_drop_evidence.unwrap() < c.gpm_drop_threshold);
    assert_eq!(v.firing(&c), Firing::default());
    assert!(d.kept() <= CORRECTABLE_MINUTES + 1, "{} minutes kept", d.kept());
}

/// First minute (from onset) at which GPMDrop fires, for a room at `rate` orders a
/// minute whose conversion falls to `rho` of it at minute 120.
fn delay_minutes(rate: f64, rho: f64, seed: u64) -> Option<i64> {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    let mut rng = Rng(seed);
    for m in 0..240 {
        let r = if m >= 120 { rate * rho } else { rate };
        feed(&mut d, &c, m, 1, |_| rng.poisson(r));
        let f = d.values(&c).firing(&c);
        if m < 120 {
            assert!(!f.gpm_drop, "fired before the onset at minute {m}");
        } else if f.gpm_drop {
            return Some(m - 120 + 1);
        }
    }
    None
}

#[test]
fn drops_are_found_within_their_closed_form_delay() {
    let c = DetectorConfig::default();
    for (rate, rho) in [(30.0, 0.5), (100.0, 0.5), (10.0, 0.2), (30.0, 0.2)] {
        // h / (λ·I(ρ)) minutes, plus the minute being closed.
        let formula = c.gpm_drop_threshold / (rate * c.drift(rho)) + 1.0;
        let mut delays: Vec<i64> = (1..=9).map(|s| delay_minutes(rate, rho, s).expect("detected")).collect();
        delays.sort_unstable();
        let median = delays[4] as f64;
        assert!(median <= 1.5 * formula + 1.0, "{rate}/min, ρ={rho}: median {median} min vs {formula:.1}");
    }
}

#[test]
fn a_stall_counts_expected_orders_since_the_last_one() {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    feed(&mut d, &c, 0, 100, |_| 5);
    let mu = d.values(&c).orders_expected_per_minute.unwrap();
    assert!((mu - 5.0).abs() < 0.01, "{mu}");
    assert_eq!(d.values(&c).sales_stall_evidence, Some(0.0));
    feed(&mut d, &c, 100, 3, |_| 0);
    let t = d.values(&c).sales_stall_evidence.unwrap();
    assert!((t - 15.0).abs() < 0.05, "three empty minutes of 5 expected orders: {t}");
    assert!(!d.values(&c).firing(&c).sales_stall);
    feed(&mut d, &c, 103, 1, |_| 0);
    assert!(d.values(&c).firing(&c).sales_stall, "20 expected orders without one");
    feed(&mut d, &c, 104, 1, |_| 1);
    assert_eq!(d.values(&c).sales_stall_evidence, Some(0.0), "an order resets it");
}

#[test]
fn paid_traffic_is_not_organic_exposure_nor_organic_orders() {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    for m in 0..100i64 {
        let end = START + (m + 1) * MIN;
        // Half the enters are paid and buy nothing: organic conversion is unchanged
        // whatever the paid traffic does.
        let paid_views = if m % 7 < 3 { 10 } else { 0 };
        let t = MinuteTotals {
            watch_pv: 10 + paid_views,
            watch_ms: (100 + 10 * paid_views) as f64 * MIN as f64,
            ..minute(5)
        };
        d.on_minute("s1", end, 1, t);
        d.on_paid(end, 1, PaidSource::PaidBoost, PaidPart { orders_paid: 0, watch_pv: paid_views });
        d.settle(&c);
    }
    let v = d.values(&c);
    assert_eq!(v.gpm_drop_evidence, Some(0.0));
    // Paid orders are not organic: 3 of 5 orders paid-sourced is a drop to 40 %.
    for m in 100..110i64 {
        let end = START + (m + 1) * MIN;
        d.on_minute("s1", end, 1, minute(5));
        d.on_paid(end, 1, PaidSource::PaidAds, PaidPart { orders_paid: 3, watch_pv: 0 });
        d.settle(&c);
    }
    assert!(d.values(&c).gpm_drop_evidence.unwrap() > 5.0, "{:?}", d.values(&c));
}

#[test]
fn a_late_correction_gives_the_state_of_a_timely_minute() {
    let c = DetectorConfig::default();
    let mut timely = RoomDetectors::default();
    let mut late = RoomDetectors::default();
    let orders = |m: i64| if m < 120 { 8 } else { 2 + (m % 3) as u64 };
    feed(&mut timely, &c, 0, 130, orders);
    feed(&mut late, &c, 0, 127, orders);
    // Minute 127 first closes with one order missing, corrected once 128 and 129 are in.
    let end = |m: i64| START + (m + 1) * MIN;
    late.on_minute("s1", end(127), 1, minute(orders(127) - 1));
    late.settle(&c);
    late.on_minute("s1", end(128), 1, minute(orders(128)));
    late.on_minute("s1", end(127), 2, minute(orders(127)));
    late.settle(&c);
    late.on_minute("s1", end(129), 1, minute(orders(129)));
    late.settle(&c);
    let (a, b) = (timely.values(&c), late.values(&c));
    assert_eq!(a.gpm_drop_evidence, b.gpm_drop_evidence);
    assert_eq!(a.sales_stall_evidence, b.sales_stall_evidence);
    assert!(a.gpm_drop_evidence.unwrap() > 0.0);
    // An older version arriving after a newer one changes nothing.
    late.on_minute("s1", end(128), 0, minute(0));
    late.settle(&c);
    assert_eq!(late.values(&c).gpm_drop_evidence, b.gpm_drop_evidence);
    // A minute too old to correct is ignored.
    late.on_minute("s1", end(100), 9, minute(1000));
    late.settle(&c);
    assert_eq!(late.values(&c).gpm_drop_evidence, b.gpm_drop_evidence);
}

#[test]
fn a_new_session_starts_over_but_the_pooled_counters_continue() {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    // A small room: 0.2 orders a minute never arms, so it is pooled after minute 50.
    feed(&mut d, &c, 0, 120, |m| u64::from(m % 5 == 0));
    let v = d.values(&c);
    assert_eq!(v.gpm_drop_evidence, None);
    assert_eq!(v.pooled_observed, 14, "orders of minutes 50..120");
    assert!(v.pooled_expected > 5.0 && v.pooled_expected < 30.0, "{}", v.pooled_expected);
    d.on_session("s1", START, true);
    d.settle(&c);
    assert!(!d.values(&c).live);
    assert_eq!(d.values(&c).firing(&c), Firing::default());
    let later = START + 200 * MIN;
    d.on_session("s2", later, false);
    d.on_minute("s2", later + MIN, 1, minute(1));
    d.settle(&c);
    let v2 = d.values(&c);
    assert!(v2.live);
    assert_eq!(v2.orders_expected_per_minute, None, "the new session is in its warm-up");
    assert_eq!((v2.pooled_observed, v2.pooled_expected), (v.pooled_observed, v.pooled_expected));
    // A late row of the old session does not bring it back.
    d.on_minute("s1", START + 119 * MIN, 5, minute(100));
    d.settle(&c);
    assert_eq!(d.session_start_ms(), Some(later));
}

#[test]
fn the_cliff_compares_online_with_60_seconds_earlier() {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    d.on_session("s1", START, false);
    let at = |s: i64| START + 15 * MIN + s * 1000;
    for (s, online) in [(0, 400), (10, 400), (20, 390), (30, 380), (40, 360), (50, 330), (60, 310)] {
        d.on_online("s1", at(s), 1, online);
    }
    d.settle(&c);
    let v = d.values(&c).cliff;
    assert_eq!((v.online_end, v.online_end_60s_ago), (Some(310), Some(400)));
    // z = (400 − 310) / √400 = 4.5, but 310 > 0.75 · 400: the fall of 22.5 % scales to
    // 3 · 0.225 / 0.25 = 2.7, below the threshold.
    assert_eq!(v.z, Some(4.5));
    assert!((v.evidence.unwrap() - 2.7).abs() < 1e-9, "{v:?}");
    assert!(!d.values(&c).firing(&c).online_cliff);
    d.on_online("s1", at(70), 1, 300);
    d.on_online("s1", at(70), 2, 280);
    d.settle(&c);
    // A later version: z = (400 − 280) / √400 = 6, a fall of 30 %: 3 · 0.3 / 0.25 = 3.6.
    let v = d.values(&c);
    assert_eq!((v.cliff.online_end_60s_ago, v.cliff.z), (Some(400), Some(6.0)));
    assert!((v.cliff.evidence.unwrap() - 3.6).abs() < 1e-9, "{v:?}");
    assert!(v.firing(&c).online_cliff, "{v:?}");
    // Not in the first ten minutes, nor below 30 viewers.
    let mut young = RoomDetectors::default();
    young.on_session("s1", START, false);
    young.on_online("s1", START + 5 * MIN, 1, 400);
    young.on_online("s1", START + 6 * MIN, 1, 100);
    assert_eq!(young.values(&c).cliff.evidence, None);
    // A big room losing 6 % in a minute: z past the threshold, the fall far below.
    let mut big = RoomDetectors::default();
    big.on_session("s1", START, false);
    big.on_online("s1", START + 100 * MIN, 1, 4940);
    big.on_online("s1", START + 101 * MIN, 1, 4646);
    let v = big.values(&c).cliff;
    assert!(v.z.unwrap() > 4.0 && v.evidence.unwrap() < 0.8, "{v:?}");
    let mut small = RoomDetectors::default();
    small.on_session("s1", START, false);
    small.on_online("s1", START + 20 * MIN, 1, 29);
    small.on_online("s1", START + 21 * MIN, 1, 0);
    assert_eq!(small.values(&c).cliff.evidence, None);
}

#[test]
fn the_state_round_trips_through_its_serialized_form() {
    let c = DetectorConfig::default();
    let mut d = RoomDetectors::default();
    let mut rng = Rng(3);
    feed(&mut d, &c, 0, 90, |_| rng.poisson(4.0));
    d.on_online("s1", START + 90 * MIN, 3, 120);
    let bytes = postcard::to_stdvec(&d).unwrap();
    let back: RoomDetectors = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, d);
    assert!(bytes.len() < 1_000, "{} bytes per room", bytes.len());
}
