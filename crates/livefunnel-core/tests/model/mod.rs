//! Brute-force reference model of the window engine, written from
//! `docs/semantics.md` (and contract §1.3, §1.5, §2, §3) only, never from the engine.
//!
//! It replays the per-event steps (ts_out_of_range, too_late, duplicate, accept,
//! retirement) to decide every event's outcome, then computes the FINAL result of
//! every key directly from the accepted events: no panes, no incremental state.
//! Quadratic loops are fine here; clarity is the point.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use livefunnel_core::{
    BreakdownCounts, BreakdownKind, Counts, EngineConfig, Event, EventType, Identity, Outcome, Reason,
    SessionRow, Source, SourceClass, WindowSpec,
};

/// (room_id, window name, window_start)
pub type WindowKey = (String, String, i64);
/// (kind, room_id, window name, window_start, dimension value)
pub type BreakdownKey = (BreakdownKind, String, String, i64, String);
/// (room_id, session_id)
pub type SessionKey = (String, String);

const MIN30: i64 = 30 * 60 * 1000;
const HOURS2: i64 = 2 * 60 * 60 * 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelWindow {
    pub window_end: i64,
    pub identity: Identity,
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelBreakdown {
    pub window_end: i64,
    pub org_id: Arc<str>,
    pub counts: BreakdownCounts,
}

/// Everything the model decides for one input.
#[derive(Debug, Clone)]
pub struct ModelResult {
    /// One outcome per input event, in input order.
    pub outcomes: Vec<Outcome>,
    pub windows: BTreeMap<WindowKey, ModelWindow>,
    pub breakdowns: BTreeMap<BreakdownKey, ModelBreakdown>,
    /// Session rows with `version` 0 (versions are not modelled).
    pub sessions: BTreeMap<SessionKey, SessionRow>,
    /// Room retirements that happened (for coverage checks of generators).
    pub retirements: u64,
    /// Accepted events carrying the session_id of a session already final.
    pub after_session_final: u64,
    /// Sessions ended by timeout (for coverage checks of generators).
    pub sessions_timed_out: u64,
    /// Events counted under `__other__`, by kind: (plan, product).
    pub breakdown_overflow: (u64, u64),
    /// Rooms not retired since their last event: (the latest accepted ts, viewers
    /// online at that instant). For the engine's running values.
    #[allow(dead_code)]
    pub online_at_latest: BTreeMap<String, (i64, u64)>,
}

/// One accepted event with its attribution fixed at acceptance (arrival order).
#[derive(Debug, Clone)]
struct Acc {
    seq: usize,
    ev: Event<'static>,
    source: Source,
    /// For `order_paid`: the session's home city known when the order was accepted.
    home_city: Option<String>,
    /// The breakdown keys after the key cap (§3): `plan` for source-kind events,
    /// the `product_id` for product-kind ones; `__other__` beyond the cap.
    plan_key: Option<String>,
    product_key: Option<String>,
}

#[derive(Debug, Default)]
struct RoomState {
    first_arrival: usize,
    /// Acceptance watermark; `None` = minus infinity.
    w: Option<i64>,
    room_max: Option<i64>,
    /// Accepted at least one event since its last retirement (or ever).
    active: bool,
    /// (event_id, ts) of events accepted since the last retirement.
    dedup: Vec<(String, i64)>,
    /// (session_id, user_id, source, plan_id) of `enter`s accepted since the last retirement.
    enters: Vec<(String, String, Source, Option<String>)>,
    /// Every accepted event of the room, all epochs, arrival order.
    accepted: Vec<Acc>,
    /// Presence `session_end(s)` of sessions retired with the room (tombstone).
    frozen_end: HashMap<String, i64>,
    /// Final rows of retired sessions.
    frozen_rows: BTreeMap<String, SessionRow>,
    /// Sessions ended by `session_idle_timeout` (never reopened).
    timed_out: HashSet<String>,
    /// Plan and product keys with rows of their own, in arrival order, since the room
    /// was created or last retired.
    plan_keys: Vec<String>,
    product_keys: Vec<String>,
}

const OTHER: &str = "__other__";

/// `key` while it is admitted or there is room for it (admitting it), else `__other__`.
fn cap_key(keys: &mut Vec<String>, key: &str, max: usize, overflow: &mut u64) -> String {
    if keys.iter().any(|k| k == key) {
        return key.to_owned();
    }
    if keys.len() < max {
        keys.push(key.to_owned());
        return key.to_owned();
    }
    *overflow += 1;
    OTHER.to_owned()
}

/// Runs the model over `events` (arrival order) for a replay-mode configuration.
pub fn run(cfg: &EngineConfig, events: &[Event<'static>]) -> ModelResult {
    let ooo = cfg.out_of_orderness_ms;
    let lateness = cfg.allowed_lateness_ms;
    let sit = cfg.session_idle_timeout_ms;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut partition_max: Option<i64> = None;
    let mut rooms: HashMap<String, RoomState> = HashMap::new();
    let mut retirements = 0;
    let mut after_session_final = 0;

    let mut sessions_timed_out = 0;
    let mut overflow = (0, 0);
    let mut active_rooms = 0usize;

    for (seq, ev) in events.iter().enumerate() {
        // 1. ts_out_of_range (replay)
        if let Some(pm) = partition_max {
            if ev.ts > pm.saturating_add(cfg.max_future_skew_ms) {
                outcomes.push(Outcome::Rejected(Reason::TsOutOfRange));
                continue;
            }
        }
        let known = rooms.get(&*ev.room_id);
        // 2. too_late
        let horizon = known.and_then(|r| r.w).map(|w| w.saturating_sub(lateness));
        if horizon.is_some_and(|h| ev.ts < h) {
            outcomes.push(Outcome::Rejected(Reason::TooLate));
            continue;
        }
        // 3. duplicate
        if known.is_some_and(|r| {
            r.dedup.iter().any(|(id, ts)| *id == *ev.event_id && horizon.is_none_or(|h| *ts >= h))
        }) {
            outcomes.push(Outcome::Duplicate);
            continue;
        }
        // 4. room limit: a new room, or a retired one coming back, takes a place.
        if known.is_none_or(|r| !r.active) && active_rooms >= cfg.max_rooms_per_partition {
            outcomes.push(Outcome::Rejected(Reason::RoomLimit));
            continue;
        }
        // 5. accept
        let room = rooms
            .entry(ev.room_id.to_string())
            .or_insert_with(|| RoomState { first_arrival: seq, ..RoomState::default() });
        if !room.active {
            active_rooms += 1;
        }
        let late = room.w.is_some_and(|w| ev.ts < w);
        outcomes.push(Outcome::Accepted { late });
        let room_max = room.room_max.map_or(ev.ts, |m| m.max(ev.ts));
        room.room_max = Some(room_max);
        room.w = Some(room_max.saturating_sub(ooo));
        partition_max = Some(partition_max.map_or(ev.ts, |m| m.max(ev.ts)));
        room.active = true;
        room.dedup.push((ev.event_id.to_string(), ev.ts));

        // Attribution, in arrival order. The event itself is already accepted, so an
        // `enter` is its own "latest enter" (an `enter` without plan_id has none).
        let (source, plan) = if ev.kind == EventType::Enter {
            (ev.source.unwrap_or(Source::Other), ev.plan_id.as_deref().map(str::to_owned))
        } else {
            let inherited = ev.user_id.as_deref().and_then(|u| {
                room.enters.iter().rev().find(|(s, user, _, _)| *s == *ev.session_id && user == u)
            });
            (
                ev.source.or(inherited.map(|i| i.2)).unwrap_or(Source::Other),
                ev.plan_id.as_deref().map(str::to_owned).or_else(|| inherited.and_then(|i| i.3.clone())),
            )
        };
        let home_city = if ev.kind == EventType::OrderPaid {
            room.accepted
                .iter()
                .find(|a| {
                    a.ev.kind == EventType::SessionStart
                        && a.ev.session_id == ev.session_id
                        && a.ev.home_city.is_some()
                })
                .and_then(|a| a.ev.home_city.as_deref().map(str::to_owned))
        } else {
            None
        };
        if ev.kind == EventType::Enter {
            if let Some(u) = ev.user_id.as_deref() {
                room.enters.push((ev.session_id.to_string(), u.to_owned(), source, plan.clone()));
            }
        }
        // The key cap, when some window has breakdown rows at all.
        let mut plan_key = None;
        let mut product_key = None;
        if cfg.any_breakdowns() {
            let max = cfg.max_breakdown_keys;
            if is_source_kind(ev.kind) {
                plan_key = plan.as_deref().map(|p| cap_key(&mut room.plan_keys, p, max, &mut overflow.0));
            }
            if is_product_kind(ev.kind) {
                product_key = ev
                    .product_id
                    .as_deref()
                    .map(|p| cap_key(&mut room.product_keys, p, max, &mut overflow.1));
            }
        }
        if room.frozen_rows.contains_key(&*ev.session_id) {
            after_session_final += 1;
        }
        room.accepted.push(Acc { seq, ev: ev.clone(), source, home_city, plan_key, product_key });

        // Session timeouts, then retirement, after every accepted event.
        let pm = partition_max.expect("set above");
        for r in rooms.values_mut().filter(|r| r.active) {
            for sid in session_ids(&r.accepted) {
                if r.frozen_rows.contains_key(&sid)
                    || r.timed_out.contains(&sid)
                    || has_end(&r.accepted, &sid)
                {
                    continue;
                }
                let last = r.accepted.iter().filter(|a| *a.ev.session_id == *sid).map(|a| a.ev.ts).max();
                if last.is_some_and(|t| pm > t.saturating_add(sit)) {
                    r.timed_out.insert(sid);
                    sessions_timed_out += 1;
                }
            }
        }
        let mut due: Vec<(i64, usize, String)> = rooms
            .iter()
            .filter(|(_, r)| {
                r.active
                    && r.room_max.is_some_and(|max| pm > max.saturating_add(sit))
                    && all_sessions_ended(r)
            })
            .map(|(id, r)| (r.room_max.unwrap_or(i64::MIN).saturating_add(sit), r.first_arrival, id.clone()))
            .collect();
        due.sort();
        for (_, _, id) in due {
            let r = rooms.get_mut(&id).expect("listed above");
            retire(cfg, &id, r);
            retirements += 1;
            active_rooms -= 1;
        }
    }

    let mut result = ModelResult {
        outcomes,
        windows: BTreeMap::new(),
        breakdowns: BTreeMap::new(),
        sessions: BTreeMap::new(),
        retirements,
        after_session_final,
        sessions_timed_out,
        breakdown_overflow: overflow,
        online_at_latest: BTreeMap::new(),
    };
    let mut ids: Vec<&String> = rooms.keys().collect();
    ids.sort();
    for id in ids {
        let r = &rooms[id];
        if r.accepted.is_empty() {
            continue;
        }
        let segs = segments(&r.accepted, &r.frozen_end, cfg.presence_timeout_ms);
        windows_of_room(cfg, id, &r.accepted, &segs, &mut result);
        if r.active {
            let latest = r.accepted.iter().map(|a| a.ev.ts).max().expect("not empty");
            let all: Vec<&Seg> = segs.iter().collect();
            result.online_at_latest.insert(id.clone(), (latest, online_at(&all, latest)));
        }
        if cfg.session_rows() {
            for (sid, row) in &r.frozen_rows {
                result.sessions.insert((id.clone(), sid.clone()), row.clone());
            }
            for sid in session_ids(&r.accepted) {
                if !r.frozen_rows.contains_key(&sid) {
                    let row = session_row(id, &sid, &r.accepted, &segs, r.timed_out.contains(&sid));
                    result.sessions.insert((id.clone(), sid), row);
                }
            }
        }
    }
    result
}

fn session_ids(acc: &[Acc]) -> BTreeSet<String> {
    acc.iter().map(|a| a.ev.session_id.to_string()).collect()
}

fn has_end(acc: &[Acc], sid: &str) -> bool {
    acc.iter().any(|a| a.ev.kind == EventType::SessionEnd && *a.ev.session_id == *sid)
}

/// Every session seen so far (any epoch) has an accepted `session_end`, ended by
/// timeout, or is final.
fn all_sessions_ended(r: &RoomState) -> bool {
    session_ids(&r.accepted)
        .iter()
        .all(|s| has_end(&r.accepted, s) || r.timed_out.contains(s) || r.frozen_rows.contains_key(s))
}

/// Event kinds of source and plan breakdowns (§3).
fn is_source_kind(kind: EventType) -> bool {
    matches!(kind, EventType::Enter | EventType::ProductClick | EventType::OrderPaid | EventType::Comment)
}

/// Event kinds of product breakdowns (§3).
fn is_product_kind(kind: EventType) -> bool {
    matches!(
        kind,
        EventType::ProductImpression
            | EventType::ProductClick
            | EventType::OrderCreated
            | EventType::OrderPaid
    )
}

fn retire(cfg: &EngineConfig, id: &str, r: &mut RoomState) {
    // Freeze the rows (and session_end times) of sessions not frozen yet, from the
    // events accepted so far.
    let segs = segments(&r.accepted, &r.frozen_end, cfg.presence_timeout_ms);
    let ends = presence_ends(&r.accepted);
    for sid in session_ids(&r.accepted) {
        if r.frozen_rows.contains_key(&sid) {
            continue;
        }
        let row = session_row(id, &sid, &r.accepted, &segs, r.timed_out.contains(&sid));
        r.frozen_rows.insert(sid.clone(), row);
        if let Some(&end) = ends.get(&sid) {
            r.frozen_end.insert(sid, end);
        }
    }
    let max = r.room_max.expect("a retiring room has accepted events");
    let w = max.saturating_add(cfg.session_idle_timeout_ms).saturating_sub(cfg.out_of_orderness_ms);
    r.w = Some(w);
    r.room_max = Some(w.saturating_add(cfg.out_of_orderness_ms));
    r.dedup.clear();
    r.enters.clear();
    r.plan_keys.clear();
    r.product_keys.clear();
    r.active = false;
}

// ---------------------------------------------------------------------------
// Presence

#[derive(Debug, Clone)]
struct Seg {
    user: String,
    a: i64,
    b: i64,
    stranger: bool,
    session: String,
}

struct Online {
    since: i64,
    stranger: bool,
    session: String,
    last_refresh: i64,
}

/// `session_end(s)` for presence: the SMALLEST ts of the session's accepted
/// `session_end` events (absent = +inf).
fn presence_ends(acc: &[Acc]) -> HashMap<String, i64> {
    let mut ends: HashMap<String, i64> = HashMap::new();
    for a in acc.iter().filter(|a| a.ev.kind == EventType::SessionEnd) {
        let e = ends.entry(a.ev.session_id.to_string()).or_insert(a.ev.ts);
        *e = (*e).min(a.ev.ts);
    }
    ends
}

/// The per-viewer timelines of one room, from its accepted events; non-empty segments only.
fn segments(acc: &[Acc], frozen_end: &HashMap<String, i64>, pt: i64) -> Vec<Seg> {
    // session_end(s): the tombstone value for retired sessions (with the smallest-ts
    // rule a later session_end could not lower it anyway: its ts is above the
    // retired room's horizon), else the smallest accepted session_end ts.
    let mut ends = presence_ends(acc);
    for (s, t) in frozen_end {
        ends.insert(s.clone(), *t);
    }
    let end_of = |on: &Online| -> i64 {
        let se = ends.get(&on.session).copied().unwrap_or(i64::MAX);
        on.last_refresh.saturating_add(pt).min(se)
    };

    let mut by_user: BTreeMap<&str, Vec<&Acc>> = BTreeMap::new();
    for a in acc {
        if a.ev.kind.is_viewer_event() {
            if let Some(u) = a.ev.user_id.as_deref() {
                by_user.entry(u).or_default().push(a);
            }
        }
    }
    let mut out = Vec::new();
    for (user, mut evs) in by_user {
        evs.sort_by_key(|a| (a.ev.ts, a.seq));
        let mut raw: Vec<(i64, i64, bool, String)> = Vec::new();
        let mut state: Option<Online> = None;
        for a in evs {
            let t = a.ev.ts;
            if let Some(on) = &state {
                let end = end_of(on);
                if end <= t {
                    raw.push((on.since, end, on.stranger, on.session.clone()));
                    state = None;
                }
            }
            match a.ev.kind {
                EventType::Enter => {
                    if let Some(on) = state.take() {
                        raw.push((on.since, t, on.stranger, on.session));
                    }
                    let class = a.ev.source.unwrap_or(Source::Other).class();
                    let stranger =
                        matches!(class, SourceClass::Public | SourceClass::Paid) && !a.ev.is_follower;
                    state = Some(Online {
                        since: t,
                        stranger,
                        session: a.ev.session_id.to_string(),
                        last_refresh: t,
                    });
                }
                EventType::Leave => {
                    if let Some(on) = state.take() {
                        raw.push((on.since, t, on.stranger, on.session));
                    }
                }
                EventType::RoomImpression => {}
                _ => {
                    if let Some(on) = &mut state {
                        on.last_refresh = t;
                    }
                }
            }
        }
        if let Some(on) = state {
            let end = end_of(&on);
            raw.push((on.since, end, on.stranger, on.session));
        }
        for (a, b, stranger, session) in raw {
            if b > a {
                out.push(Seg { user: user.to_owned(), a, b, stranger, session });
            }
        }
    }
    out
}

fn online_at(segs: &[&Seg], t: i64) -> u64 {
    segs.iter().filter(|s| s.a <= t && t < s.b).map(|s| s.user.as_str()).collect::<HashSet<_>>().len() as u64
}

fn overlap(s: &Seg, lo: i64, hi: i64) -> i128 {
    let a = s.a.max(lo);
    let b = s.b.min(hi);
    if b > a {
        b as i128 - a as i128
    } else {
        0
    }
}

/// Presence measures over `[lo, hi)`: online_end at `hi`, online_peak over the
/// instants of the range, watch_ms, present_uv and the stranger variants.
fn presence_range(segs: &[&Seg], lo: i64, hi: i64, c: &mut Counts) {
    c.online_end = online_at(segs, hi);
    let mut peak = if lo < hi { online_at(segs, lo) } else { 0 };
    for s in segs {
        if lo < s.a && s.a < hi {
            peak = peak.max(online_at(segs, s.a));
        }
    }
    c.online_peak = peak;
    let mut present = HashSet::new();
    let mut stranger_present = HashSet::new();
    c.watch_ms = 0;
    c.stranger_watch_ms = 0;
    for s in segs {
        let o = overlap(s, lo, hi);
        c.watch_ms += o;
        if o > 0 {
            present.insert(s.user.as_str());
        }
        if s.stranger {
            c.stranger_watch_ms += o;
            if o > 0 {
                stranger_present.insert(s.user.as_str());
            }
        }
    }
    c.present_uv = present.len() as u64;
    c.stranger_present_uv = stranger_present.len() as u64;
}

// ---------------------------------------------------------------------------
// Event measures

/// Every non-presence measure of §3 over `evs`.
fn event_counts(evs: &[&Acc]) -> Counts {
    let mut c = Counts::default();
    let mut watch: HashSet<&str> = HashSet::new();
    let mut clickers: HashSet<&str> = HashSet::new();
    let mut buyers: HashSet<&str> = HashSet::new();
    let mut commenters: HashSet<&str> = HashSet::new();
    let mut by_class: [HashSet<&str>; 3] = [HashSet::new(), HashSet::new(), HashSet::new()];
    for a in evs {
        let e = &a.ev;
        let user = e.user_id.as_deref();
        match e.kind {
            EventType::RoomImpression => c.room_impressions += 1,
            EventType::Enter => {
                c.watch_pv += 1;
                if let Some(u) = user {
                    watch.insert(u);
                    let i = match e.source.unwrap_or(Source::Other).class() {
                        SourceClass::Private => 0,
                        SourceClass::Public => 1,
                        SourceClass::Paid => 2,
                    };
                    by_class[i].insert(u);
                }
            }
            EventType::ProductImpression => c.product_impressions += 1,
            EventType::ProductClick => {
                c.product_clicks += 1;
                if let Some(u) = user {
                    clickers.insert(u);
                }
            }
            EventType::OrderCreated => c.orders_created += 1,
            EventType::OrderPaid => {
                c.orders_paid += 1;
                if let Some(u) = user {
                    buyers.insert(u);
                }
                let amount = e.amount_cents();
                c.items_sold = c.items_sold.saturating_add(e.quantity());
                c.gmv_cents = c.gmv_cents.saturating_add(amount);
                match a.source.class() {
                    SourceClass::Private => c.gmv_cents_private = c.gmv_cents_private.saturating_add(amount),
                    SourceClass::Public => c.gmv_cents_public = c.gmv_cents_public.saturating_add(amount),
                    SourceClass::Paid => c.gmv_cents_paid = c.gmv_cents_paid.saturating_add(amount),
                }
                if let (Some(buyer), Some(home)) = (e.buyer_city.as_deref(), a.home_city.as_deref()) {
                    c.orders_paid_known_city += 1;
                    if buyer.as_bytes() != home.as_bytes() {
                        c.orders_paid_out_of_city += 1;
                    }
                }
            }
            EventType::Refund => c.refund_cents = c.refund_cents.saturating_add(e.amount_cents()),
            EventType::Comment => {
                c.comments += 1;
                if let Some(u) = user {
                    commenters.insert(u);
                }
            }
            EventType::Like => c.likes += 1,
            EventType::Share => c.shares += 1,
            EventType::Follow => c.follows += 1,
            EventType::FanClubJoin => c.fan_club_joins += 1,
            EventType::ReservationCreate => c.reservation_creates += 1,
            EventType::ReservationOpen => c.reservation_opens += 1,
            EventType::SessionStart
            | EventType::SessionEnd
            | EventType::Leave
            | EventType::Heartbeat
            | EventType::ProductPin
            | EventType::LuckyBag => {}
        }
    }
    c.watch_uv = watch.len() as u64;
    c.product_click_uv = clickers.len() as u64;
    c.buyer_uv = buyers.len() as u64;
    c.comment_uv = commenters.len() as u64;
    c.watch_uv_private = by_class[0].len() as u64;
    c.watch_uv_public = by_class[1].len() as u64;
    c.watch_uv_paid = by_class[2].len() as u64;
    c
}

#[derive(Default)]
struct BdAcc<'a> {
    c: BreakdownCounts,
    watch: HashSet<&'a str>,
    clickers: HashSet<&'a str>,
    buyers: HashSet<&'a str>,
}

impl<'a> BdAcc<'a> {
    fn finish(mut self) -> BreakdownCounts {
        self.c.watch_uv = self.watch.len() as u64;
        self.c.product_click_uv = self.clickers.len() as u64;
        self.c.buyer_uv = self.buyers.len() as u64;
        self.c
    }

    /// The source/plan measures: watch_pv, watch_uv, product_clicks, product_click_uv,
    /// orders_paid, buyer_uv, gmv_cents, comments.
    fn add_attributed(&mut self, a: &'a Acc) {
        let user = a.ev.user_id.as_deref();
        match a.ev.kind {
            EventType::Enter => {
                self.c.watch_pv += 1;
                self.watch.extend(user);
            }
            EventType::ProductClick => {
                self.c.product_clicks += 1;
                self.clickers.extend(user);
            }
            EventType::OrderPaid => {
                self.c.orders_paid += 1;
                self.buyers.extend(user);
                self.c.gmv_cents = self.c.gmv_cents.saturating_add(a.ev.amount_cents());
            }
            EventType::Comment => self.c.comments += 1,
            _ => unreachable!("filtered by the caller"),
        }
    }

    /// The product measures.
    fn add_product(&mut self, a: &'a Acc) {
        let user = a.ev.user_id.as_deref();
        match a.ev.kind {
            EventType::ProductImpression => self.c.product_impressions += 1,
            EventType::ProductClick => {
                self.c.product_clicks += 1;
                self.clickers.extend(user);
            }
            EventType::OrderCreated => self.c.orders_created += 1,
            EventType::OrderPaid => {
                self.c.orders_paid += 1;
                self.buyers.extend(user);
                self.c.items_sold = self.c.items_sold.saturating_add(a.ev.quantity());
                self.c.gmv_cents = self.c.gmv_cents.saturating_add(a.ev.amount_cents());
            }
            _ => unreachable!("filtered by the caller"),
        }
    }
}

fn identity_of(a: &Acc) -> Identity {
    Identity {
        session_id: Arc::from(&*a.ev.session_id),
        org_id: Arc::from(a.ev.org_id()),
        account_id: a.ev.account_id.as_deref().map(Arc::from),
        platform: a.ev.platform(),
    }
}

// ---------------------------------------------------------------------------
// Hop and tumble windows

fn windows_of_room(cfg: &EngineConfig, room: &str, acc: &[Acc], segs: &[Seg], out: &mut ModelResult) {
    let mut sorted: Vec<&Acc> = acc.iter().collect();
    sorted.sort_by_key(|a| (a.ev.ts, a.seq));
    let all_segs: Vec<&Seg> = segs.iter().collect();
    for (size, slide) in cfg.hop_windows() {
        let spec = WindowSpec::Hop { size_ms: size, slide_ms: slide };
        let name = spec.name();
        let with_breakdowns = cfg.has_breakdowns(&spec);
        let mut starts = BTreeSet::new();
        for a in acc {
            let t = a.ev.ts;
            let mut st = t.div_euclid(slide).saturating_mul(slide);
            while st > t.saturating_sub(size) {
                starts.insert(st);
                st = st.saturating_sub(slide);
            }
        }
        for s in segs {
            let mut st = (s.b - 1).div_euclid(slide).saturating_mul(slide);
            while st.saturating_add(size) > s.a {
                starts.insert(st);
                st = st.saturating_sub(slide);
            }
        }
        for start in starts {
            let end = start.saturating_add(size);
            let lo = sorted.partition_point(|a| a.ev.ts < start);
            let hi = sorted.partition_point(|a| a.ev.ts < end);
            let in_window = &sorted[lo..hi];
            let mut counts = event_counts(in_window);
            presence_range(&all_segs, start, end, &mut counts);
            if in_window.is_empty() && counts.present_uv == 0 {
                continue;
            }
            // Identity: largest ts < window_end, ties: later arrival = last in (ts, seq) order.
            let identity = identity_of(sorted[hi.checked_sub(1).expect("a window row has an earlier event")]);
            let org_id = identity.org_id.clone();

            let mut by_source: BTreeMap<&str, BdAcc<'_>> = BTreeMap::new();
            let mut by_plan: BTreeMap<&str, BdAcc<'_>> = BTreeMap::new();
            let mut by_product: BTreeMap<&str, BdAcc<'_>> = BTreeMap::new();
            for &a in in_window.iter().filter(|_| with_breakdowns) {
                if is_source_kind(a.ev.kind) {
                    by_source.entry(a.source.as_str()).or_default().add_attributed(a);
                    if let Some(p) = a.plan_key.as_deref() {
                        by_plan.entry(p).or_default().add_attributed(a);
                    }
                }
                if is_product_kind(a.ev.kind) {
                    if let Some(p) = a.product_key.as_deref() {
                        by_product.entry(p).or_default().add_product(a);
                    }
                }
            }
            for (kind, map) in [
                (BreakdownKind::Source, by_source),
                (BreakdownKind::Plan, by_plan),
                (BreakdownKind::Product, by_product),
            ] {
                for (key, b) in map {
                    out.breakdowns.insert(
                        (kind, room.to_owned(), name.clone(), start, key.to_owned()),
                        ModelBreakdown { window_end: end, org_id: org_id.clone(), counts: b.finish() },
                    );
                }
            }
            out.windows.insert(
                (room.to_owned(), name.clone(), start),
                ModelWindow { window_end: end, identity, counts },
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions

/// The session row of `sid` from the room's accepted events `acc` and its segments;
/// `timed_out` when it ended by `session_idle_timeout`.
fn session_row(room: &str, sid: &str, acc: &[Acc], segs: &[Seg], timed_out: bool) -> SessionRow {
    let evs: Vec<&Acc> = acc.iter().filter(|a| *a.ev.session_id == *sid).collect();
    let start = evs
        .iter()
        .filter(|a| a.ev.kind == EventType::SessionStart)
        .map(|a| a.ev.ts)
        .min()
        .or_else(|| evs.iter().map(|a| a.ev.ts).min())
        .expect("a session has an event");
    let real_end = evs.iter().filter(|a| a.ev.kind == EventType::SessionEnd).map(|a| a.ev.ts).max();
    let last = evs.iter().map(|a| a.ev.ts).max().expect("a session has an event");
    // A timeout ends the session at its largest ts; a real session_end wins.
    let end = real_end.or(timed_out.then_some(last));
    let ident = evs.iter().max_by_key(|a| (a.ev.ts, a.seq)).expect("a session has an event");
    let my_segs: Vec<&Seg> = segs.iter().filter(|s| s.session == sid).collect();

    let mut counts = event_counts(&evs);
    // Whole-timeline presence of the session's segments.
    let mut peak = 0;
    let mut peak_ts = None;
    for s in &my_segs {
        let n = online_at(&my_segs, s.a);
        if n > peak || (n == peak && n > 0 && peak_ts.is_some_and(|p| s.a < p)) {
            peak = n;
            peak_ts = Some(s.a);
        }
    }
    counts.online_peak = peak;
    counts.online_end = online_at(&my_segs, end.unwrap_or(last));
    counts.watch_ms = my_segs.iter().map(|s| s.b as i128 - s.a as i128).sum();
    counts.present_uv = my_segs.iter().map(|s| s.user.as_str()).collect::<HashSet<_>>().len() as u64;
    counts.stranger_watch_ms = my_segs.iter().filter(|s| s.stranger).map(|s| s.b as i128 - s.a as i128).sum();
    counts.stranger_present_uv =
        my_segs.iter().filter(|s| s.stranger).map(|s| s.user.as_str()).collect::<HashSet<_>>().len() as u64;

    let f_end = start.saturating_add(MIN30);
    let first: Vec<&Acc> = evs.iter().copied().filter(|a| a.ev.ts >= start && a.ev.ts < f_end).collect();
    let mut first30m = event_counts(&first);
    presence_range(&my_segs, start, f_end, &mut first30m);

    let cold_end = start.saturating_add(HOURS2);
    let early_viewers: HashSet<&str> = evs
        .iter()
        .filter(|a| a.ev.kind == EventType::Enter && a.ev.ts >= start && a.ev.ts < cold_end)
        .filter_map(|a| a.ev.user_id.as_deref())
        .collect();

    SessionRow {
        room_id: Arc::from(room),
        session_id: Arc::from(sid),
        version: 0,
        org_id: Arc::from(ident.ev.org_id()),
        account_id: ident.ev.account_id.as_deref().map(Arc::from),
        platform: ident.ev.platform(),
        session_start_ts: start,
        session_end_ts: end,
        duration_ms: end.unwrap_or(last).saturating_sub(start),
        peak_online: peak,
        peak_online_ts: peak_ts,
        counts,
        first30m,
        ended_by_timeout: timed_out && real_end.is_none(),
        cold_start: early_viewers.len() < 200,
    }
}

#[cfg(test)]
mod checks;
