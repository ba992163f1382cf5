//! Random multi-room event streams for the engine's property tests: rooms with
//! several broadcasts, late, too-late and far-future events, re-deliveries, retirement.
//! Shared by `engine_props.rs` (engine against model) and `engine_state.rs`
//! (snapshot / restore, running values).

use std::borrow::Cow;
use std::fmt;

use livefunnel_core::{EngineConfig, Event, EventType, Platform, Source, WindowSpec};
use proptest::prelude::*;

/// One configuration and one stream, in arrival order.
#[derive(Clone)]
pub struct Case {
    pub cfg: EngineConfig,
    pub events: Vec<Event<'static>>,
}

pub const BASE: i64 = 1_700_000_000_000;

pub fn fmt_event(ev: &Event<'_>) -> String {
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
        let breakdowns = c.breakdown_windows.as_ref().map(|b| b.iter().map(|w| w.name()).collect::<Vec<_>>());
        writeln!(
            f,
            "config: windows={windows:?} ooo={} L={} idle={} pt={} sit={} skew={} max_rooms={} max_keys={} breakdowns={breakdowns:?}",
            c.out_of_orderness_ms,
            c.allowed_lateness_ms,
            c.idle_grace_ms,
            c.presence_timeout_ms,
            c.session_idle_timeout_ms,
            c.max_future_skew_ms,
            c.max_rooms_per_partition,
            c.max_breakdown_keys,
        )?;
        for (i, ev) in self.events.iter().enumerate() {
            writeln!(f, "  #{i:<3} {}", fmt_event(ev))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Params {
    /// Room limit, key cap and breakdown windows (contract v1.1).
    limits_sel: u8,
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
    // A timed-out session changes no presence: presence_timeout <= session_idle_timeout.
    cfg.session_idle_timeout_ms = needed.max(cfg.presence_timeout_ms) + [0, 30_000][p.sit_sel as usize % 2];
    limits(p, &mut cfg);
    cfg.validate().expect("generated config is valid");
    cfg
}

/// Room limits small enough to reach, key caps that the wide key pools pass, and
/// breakdown rows for the default (`1m`), every or no window.
fn limits(p: &Params, cfg: &mut EngineConfig) {
    let l = p.limits_sel;
    cfg.max_rooms_per_partition = [1, 2, 3, 50_000, 50_000, 50_000][l as usize % 6];
    cfg.max_breakdown_keys = [16, 17, 1_000][(l as usize / 6) % 3];
    cfg.breakdown_windows = match (l / 18) % 4 {
        0 | 1 => None,
        2 => Some(cfg.windows.iter().filter(|w| **w != WindowSpec::Session).cloned().collect()),
        _ => Some(Vec::new()),
    };
}

/// Plans and products from a pool wider than the smallest key cap, in some cases.
fn wide_keys(p: &Params) -> bool {
    p.limits_sel % 2 == 1
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
        let wide = wide_keys(self.p);
        if (kind == EventType::Enter && plan < 3) || plan == 0 || (wide && plan < 5) {
            let n = if wide { 64 } else { 2 };
            ev.plan_id = Some(Cow::Owned(format!("p{}", (aux >> 32) % n)));
        }
        ev.is_follower = (aux >> 16) & 3 == 0;
        let products = if wide { 64 } else { 3 };
        if kind.requires_product_id() || (kind == EventType::Refund && (aux >> 18) % 2 == 0) {
            ev.product_id = Some(Cow::Owned(format!("g{}", (aux >> 18) % products)));
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
        any::<u8>(),
        1usize..=6,
        prop::array::uniform6(1usize..=3),
        prop::array::uniform6(1usize..=8),
        0i64..3_600_000,
    )
        .prop_map(|(limits_sel, cfg_sel, l_sel, pt_sel, sit_sel, n_rooms, sessions, users, base_off)| {
            Params { limits_sel, cfg_sel, l_sel, pt_sel, sit_sel, n_rooms, sessions, users, base_off }
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

pub fn case() -> impl Strategy<Value = Case> {
    (params(), prop::collection::vec(step(), 18..=200)).prop_map(|(p, steps)| build(&p, &steps))
}

/// A call into the engine in a test's script: an event with the wall clock the live
/// pipeline would pass, or a tick of that clock.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // engine_props replays no calls
pub enum Call {
    Event(usize, i64),
    Tick(i64),
}

/// The calls for a case: in replay mode its events; in live mode, a wall clock that
/// follows event time (never jumping for far-future events) and ticks after some
/// events, some past `idle_timeout`, a few far enough to retire rooms. After each
/// event's calls, `extra` may add a test's own, drawing from the same random numbers.
#[allow(dead_code)] // engine_props replays no calls
pub fn script<A: From<Call>>(
    case: &Case,
    seed: u64,
    mut extra: impl FnMut(&mut dyn FnMut() -> u64, &mut Vec<A>),
) -> Vec<A> {
    let live = case.cfg.mode == livefunnel_core::TimeMode::Live;
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut wall = case.events.first().map_or(0, |e| e.ts);
    let mut out = Vec::new();
    for (i, ev) in case.events.iter().enumerate() {
        if ev.ts <= wall.saturating_add(60_000) {
            wall = wall.max(ev.ts);
        }
        out.push(Call::Event(i, wall).into());
        if live && next() % 5 == 0 {
            wall += [5_000, 31_000, 90_000, 45 * 60_000][(next() % 4) as usize];
            out.push(Call::Tick(wall).into());
        }
        extra(&mut next, &mut out);
    }
    out
}

/// At least 1,000 cases (`PROPTEST_CASES` may raise it); no regression files written
/// into the source tree, a failure prints the whole input.
#[allow(dead_code)] // engine_state sets its own count
pub fn proptest_config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    c.cases = c.cases.max(1000);
    c.failure_persistence = None;
    c
}
