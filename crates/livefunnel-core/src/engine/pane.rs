//! Panes: slide-sized slices of a room's time line. Each accepted event updates one
//! pane; a window's row is the combination of its panes, so the cost per event does
//! not grow with size / slide.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::agg::{Breakdowns, Facts, Tally, Uvs};
use super::distinct::{DistinctUnion, HashMap64};
use super::presence::Delta;
use crate::row::Identity;

/// The identity of the room's latest event in a pane: (ts, arrival seq, identity).
pub type Ident = (i64, u64, Arc<Identity>);

/// Keeps the later of two identities by (ts, arrival).
pub fn later(a: &mut Option<Ident>, b: &Ident) {
    if a.as_ref().is_none_or(|x| (x.0, x.1) < (b.0, b.1)) {
        *a = Some(b.clone());
    }
}

#[derive(Debug, Default)]
pub struct Pane {
    pub tally: Tally,
    pub uvs: Uvs,
    pub bd: Breakdowns,
    pub identity: Option<Ident>,
    /// viewer → (ms online in the pane, of which as a stranger).
    pub present: HashMap64<(i64, i64)>,
    pub watch_ms: i128,
    pub stranger_ms: i128,
    /// Viewers online at the pane's first instant.
    pub online_start: i64,
    /// Online-count changes strictly inside the pane: (instant, delta).
    bounds: Vec<(i64, i64)>,
    peak: Option<i64>,
}

impl Pane {
    /// The largest number of viewers online at any instant of the pane.
    pub fn peak(&mut self) -> i64 {
        if let Some(p) = self.peak {
            return p;
        }
        self.bounds.sort_unstable_by_key(|b| b.0);
        // Merge equal instants and drop cancelled changes, so the list stays short.
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.bounds.len());
        for &(at, d) in &self.bounds {
            match merged.last_mut() {
                Some(last) if last.0 == at => last.1 += d,
                _ => merged.push((at, d)),
            }
        }
        merged.retain(|b| b.1 != 0);
        let mut count = self.online_start;
        let mut peak = count;
        for &(_, d) in &merged {
            count += d;
            peak = peak.max(count);
        }
        self.bounds = merged;
        self.peak = Some(peak);
        peak
    }
}

/// A room's panes, sparse: a pane exists where an event or presence fell, so a
/// room whose timestamps jump far apart costs nothing for the gap.
#[derive(Debug)]
pub struct Panes {
    pub width: i64,
    pub map: BTreeMap<i64, Pane>,
    /// Presence is in the panes below this instant; beyond it, viewers in the room's
    /// tail still have to be brought in (done lazily, just before windows are read).
    pub materialized: i64,
    /// The identity of the latest event in panes already freed.
    pub freed_identity: Option<Ident>,
}

pub fn floor_to(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width).saturating_mul(width)
}

impl Panes {
    pub fn new(width: i64) -> Panes {
        Panes { width, map: BTreeMap::new(), materialized: i64::MIN, freed_identity: None }
    }

    pub fn get(&self, start: i64) -> Option<&Pane> {
        self.map.get(&start)
    }

    pub fn add_event(&mut self, ts: i64, seq: u64, f: &Facts, identity: &Arc<Identity>, limit: usize) {
        let pane = self.map.entry(floor_to(ts, self.width)).or_default();
        pane.tally.add(f);
        pane.uvs.add(f, limit);
        pane.bd.add(f, limit);
        later(&mut pane.identity, &(ts, seq, identity.clone()));
    }

    /// Applies one viewer's presence change below the materialized horizon.
    pub fn apply(&mut self, viewer: u64, d: &Delta) {
        let end = d.end.min(self.materialized);
        let mut start = d.start;
        let w = self.width;
        while start < end {
            let ps = floor_to(start, w);
            let pe = ps.saturating_add(w);
            let pane = self.map.entry(ps).or_default();
            let overlap = (pe.min(end) - start) as i128;
            let ms = overlap as i64 * d.sign;
            let entry = pane.present.entry(viewer).or_insert((0, 0));
            entry.0 += ms;
            pane.watch_ms += overlap * d.sign as i128;
            if d.stranger {
                entry.1 += ms;
                pane.stranger_ms += overlap * d.sign as i128;
            }
            if *entry == (0, 0) {
                pane.present.remove(&viewer);
            }
            debug_assert!(pane.present.get(&viewer).is_none_or(|e| e.0 >= 0 && e.1 >= 0));
            if d.start <= ps {
                pane.online_start += d.sign;
            } else {
                pane.bounds.push((d.start, d.sign));
            }
            if d.end < pe {
                pane.bounds.push((d.end, -d.sign));
            }
            pane.peak = None;
            if pe == i64::MAX {
                break;
            }
            start = pe;
        }
    }

    /// Frees panes that end at or before `before`, remembering their latest identity.
    pub fn free_before(&mut self, before: i64) {
        while let Some(entry) = self.map.first_entry() {
            if entry.key().saturating_add(self.width) > before {
                break;
            }
            let pane = entry.remove();
            if let Some(id) = &pane.identity {
                later(&mut self.freed_identity, id);
            }
        }
    }

    /// The identity for a row ending at `end`: the latest event before `end`.
    pub fn identity_before(&self, end: i64) -> Option<Ident> {
        self.map
            .range(..end)
            .rev()
            .find_map(|(_, p)| p.identity.clone())
            .or_else(|| self.freed_identity.clone())
    }

    /// The smallest window end above `after` (a multiple of `slide`) whose window
    /// `[end - size, end)` holds a pane.
    pub fn next_window_end(&self, after: i64, size: i64, slide: i64) -> Option<i64> {
        let first = floor_to(after, slide).checked_add(slide)?;
        for &ps in self.map.range(after.saturating_sub(size).saturating_add(1)..).map(|(k, _)| k) {
            let end = first.max(floor_to(ps, slide).checked_add(slide)?);
            if end.saturating_sub(size) <= ps {
                return Some(end);
            }
        }
        None
    }
}

/// Reusable buffers to combine panes into one window.
#[derive(Debug, Default)]
pub struct PresenceUnion {
    pub present: DistinctUnion,
    pub stranger: DistinctUnion,
}
