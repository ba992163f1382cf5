//! Panes: slide-sized slices of a room's time line. Each accepted event updates one
//! pane; a window's row is the combination of its panes, so the cost per event does
//! not grow with size / slide.

use std::collections::VecDeque;
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

/// A room's panes from `base` on, contiguous, `width` ms each.
#[derive(Debug)]
pub struct Panes {
    pub width: i64,
    /// Start of `panes[0]`; meaningful when `panes` is not empty.
    pub base: i64,
    pub panes: VecDeque<Pane>,
    /// The identity of the latest event in panes already freed.
    pub freed_identity: Option<Ident>,
}

pub fn floor_to(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width).saturating_mul(width)
}

impl Panes {
    pub fn new(width: i64) -> Panes {
        Panes { width, base: 0, panes: VecDeque::new(), freed_identity: None }
    }

    /// End of the last pane (exclusive), or `i64::MIN` when there is none.
    pub fn end(&self) -> i64 {
        if self.panes.is_empty() {
            i64::MIN
        } else {
            self.base.saturating_add(self.panes.len() as i64 * self.width)
        }
    }

    pub fn start(&self) -> i64 {
        if self.panes.is_empty() {
            i64::MAX
        } else {
            self.base
        }
    }

    /// The pane starting at `start`, if it exists.
    pub fn get(&self, start: i64) -> Option<&Pane> {
        if self.panes.is_empty() || start < self.base {
            return None;
        }
        self.panes.get(((start - self.base) / self.width) as usize)
    }

    /// The pane containing `ts`, created (with any gap before it) when missing.
    pub fn get_or_create(&mut self, ts: i64) -> &mut Pane {
        let start = floor_to(ts, self.width);
        if self.panes.is_empty() {
            self.base = start;
        }
        while start < self.base {
            self.panes.push_front(Pane::default());
            self.base -= self.width;
        }
        let index = ((start - self.base) / self.width) as usize;
        while self.panes.len() <= index {
            self.panes.push_back(Pane::default());
        }
        &mut self.panes[index]
    }

    pub fn add_event(&mut self, ts: i64, seq: u64, f: &Facts, identity: &Arc<Identity>, limit: usize) {
        let pane = self.get_or_create(ts);
        pane.tally.add(f);
        pane.uvs.add(f, limit);
        pane.bd.add(f, limit);
        later(&mut pane.identity, &(ts, seq, identity.clone()));
    }

    /// Applies one viewer's presence change to the panes that exist, clipped to `[.., upto)`.
    pub fn apply(&mut self, viewer: u64, d: &Delta, upto: i64) {
        let end = d.end.min(upto).min(self.end());
        let mut start = d.start.max(self.start());
        let w = self.width;
        while start < end {
            let ps = floor_to(start, w);
            let pe = ps.saturating_add(w);
            let index = ((ps - self.base) / w) as usize;
            let pane = &mut self.panes[index];
            let overlap = (pe.min(d.end) - start) as i128;
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
            start = pe;
        }
    }

    /// Frees panes that end at or before `before`, remembering their latest identity.
    pub fn free_before(&mut self, before: i64) {
        while !self.panes.is_empty() && self.base.saturating_add(self.width) <= before {
            let pane = self.panes.pop_front().expect("not empty");
            if let Some(id) = &pane.identity {
                later(&mut self.freed_identity, id);
            }
            self.base += self.width;
        }
    }

    /// The identity for a row ending at `end`: the latest event before `end`.
    pub fn identity_before(&self, end: i64) -> Option<Ident> {
        let mut i = if self.panes.is_empty() || end <= self.base {
            0
        } else {
            (((end - self.base) / self.width) as usize).min(self.panes.len())
        };
        while i > 0 {
            i -= 1;
            if let Some(id) = &self.panes[i].identity {
                return Some(id.clone());
            }
        }
        self.freed_identity.clone()
    }
}

/// Reusable buffers to combine panes into one window.
#[derive(Debug, Default)]
pub struct PresenceUnion {
    pub present: DistinctUnion,
    pub stranger: DistinctUnion,
}
