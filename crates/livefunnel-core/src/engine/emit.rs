//! Turning a room's panes and sessions into rows: window combination, first
//! emission as the watermark rises, re-emission when an accepted event changes an
//! emitted result, session rows.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::agg::{BdUnion, Tally, UvsUnion};
use super::pane::{floor_to, PresenceUnion};
use super::room::Room;
use super::Params;
use crate::event::Source;
use crate::row::{BreakdownKind, BreakdownRow, Counts, Row, SessionRow, WindowRow};

/// Reusable buffers, so combining panes allocates nothing in the steady state.
#[derive(Default)]
pub struct Scratch {
    uvs: UvsUnion,
    presence: PresenceUnion,
    bd: FxHashMap<(BreakdownKind, Arc<str>), BdUnion>,
    json: Vec<u8>,
}

fn fingerprint(row: &Row, buf: &mut Vec<u8>) -> u128 {
    buf.clear();
    row.write_jsonl(buf);
    xxhash_rust::xxh3::xxh3_128(buf)
}

fn source_key(s: Source) -> Arc<str> {
    // Source names are few and static; an Arc per breakdown row is cheap enough.
    Arc::from(s.as_str())
}

impl Room {
    /// Combines the panes of window `def` ending at `end`. `None` when no row exists.
    fn window_row(
        &mut self,
        def: usize,
        end: i64,
        p: &Params,
        sc: &mut Scratch,
    ) -> Option<(WindowRow, Vec<BreakdownRow>)> {
        let d = &p.defs[def];
        let start = end - d.size;
        self.materialize_through(end, p);
        let mut tally = Tally::default();
        let mut peak = 0i64;
        let mut watch_ms = 0i128;
        let mut stranger_ms = 0i128;
        sc.uvs.clear();
        sc.presence.present.clear();
        sc.presence.stranger.clear();
        for b in sc.bd.values_mut() {
            b.clear();
        }
        let w = self.panes.width;
        let mut at = start.max(self.panes.start());
        at = floor_to(at, w).max(start);
        let last = end.min(self.panes.end());
        while at < last {
            let index = ((at - self.panes.base) / w) as usize;
            let pane = &mut self.panes.panes[index];
            tally.merge(&pane.tally);
            sc.uvs.add(&pane.uvs, p.limit);
            peak = peak.max(pane.peak());
            watch_ms += pane.watch_ms;
            stranger_ms += pane.stranger_ms;
            for (&viewer, &(ms, sms)) in &pane.present {
                debug_assert!(ms > 0);
                sc.presence.present.insert(viewer, p.limit);
                if sms > 0 {
                    sc.presence.stranger.insert(viewer, p.limit);
                }
            }
            for (src, b) in &pane.bd.sources {
                sc.bd.entry((BreakdownKind::Source, source_key(*src))).or_default().add(b, p.limit);
            }
            for (key, b) in &pane.bd.plans {
                sc.bd.entry((BreakdownKind::Plan, key.clone())).or_default().add(b, p.limit);
            }
            for (key, b) in &pane.bd.products {
                sc.bd.entry((BreakdownKind::Product, key.clone())).or_default().add(b, p.limit);
            }
            at += w;
        }
        let present_uv = sc.presence.present.len();
        if tally.events == 0 && present_uv == 0 {
            return None;
        }
        let mut counts = Counts::default();
        tally.write(&mut counts);
        sc.uvs.write(&mut counts);
        counts.watch_ms = watch_ms;
        counts.stranger_watch_ms = stranger_ms;
        counts.present_uv = present_uv;
        counts.stranger_present_uv = sc.presence.stranger.len();
        counts.online_peak = peak.max(0) as u64;
        counts.online_end = self.panes.get(end).map_or(0, |p| p.online_start.max(0) as u64);
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
        let mut bds: Vec<BreakdownRow> = sc
            .bd
            .iter()
            .filter(|(_, b)| b.c != Default::default() || b.watch.len() > 0)
            .map(|((kind, key), b)| BreakdownRow {
                kind: *kind,
                room_id: self.id.clone(),
                window: d.name.clone(),
                window_start: start,
                window_end: end,
                version: 0,
                org_id: identity.2.org_id.clone(),
                key: key.clone(),
                counts: b.counts(),
            })
            .collect();
        bds.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        // Keys that no longer occur keep their buffers for reuse but must not leak into rows.
        if sc.bd.len() > 256 {
            sc.bd.clear();
        }
        Some((row, bds))
    }

    /// Emits window `def` ending at `end` if it exists and differs from its last emission.
    pub fn emit_window(&mut self, def: usize, end: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        let Some((row, bds)) = self.window_row(def, end, p, sc) else { return };
        let row = Row::Window(row);
        let fp = fingerprint(&row, &mut sc.json);
        let slot = self.emitted.entry((def, end)).or_insert((0, 0));
        if slot.0 == 0 || slot.1 != fp {
            slot.0 += 1;
            slot.1 = fp;
            let Row::Window(mut row) = row else { unreachable!() };
            row.version = slot.0;
            out.push(Row::Window(row));
        }
        for bd in bds {
            let key = (def, end, bd.kind as u8, bd.key.clone());
            let row = Row::Breakdown(bd);
            let fp = fingerprint(&row, &mut sc.json);
            let slot = self.bd_emitted.entry(key).or_insert((0, 0));
            if slot.0 == 0 || slot.1 != fp {
                slot.0 += 1;
                slot.1 = fp;
                let Row::Breakdown(mut row) = row else { unreachable!() };
                row.version = slot.0;
                out.push(Row::Breakdown(row));
            }
        }
    }

    /// Re-checks every emitted window ending after `ts` (an accepted event's time).
    pub fn reemit_after(&mut self, ts: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        if ts >= self.emitted_through {
            return;
        }
        for def in 0..p.defs.len() {
            let slide = p.defs[def].slide;
            let mut end = floor_to(ts, slide).saturating_add(slide);
            while end <= self.emitted_through {
                self.emit_window(def, end, p, sc, out);
                end = end.saturating_add(slide);
            }
        }
    }

    /// The end of the data this room has: its events and the presence reaching past them.
    fn data_end(&self) -> i64 {
        let reach = self.tail.iter().filter_map(|u| self.viewers.get(u)).map(|v| v.max_end()).max();
        self.panes.end().max(reach.unwrap_or(i64::MIN))
    }

    /// Raises `emitted_through` to `target`, emitting every window that newly ends at or
    /// below it, and the live sessions' rows when a tick is crossed.
    pub fn advance(&mut self, target: i64, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        if target <= self.emitted_through {
            return;
        }
        let from = self.emitted_through;
        let data_end = self.data_end();
        let data_start = self.panes.start();
        if data_start != i64::MAX {
            for def in 0..p.defs.len() {
                let (size, slide) = (p.defs[def].size, p.defs[def].slide);
                let first = floor_to(from.max(data_start), slide).saturating_add(slide);
                let last = target.min(data_end.saturating_add(size));
                let mut end = first;
                while end <= last {
                    self.emit_window(def, end, p, sc, out);
                    end = end.saturating_add(slide);
                }
            }
        }
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
        let data_start = self.panes.start();
        let mut due: Option<i64> = None;
        if data_start != i64::MAX {
            let data_end = self.data_end();
            for d in &p.defs {
                let end = floor_to(self.emitted_through.max(data_start), d.slide).saturating_add(d.slide);
                if end - d.size < data_end {
                    due = Some(due.map_or(end, |x| x.min(end)));
                }
            }
        }
        if p.session_rows && self.sessions.iter().any(|s| s.is_live()) {
            let tick = floor_to(self.emitted_through, p.tick).saturating_add(p.tick);
            due = Some(due.map_or(tick, |x| x.min(tick)));
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
            session_end_ts: s.latest_end,
            duration_ms: s.latest_end.unwrap_or(s.max_ts).saturating_sub(start),
            peak_online: peak.0 as u64,
            peak_online_ts: peak.1,
            counts,
            first30m,
            cold_start: s.cold_start(),
        });
        let fp = fingerprint(&row, &mut sc.json);
        let s = &mut self.sessions[i];
        if always || s.fingerprint != Some(fp) {
            s.version += 1;
            s.fingerprint = Some(fp);
            let Row::Session(mut row) = row else { unreachable!() };
            row.version = s.version;
            out.push(Row::Session(row));
        }
    }

    /// End of input or retirement: everything not yet emitted in its latest state.
    pub fn flush(&mut self, p: &Params, sc: &mut Scratch, out: &mut Vec<Row>) {
        // Presence can reach past the last event; bring it into panes first.
        let reach = self.data_end();
        if reach > i64::MIN {
            self.materialize_through(reach, p);
        }
        self.advance(i64::MAX, p, sc, out);
        for i in 0..self.sessions.len() {
            self.emit_session(i, false, p, sc, out);
        }
    }
}
