//! Turning a room's panes and sessions into rows: window combination, first
//! emission as the watermark rises, re-emission when an accepted event changes an
//! emitted result, session rows.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::agg::{BdUnion, Tally, UvsUnion};
use super::pane::floor_to;
use super::room::Room;
use super::Params;
use crate::event::Source;
use crate::row::{BreakdownKind, BreakdownRow, Counts, Row, SessionRow, WindowRow};

/// Reusable buffers, so combining panes allocates nothing in the steady state.
#[derive(Default)]
pub struct Scratch {
    uvs: UvsUnion,
    /// Source breakdowns by `Source::index`, and which of them the window touched.
    sources: Vec<BdUnion>,
    source_touched: [bool; Source::COUNT],
    source_keys: Vec<Arc<str>>,
    /// Plan and product breakdowns.
    keyed: FxHashMap<(BreakdownKind, Arc<str>), BdUnion>,
}

impl Scratch {
    fn reset(&mut self) {
        if self.sources.is_empty() {
            self.sources = (0..Source::COUNT).map(|_| BdUnion::default()).collect();
            self.source_keys = Source::ALL.iter().map(|s| Arc::from(s.as_str())).collect();
        }
        for (i, touched) in self.source_touched.iter_mut().enumerate() {
            if *touched {
                self.sources[i].clear();
                *touched = false;
            }
        }
        // Keys that no longer occur would pile up: keep the buffers only while few.
        if self.keyed.len() > 256 {
            self.keyed.clear();
        }
        for b in self.keyed.values_mut() {
            b.clear();
        }
    }
}

/// A 128-bit digest of a row's content (everything but its version): two rows
/// with the same digest are the same row, so an unchanged one is not re-emitted.
fn fingerprint(row: &Row) -> u128 {
    use std::hash::Hash;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    match row {
        Row::Window(r) => {
            r.identity.hash(&mut h);
            r.counts.hash(&mut h);
        }
        Row::Breakdown(r) => {
            r.org_id.hash(&mut h);
            r.counts.hash(&mut h);
        }
        Row::Session(r) => {
            (&r.org_id, &r.account_id, r.platform, r.session_start_ts, r.session_end_ts).hash(&mut h);
            (r.duration_ms, r.peak_online, r.peak_online_ts, r.ended_by_timeout, r.cold_start).hash(&mut h);
            r.counts.hash(&mut h);
            r.first30m.hash(&mut h);
        }
    }
    h.digest128()
}

/// The fingerprint of a slot whose last emission may not be what the sinks hold: a
/// restore after a crash marks every open slot so (see [`Room::mark_stale`]). A real
/// digest equal to it (probability 2^-128) would only cost redundant emissions.
pub const STALE: u128 = 0;

/// Bits of a version below the epoch: `version = epoch << 40 | counter`, a 24-bit
/// epoch (the live pipeline's restart count, floored at the minutes since 2025:
/// `livefunnel_state::epoch`) above a 40-bit per-key emission counter. Neither may
/// spill into the other: [`MAX_EPOCH`] is checked where the epoch is set, and the
/// counter stops at [`MAX_COUNTER`].
pub const EPOCH_SHIFT: u32 = 40;
/// The largest epoch a version holds.
pub const MAX_EPOCH: u32 = (1 << (64 - EPOCH_SHIFT)) - 1;
/// The largest counter: 2^40 − 1 emissions of one key, never reached in practice;
/// further emissions keep it (equal versions: ClickHouse keeps the last inserted).
const MAX_COUNTER: u64 = (1 << EPOCH_SHIFT) - 1;

/// Emits `row` with the next version unless it equals the last emission of its key
/// (and `force` is off, and the slot is not stale); `slot` is the key's (counter,
/// fingerprint), counter 0 when never emitted. `base` is `epoch << EPOCH_SHIFT`.
fn emit_if_changed(slot: &mut (u64, u128), mut row: Row, force: bool, base: u64, out: &mut Vec<Row>) {
    let fp = fingerprint(&row);
    if !force && slot.0 != 0 && slot.1 == fp && slot.1 != STALE {
        return;
    }
    debug_assert!(slot.0 < MAX_COUNTER, "version counter overflows into the epoch");
    slot.0 = next_counter(slot.0);
    slot.1 = fp;
    let version = base | slot.0;
    match &mut row {
        Row::Window(r) => r.version = version,
        Row::Breakdown(r) => r.version = version,
        Row::Session(r) => r.version = version,
    }
    out.push(row);
}

/// The counter after `c`, saturating below the epoch's bits.
fn next_counter(c: u64) -> u64 {
    (c + 1).min(MAX_COUNTER)
}

impl Room {
    /// Combines the panes of window `def` ending at `end`. `None` when no row exists.
    /// Breakdown rows only when `breakdowns` and the window has them.
    pub fn window_row(
        &mut self,
        def: usize,
        end: i64,
        breakdowns: bool,
        p: &Params,
        sc: &mut Scratch,
    ) -> Option<(WindowRow, Vec<BreakdownRow>)> {
        let d = &p.defs[def];
        let with_bd = breakdowns && d.breakdowns;
        let start = end.saturating_sub(d.size);
        let mut tally = Tally::default();
        sc.uvs.clear();
        sc.reset();
        for pane in self.panes.map.range(start..end).filter_map(|(_, p)| p.events.as_deref()) {
            tally.merge(&pane.tally);
            sc.uvs.add(&pane.uvs, p.limit);
            if !with_bd {
                continue;
            }
            for (src, b) in &pane.bd.sources {
                sc.sources[src.index()].add(b, p.limit);
                sc.source_touched[src.index()] = true;
            }
            for (key, b) in &pane.bd.plans {
                sc.keyed.entry((BreakdownKind::Plan, key.clone())).or_default().add(b, p.limit);
            }
            for (key, b) in &pane.bd.products {
                sc.keyed.entry((BreakdownKind::Product, key.clone())).or_default().add(b, p.limit);
            }
        }
        let presence = self.panes.presence(start, end);
        if tally.events == 0 && presence.present_uv == 0 {
            return None;
        }
        let mut counts = Counts::default();
        tally.write(&mut counts);
        sc.uvs.write(&mut counts);
        counts.watch_ms = presence.watch_ms;
        counts.stranger_watch_ms = presence.stranger_watch_ms;
        counts.present_uv = presence.present_uv;
        counts.stranger_present_uv = presence.stranger_present_uv;
        counts.online_peak = presence.peak as u64;
        counts.online_end = presence.online_end as u64;
        let identity = self.panes.identity_before(end).expect("a row exists only after an event");
        let row = WindowRow {
            room_id: self.id.clone(),
            window: d.name.clone(),
            window_start: start,
            window_end: end,
            version: 0,
            identity: (*identity.2).clone(),
            counts,
        };
        let org_id = &identity.2.org_id;
        let breakdown = |kind: BreakdownKind, key: &Arc<str>, b: &BdUnion| BreakdownRow {
            kind,
            room_id: self.id.clone(),
            window: d.name.clone(),
            window_start: start,
            window_end: end,
            version: 0,
            org_id: org_id.clone(),
            key: key.clone(),
            counts: b.counts(),
        };
        let mut bds: Vec<BreakdownRow> = (0..Source::COUNT)
            .filter(|&i| sc.source_touched[i])
            .map(|i| breakdown(BreakdownKind::Source, &sc.source_keys[i], &sc.sources[i]))
            .collect();
        bds.extend(
            sc.keyed
                .iter()
                .filter(|(_, b)| b.c != Default::default())
                .map(|((kind, key), b)| breakdown(*kind, key, b)),
        );
        bds.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        Some((row, bds))
    }

    /// A window that existed only through presence, which a late `leave` or
    /// `session_end` has since cut short: its emitted row is replaced by an empty one.
    fn vanished_row(&self, def: usize, end: i64, p: &Params) -> Option<(WindowRow, Vec<BreakdownRow>)> {
        self.emitted.get(&(def, end))?;
        let identity = self.panes.identity_before(end)?;
        let d = &p.defs[def];
        let row = WindowRow {
            room_id: self.id.clone(),
            window: d.name.clone(),
            window_start: end.saturating_sub(d.size),
            window_end: end,
            version: 0,
            identity: (*identity.2).clone(),
            counts: Counts::default(),
        };
        Some((row, Vec::new()))
    }

    /// Emits window `def` ending at `end` if it exists and differs from its last emission.
    pub fn emit_window(&mut self, def: usize, end: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        let Some((row, bds)) =
            self.window_row(def, end, true, p, sc).or_else(|| self.vanished_row(def, end, p))
        else {
            return;
        };
        let base = p.version_base;
        emit_if_changed(self.emitted.entry((def, end)).or_insert((0, 0)), Row::Window(row), false, base, out);
        for bd in bds {
            let key = (def, end, bd.kind as u8, bd.key.clone());
            let slot = self.bd_emitted.entry(key).or_insert((0, 0));
            emit_if_changed(slot, Row::Breakdown(bd), false, base, out);
        }
    }

    /// After a restore that follows a crash, the process that crashed may have emitted
    /// rows after the checkpoint that this one will not emit again the same way: in
    /// live mode, ticks of the wall clock decide when windows are emitted, and with it
    /// `ts_out_of_range` and retirement, hence even which events are accepted. A window
    /// it changed from A to B may so be A again here, and the fingerprint of A would
    /// suppress the emission that must replace B in the sinks. So every slot that can
    /// still change (ending at or after the horizon `h`: the others are final, and the
    /// crashed process could not have changed them either) is marked stale and is
    /// emitted again, with the new epoch's version, the next time it is checked: when
    /// an event touches it, when it becomes final ([`Room::collect`]), at retirement or
    /// at end of input. Live session rows are re-emitted at their next tick anyway.
    pub fn mark_stale(&mut self, h: i64) {
        let mut any = false;
        for (_, slot) in self.emitted.iter_mut().filter(|(&(_, end), _)| end >= h) {
            slot.1 = STALE;
            any = true;
        }
        for (_, slot) in self.bd_emitted.iter_mut().filter(|(&(_, end, _, _), _)| end >= h) {
            slot.1 = STALE;
        }
        for s in self.sessions.iter_mut().filter(|s| !s.is_final && s.emitted.0 > 0) {
            s.emitted.1 = STALE;
        }
        self.stale = any;
    }

    /// Emits every stale window slot ending before `before`.
    pub fn emit_stale(&mut self, before: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        let mut left = false;
        for def in 0..p.defs.len() {
            let mut ends = Vec::new();
            for (&(_, end), slot) in self.emitted.range((def, i64::MIN)..=(def, i64::MAX)) {
                if slot.1 == STALE {
                    if end < before {
                        ends.push(end);
                    } else {
                        left = true;
                    }
                }
            }
            for end in ends {
                self.emit_window(def, end, p, sc, out);
                // A window gone for good (no row, no identity) cannot be emitted: it
                // stays as it was, and is dropped with its slot.
                left |= self.emitted.get(&(def, end)).is_some_and(|s| s.1 == STALE);
            }
        }
        self.stale = left;
    }

    /// Re-checks every emitted window ending at or after `ts` (an accepted event's time).
    pub fn reemit_after(&mut self, ts: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        if ts > self.emitted_through {
            return;
        }
        // A change at instant `ts` reaches the window ending at `ts` too: its
        // `online_end` is the count at that instant. Windows emitted before may have
        // lost their only presence: visit them as well.
        let through = self.emitted_through;
        for def in 0..p.defs.len() {
            let (size, slide) = (p.defs[def].size, p.defs[def].slide);
            let mut ends: Vec<i64> =
                self.emitted.range((def, ts)..=(def, through)).map(|(&(_, end), _)| end).collect();
            let mut at = ts.saturating_sub(1);
            while let Some(end) = self.panes.next_window_end(at, size, slide) {
                if end > through {
                    break;
                }
                ends.push(end);
                at = end;
            }
            ends.sort_unstable();
            ends.dedup();
            for end in ends {
                self.emit_window(def, end, p, sc, out);
            }
        }
    }

    /// Emits (or re-checks) every existing window ending in `(after, through]`.
    fn emit_range(&mut self, after: i64, through: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        for def in 0..p.defs.len() {
            let (size, slide) = (p.defs[def].size, p.defs[def].slide);
            let mut at = after;
            while let Some(end) = self.panes.next_window_end(at, size, slide) {
                if end > through {
                    break;
                }
                self.emit_window(def, end, p, sc, out);
                at = end;
            }
        }
    }

    /// Raises `emitted_through` to `target`, emitting every window that newly ends at or
    /// below it, and the live sessions' rows when a tick is crossed.
    pub fn advance(&mut self, target: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        if target <= self.emitted_through {
            return;
        }
        let from = self.emitted_through;
        self.emit_range(from, target, p, sc, out);
        self.emitted_through = target;
        if p.session_rows && floor_to(target, p.tick) > floor_to(from, p.tick) {
            for i in 0..self.sessions.len() {
                if self.sessions[i].is_live() {
                    self.emit_session(i, true, p, sc, out);
                }
            }
        }
    }

    /// The next value of `emitted_through` at which `advance` would emit something.
    pub fn next_due(&mut self, p: &Params) -> Option<i64> {
        let after = self.emitted_through;
        let mut due: Option<i64> = None;
        let mut consider = |t: Option<i64>| {
            if let Some(t) = t {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        };
        for d in &p.defs {
            consider(self.panes.next_window_end(after, d.size, d.slide));
        }
        if p.session_rows && self.sessions.iter().any(|s| s.is_live()) {
            consider(floor_to(after, p.tick).checked_add(p.tick));
        }
        due
    }

    /// Emits session `i`'s row when `always`, or when it changed since its last emission.
    pub fn emit_session(&mut self, i: usize, always: bool, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        if !p.session_rows || self.sessions[i].is_final {
            return;
        }
        let s = &self.sessions[i];
        let Some(identity) = &s.identity else { return };
        let (counts, first30m, peak) = s.counts(&mut sc.uvs, p.limit);
        let start = s.start();
        let row = Row::Session(SessionRow {
            room_id: self.id.clone(),
            session_id: s.id.clone(),
            version: 0,
            org_id: identity.2.org_id.clone(),
            account_id: identity.2.account_id.clone(),
            platform: identity.2.platform,
            session_start_ts: start,
            session_end_ts: s.end_ts(),
            duration_ms: s.end_ts().unwrap_or(s.max_ts).saturating_sub(start),
            peak_online: peak.0 as u64,
            peak_online_ts: peak.1,
            counts,
            first30m,
            ended_by_timeout: s.ended_by_timeout(),
            cold_start: s.cold_start(),
        });
        emit_if_changed(&mut self.sessions[i].emitted, row, always, p.version_base, out);
    }

    /// End of input or retirement: everything not yet emitted in its latest state.
    pub fn flush(&mut self, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        if self.stale {
            self.emit_stale(i64::MAX, p, sc, out);
        }
        self.advance(i64::MAX, p, sc, out);
        for i in 0..self.sessions.len() {
            self.emit_session(i, false, p, sc, out);
        }
    }
}
