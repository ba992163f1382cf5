//! One room's state: watermark, duplicate memory, attribution, panes, viewers, sessions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::agg::{counts_for_product, counts_for_source};
use super::agg::{City, Facts};
use super::distinct::{hash_str, HashMap64};
use super::emit::Scratch;
use super::pane::{later, Ident, Panes};
use super::presence::{diff, Arrival, Delta, Ends, PEvent, PKind, Seg, Viewer};
use super::running::RoomTotals;
use super::session::SessionState;
use super::{EngineStats, Params};
use crate::event::{Event, EventType, Source};
use crate::row::{BreakdownKind, Identity, Row};

/// Accepted event ids of a room, remembered while their `ts` is inside the horizon.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dedupe {
    ids: HashMap64<Vec<(Box<str>, i64)>>,
    order: VecDeque<(i64, u64)>,
}

impl Dedupe {
    pub fn contains(&self, id: &str, horizon: i64) -> bool {
        self.ids
            .get(&hash_str(id))
            .is_some_and(|bucket| bucket.iter().any(|(k, ts)| &**k == id && *ts >= horizon))
    }

    pub fn insert(&mut self, id: &str, ts: i64) {
        let h = hash_str(id);
        let bucket = self.ids.entry(h).or_default();
        match bucket.iter_mut().find(|(k, _)| &**k == id) {
            // A copy forgotten by the horizon came back as a new event.
            Some(entry) => entry.1 = entry.1.max(ts),
            None => bucket.push((id.into(), ts)),
        }
        self.order.push_back((ts, h));
    }

    /// Forgets ids below the horizon. Arrival order is nearly ts order, so popping
    /// from the front frees almost everything; stragglers go when they reach the front.
    pub fn expire(&mut self, horizon: i64) {
        while let Some(&(ts, h)) = self.order.front() {
            if ts >= horizon {
                break;
            }
            self.order.pop_front();
            if let Some(bucket) = self.ids.get_mut(&h) {
                bucket.retain(|(_, t)| *t >= horizon);
                if bucket.is_empty() {
                    self.ids.remove(&h);
                }
            }
        }
    }
}

/// The attribution an `enter` leaves for the viewer's later events in its session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Inherit {
    source: Source,
    plan: Option<Arc<str>>,
}

/// A breakdown row's key: (window def, window end, kind, dimension value).
pub type BdKey = (usize, i64, u8, Arc<str>);

/// Everything but the buffers and caches is part of a checkpoint ([`super::state`]).
#[derive(Serialize, Deserialize)]
pub struct Room {
    pub id: Arc<str>,
    /// `room_max_ts`; `i64::MIN` before the first event.
    pub max_ts: i64,
    /// Windows ending at or before this were emitted.
    pub emitted_through: i64,
    pub panes: Panes,
    pub viewers: HashMap64<Viewer>,
    pub sessions: Vec<SessionState>,
    /// Rebuilt from `sessions` on restore.
    #[serde(skip)]
    pub session_index: FxHashMap<Arc<str>, u32>,
    inherit: FxHashMap<(u32, u64), Inherit>,
    pub dedupe: Dedupe,
    /// Per (window def, window end): (version, fingerprint) of the last emission.
    pub emitted: BTreeMap<(usize, i64), (u64, u128)>,
    pub bd_emitted: FxHashMap<BdKey, (u64, u128)>,
    /// Some window or session slot carries the stale fingerprint (see `emit::STALE`).
    pub stale: bool,
    /// Only shares equal identities between consecutive events: a cache.
    #[serde(skip)]
    last_identity: Option<Arc<Identity>>,
    /// The room's latest accepted event by (ts, arrival), kept across retirement: the
    /// labels and latest session of its running values.
    pub latest: Option<Ident>,
    /// Retired and no event since.
    pub retired: bool,
    /// Counts since the room's first event, for the Prometheus counters (§4).
    pub totals: RoomTotals,
    /// Changed since the last [`super::Engine::running`] call; every room is after a restore.
    #[serde(skip)]
    pub dirty: bool,
    last_gc_horizon: i64,
    last_expire_horizon: i64,
    #[serde(skip)]
    buffers: PresenceBuffers,
    /// Key in the engine's due index, if queued.
    pub due_key: Option<i64>,
    /// Key in the engine's retirement index, if queued.
    pub retire_key: Option<i64>,
    // The fields below are added by state format 3, written after the format-2 state.
    /// Live mode: the wall clock when the room's latest accepted event arrived.
    #[serde(skip)]
    pub arrival_wall: i64,
    /// Key in the engine's wall-clock retirement index, if queued there.
    #[serde(skip)]
    pub wall_retire_key: Option<i64>,
    /// Plan and product keys with rows of their own (§3 key cap), since the room was
    /// created or last retired.
    #[serde(skip)]
    pub bd_keys: BdKeys,
}

/// The breakdown keys a room admitted, per kind (sources never reach the cap: it is at
/// least their number).
#[derive(Debug, Default, Clone)]
pub struct BdKeys {
    pub plans: rustc_hash::FxHashSet<Arc<str>>,
    pub products: rustc_hash::FxHashSet<Arc<str>>,
}

impl BdKeys {
    /// `key` itself while it is admitted or there is room for it, else `__other__`.
    fn cap(
        &mut self,
        kind: BreakdownKind,
        key: Arc<str>,
        max: usize,
        other: &Arc<str>,
        overflow: &mut [u64; 3],
    ) -> Arc<str> {
        let set = match kind {
            BreakdownKind::Plan => &mut self.plans,
            BreakdownKind::Product => &mut self.products,
            BreakdownKind::Source => unreachable!("sources are not capped"),
        };
        if set.contains(&key) {
            return key;
        }
        if set.len() < max {
            set.insert(key.clone());
            return key;
        }
        overflow[kind as usize] += 1;
        other.clone()
    }
}

/// Reused by every presence recomputation of the room: no allocation per event.
#[derive(Debug, Default)]
struct PresenceBuffers {
    old_segs: Vec<Seg>,
    old_arrivals: Vec<Arrival>,
    new_arrivals: Vec<Arrival>,
    deltas: Vec<Delta>,
}

/// Presence parameters seen through the room's sessions.
pub struct RoomEnds<'a> {
    pub timeout: i64,
    pub sessions: &'a [SessionState],
}

impl Ends for RoomEnds<'_> {
    fn presence_timeout(&self) -> i64 {
        self.timeout
    }

    fn session_end(&self, session: u32) -> Option<i64> {
        self.sessions.get(session as usize).and_then(|s| s.earliest_end)
    }
}

impl Room {
    pub fn new(id: Arc<str>, pane_ms: i64) -> Room {
        Room {
            id,
            max_ts: i64::MIN,
            emitted_through: i64::MIN,
            panes: Panes::new(pane_ms),
            viewers: HashMap64::default(),
            sessions: Vec::new(),
            session_index: FxHashMap::default(),
            inherit: FxHashMap::default(),
            dedupe: Dedupe::default(),
            emitted: BTreeMap::new(),
            bd_emitted: FxHashMap::default(),
            stale: false,
            last_identity: None,
            latest: None,
            retired: false,
            totals: RoomTotals::default(),
            dirty: false,
            last_gc_horizon: i64::MIN,
            last_expire_horizon: i64::MIN,
            buffers: PresenceBuffers::default(),
            due_key: None,
            retire_key: None,
            arrival_wall: i64::MIN,
            wall_retire_key: None,
            bd_keys: BdKeys::default(),
        }
    }

    /// The acceptance watermark `W`.
    pub fn watermark(&self, p: &Params) -> i64 {
        self.max_ts.saturating_sub(p.ooo)
    }

    /// The acceptance horizon `W - allowed_lateness`.
    pub fn horizon(&self, p: &Params) -> i64 {
        self.watermark(p).saturating_sub(p.lateness)
    }

    pub fn all_sessions_ended(&self) -> bool {
        !self.sessions.is_empty() && self.sessions.iter().all(|s| s.ended() || s.is_final)
    }

    fn session(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.session_index.get(id) {
            return i;
        }
        let i = self.sessions.len() as u32;
        let id: Arc<str> = id.into();
        self.sessions.push(SessionState::new(id.clone()));
        self.session_index.insert(id, i);
        i
    }

    fn identity(&mut self, ev: &Event<'_>, session: u32) -> Arc<Identity> {
        let s = &self.sessions[session as usize].id;
        if let Some(last) = &self.last_identity {
            if *last.session_id == **s
                && *last.org_id == *ev.org_id()
                && last.account_id.as_deref() == ev.account_id.as_deref()
                && last.platform == ev.platform()
            {
                return last.clone();
            }
        }
        let id = Arc::new(Identity {
            session_id: s.clone(),
            org_id: ev.org_id().into(),
            account_id: ev.account_id.as_deref().map(Arc::from),
            platform: ev.platform(),
        });
        self.last_identity = Some(id.clone());
        id
    }

    /// Applies an accepted event to every aggregate it touches; returns the index of
    /// the event's session.
    pub fn apply(&mut self, ev: &Event<'_>, seq: u64, p: &Params, stats: &mut EngineStats) -> usize {
        let ts = ev.ts;
        self.max_ts = self.max_ts.max(ts);
        let session = self.session(&ev.session_id);
        let user = if ev.kind.is_viewer_event() { ev.user_id.as_deref().map(hash_str) } else { None };
        let facts = self.facts(ev, session, user, p, &mut stats.breakdown_overflow);
        let identity = self.identity(ev, session);
        let ident: Ident = (ts, seq, identity.clone());
        self.retired = false;
        later(&mut self.latest, &ident);
        self.totals.add(&facts);

        self.panes.add_event(ts, seq, &facts, &identity, p.limit);

        let s = &mut self.sessions[session as usize];
        let mut rebuild_f30 = false;
        let mut end_moved = false;
        if ev.kind == EventType::SessionStart && s.home_city.is_none() {
            // Kept after retirement too: later orders of the session still count in windows.
            s.home_city = ev.home_city.as_deref().map(Arc::from);
        }
        if ev.kind == EventType::SessionEnd {
            // Presence ends at the smallest accepted `session_end`, also one accepted
            // after the session became final: a session that ended by timeout may
            // retire with its room before its real end arrives.
            end_moved = s.earliest_end.is_none_or(|e| ts < e);
            if end_moved {
                s.earliest_end = Some(ts);
            }
        }
        if s.is_final {
            stats.after_session_final += 1;
        } else {
            if ev.kind == EventType::SessionEnd {
                s.latest_end = Some(s.latest_end.map_or(ts, |e| e.max(ts)));
            }
            rebuild_f30 = s.add(ts, &facts, &ident, p.limit);
        }
        if let (Some(u), EventType::Enter) = (user, ev.kind) {
            self.sessions[session as usize].viewers.insert(u);
        }
        if let Some(u) = user {
            // An impression is seen in a feed, outside the room: it refreshes nothing.
            if ev.kind != EventType::RoomImpression {
                let kind = match ev.kind {
                    EventType::Enter => PKind::Enter { stranger: is_stranger(ev), session },
                    EventType::Leave => PKind::Leave,
                    _ => PKind::Refresh,
                };
                self.viewers.entry(u).or_insert_with(|| Viewer::new(u)).insert(PEvent { ts, seq, kind });
                self.recompute_viewer(u, p);
            }
        }
        if end_moved {
            // Presence of everyone who entered this session may now end earlier (of a
            // final session: only viewers who entered it since the room came back).
            let viewers: Vec<u64> = self.sessions[session as usize].viewers.iter().copied().collect();
            for u in viewers {
                self.recompute_viewer(u, p);
            }
        }
        if rebuild_f30 {
            let segs = self.viewers.values().flat_map(|v| v.segs().iter().map(move |s| (v.hash, s)));
            self.sessions[session as usize].rebuild_f30_presence(segs, session);
        }
        session as usize
    }

    fn facts(
        &mut self,
        ev: &Event<'_>,
        session: u32,
        user: Option<u64>,
        p: &Params,
        overflow: &mut [u64; 3],
    ) -> Facts {
        let inherited = user.and_then(|u| self.inherit.get(&(session, u)));
        let source = ev.source.or(inherited.map(|i| i.source)).unwrap_or(Source::Other);
        let own_plan = ev.plan_id.as_deref().map(Arc::from);
        let plan = if ev.kind == EventType::Enter {
            // An enter is its own latest enter: re-entering through an unpaid path
            // leaves the earlier plan behind.
            own_plan
        } else {
            own_plan.or_else(|| inherited.and_then(|i| i.plan.clone()))
        };
        if let (EventType::Enter, Some(u)) = (ev.kind, user) {
            // `source` is required on `enter`, so the decoder guarantees it is there.
            self.inherit.insert((session, u), Inherit { source, plan: plan.clone() });
        }
        let city = if ev.kind == EventType::OrderPaid {
            match (&ev.buyer_city, &self.sessions[session as usize].home_city) {
                (Some(b), Some(h)) if **b == **h => City::Same,
                (Some(_), Some(_)) => City::Different,
                _ => City::Unknown,
            }
        } else {
            City::Unknown
        };
        let mut product = ev.product_id.as_deref().map(Arc::from);
        // The aggregates read `plan` and `product` only as breakdown keys.
        let mut plan = plan;
        if p.any_breakdowns {
            let keys = &mut self.bd_keys;
            if counts_for_source(ev.kind) {
                plan = plan.map(|k| keys.cap(BreakdownKind::Plan, k, p.max_keys, &p.other_key, overflow));
            }
            if counts_for_product(ev.kind) {
                product =
                    product.map(|k| keys.cap(BreakdownKind::Product, k, p.max_keys, &p.other_key, overflow));
            }
        }
        Facts {
            kind: ev.kind,
            user,
            source,
            plan,
            product,
            amount: ev.amount_cents(),
            quantity: ev.quantity(),
            city,
        }
    }

    fn recompute_viewer(&mut self, u: u64, p: &Params) {
        let h = self.horizon(p);
        let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
        let Some(v) = self.viewers.get_mut(&u) else { return };
        let b = &mut self.buffers;
        b.old_arrivals.clear();
        b.new_arrivals.clear();
        b.deltas.clear();
        v.arrivals(&mut b.old_arrivals);
        v.recompute_into(&ends, &mut b.old_segs);
        diff(&b.old_segs, v.segs(), &mut b.deltas);
        v.arrivals(&mut b.new_arrivals);
        let same = b.old_arrivals.iter().zip(&b.new_arrivals).take_while(|(a, b)| a == b).count();
        for a in &b.old_arrivals[same..] {
            self.panes.arrival(a, -1);
        }
        for a in &b.new_arrivals[same..] {
            self.panes.arrival(a, 1);
        }
        for d in &b.deltas {
            debug_assert!(d.start >= h, "presence changed below the horizon");
            self.panes.apply(d);
            if let Some(s) = self.sessions.get_mut(d.session as usize) {
                s.apply_presence(u, d);
            }
        }
        // Folding forgets final segments: they are applied (above) first.
        let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
        if let Some(v) = self.viewers.get_mut(&u) {
            v.fold(h, &ends);
        }
    }

    /// Frees what the horizon has made final. Stale slots about to become final are
    /// emitted first, while their panes are still all there.
    pub fn collect(&mut self, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        let h = self.horizon(p);
        // Duplicate checks compare against the horizon themselves, so expiring in
        // steps of a second only delays freeing, never changes an answer.
        if h < self.last_expire_horizon.saturating_add(1_000) {
            return;
        }
        if self.stale {
            self.emit_stale(h, p, sc, out);
        }
        self.last_expire_horizon = h;
        self.dedupe.expire(h);
        self.panes.free_before(h.saturating_sub(p.max_size));
        if h >= self.last_gc_horizon.saturating_add(p.pane_ms) {
            self.last_gc_horizon = h;
            // An event at exactly `h` can still change `online_end` of a window ending there.
            self.emitted.retain(|&(_, end), _| end >= h);
            self.bd_emitted.retain(|&(_, end, _, _), _| end >= h);
            let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
            let before = h.saturating_sub(p.max_size);
            self.viewers.retain(|_, v| {
                v.fold(h, &ends);
                !v.droppable(before)
            });
            for s in &mut self.sessions {
                s.fold(h);
                s.viewers.retain(|u| self.viewers.contains_key(u));
            }
        }
    }

    /// Frees the room after its sessions ended and its partition moved on (§2).
    pub fn retire(&mut self, p: &Params) {
        self.max_ts = self.max_ts.saturating_add(p.session_idle_timeout);
        self.emitted_through = self.watermark(p);
        let h = self.horizon(p);
        // A window ending at or after the new horizon (after the room's last event, so
        // emitted on presence alone) may still be filled by a later event or cut by a
        // later presence change: its version goes on. The others are final.
        self.emitted.retain(|&(_, end), _| end >= h);
        self.bd_emitted.retain(|&(_, end, _, _), _| end >= h);
        // A session that ended by timeout changed no presence: its viewers stay online
        // up to `presence_timeout` after their last event, which may reach windows the
        // room's next events fall in. So presence is freed as `collect` frees it, below
        // the new horizon only; everything else goes.
        let before = h.saturating_sub(p.max_size);
        let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
        self.viewers.retain(|_, v| {
            v.fold(h, &ends);
            !v.droppable(before)
        });
        self.panes.free_before(before);
        self.inherit = FxHashMap::default();
        self.dedupe = Dedupe::default();
        self.last_identity = None;
        self.bd_keys = BdKeys::default();
        self.retired = true;
        for s in &mut self.sessions {
            s.retire();
            // A later `session_end` still ends the presence of those kept online.
            s.viewers.retain(|u| self.viewers.contains_key(u));
        }
    }

    /// After a restore: the state was read back without its derived parts.
    pub fn rebuild(&mut self, pane_ms: i64) {
        self.panes.width = pane_ms;
        self.session_index =
            self.sessions.iter().enumerate().map(|(i, s)| (s.id.clone(), i as u32)).collect();
    }
}

fn is_stranger(ev: &Event<'_>) -> bool {
    let class = ev.source.unwrap_or(Source::Other).class();
    class != crate::event::SourceClass::Private && !ev.is_follower
}
