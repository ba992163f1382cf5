//! Turning a room's slots and sessions into rows: first emission as the watermark
//! rises, re-emission when an accepted event changes an emitted result, session rows.

use super::agg::Key;
use super::room::Room;
use super::slots::floor_to;
pub use super::window::Scratch;
use super::Params;
use crate::row::{Counts, Identity, Row, SessionRow, WindowRow};

/// Lays a row's content (everything but its version) end to end as plain bytes:
/// integers as they are, strings with their length.
struct Bytes<'a>(&'a mut Vec<u8>);

impl Bytes<'_> {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i128(&mut self, v: i128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.u64(u64::MAX),
        }
    }

    fn opt(&mut self, v: Option<i64>) {
        self.u64(u64::from(v.is_some()));
        self.u64(v.unwrap_or(0) as u64);
    }

    fn identity(&mut self, i: &Identity) {
        self.str(&i.session_id);
        self.str(&i.org_id);
        self.opt_str(i.account_id.as_deref());
        self.u64(i.platform as u64);
    }

    fn counts(&mut self, c: &Counts) {
        for v in [c.room_impressions, c.watch_pv, c.watch_uv, c.online_end, c.online_peak, c.present_uv] {
            self.u64(v);
        }
        self.i128(c.watch_ms);
        self.i128(c.stranger_watch_ms);
        for v in [
            c.stranger_present_uv,
            c.product_impressions,
            c.product_clicks,
            c.product_click_uv,
            c.orders_created,
            c.orders_paid,
            c.buyer_uv,
            c.items_sold as u64,
            c.gmv_cents as u64,
            c.refund_cents as u64,
            c.comments,
            c.comment_uv,
            c.likes,
            c.shares,
            c.follows,
            c.fan_club_joins,
            c.reservation_creates,
            c.reservation_opens,
            c.watch_uv_private,
            c.watch_uv_public,
            c.watch_uv_paid,
            c.gmv_cents_private as u64,
            c.gmv_cents_public as u64,
            c.gmv_cents_paid as u64,
            c.orders_paid_known_city,
            c.orders_paid_out_of_city,
        ] {
            self.u64(v);
        }
    }
}

/// A 128-bit digest of a row's content (everything but its version), in one pass of
/// xxh3 over its plain bytes: two rows with the same digest are the same row, so an
/// unchanged one is not re-emitted.
fn fingerprint(row: &Row, buf: &mut Vec<u8>) -> u128 {
    buf.clear();
    let mut b = Bytes(buf);
    match row {
        Row::Window(r) => {
            b.identity(&r.identity);
            b.counts(&r.counts);
        }
        Row::Breakdown(r) => {
            b.str(&r.org_id);
            let c = &r.counts;
            for v in [
                c.watch_pv,
                c.watch_uv,
                c.product_impressions,
                c.product_clicks,
                c.product_click_uv,
                c.orders_created,
                c.orders_paid,
                c.buyer_uv,
                c.items_sold as u64,
                c.gmv_cents as u64,
                c.comments,
            ] {
                b.u64(v);
            }
        }
        Row::Session(r) => {
            b.str(&r.org_id);
            b.opt_str(r.account_id.as_deref());
            b.u64(r.platform as u64);
            b.u64(r.session_start_ts as u64);
            b.opt(r.session_end_ts);
            b.u64(r.duration_ms as u64);
            b.u64(r.peak_online);
            b.opt(r.peak_online_ts);
            b.u64(u64::from(r.ended_by_timeout) | u64::from(r.cold_start) << 1);
            b.counts(&r.counts);
            b.counts(&r.first30m);
        }
    }
    xxhash_rust::xxh3::xxh3_128(buf)
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
fn emit_if_changed(
    slot: &mut (u64, u128),
    mut row: Row,
    force: bool,
    (base, buf): (u64, &mut Vec<u8>),
    out: &mut Vec<Row>,
) {
    let fp = fingerprint(&row, buf);
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
    /// A window that existed only through presence, which a late `leave` or
    /// `session_end` has since cut short: its emitted row is replaced by an empty one.
    fn vanished_row(&self, def: usize, end: i64, p: &Params) -> Option<WindowRow> {
        self.emitted.get(&(def, end))?;
        let identity = self.slots.identity_before(end)?;
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
        Some(row)
    }

    /// Emits window `def` ending at `end` if it exists and differs from its last emission.
    pub fn emit_window(&mut self, def: usize, end: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        let Some(row) = self.window_row(def, end, true, p, sc).or_else(|| {
            sc.bds.clear();
            self.vanished_row(def, end, p)
        }) else {
            return;
        };
        let base = p.version_base;
        let slot = self.emitted.entry((def, end)).or_insert((0, 0));
        emit_if_changed(slot, Row::Window(row), false, (base, &mut sc.bytes), out);
        for (key, bd) in sc.bds.drain(..) {
            let slot = self.bd_emitted.entry((def, end, key as Key)).or_insert((0, 0));
            emit_if_changed(slot, Row::Breakdown(bd), false, (base, &mut sc.bytes), out);
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
        for (_, slot) in self.bd_emitted.iter_mut().filter(|(&(_, end, _), _)| end >= h) {
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
            while let Some(end) = self.next_end(at, through, size, slide) {
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

    /// The next existing window end in `(after, through]`, if any.
    fn next_end(&self, after: i64, through: i64, size: i64, slide: i64) -> Option<i64> {
        // Most calls look past `through` at once: no need to search then.
        if floor_to(after, slide).checked_add(slide)? > through {
            return None;
        }
        self.slots.next_window_end(after, size, slide).filter(|&end| end <= through)
    }

    /// Emits (or re-checks) every existing window ending in `(after, through]`.
    fn emit_range(&mut self, after: i64, through: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        for def in 0..p.defs.len() {
            let (size, slide) = (p.defs[def].size, p.defs[def].slide);
            let mut at = after;
            while let Some(end) = self.next_end(at, through, size, slide) {
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
    pub fn next_due(&self, p: &Params) -> Option<i64> {
        let after = self.emitted_through;
        let mut due: Option<i64> = None;
        let mut consider = |t: Option<i64>| {
            if let Some(t) = t {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        };
        for d in &p.defs {
            consider(self.slots.next_window_end(after, d.size, d.slide));
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
        let (counts, first30m, peak) = s.counts(&self.slots, i as u32);
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
        emit_if_changed(&mut self.sessions[i].emitted, row, always, (p.version_base, &mut sc.bytes), out);
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

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn the_counter_never_reaches_the_epoch_bits() {
        assert_eq!(next_counter(0), 1);
        assert_eq!(next_counter(MAX_COUNTER - 1), MAX_COUNTER);
        assert_eq!(next_counter(MAX_COUNTER), MAX_COUNTER);
        let base = u64::from(MAX_EPOCH) << EPOCH_SHIFT;
        assert_eq!(base | next_counter(MAX_COUNTER), u64::MAX);
        assert_eq!((base | next_counter(MAX_COUNTER)) >> EPOCH_SHIFT, u64::from(MAX_EPOCH));
    }
}
