//! Each scenario's effect, measured on the generated stream against the same
//! rooms without it (same seed: a scenario draws from its own PRNG, so
//! everything it does not touch stays the same).

use super::*;

const SEC: i64 = 1_000;

fn spec(s: &str) -> RoomScenario {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn with(p: &SimParams, specs: &[&str]) -> SimParams {
    let p = SimParams { scenarios: specs.iter().map(|s| spec(s)).collect(), ..p.clone() };
    p.validate().expect("valid parameters");
    p
}

/// `(room, ts)` of the accepted events of a kind.
fn times(events: &[Event<'_>], kind: EventType) -> Vec<(String, i64)> {
    events.iter().filter(|e| e.kind == kind).map(|e| (e.room_id.to_string(), e.ts)).collect()
}

fn sorted(v: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// How many of `ts` fall in `[start + from, start + to)` of their room.
fn count_in(ts: &[(String, i64)], start: &HashMap<String, i64>, from: i64, to: i64) -> usize {
    ts.iter().filter(|(r, t)| (start[r] + from..start[r] + to).contains(t)).count()
}

#[test]
fn gpm_drop_halves_orders_per_viewer_from_t() {
    let base = params(100, 30, 31);
    let normal = accepted(&all_messages(base.clone()));
    let drop = accepted(&all_messages(with(&base, &["gpm_drop:rooms=1-80:at=12m"])));
    let start = starts(&normal);
    let target = |r: &String| r.as_str() <= "room-0080";
    let (paid_n, paid_d) = (times(&normal, EventType::OrderPaid), times(&drop, EventType::OrderPaid));
    let (enter_n, enter_d) = (times(&normal, EventType::Enter), times(&drop, EventType::Enter));
    assert!(sorted(&enter_n) == sorted(&enter_d), "the same viewers come");
    let split = |v: &[(String, i64)], targeted: bool| -> Vec<(String, i64)> {
        v.iter().filter(|(r, _)| target(r) == targeted).cloned().collect()
    };
    // Before T nothing changes; the other rooms do not change at all.
    let before = |v: &[(String, i64)]| count_in(&split(v, true), &start, 0, 12 * MIN);
    assert_eq!(before(&paid_n), before(&paid_d));
    assert!(sorted(&split(&paid_n, false)) == sorted(&split(&paid_d, false)), "other rooms unchanged");
    // From T (plus the minute an order takes from creation to payment): orders per viewer.
    let per_viewer = |paid: &[(String, i64)]| {
        let p = count_in(&split(paid, true), &start, 13 * MIN, 30 * MIN);
        let v = count_in(&split(&enter_n, true), &start, 13 * MIN, 30 * MIN);
        p as f64 / v as f64
    };
    let ratio = per_viewer(&paid_d) / per_viewer(&paid_n);
    let orders = count_in(&split(&paid_n, true), &start, 13 * MIN, 30 * MIN);
    eprintln!("gpm_drop: {orders} orders after T without it; orders per viewer ×{ratio:.2}");
    assert!(orders > 300, "{orders}");
    assert!((0.4..0.6).contains(&ratio), "orders per viewer after T ×{ratio}");
}

/// Viewers online at `t` (from `enter` until `leave`, or until their last
/// event when they send none), summed over the rooms, at `start + at`.
fn online(events: &[Event<'_>], start: &HashMap<String, i64>, at: i64) -> usize {
    let mut span: HashMap<(&str, &str), (i64, i64, bool)> = HashMap::new();
    for e in events.iter().filter(|e| e.kind.is_viewer_event() && e.kind != EventType::RoomImpression) {
        let key = (e.room_id.as_ref(), e.user_id.as_deref().unwrap());
        match e.kind {
            EventType::Enter => {
                span.insert(key, (e.ts, e.ts, false));
            }
            EventType::Leave => {
                if let Some(s) = span.get_mut(&key) {
                    *s = (s.0, e.ts, true);
                }
            }
            _ => {
                if let Some(s) = span.get_mut(&key).filter(|s| !s.2) {
                    s.1 = s.1.max(e.ts);
                }
            }
        }
    }
    span.iter()
        .filter(|((room, _), &(from, to, _))| {
            let t = start[*room] + at;
            from <= t && t < to
        })
        .count()
}

#[test]
fn viewer_cliff_drops_online_by_40_percent_within_a_minute() {
    let base = params(30, 30, 32);
    let normal = accepted(&all_messages(base.clone()));
    let cliff = accepted(&all_messages(with(&base, &["viewer_cliff:rooms=all:at=15m"])));
    let start = starts(&normal);
    let at = |events: &[Event<'_>], t: i64| online(events, &start, t) as f64;
    let (n0, c0) = (at(&normal, 15 * MIN), at(&cliff, 15 * MIN));
    let (n1, c1) = (at(&normal, 16 * MIN), at(&cliff, 16 * MIN));
    let (n5, c5) = (at(&normal, 20 * MIN), at(&cliff, 20 * MIN));
    eprintln!("viewer_cliff: online at T {n0}/{c0}, T+1m {n1}/{c1}, T+5m {n5}/{c5} (normal/cliff)");
    assert!(n0 > 1_000.0, "{n0} online");
    assert_eq!(n0, c0, "the same audience at T");
    assert!((0.52..0.68).contains(&(c1 / c0)), "online a minute after T ×{}", c1 / c0);
    assert!((0.52..0.68).contains(&(c1 / n1)), "against no cliff ×{}", c1 / n1);
    assert!((0.5..0.7).contains(&(c5 / n5)), "five minutes later, still ×{}", c5 / n5);
    let before =
        |events: &[Event<'_>]| events.iter().filter(|e| e.ts < start[e.room_id.as_ref()] + 15 * MIN).count();
    assert_eq!(before(&normal), before(&cliff), "nothing changes before T");
}

#[test]
fn sales_stall_stops_every_order_from_t() {
    let base = params(16, 30, 33);
    let normal = accepted(&all_messages(base.clone()));
    let stall = accepted(&all_messages(with(&base, &["sales_stall:rooms=2,5-9:at=10m"])));
    let start = starts(&normal);
    let stalled = ["room-0002", "room-0005", "room-0006", "room-0007", "room-0008", "room-0009"];
    for kind in [EventType::OrderCreated, EventType::OrderPaid] {
        let (n, s) = (times(&normal, kind), times(&stall, kind));
        let after = |v: &[(String, i64)], mine: bool| {
            let v: Vec<_> =
                v.iter().filter(|(r, _)| stalled.contains(&r.as_str()) == mine).cloned().collect();
            count_in(&v, &start, 10 * MIN, 30 * MIN)
        };
        eprintln!("sales_stall: {kind:?} after T: {} without, {} with", after(&n, true), after(&s, true));
        assert!(after(&n, true) > 20, "{kind:?}: the stalled rooms sell without the scenario");
        assert_eq!(after(&s, true), 0, "{kind:?} after T in a stalled room");
        assert!(after(&s, false) > 20, "{kind:?}: the other rooms still sell");
        let before = |v: &[(String, i64)]| count_in(v, &start, 0, 10 * MIN);
        assert_eq!(before(&n), before(&s), "{kind:?} before T");
    }
}

#[test]
fn late_and_duplicates_hit_the_share_asked_for() {
    let p = with(&params(8, 30, 34), &["late_and_duplicates:rooms=1-4:share=0.05"]);
    let msgs = with_meta(p);
    // Per room index: events, duplicates, and events more than the jitter behind.
    let mut tally: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    let mut seen = HashSet::new();
    let mut max_ts: HashMap<u32, i64> = HashMap::new();
    for (meta, m) in &msgs {
        let e = decode(m).expect("valid");
        let t = tally.entry(meta.room).or_default();
        if !seen.insert((meta.room, e.event_id.to_string())) {
            t.1 += 1;
            continue;
        }
        t.0 += 1;
        let max = max_ts.entry(meta.room).or_insert(i64::MIN);
        if e.ts < *max - 5 * SEC {
            t.2 += 1;
        }
        *max = (*max).max(e.ts);
    }
    let share = |rooms: std::ops::Range<u32>| {
        let (n, d, l) = rooms.map(|r| tally[&r]).fold((0, 0, 0), |a, t| (a.0 + t.0, a.1 + t.1, a.2 + t.2));
        (d as f64 / n as f64, l as f64 / n as f64, n)
    };
    let (dup, late, n) = share(0..4);
    let (dup_other, late_other, _) = share(4..8);
    eprintln!("late_and_duplicates: {n} events, duplicates {dup:.4}, late {late:.4}; others {dup_other:.4} {late_other:.4}");
    assert!(n > 4_000, "{n}");
    assert!((0.04..0.06).contains(&dup), "duplicate share {dup}");
    assert!((0.04..0.06).contains(&late), "late share {late}");
    assert!(dup_other < 0.006 && late_other < 0.006, "the other rooms keep the defaults");
}

#[test]
fn malformed_makes_that_share_of_messages_undecodable() {
    let base = params(10, 20, 35);
    let rejected = |p: SimParams| -> HashMap<u32, (u64, u64)> {
        let mut by_room: HashMap<u32, (u64, u64)> = HashMap::new();
        for (meta, m) in with_meta(p) {
            let t = by_room.entry(meta.room).or_default();
            t.0 += 1;
            t.1 += u64::from(decode(&m).is_err());
        }
        by_room
    };
    let all = rejected(with(&base, &["malformed:rooms=all:share=0.01"]));
    let (n, bad) = all.values().fold((0, 0), |a, t| (a.0 + t.0, a.1 + t.1));
    let share = bad as f64 / n as f64;
    eprintln!("malformed: {bad} of {n} messages rejected ({share:.4})");
    assert!(n > 25_000, "{n}");
    assert!((0.0085..0.0115).contains(&share), "rejected share {share}");

    let one = rejected(with(&base, &["malformed:rooms=room-0002:share=0.2"]));
    let (n2, bad2) = one[&1];
    let share2 = bad2 as f64 / n2 as f64;
    assert!((0.17..0.23).contains(&share2), "room-0002 rejected share {share2}");
    assert!(one.iter().all(|(r, t)| *r == 1 || t.1 == 0), "only room-0002 gets bad messages");
}

#[test]
fn normal_clears_earlier_scenarios_and_the_last_of_a_kind_wins() {
    let p = with(
        &params(5, 20, 1),
        &[
            "gpm_drop:at=5m",
            "malformed:rooms=1-3:share=0.1",
            "malformed:rooms=2:share=0.3",
            "normal:rooms=3",
            "viewer_cliff:rooms=3-4:at=7m",
        ],
    );
    let fx = |n: u32| scenario::Effects::for_room(&p, n);
    assert_eq!(fx(1).gpm_drop_at, Some(5 * MIN));
    assert_eq!(fx(1).malformed_share, 0.1);
    assert_eq!(fx(2).malformed_share, 0.3);
    assert_eq!(fx(3).gpm_drop_at, None, "normal cleared it");
    assert_eq!(fx(3).malformed_share, 0.0);
    assert_eq!(fx(3).cliff_at, Some(7 * MIN), "assigned after normal");
    assert_eq!(fx(5).cliff_at, None);
    assert_eq!(fx(5).late_share, p.late_share, "defaults from the stream-wide shares");
}

#[test]
fn scenario_specs_parse() {
    use scenario::{RoomSet, Scenario};
    let cases = [
        ("gpm_drop:rooms=1-5:at=10m", RoomSet::Ranges(vec![(1, 5)]), Scenario::GpmDrop { at_ms: 600_000 }),
        (
            "viewer_cliff:rooms=7:at=15m",
            RoomSet::Ranges(vec![(7, 7)]),
            Scenario::ViewerCliff { at_ms: 900_000 },
        ),
        (
            "sales_stall:at=90s:rooms=2,4-6",
            RoomSet::Ranges(vec![(2, 2), (4, 6)]),
            Scenario::SalesStall { at_ms: 90_000 },
        ),
        ("malformed:rooms=all:share=0.01", RoomSet::All, Scenario::Malformed { share: 0.01 }),
        ("late_and_duplicates:share=0.05", RoomSet::All, Scenario::LateAndDuplicates { share: 0.05 }),
        ("normal:rooms=room-0012", RoomSet::Ranges(vec![(12, 12)]), Scenario::Normal),
    ];
    for (s, rooms, scenario) in cases {
        assert_eq!(spec(s), RoomScenario { rooms, scenario }, "{s}");
    }
}

#[test]
fn bad_scenario_specs_name_the_bad_part_and_the_expected_form() {
    let err = |s: &str| s.parse::<RoomScenario>().expect_err(s).to_string();
    let cases = [
        ("gpm_dorp:at=10m", ["unknown scenario `gpm_dorp`", "gpm_drop[:rooms=LIST]:at=DURATION"]),
        ("gpm_drop:rooms=1-5", ["`at=` is missing", "gpm_drop[:rooms=LIST]:at=DURATION"]),
        ("gpm_drop:at=10", ["`at=10` needs a unit", "e.g. gpm_drop:rooms=1-5:at=10m"]),
        ("viewer_cliff:at=10q", ["`at=10q`", "viewer_cliff[:rooms=LIST]:at=DURATION"]),
        ("sales_stall:rooms=0-3:at=5m", ["`rooms=0-3`", "start at 1"]),
        ("sales_stall:rooms=5-3:at=5m", ["range `5-3` goes down", "sales_stall[:rooms=LIST]"]),
        ("malformed:share=1.5", ["`share=1.5` is not a fraction", "malformed[:rooms=LIST]:share=FRACTION"]),
        ("malformed:at=5m:share=0.1", ["`at=` does not apply to malformed", "malformed[:rooms=LIST]"]),
        ("normal:rooms", ["`rooms` is not key=value", "normal[:rooms=LIST]"]),
        ("normal:rooms=1:rooms=2", ["`rooms=` given twice", "normal[:rooms=LIST]"]),
    ];
    for (s, want) in cases {
        let e = err(s);
        assert!(e.starts_with(&format!("scenario `{s}`: ")), "{e}");
        for w in want {
            assert!(e.contains(w), "{s}: `{e}` lacks `{w}`");
        }
    }
}

#[test]
fn params_name_rooms_and_times_that_do_not_exist() {
    let p = |s: &str| SimParams { scenarios: vec![spec(s)], ..params(5, 20, 1) };
    let e = p("viewer_cliff:rooms=3-7:at=5m").validate().unwrap_err().to_string();
    assert!(e.contains("room 7 (room-0007)") && e.contains("only 5 rooms"), "{e}");
    let e = p("gpm_drop:at=25m").validate().unwrap_err().to_string();
    assert!(e.contains("gpm_drop at 25m is not inside the 20m stream"), "{e}");
    assert!(p("gpm_drop:rooms=5:at=19m").validate().is_ok());
    let e = SimParams { malformed_share: 1.0, ..params(1, 1, 1) }.validate().unwrap_err().to_string();
    assert!(e.contains("malformed_share"), "{e}");
}
