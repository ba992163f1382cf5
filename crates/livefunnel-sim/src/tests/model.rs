//! The room model against what operators report, measured on generated data.

use super::*;

const SEC: i64 = 1_000;

/// A boost plan's (start, end, click multiplier, comment multiplier).
type PlanInfo = (i64, i64, f64, f64);

#[derive(Default)]
struct RoomTally {
    viewers: HashSet<String>,
    buyers: HashSet<String>,
    /// Enters by class (private, public, paid) and minute of the broadcast.
    enters: HashMap<i64, [u64; 3]>,
    reservation_enters_early: u64,
    private_enters_early: u64,
    impressions: u64,
    orders: u64,
    gmv: i64,
    qty1: u64,
}

fn class_index(c: SourceClass) -> usize {
    match c {
        SourceClass::Private => 0,
        SourceClass::Public => 1,
        SourceClass::Paid => 2,
    }
}

/// Public (public + paid) share of the enters in minutes `from..to` of the rooms chosen.
fn public_share<'a>(rooms: impl Iterator<Item = &'a RoomTally>, from: i64, to: i64) -> f64 {
    let (mut public, mut all) = (0, 0);
    for t in rooms {
        for (_, c) in t.enters.iter().filter(|(m, _)| (from..to).contains(*m)) {
            public += c[1] + c[2];
            all += c.iter().sum::<u64>();
        }
    }
    public as f64 / all as f64
}

#[test]
fn funnel_ratios_are_realistic() {
    let p = params(60, 30, 11);
    let sim = Simulator::new(p.clone());
    let private_led: HashMap<String, bool> =
        sim.rooms.iter().map(|r| (r.id.clone(), r.private_led)).collect();
    drop(sim);
    let events = accepted(&all_messages(p));
    let start = starts(&events);
    let mut tally: HashMap<String, RoomTally> = HashMap::new();
    for ev in &events {
        let t = tally.entry(ev.room_id.to_string()).or_default();
        let minute = (ev.ts - start[ev.room_id.as_ref()]) / MIN;
        match ev.kind {
            EventType::Enter => {
                let source = ev.source.expect("enter has a source");
                let c = class_index(source.class());
                t.viewers.insert(ev.user_id.as_deref().unwrap().to_owned());
                t.enters.entry(minute).or_default()[c] += 1;
                if minute < 5 && c == 0 {
                    t.private_enters_early += 1;
                    if source == livefunnel_core::Source::Reservation {
                        t.reservation_enters_early += 1;
                    }
                }
            }
            EventType::RoomImpression => t.impressions += 1,
            EventType::OrderPaid => {
                t.buyers.insert(ev.user_id.as_deref().unwrap().to_owned());
                t.orders += 1;
                t.gmv += ev.amount_cents();
                if ev.quantity() == 1 {
                    t.qty1 += 1;
                }
            }
            _ => {}
        }
    }
    let conv = |private: bool| {
        let rooms = tally.iter().filter(|(r, _)| private_led[*r] == private);
        let (v, b) = rooms.fold((0, 0), |(v, b), (_, t)| (v + t.viewers.len(), b + t.buyers.len()));
        assert!(v > 1_000, "{v} viewers");
        b as f64 / v as f64
    };
    let (private_conv, public_conv) = (conv(true), conv(false));
    let orders: u64 = tally.values().map(|t| t.orders).sum();
    let gmv: i64 = tally.values().map(|t| t.gmv).sum();
    let qty1: u64 = tally.values().map(|t| t.qty1).sum();
    let imp: u64 = tally.values().map(|t| t.impressions).sum();
    let pub_enters: u64 = tally.values().flat_map(|t| t.enters.values()).map(|c| c[1] + c[2]).sum();
    let aov_yuan = gmv as f64 / 100.0 / orders as f64;
    let first_minute = public_share(tally.values(), 0, 1);
    let early = public_share(tally.values(), 1, 5);
    let late_public_led =
        public_share(tally.iter().filter(|(r, _)| !private_led[*r]).map(|(_, t)| t), 15, 30);
    let late_private_led =
        public_share(tally.iter().filter(|(r, _)| private_led[*r]).map(|(_, t)| t), 15, 30);
    let reservations = tally.values().map(|t| t.reservation_enters_early).sum::<u64>() as f64
        / tally.values().map(|t| t.private_enters_early).sum::<u64>() as f64;
    eprintln!(
        "view→pay private-led {private_conv:.4} public-led {public_conv:.4}; AOV {aov_yuan:.1} yuan; \
         public share: minute 0 {first_minute:.2}, minutes 1–5 {early:.2}, minutes 15–30 public-led \
         {late_public_led:.2} private-led {late_private_led:.2}; reservation share of early private \
         enters {reservations:.2}"
    );
    assert!((0.08..0.12).contains(&private_conv), "private-led view→pay {private_conv}");
    assert!((0.007..0.015).contains(&public_conv), "public-led view→pay {public_conv}");
    assert!((175.0..225.0).contains(&aov_yuan), "AOV {aov_yuan}");
    assert!(qty1 as f64 / orders as f64 > 0.7, "quantity mostly 1");
    assert!(imp > 3 * pub_enters, "impressions ≫ public enters: {imp} vs {pub_enters}");
    assert!(first_minute < 0.25, "private viewers arrive first: public share {first_minute}");
    assert!((0.4..0.6).contains(&early), "about 1:1 early: public share {early}");
    assert!((0.8..0.9).contains(&late_public_led), "public-led rooms' late public share {late_public_led}");
    assert!((0.45..0.65).contains(&late_private_led), "private-led rooms stay near 1:1: {late_private_led}");
    assert!(reservations > 0.3, "many early private viewers come through reminders: {reservations}");
}

#[test]
fn dwell_is_one_to_twenty_minutes() {
    let events = accepted(&all_messages(params(30, 40, 12)));
    let mut entered: HashMap<(String, String), i64> = HashMap::new();
    let mut dwell = Vec::new();
    for ev in &events {
        let key = || (ev.room_id.to_string(), ev.user_id.as_deref().unwrap_or_default().to_owned());
        match ev.kind {
            EventType::Enter => {
                entered.insert(key(), ev.ts);
            }
            EventType::Leave => dwell.push(ev.ts - entered[&key()]),
            _ => {}
        }
    }
    dwell.sort_unstable();
    let median = dwell[dwell.len() / 2];
    eprintln!("dwell: {} leaves, median {} s", dwell.len(), median / SEC);
    assert!(dwell.len() > 5_000);
    assert!(dwell[0] >= MIN && dwell[dwell.len() - 1] <= 20 * MIN, "{:?}", (dwell[0], dwell.last()));
    assert!((3 * MIN..7 * MIN).contains(&median), "median dwell {median}");
}

#[test]
fn lucky_bags_at_5_and_20_flash_sales_at_10_18_and_30() {
    let p = params(12, 45, 13);
    let sim = Simulator::new(p.clone());
    let n_products: HashMap<String, usize> =
        sim.rooms.iter().map(|r| (r.id.clone(), r.products.len())).collect();
    drop(sim);
    let events = accepted(&all_messages(p));
    let start = starts(&events);
    let mut lucky: HashMap<String, Vec<i64>> = HashMap::new();
    let mut flash_pins: HashMap<String, Vec<i64>> = HashMap::new();
    let mut clicks: HashMap<String, Vec<i64>> = HashMap::new();
    for ev in &events {
        let room = ev.room_id.to_string();
        let at = ev.ts - start[&room];
        match ev.kind {
            EventType::LuckyBag => lucky.entry(room).or_default().push(at),
            EventType::ProductPin => {
                let n: usize =
                    ev.product_id.as_deref().unwrap().rsplit("-p").next().unwrap().parse().unwrap();
                if n + 2 > n_products[&room] {
                    flash_pins.entry(room).or_default().push(at);
                }
            }
            EventType::ProductClick => clicks.entry(room).or_default().push(at),
            _ => {}
        }
    }
    assert_eq!(lucky.len(), 12);
    for (room, at) in &lucky {
        assert_eq!(at, &[5 * MIN, 20 * MIN], "{room}: lucky bags");
        assert_eq!(flash_pins[room], [10 * MIN, 18 * MIN, 30 * MIN], "{room}: flash-sale pins");
    }
    // A flash sale is a burst of clicks: the two minutes after each pin
    // against the two minutes four minutes before it.
    let (mut during, mut before) = (0, 0);
    for at in clicks.values() {
        for f in [10 * MIN, 18 * MIN, 30 * MIN] {
            during += at.iter().filter(|&&t| (f..f + 2 * MIN).contains(&t)).count();
            before += at.iter().filter(|&&t| (f - 4 * MIN..f - 2 * MIN).contains(&t)).count();
        }
    }
    eprintln!("clicks around flash sales: {during} during, {before} before");
    assert!(during > 2 * before, "{during} clicks during flash sales, {before} before");
}

#[test]
fn boost_plans_bring_bursts_of_paid_viewers_with_their_own_rates() {
    let p = params(120, 30, 14);
    let sim = Simulator::new(p.clone());
    // (start, end, click_mult, comment_mult) by plan id.
    let plans: HashMap<String, PlanInfo> = sim
        .rooms
        .iter()
        .flat_map(|r| {
            r.plans.iter().enumerate().map(|(k, pl)| {
                (format!("plan-{}-{}", r.id, k + 1), (pl.start, pl.end, pl.click_mult, pl.comment_mult))
            })
        })
        .collect();
    let room_start: HashMap<String, i64> = sim.rooms.iter().map(|r| (r.id.clone(), r.start)).collect();
    let start_of = |plan: &str| room_start[plan.trim_start_matches("plan-").rsplit_once('-').unwrap().0];
    drop(sim);
    assert!(plans.len() > 80, "{} plans", plans.len());
    let events = accepted(&all_messages(p));
    // Viewer -> plan, and what each plan's viewers did.
    let mut viewer_plan: HashMap<(String, String), String> = HashMap::new();
    let mut enters_in: HashMap<String, [u64; 2]> = HashMap::new();
    let mut enters_by_room: HashMap<String, Vec<i64>> = HashMap::new();
    let (mut clicked, mut commented): (HashSet<_>, HashSet<_>) = (HashSet::new(), HashSet::new());
    for ev in &events {
        let key = (ev.room_id.to_string(), ev.user_id.as_deref().unwrap_or_default().to_owned());
        match ev.kind {
            EventType::Enter => {
                enters_by_room.entry(ev.room_id.to_string()).or_default().push(ev.ts);
                if ev.source == Some(livefunnel_core::Source::PaidBoost) {
                    let plan = ev.plan_id.as_deref().expect("boost viewers carry their plan").to_owned();
                    let (s, e, _, _) = plans[&plan];
                    assert!(ev.ts >= s && ev.ts <= e + 20 * SEC, "{plan}: enter outside the plan");
                    enters_in.entry(plan.clone()).or_default()[0] += 1;
                    viewer_plan.insert(key, plan);
                }
            }
            EventType::ProductClick if viewer_plan.contains_key(&key) => {
                clicked.insert(key);
            }
            EventType::Comment if viewer_plan.contains_key(&key) => {
                commented.insert(key);
            }
            _ => {}
        }
    }
    // Bursts: the room's enters per minute during its plans against the three minutes before.
    let (mut during, mut before, mut during_ms, mut before_ms) = (0, 0, 0, 0);
    for (plan, &(s, e, _, _)) in &plans {
        if s - start_of(plan) < 6 * MIN {
            // The first minutes' reminder rush would hide the burst.
            continue;
        }
        let room = plan.trim_start_matches("plan-").rsplit_once('-').unwrap().0;
        let ts = &enters_by_room[room];
        during += ts.iter().filter(|&&t| (s..e).contains(&t)).count();
        before += ts.iter().filter(|&&t| (s - 3 * MIN..s).contains(&t)).count();
        during_ms += e - s;
        before_ms += 3 * MIN;
    }
    let burst = (during as f64 / during_ms as f64) / (before as f64 / before_ms as f64);
    // Own rates: plans with a high multiplier against plans with a low one.
    let rate = |set: &HashSet<(String, String)>, pick: &dyn Fn(&PlanInfo) -> bool| {
        let viewers: Vec<_> = viewer_plan.iter().filter(|(_, p)| pick(&plans[*p])).collect();
        viewers.iter().filter(|(k, _)| set.contains(*k)).count() as f64 / viewers.len() as f64
    };
    let click_hi = rate(&clicked, &|p| p.2 > 1.2);
    let click_lo = rate(&clicked, &|p| p.2 < 0.7);
    let comment_hi = rate(&commented, &|p| p.3 > 1.2);
    let comment_lo = rate(&commented, &|p| p.3 < 0.7);
    eprintln!(
        "boost: {} viewers, enter rate ×{burst:.2} during plans; clicked {click_lo:.3} → {click_hi:.3}, \
         commented {comment_lo:.3} → {comment_hi:.3}",
        viewer_plan.len()
    );
    assert!(viewer_plan.len() > 2_000, "{} boost viewers", viewer_plan.len());
    assert!(burst > 1.5, "enters per minute during plans ×{burst}");
    assert!(click_hi > 1.8 * click_lo, "click rates {click_lo} {click_hi}");
    assert!(comment_hi > 1.8 * comment_lo, "comment rates {comment_lo} {comment_hi}");
}

/// The steady-state estimate of `RoomProfile` against the orders the rooms place:
/// organic (private and public) paid orders per minute from minute 45 to 95, rooms
/// scaled to about 1.5 a minute.
#[test]
fn the_profile_estimates_organic_orders_per_minute() {
    let base = params(10, 100, 17);
    let sim = Simulator::new(base.clone());
    let scales: Vec<f64> =
        (0..10).map(|r| (1.5 / sim.room_profile(r).organic_orders_per_minute).clamp(0.01, 1000.0)).collect();
    let mut p = base;
    for (r, s) in scales.iter().enumerate() {
        p.scenarios.push(format!("audience:rooms={}:scale={s}", r + 1).parse().unwrap());
    }
    let sim = Simulator::new(p.clone());
    let profiles: Vec<RoomProfile> = (0..10).map(|r| sim.room_profile(r)).collect();
    drop(sim);
    let events = accepted(&all_messages(p));
    let mut class: HashMap<(String, String), SourceClass> = HashMap::new();
    let mut orders = [0u64; 10];
    for ev in &events {
        let room: usize = ev.room_id[5..].parse::<usize>().unwrap() - 1;
        let user = || (ev.room_id.to_string(), ev.user_id.as_deref().unwrap_or_default().to_owned());
        match ev.kind {
            EventType::Enter => {
                class.insert(user(), ev.source.expect("enter has a source").class());
            }
            EventType::OrderPaid => {
                let minute = (ev.ts - profiles[room].start_ms) / MIN;
                let organic = class.get(&user()).is_some_and(|c| *c != SourceClass::Paid);
                if organic && (45..95).contains(&minute) {
                    orders[room] += 1;
                }
            }
            _ => {}
        }
    }
    let (mut measured, mut estimated) = (0.0, 0.0);
    for (r, p) in profiles.iter().enumerate() {
        let m = orders[r] as f64 / 50.0;
        let e = p.organic_orders_per_minute;
        assert!((0.6..1.5).contains(&(m / e)), "room {}: {m:.2}/min measured, {e:.2} estimated", r + 1);
        measured += m;
        estimated += e;
    }
    assert!((0.88..1.12).contains(&(measured / estimated)), "{measured:.1} vs {estimated:.1} per minute");
}
