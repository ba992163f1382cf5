//! Property test: the window engine against the brute-force model of `tests/model/`
//! (written from `docs/semantics.md` only), over random room streams.
//!
//! Run: `cargo test -p livefunnel-core --release --test engine_props`
//! (at least 1000 cases; `PROPTEST_CASES` may raise it). The model's own tests:
//! `cargo test -p livefunnel-core --test engine_props model_`.

mod model;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use livefunnel_core::{
    BreakdownCounts, BreakdownKind, Counts, Engine, EngineConfig, Event, EventType, Outcome, Platform,
    Reason, Row, Source, WindowSpec,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use model::{BreakdownKey, ModelResult, SessionKey, WindowKey};

// ---------------------------------------------------------------------------
// Generated input

/// One configuration and one stream, in arrival order.
#[derive(Clone)]
struct Case {
    cfg: EngineConfig,
    events: Vec<Event<'static>>,
}

const BASE: i64 = 1_700_000_000_000;

fn fmt_event(ev: &Event<'_>) -> String {
    let mut s = format!(
        "{} {} ts={} (+{}) room={} sess={}",
        ev.event_id,
        ev.kind.as_str(),
        ev.ts,
        ev.ts - BASE,
        ev.room_id,
        ev.session_id
    );
    let mut opt = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            s.push_str(&format!(" {name}={v}"));
        }
    };
    opt("user", ev.user_id.as_deref().map(str::to_owned));
    opt("source", ev.source.map(|v| v.as_str().to_owned()));
    opt("plan", ev.plan_id.as_deref().map(str::to_owned));
    opt("follower", ev.is_follower.then(|| "true".to_owned()));
    opt("product", ev.product_id.as_deref().map(str::to_owned));
    opt("order", ev.order_id.as_deref().map(str::to_owned));
    opt("amount", ev.amount_cents.map(|v| v.to_string()));
    opt("qty", ev.quantity.map(|v| v.to_string()));
    opt("buyer_city", ev.buyer_city.as_deref().map(str::to_owned));
    opt("home_city", ev.home_city.as_deref().map(str::to_owned));
    opt("org", ev.org_id.as_deref().map(str::to_owned));
    opt("account", ev.account_id.as_deref().map(str::to_owned));
    opt("platform", ev.platform.map(|p| p.as_str().to_owned()));
    s
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cfg;
        let windows: Vec<String> = c.windows.iter().map(|w| w.name()).collect();
        writeln!(
            f,
            "config: windows={windows:?} ooo={} L={} idle={} pt={} sit={} skew={}",
            c.out_of_orderness_ms,
            c.allowed_lateness_ms,
            c.idle_grace_ms,
            c.presence_timeout_ms,
            c.session_idle_timeout_ms,
            c.max_future_skew_ms
        )?;
        for (i, ev) in self.events.iter().enumerate() {
            writeln!(f, "  #{i:<3} {}", fmt_event(ev))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Params {
    cfg_sel: u8,
    l_sel: u8,
    pt_sel: u8,
    sit_sel: u8,
    n_rooms: usize,
    sessions: [usize; 6],
    users: [usize; 6],
    base_off: i64,
}

#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    room: u8,
    user: u8,
    sess: u8,
    time: u8,
    dt: u32,
    jitter: u32,
    aux: u64,
}

fn config(p: &Params) -> EngineConfig {
    let windows = |names: &[&str]| -> Vec<WindowSpec> {
        names.iter().map(|n| WindowSpec::parse(n).expect("test windows parse")).collect()
    };
    let mut cfg = EngineConfig::default();
    match p.cfg_sel % 6 {
        0..=2 => {
            cfg.windows = windows(&["1m", "90s/30s", "session"]);
            cfg.allowed_lateness_ms = [30_000, 60_000, 120_000][p.l_sel as usize % 3];
            cfg.presence_timeout_ms = [60_000, 180_000, 600_000][p.pt_sel as usize % 3];
        }
        3 => {
            cfg.windows = windows(&["1m", "2m/1m"]);
            cfg.allowed_lateness_ms = 60_000;
            cfg.presence_timeout_ms = 120_000;
        }
        4 => {
            cfg.windows = windows(&["30s", "session"]);
            cfg.allowed_lateness_ms = 30_000;
            cfg.presence_timeout_ms = [60_000, 300_000, 90_000][p.pt_sel as usize % 3];
        }
        _ => return EngineConfig::default(),
    }
    cfg.out_of_orderness_ms = 5_000;
    cfg.idle_grace_ms = 30_000;
    let max_size = cfg.hop_windows().map(|(size, _)| size).max().unwrap_or(0);
    let needed = max_size + cfg.out_of_orderness_ms + cfg.allowed_lateness_ms + cfg.idle_grace_ms;
    cfg.session_idle_timeout_ms = needed + [0, 30_000][p.sit_sel as usize % 2];
    cfg.validate().expect("generated config is valid");
    cfg
}

struct Gen<'p> {
    p: &'p Params,
    cfg: EngineConfig,
    events: Vec<Event<'static>>,
    next_id: u64,
    now: i64,
    room_max: Vec<Option<i64>>,
    cur: Vec<usize>,
    started: Vec<[bool; 3]>,
    ended: Vec<[bool; 3]>,
}

const CITIES: [&str; 3] = ["sh", "bj", "gz"];

impl Gen<'_> {
    fn push(&mut self, ev: Event<'static>) {
        let r: usize = ev.room_id[1..].parse().expect("room ids are r<N>");
        if ev.ts <= self.now.saturating_add(self.cfg.max_future_skew_ms / 2) {
            let m = self.room_max[r].map_or(ev.ts, |m| m.max(ev.ts));
            self.room_max[r] = Some(m);
        }
        self.events.push(ev);
    }

    fn event(&mut self, kind: EventType, ts: i64, r: usize, sidx: usize) -> Event<'static> {
        self.next_id += 1;
        Event::minimal(&format!("e{}", self.next_id), kind, ts, &format!("r{r}"), &format!("r{r}s{sidx}"))
    }

    fn fill(&self, ev: &mut Event<'static>, r: usize, st: &Step) {
        let aux = st.aux;
        let kind = ev.kind;
        let users = self.p.users[r];
        if kind.is_viewer_event() || (aux >> 62) & 3 == 0 {
            ev.user_id = Some(Cow::Owned(format!("u{}", st.user as usize % users)));
        }
        let source = Source::ALL[(aux & 0xff) as usize % Source::COUNT];
        if kind.requires_source() || (aux >> 8) % 5 == 0 {
            ev.source = Some(source);
        }
        let plan = (aux >> 12) & 7;
        if (kind == EventType::Enter && plan < 3) || plan == 0 {
            ev.plan_id = Some(Cow::Owned(format!("p{}", plan % 2)));
        }
        ev.is_follower = (aux >> 16) & 3 == 0;
        if kind.requires_product_id() {
            ev.product_id = Some(Cow::Owned(format!("g{}", (aux >> 18) % 3)));
        }
        if kind.requires_order_id() {
            ev.order_id = Some(Cow::Owned(format!("o{}", (aux >> 20) % 4)));
        }
        if kind.requires_amount() {
            ev.amount_cents =
                Some(if (aux >> 40) % 16 == 0 { i64::MAX / 2 + 1 } else { ((aux >> 24) % 50_000) as i64 });
        }
        if matches!(kind, EventType::OrderPaid | EventType::OrderCreated) {
            if (aux >> 50) % 128 == 0 {
                ev.quantity = Some(i64::MAX / 2);
            } else if (aux >> 46) & 3 == 0 {
                ev.quantity = Some(1 + ((aux >> 48) % 3) as i64);
            }
        }
        if kind == EventType::OrderPaid && (aux >> 52) % 4 != 0 {
            ev.buyer_city = Some(Cow::Borrowed(CITIES[((aux >> 52) % 4) as usize - 1]));
        }
        if kind == EventType::SessionStart && (aux >> 54) % 3 != 0 {
            ev.home_city = Some(Cow::Borrowed(CITIES[((aux >> 54) % 3) as usize - 1]));
        }
        match (aux >> 56) % 5 {
            0 => ev.org_id = Some(Cow::Borrowed("o1")),
            1 => ev.org_id = Some(Cow::Borrowed("o2")),
            _ => {}
        }
        if (aux >> 58) % 4 == 0 {
            ev.account_id = Some(Cow::Owned(format!("a{}", r % 2)));
        }
        if (aux >> 59) % 8 < 5 {
            ev.platform = Some(Platform::ALL[((aux >> 59) % 8) as usize]);
        }
    }

    fn step(&mut self, st: &Step) {
        let n = self.p.n_rooms;
        let r = (st.room as usize % n).min((st.room as usize / 16) % n);
        let ooo = self.cfg.out_of_orderness_ms;
        let lateness = self.cfg.allowed_lateness_ms;
        let skew = self.cfg.max_future_skew_ms;
        let mode = st.time % 100;

        // Re-deliveries of an earlier event_id.
        if (89..95).contains(&mode) && !self.events.is_empty() {
            let idx = (st.aux % self.events.len() as u64) as usize;
            let mut e = self.events[idx].clone();
            match st.jitter % 5 {
                0 | 1 => {}
                2 => {
                    e.is_follower = !e.is_follower;
                    e.amount_cents = e.amount_cents.map(|a| a + 7);
                    e.plan_id = Some(Cow::Borrowed("p9"));
                }
                3 => e.ts += (st.jitter % 6_000) as i64 - 3_000,
                _ => {
                    let other = (st.room as usize) % n;
                    e.room_id = Cow::Owned(format!("r{other}"));
                    e.session_id = Cow::Owned(format!("r{other}s{}", self.cur[other]));
                }
            }
            self.push(e);
            return;
        }

        let base = self.room_max[r].unwrap_or(self.now);
        let ts = match mode {
            0..=76 | 89..=94 => {
                self.now += (st.dt % 20_001) as i64;
                self.now - (st.jitter as i64 % (ooo + 1))
            }
            77..=83 => base - ooo - (st.jitter as i64 % (lateness + 1)),
            84..=86 => base - ooo - lateness - 1 - (st.jitter as i64 % 60_000),
            87..=88 => base - ooo - lateness - (st.jitter as i64 % 2),
            95..=96 => {
                if st.aux & 1 == 0 {
                    // End every room's current broadcast first, so rooms can retire.
                    for rr in 0..n {
                        let c = self.cur[rr];
                        if self.started[rr][c] && !self.ended[rr][c] {
                            let e = self.event(EventType::SessionEnd, self.now, rr, c);
                            self.end_session(rr, c);
                            self.push(e);
                        }
                    }
                }
                self.now += self.cfg.session_idle_timeout_ms + (st.jitter % 300_000) as i64;
                self.now
            }
            97..=98 => self.now + skew + 1 + (st.jitter % 10_000) as i64,
            _ => {
                // Exactly at the skew limit: accepted, and the whole partition jumps.
                self.now =
                    self.events.iter().map(|e| e.ts).filter(|&t| t <= self.now).max().unwrap_or(self.now)
                        + skew;
                self.now
            }
        };

        let cur = self.cur[r];
        let sidx = if st.sess % 8 == 0 && cur > 0 { st.sess as usize % cur } else { cur };
        if sidx == cur && !self.started[r][cur] {
            self.started[r][cur] = true;
            if st.sess % 4 != 3 {
                let mut e = self.event(EventType::SessionStart, ts, r, cur);
                self.fill(&mut e, r, st);
                self.push(e);
            }
        }
        let mut kind = match st.kind % 100 {
            0..=17 => EventType::Enter,
            18..=25 => EventType::Leave,
            26..=31 => EventType::Heartbeat,
            32..=37 => EventType::RoomImpression,
            38..=43 => EventType::ProductImpression,
            44..=50 => EventType::ProductClick,
            51..=55 => EventType::OrderCreated,
            56..=62 => EventType::OrderPaid,
            63..=65 => EventType::Refund,
            66..=71 => EventType::Comment,
            72..=75 => EventType::Like,
            76..=77 => EventType::Share,
            78..=79 => EventType::Follow,
            80..=81 => EventType::FanClubJoin,
            82..=83 => EventType::ReservationCreate,
            84..=85 => EventType::ReservationOpen,
            86..=87 => EventType::SessionStart,
            88..=92 => EventType::SessionEnd,
            93..=95 => EventType::ProductPin,
            96..=97 => EventType::LuckyBag,
            _ => EventType::Enter,
        };
        if kind == EventType::SessionEnd {
            if self.ended[r][sidx] {
                kind = EventType::Like;
            } else {
                self.end_session(r, sidx);
            }
        }
        let mut e = self.event(kind, ts, r, sidx);
        self.fill(&mut e, r, st);
        self.push(e);
    }

    fn end_session(&mut self, r: usize, sidx: usize) {
        self.ended[r][sidx] = true;
        if sidx == self.cur[r] && sidx + 1 < self.p.sessions[r] {
            self.cur[r] += 1;
        }
    }
}

fn build(p: &Params, steps: &[Step]) -> Case {
    let cfg = config(p);
    let n = p.n_rooms;
    let mut g = Gen {
        p,
        cfg: cfg.clone(),
        events: Vec::new(),
        next_id: 0,
        now: BASE + p.base_off,
        room_max: vec![None; n],
        cur: vec![0; n],
        started: vec![[false; 3]; n],
        ended: vec![[false; 3]; n],
    };
    for st in steps {
        g.step(st);
    }
    Case { cfg, events: g.events }
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        1usize..=6,
        prop::array::uniform6(1usize..=3),
        prop::array::uniform6(1usize..=8),
        0i64..3_600_000,
    )
        .prop_map(|(cfg_sel, l_sel, pt_sel, sit_sel, n_rooms, sessions, users, base_off)| Params {
            cfg_sel,
            l_sel,
            pt_sel,
            sit_sel,
            n_rooms,
            sessions,
            users,
            base_off,
        })
}

fn step() -> impl Strategy<Value = Step> {
    (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), 0u8..100, 0u32..=20_000, any::<u32>(), any::<u64>())
        .prop_map(|(kind, room, user, sess, time, dt, jitter, aux)| Step {
            kind,
            room,
            user,
            sess,
            time,
            dt,
            jitter,
            aux,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (params(), prop::collection::vec(step(), 18..=200)).prop_map(|(p, steps)| build(&p, &steps))
}

// ---------------------------------------------------------------------------
// Running and comparing

fn run_engine(cfg: &EngineConfig, events: &[Event<'static>]) -> (Vec<Outcome>, Vec<Row>) {
    let mut engine = Engine::new(cfg.clone());
    let mut rows = Vec::new();
    let outcomes = events.iter().map(|ev| engine.process(ev, 0, &mut rows)).collect();
    engine.finish(&mut rows);
    (outcomes, rows)
}

/// The lines of two `{:#?}` renderings that differ.
fn diff<T: fmt::Debug>(engine: &T, model: &T) -> String {
    let a = format!("{engine:#?}");
    let b = format!("{model:#?}");
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied().unwrap_or(""), b.get(i).copied().unwrap_or(""));
        if x != y {
            out.push_str(&format!("    engine: {}\n    model:  {}\n", x.trim(), y.trim()));
        }
    }
    out
}

/// The accepted events of one room, for failure messages.
fn room_log(case: &Case, model: &ModelResult, room: &str) -> String {
    let mut s = format!("accepted events of room {room}:\n");
    for (i, ev) in case.events.iter().enumerate() {
        if *ev.room_id == *room {
            if let Outcome::Accepted { .. } = model.outcomes[i] {
                s.push_str(&format!("  #{i:<3} {}\n", fmt_event(ev)));
            }
        }
    }
    s
}

/// Zeroes the breakdown measures a kind does not carry (contract §3), which no output shows.
fn carried(kind: BreakdownKind, c: &BreakdownCounts) -> BreakdownCounts {
    let mut c = c.clone();
    match kind {
        BreakdownKind::Source | BreakdownKind::Plan => {
            c.product_impressions = 0;
            c.orders_created = 0;
            c.items_sold = 0;
        }
        BreakdownKind::Product => {
            c.watch_pv = 0;
            c.watch_uv = 0;
            c.comments = 0;
        }
    }
    c
}

fn check(case: &Case) -> Result<(), String> {
    let model = model::run(&case.cfg, &case.events);
    let (outcomes, rows) = run_engine(&case.cfg, &case.events);

    // (1) outcomes
    for (i, (got, want)) in outcomes.iter().zip(&model.outcomes).enumerate() {
        if got != want {
            return Err(format!(
                "event #{i} ({}): engine says {got:?}, model says {want:?}\n{}",
                fmt_event(&case.events[i]),
                room_log(case, &model, &case.events[i].room_id)
            ));
        }
    }

    // (4) versions 1, 2, 3, ... per key, and the last version of each key.
    let mut windows: BTreeMap<WindowKey, &livefunnel_core::WindowRow> = BTreeMap::new();
    let mut breakdowns: BTreeMap<BreakdownKey, &livefunnel_core::BreakdownRow> = BTreeMap::new();
    let mut sessions: BTreeMap<SessionKey, &livefunnel_core::SessionRow> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let (key, prev) = match row {
            Row::Window(w) => {
                let k = (w.room_id.to_string(), w.window.to_string(), w.window_start);
                let prev = windows.insert(k.clone(), w).map(|p| p.version);
                (format!("{k:?}"), prev)
            }
            Row::Breakdown(b) => {
                let k =
                    (b.kind, b.room_id.to_string(), b.window.to_string(), b.window_start, b.key.to_string());
                let prev = breakdowns.insert(k.clone(), b).map(|p| p.version);
                (format!("{k:?}"), prev)
            }
            Row::Session(s) => {
                let k = (s.room_id.to_string(), s.session_id.to_string());
                let prev = sessions.insert(k.clone(), s).map(|p| p.version);
                (format!("{k:?}"), prev)
            }
        };
        let want = prev.unwrap_or(0) + 1;
        if row.version() != want {
            return Err(format!("row #{i} of key {key} has version {}, expected {want}", row.version()));
        }
    }

    // (2), (3) window rows
    for (k, m) in &model.windows {
        let Some(e) = windows.get(k) else {
            return Err(format!(
                "window {k:?} exists (model: {m:#?}) but the engine never emitted it\n{}",
                room_log(case, &model, &k.0)
            ));
        };
        if e.window_end != m.window_end || e.identity != m.identity || e.counts != m.counts {
            let mut d = String::new();
            if e.window_end != m.window_end {
                d.push_str(&format!("    window_end: engine {} model {}\n", e.window_end, m.window_end));
            }
            d.push_str(&diff(&e.identity, &m.identity));
            d.push_str(&diff(&e.counts, &m.counts));
            return Err(format!(
                "window {k:?} (last version {}) differs:\n{d}{}",
                e.version,
                room_log(case, &model, &k.0)
            ));
        }
    }
    for (k, e) in &windows {
        // A window that existed only through presence can stop existing when a late
        // event shortens that presence; the engine can only correct an emitted row
        // by re-emitting it with zero counts.
        if !model.windows.contains_key(k) && e.counts != Counts::default() {
            return Err(format!(
                "engine emitted window {k:?} which the model says does not exist; last version {}: {:#?}\n{}",
                e.version,
                e.counts,
                room_log(case, &model, &k.0)
            ));
        }
    }

    // (2), (3) breakdown rows
    for (k, m) in &model.breakdowns {
        let Some(e) = breakdowns.get(k) else {
            return Err(format!(
                "breakdown {k:?} exists (model: {m:#?}) but the engine never emitted it\n{}",
                room_log(case, &model, &k.1)
            ));
        };
        let ec = carried(k.0, &e.counts);
        let mc = carried(k.0, &m.counts);
        if e.window_end != m.window_end || e.org_id != m.org_id || ec != mc {
            let mut d = String::new();
            if e.window_end != m.window_end {
                d.push_str(&format!("    window_end: engine {} model {}\n", e.window_end, m.window_end));
            }
            if e.org_id != m.org_id {
                d.push_str(&format!("    org_id: engine {} model {}\n", e.org_id, m.org_id));
            }
            d.push_str(&diff(&ec, &mc));
            return Err(format!(
                "breakdown {k:?} (last version {}) differs:\n{d}{}",
                e.version,
                room_log(case, &model, &k.1)
            ));
        }
    }
    if let Some(k) = breakdowns.keys().find(|k| !model.breakdowns.contains_key(*k)) {
        return Err(format!(
            "engine emitted breakdown {k:?} which the model says does not exist: {:#?}\n{}",
            breakdowns[k],
            room_log(case, &model, &k.1)
        ));
    }

    // (2), (3) session rows
    for (k, m) in &model.sessions {
        let Some(e) = sessions.get(k) else {
            return Err(format!(
                "session {k:?} exists (model: {m:#?}) but the engine never emitted it\n{}",
                room_log(case, &model, &k.0)
            ));
        };
        let mut e = (*e).clone();
        let version = e.version;
        e.version = 0;
        if e != *m {
            return Err(format!(
                "session {k:?} (last version {version}) differs:\n{}{}",
                diff(&e, m),
                room_log(case, &model, &k.0)
            ));
        }
    }
    if let Some(k) = sessions.keys().find(|k| !model.sessions.contains_key(*k)) {
        return Err(format!(
            "engine emitted session {k:?} which the model says does not exist: {:#?}\n{}",
            sessions[k],
            room_log(case, &model, &k.0)
        ));
    }

    // (5) determinism
    let (outcomes2, rows2) = run_engine(&case.cfg, &case.events);
    if outcomes2 != outcomes {
        return Err("a second run gave different outcomes".to_owned());
    }
    if let Some(i) = (0..rows.len().max(rows2.len())).find(|&i| rows.get(i) != rows2.get(i)) {
        return Err(format!(
            "a second run differs at row #{i} (of {} and {} rows):\n{}",
            rows.len(),
            rows2.len(),
            diff(&rows.get(i), &rows2.get(i))
        ));
    }
    Ok(())
}

fn proptest_config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    c.cases = c.cases.max(1000);
    // No regression files written into the source tree; a failure prints the whole input.
    c.failure_persistence = None;
    c
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn engine_matches_model(case in case()) {
        check(&case).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// The generator itself: it must reach every edge the property relies on.

/// The generator reaches every edge the property is meant to cover, and the model
/// is fast enough for 1000 cases.
#[test]
fn model_generator_covers_the_edges() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let mut stats: BTreeMap<&str, u64> = BTreeMap::new();
    let started = std::time::Instant::now();
    let n = 300;
    for _ in 0..n {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let m = model::run(&case.cfg, &case.events);
        let mut add = |k: &'static str, v: u64| *stats.entry(k).or_default() += v;
        add("events", case.events.len() as u64);
        add("cases_default_config", u64::from(case.cfg == EngineConfig::default()));
        add("cases_without_session_rows", u64::from(!case.cfg.session_rows()));
        for o in &m.outcomes {
            add(
                match o {
                    Outcome::Accepted { late: false } => "accepted",
                    Outcome::Accepted { late: true } => "accepted_late",
                    Outcome::Duplicate => "duplicate",
                    Outcome::Rejected(Reason::TooLate) => "too_late",
                    Outcome::Rejected(Reason::TsOutOfRange) => "ts_out_of_range",
                    Outcome::Rejected(_) => "other_rejection",
                },
                1,
            );
        }
        add("retirements", m.retirements);
        add("cases_with_retirement", u64::from(m.retirements > 0));
        add("after_session_final", m.after_session_final);
        add("window_rows", m.windows.len() as u64);
        add(
            "window_rows_presence_only",
            m.windows.values().filter(|w| w.counts.present_uv > 0 && w.counts.watch_pv == 0).count() as u64,
        );
        add(
            "window_rows_with_strangers",
            m.windows.values().filter(|w| w.counts.stranger_present_uv > 0).count() as u64,
        );
        add("breakdown_rows", m.breakdowns.len() as u64);
        add("session_rows", m.sessions.len() as u64);
        add("sessions_ended", m.sessions.values().filter(|s| s.session_end_ts.is_some()).count() as u64);
        add(
            "sessions_out_of_city",
            m.sessions.values().filter(|s| s.counts.orders_paid_out_of_city > 0).count() as u64,
        );
        add(
            "rows_saturated_gmv",
            (m.windows.values().filter(|w| w.counts.gmv_cents == i64::MAX).count()
                + m.sessions.values().filter(|s| s.counts.gmv_cents == i64::MAX).count()) as u64,
        );
    }
    let elapsed = started.elapsed();
    eprintln!("{n} generated cases in {elapsed:?}: {stats:#?}");
    for key in [
        "accepted",
        "accepted_late",
        "duplicate",
        "too_late",
        "ts_out_of_range",
        "retirements",
        "after_session_final",
        "window_rows_presence_only",
        "window_rows_with_strangers",
        "breakdown_rows",
        "session_rows",
        "sessions_ended",
        "sessions_out_of_city",
        "rows_saturated_gmv",
        "cases_default_config",
        "cases_without_session_rows",
    ] {
        assert!(stats.get(key).copied().unwrap_or(0) > 0, "the generator never produced {key}: {stats:#?}");
    }
    assert!(stats["cases_with_retirement"] * 10 >= n, "retirement in under 10 % of the cases: {stats:#?}");
}

/// Cross-checks of the model against itself on generated streams: the same facts
/// summed along different keys agree.
#[test]
fn model_is_self_consistent_on_generated_streams() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    for _ in 0..200 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let m = model::run(&case.cfg, &case.events);
        let accepted: Vec<&Event<'_>> = case
            .events
            .iter()
            .zip(&m.outcomes)
            .filter(|(_, o)| matches!(o, Outcome::Accepted { .. }))
            .map(|(e, _)| e)
            .collect();
        let enters = accepted.iter().filter(|e| e.kind == EventType::Enter).count() as u64;
        for spec in &case.cfg.windows {
            let WindowSpec::Hop { size_ms, slide_ms } = *spec else { continue };
            let name = spec.name();
            let k = (size_ms / slide_ms) as u64;
            let rows: Vec<&model::ModelWindow> =
                m.windows.iter().filter(|(key, _)| key.1 == name).map(|(_, w)| w).collect();
            // Every event lies in exactly size/slide windows of a spec.
            assert_eq!(rows.iter().map(|w| w.counts.watch_pv).sum::<u64>(), k * enters, "{case:?}");
            let by_source: u64 = m
                .breakdowns
                .iter()
                .filter(|(key, _)| key.0 == BreakdownKind::Source && key.2 == name)
                .map(|(_, b)| b.counts.watch_pv)
                .sum();
            assert_eq!(by_source, k * enters, "{case:?}");
            for w in &rows {
                let c = &w.counts;
                if c.gmv_cents < i64::MAX {
                    assert_eq!(c.gmv_cents_private + c.gmv_cents_public + c.gmv_cents_paid, c.gmv_cents);
                }
                assert!(c.online_peak <= c.present_uv);
                assert!(c.stranger_watch_ms <= c.watch_ms && c.stranger_present_uv <= c.present_uv);
                assert!(c.watch_ms <= i128::from(size_ms) * i128::from(c.present_uv));
            }
            // Tumbling windows partition time: their presence adds up to the sessions'.
            if k == 1 && case.cfg.session_rows() {
                let windows: i128 = rows.iter().map(|w| w.counts.watch_ms).sum();
                let sessions: i128 = m.sessions.values().map(|s| s.counts.watch_ms).sum();
                assert_eq!(windows, sessions, "{case:?}");
            }
        }
        for s in m.sessions.values() {
            assert!(s.first30m.watch_pv <= s.counts.watch_pv && s.first30m.watch_ms <= s.counts.watch_ms);
            assert_eq!(s.peak_online, s.counts.online_peak);
            assert_eq!(s.peak_online_ts.is_some(), s.counts.present_uv > 0);
        }
    }
}
