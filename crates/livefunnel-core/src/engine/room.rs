//! One room's state: watermark, duplicate memory, viewers, slots, sessions.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::agg::{self, bd_uv_bits, counts_for_product, counts_for_source, uv_bits, City, Facts, Key};
use super::dedupe::Dedupe;
use super::distinct::hash_str;
use super::emit::Scratch;
use super::keyed::{Interned, Keyed};
use super::presence::{Buffers, Ends, PEvent, PKind};
use super::running::RoomTotals;
use super::session::SessionState;
use super::slots::{later, Ident, Slots};
use super::viewers::{flag, Viewers};
use super::{EngineStats, Params};
use crate::event::{Event, EventType, Source};
use crate::row::{Identity, Row};

/// Viewers' presence is folded when the room's horizon crosses a multiple of this
/// (event time), at the room's first clean-up after it.
const VIEWER_FOLD_MS: i64 = 60_000;

/// A breakdown row's emission slot: (window def, window end, key).
pub type BdSlot = (usize, i64, Key);

/// The plan and product keys a room admitted (§3 key cap) since it was created or last
/// retired, in arrival order; sources never reach the cap (it is at least their number).
#[derive(Debug, Default, Clone)]
pub struct BdKeys {
    pub plans: Interned,
    pub products: Interned,
}

impl BdKeys {
    /// The key of `name` while it is admitted or there is room for it, else `__other__`
    /// (a real key spelled `__other__` shares that row).
    fn cap(&mut self, k: &Keyed, kind: u32, name: &str, p: &Params, overflow: &mut [u64; 3]) -> Key {
        let set = if kind == agg::PLAN { &mut self.plans } else { &mut self.products };
        let i = match set.get(k, name) {
            Some(i) => i,
            None if set.len() < p.max_keys => set.insert(k, Arc::from(name)),
            None => {
                overflow[kind as usize] += 1;
                return agg::key(kind, agg::OTHER_INDEX);
            }
        };
        if name == crate::config::OTHER_KEY {
            agg::key(kind, agg::OTHER_INDEX)
        } else {
            agg::key(kind, i)
        }
    }

    /// The name of a plan or product key.
    pub fn name<'a>(&'a self, key: Key, p: &'a Params) -> &'a Arc<str> {
        let i = agg::key_index(key);
        match agg::key_kind(key) {
            agg::SOURCE => &p.source_keys[i as usize],
            _ if i == agg::OTHER_INDEX => &p.other_key,
            agg::PLAN => self.plans.name(i),
            _ => self.products.name(i),
        }
    }
}

/// Everything but the caches is part of a checkpoint ([`super::state`]).
pub struct Room {
    pub id: Arc<str>,
    /// `room_max_ts`; `i64::MIN` before the first event.
    pub max_ts: i64,
    /// Windows ending at or before this were emitted.
    pub emitted_through: i64,
    pub slots: Slots,
    pub viewers: Viewers,
    pub sessions: Vec<SessionState>,
    /// Session ids to indexes; rebuilt from `sessions` on restore.
    pub session_index: Interned,
    pub dedupe: Dedupe,
    /// Per (window def, window end): (version, fingerprint) of the last emission.
    pub emitted: BTreeMap<(usize, i64), (u64, u128)>,
    pub bd_emitted: FxHashMap<BdSlot, (u64, u128)>,
    /// Some window or session slot carries the stale fingerprint (see `emit::STALE`).
    pub stale: bool,
    /// Only shares equal identities between consecutive events: a cache.
    last_identity: Option<Arc<Identity>>,
    /// The room's latest accepted event by (ts, arrival), kept across retirement: the
    /// labels and latest session of its running values.
    pub latest: Option<Ident>,
    /// Retired and no event since.
    pub retired: bool,
    /// Counts since the room's first event, for the Prometheus counters (§4).
    pub totals: RoomTotals,
    /// Changed since the last [`super::Engine::running`] call; every room is after a restore.
    pub dirty: bool,
    /// An accepted event since the last [`super::Engine::touched`] call.
    pub touched: bool,
    pub last_gc_horizon: i64,
    pub last_expire_horizon: i64,
    /// Key in the engine's due index, if queued.
    pub due_key: Option<i64>,
    /// Key in the engine's retirement index, if queued.
    pub retire_key: Option<i64>,
    /// Live mode: the wall clock when the room's latest accepted event arrived.
    pub arrival_wall: i64,
    /// Key in the engine's wall-clock retirement index, if queued there.
    pub wall_retire_key: Option<i64>,
    pub bd_keys: BdKeys,
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

/// The ends before a session's end moved.
struct EndBefore<'a> {
    ends: &'a RoomEnds<'a>,
    moved: Option<(u32, Option<i64>)>,
}

impl Ends for EndBefore<'_> {
    fn presence_timeout(&self) -> i64 {
        self.ends.timeout
    }

    fn session_end(&self, session: u32) -> Option<i64> {
        match self.moved {
            Some((s, end)) if s == session => end,
            _ => self.ends.session_end(session),
        }
    }
}

/// Presence parameters copied out of the room's sessions, for changing one of them.
struct FixedEnds {
    timeout: i64,
    ends: Vec<Option<i64>>,
}

impl Ends for FixedEnds {
    fn presence_timeout(&self) -> i64 {
        self.timeout
    }

    fn session_end(&self, session: u32) -> Option<i64> {
        self.ends.get(session as usize).copied().flatten()
    }
}

impl Room {
    pub fn new(id: Arc<str>, pane_ms: i64) -> Room {
        Room {
            id,
            max_ts: i64::MIN,
            emitted_through: i64::MIN,
            slots: Slots::new(pane_ms),
            viewers: Viewers::default(),
            sessions: Vec::new(),
            session_index: Interned::default(),
            dedupe: Dedupe::default(),
            emitted: BTreeMap::new(),
            bd_emitted: FxHashMap::default(),
            stale: false,
            last_identity: None,
            latest: None,
            retired: false,
            totals: RoomTotals::default(),
            dirty: false,
            touched: false,
            last_gc_horizon: i64::MIN,
            last_expire_horizon: i64::MIN,
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

    fn session(&mut self, k: &Keyed, id: &str) -> u32 {
        if let Some(i) = self.session_index.get(k, id) {
            return i;
        }
        let id: Arc<str> = id.into();
        self.sessions.push(SessionState::new(id.clone()));
        self.session_index.insert(k, id)
    }

    /// Makes `last_identity` the identity of `ev` in session `session`.
    fn identity(&mut self, ev: &Event<'_>, session: u32) {
        let s = &self.sessions[session as usize].id;
        if let Some(last) = &self.last_identity {
            if *last.session_id == **s
                && *last.org_id == *ev.org_id()
                && last.account_id.as_deref() == ev.account_id.as_deref()
                && last.platform == ev.platform()
            {
                return;
            }
        }
        self.last_identity = Some(Arc::new(Identity {
            session_id: s.clone(),
            org_id: ev.org_id().into(),
            account_id: ev.account_id.as_deref().map(Arc::from),
            platform: ev.platform(),
        }));
    }

    /// Applies an accepted event to every aggregate it touches; returns the index of
    /// the event's session.
    pub fn apply(
        &mut self,
        ev: &Event<'_>,
        seq: u64,
        p: &Params,
        stats: &mut EngineStats,
        b: &mut Buffers,
    ) -> usize {
        let ts = ev.ts;
        let k = &p.keyed;
        self.max_ts = self.max_ts.max(ts);
        let session = self.session(k, &ev.session_id);
        let viewer = match (&ev.user_id, ev.kind.is_viewer_event()) {
            (Some(u), true) => Some(self.viewers.get_or_insert(k, hash_str(u))),
            _ => None,
        };
        let facts = self.facts(ev, session, viewer, p, &mut stats.breakdown_overflow);
        self.identity(ev, session);
        let identity = self.last_identity.as_ref().expect("set above");
        self.retired = false;
        later(&mut self.latest, ts, seq, identity);
        self.totals.add(&facts);
        self.add_to_slot(ts, seq, &facts, p);

        let identity = self.last_identity.clone().expect("set above");
        let s = &mut self.sessions[session as usize];
        let mut rebuild_f30 = false;
        let mut end_moved = false;
        let end_before = s.earliest_end;
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
            rebuild_f30 = s.add(session, ts, &facts, (seq, &identity), &mut self.viewers, p.limit);
        }
        if let (Some(v), EventType::Enter) = (viewer, ev.kind) {
            self.viewers.list[v as usize].session_mut(session).flags |= flag::ENTERED;
        }
        if let Some(v) = viewer {
            // An impression is seen in a feed, outside the room: it refreshes nothing.
            if ev.kind != EventType::RoomImpression {
                let kind = match ev.kind {
                    EventType::Enter => PKind::Enter { stranger: is_stranger(ev), session },
                    EventType::Leave => PKind::Leave,
                    _ => PKind::Refresh,
                };
                self.recompute_viewer(v, Some(PEvent { ts, kind }), None, p, b);
            }
        }
        if end_moved {
            // Presence of everyone who entered this session may now end earlier (of a
            // final session: only viewers who entered it since the room came back).
            for v in 0..self.viewers.len() as u32 {
                let entered = self.viewers.list[v as usize]
                    .session(session)
                    .is_some_and(|s| s.flags & flag::ENTERED != 0);
                if entered {
                    self.recompute_viewer(v, None, Some((session, end_before)), p, b);
                }
            }
        }
        if rebuild_f30 {
            let ends = FixedEnds {
                timeout: p.presence_timeout,
                ends: self.sessions.iter().map(|s| s.earliest_end).collect(),
            };
            let s = &mut self.sessions[session as usize];
            s.rebuild_f30_presence(session, &mut self.viewers, &ends, &mut b.old_segs);
        }
        session as usize
    }

    /// Adds the event to its slot: counts, identity, distinct entries, breakdowns.
    fn add_to_slot(&mut self, ts: i64, seq: u64, f: &Facts, p: &Params) {
        let identity = self.last_identity.as_ref().expect("set by apply");
        let e = self.slots.events_mut(ts);
        e.tally.add(f);
        later(&mut e.identity, ts, seq, identity);
        if let Some(v) = f.viewer {
            let bits = uv_bits(f);
            if bits != 0 {
                let slot = self.slots.slot_start(ts);
                let rec = &mut self.viewers.list[v as usize];
                let e = self.slots.events_mut(ts);
                // The viewer's entries go in time order, so its latest one says where
                // to look: in this slot, at a known place, or not at all.
                if slot > rec.uv_slot {
                    rec.uv_slot = slot;
                    rec.uv_pos = e.uv.len() as u32;
                    e.uv.push((v, bits));
                } else {
                    let at = match e.uv.get(rec.uv_pos as usize) {
                        Some(x) if slot == rec.uv_slot && x.0 == v => Some(rec.uv_pos as usize),
                        _ => e.uv.iter().position(|x| x.0 == v),
                    };
                    match at {
                        Some(i) => e.uv[i].1 |= bits,
                        None => e.uv.push((v, bits)),
                    }
                }
            }
        }
        if !p.any_breakdowns {
            return;
        }
        let e = self.slots.events_mut(ts);
        let bd_bits = bd_uv_bits(f.kind);
        let mut add = |key: Key| {
            match e.bd.iter_mut().rev().find(|(k, _)| *k == key) {
                Some((_, t)) => t.add(f),
                None => {
                    let mut t = agg::BdTally::default();
                    t.add(f);
                    e.bd.push((key, t));
                }
            }
            if let (Some(v), true) = (f.viewer, bd_bits != 0) {
                e.bd_uv.push((key, v, bd_bits));
            }
        };
        if counts_for_source(f.kind) {
            add(agg::key(agg::SOURCE, f.source.index() as u32));
            if let Some(plan) = f.plan {
                add(plan);
            }
        }
        if counts_for_product(f.kind) {
            if let Some(product) = f.product {
                add(product);
            }
        }
    }

    fn facts(
        &mut self,
        ev: &Event<'_>,
        session: u32,
        viewer: Option<u32>,
        p: &Params,
        overflow: &mut [u64; 3],
    ) -> Facts {
        let k = &p.keyed;
        let inherited = viewer
            .and_then(|v| self.viewers.list[v as usize].session(session))
            .and_then(|r| r.inherit.as_ref());
        let source = ev.source.or(inherited.map(|i| i.0)).unwrap_or(Source::Other);
        // An enter is its own latest enter: re-entering through an unpaid path
        // leaves the earlier plan behind.
        let plan: Option<&str> = if ev.kind == EventType::Enter {
            ev.plan_id.as_deref()
        } else {
            ev.plan_id.as_deref().or_else(|| inherited.and_then(|i| i.1.as_deref()))
        };
        let mut plan_key = None;
        let mut product_key = None;
        if p.any_breakdowns {
            if counts_for_source(ev.kind) {
                plan_key = plan.map(|name| self.bd_keys.cap(k, agg::PLAN, name, p, overflow));
            }
            if counts_for_product(ev.kind) {
                product_key =
                    ev.product_id.as_deref().map(|name| self.bd_keys.cap(k, agg::PRODUCT, name, p, overflow));
            }
        }
        if let (EventType::Enter, Some(v)) = (ev.kind, viewer) {
            // `source` is required on `enter`, so the decoder guarantees it is there.
            let plan = ev.plan_id.as_deref().map(Arc::from);
            self.viewers.list[v as usize].session_mut(session).inherit = Some((source, plan));
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
        Facts {
            kind: ev.kind,
            viewer,
            source,
            plan: plan_key,
            product: product_key,
            amount: ev.amount_cents(),
            quantity: ev.quantity(),
            city,
        }
    }

    /// Applies a presence event of viewer `v`, or with `moved` = (session, its end
    /// before) the change of a session's end, to the slots and sessions, then folds what
    /// the horizon made final.
    fn recompute_viewer(
        &mut self,
        v: u32,
        ev: Option<PEvent>,
        moved: Option<(u32, Option<i64>)>,
        p: &Params,
        b: &mut Buffers,
    ) {
        let h = self.horizon(p);
        let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
        let before = EndBefore { ends: &ends, moved };
        let same = self.viewers.list[v as usize].presence.change(ev, &before, &ends, b);
        self.viewers.activate(v);
        for a in &b.old_arrivals[same..] {
            self.slots.arrival(a, -1);
        }
        for a in &b.new_arrivals[same..] {
            self.slots.arrival(a, 1);
        }
        for d in &b.deltas {
            debug_assert!(d.start >= h, "presence changed below the horizon");
            self.slots.apply(d);
            if let Some(s) = self.sessions.get_mut(d.session as usize) {
                s.apply_presence(d.session, &mut self.viewers, v, d);
            }
        }
        // Folding forgets final segments: they are applied (above) first.
        let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
        self.viewers.list[v as usize].presence.fold(h, &ends);
    }

    /// Frees what the horizon has made final. Stale slots about to become final are
    /// emitted first, while their slots are still all there.
    pub fn collect(&mut self, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        let h = self.horizon(p);
        // Forgetting in steps of a second only delays freeing, never changes an answer.
        if h < self.last_expire_horizon.saturating_add(1_000) {
            return;
        }
        if self.stale {
            self.emit_stale(h, p, sc, out);
        }
        self.last_expire_horizon = h;
        let gc = h >= self.last_gc_horizon.saturating_add(p.pane_ms);
        if gc {
            // Sessions read their time lines from the slots: they fold what the horizon
            // passed before the slots holding it go.
            for (i, s) in self.sessions.iter_mut().enumerate() {
                s.fold(&self.slots, i as u32, h);
            }
        }
        self.slots.free_before(h.saturating_sub(p.max_size));
        self.slots.free_breakdowns_before(h.saturating_sub(p.max_breakdown_size));
        if gc {
            // Folding visits every active viewer's record, a cache miss each: once a
            // minute of event time instead of every pane. It only forgets what cannot
            // change any more, so later is never a different answer, only more held.
            let fold = h.div_euclid(VIEWER_FOLD_MS) != self.last_gc_horizon.div_euclid(VIEWER_FOLD_MS);
            self.last_gc_horizon = h;
            // An event at exactly `h` can still change `online_end` of a window ending there.
            self.emitted.retain(|&(_, end), _| end >= h);
            self.bd_emitted.retain(|&(_, end, _), _| end >= h);
            if fold {
                self.fold_viewers(h, h.saturating_sub(p.max_size), p);
            }
        }
    }

    /// Folds every viewer's presence at `h`; a viewer with nothing left before `before`
    /// starts afresh next time (as a viewer never seen).
    fn fold_viewers(&mut self, h: i64, before: i64, p: &Params) {
        let ends = RoomEnds { timeout: p.presence_timeout, sessions: &self.sessions };
        self.viewers.fold_active(|presence| {
            presence.fold(h, &ends);
            presence.droppable(before)
        });
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
        self.bd_emitted.retain(|&(_, end, _), _| end >= h);
        // A session that ended by timeout changed no presence: its viewers stay online
        // up to `presence_timeout` after their last event, which may reach windows the
        // room's next events fall in. So presence is freed as `collect` frees it, below
        // the new horizon only; everything else goes.
        let before = h.saturating_sub(p.max_size);
        self.fold_viewers(h, before, p);
        self.slots.free_before(before);
        // No window holding what is left can take an event again (`session_idle_timeout`
        // is above the largest window plus the horizon), and the keys start afresh.
        self.slots.free_all_breakdowns();
        for v in &mut self.viewers.list {
            for s in &mut v.sessions {
                s.inherit = None;
            }
        }
        self.dedupe = Dedupe::default();
        self.last_identity = None;
        self.bd_keys = BdKeys::default();
        self.retired = true;
        for s in &mut self.sessions {
            s.retire();
        }
    }

    /// After a restore: the state was read back without its derived parts.
    pub fn rebuild(&mut self, p: &Params) -> bool {
        self.slots.rebuild(p.pane_ms);
        let ids = self.sessions.iter().map(|s| s.id.clone()).collect();
        let Some(index) = Interned::from_names(&p.keyed, ids) else { return false };
        self.session_index = index;
        self.viewers.rebuild(&p.keyed)
    }
}

fn is_stranger(ev: &Event<'_>) -> bool {
    let class = ev.source.unwrap_or(Source::Other).class();
    class != crate::event::SourceClass::Private && !ev.is_follower
}
