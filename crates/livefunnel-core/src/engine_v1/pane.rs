//! Panes: slide-sized slices of a room's time line. Each accepted event updates one
//! pane; a window's row is the combination of its panes, so the cost per event does
//! not grow with size / slide.
//!
//! Presence is kept as a step function: a pane stores only the changes of the online
//! count that happen inside it (+1 where a viewer's segment starts, -1 where it ends),
//! so a viewer online for an hour touches two panes, not 360. The count at a pane's
//! start is the sum of the changes before it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{Breakdowns, Facts, Tally, Uvs};
use super::presence::{Arrival, Delta};
use crate::row::Identity;

/// The identity of the room's latest event in a pane: (ts, arrival seq, identity).
pub type Ident = (i64, u64, Arc<Identity>);

/// Keeps the later of two identities by (ts, arrival).
pub fn later(a: &mut Option<Ident>, b: &Ident) {
    if a.as_ref().is_none_or(|x| (x.0, x.1) < (b.0, b.1)) {
        *a = Some(b.clone());
    }
}

pub fn floor_to(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width).saturating_mul(width)
}

/// A pane's online-count changes, summarized relative to the count at its start `c`:
/// watch ms = `c * width + lin`, peak = `c + max_prefix`, count at the end = `c + net`.
#[derive(Debug, Clone, Copy, Default)]
struct StepSummary {
    net: i64,
    stranger_net: i64,
    lin: i128,
    stranger_lin: i128,
    max_prefix: i64,
    /// The changes at the pane's very first instant (part of the count there).
    at_start: i64,
    stranger_at_start: i64,
}

/// What the events of a pane add up to. Boxed: many panes hold only presence steps
/// (where a viewer's presence times out), and those stay small.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PaneEvents {
    pub tally: Tally,
    pub uvs: Uvs,
    pub bd: Breakdowns,
    pub identity: Option<Ident>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pane {
    pub events: Option<Box<PaneEvents>>,
    /// Offline→online moves inside the pane (see [`Arrival`]).
    pub arrivals: Vec<Arrival>,
    /// Online-count changes inside the pane: (instant, all viewers, strangers), sorted
    /// by instant, one entry per instant, none that cancelled out.
    steps: Vec<(i64, i64, i64)>,
    /// A cache of `steps`, rebuilt on demand.
    #[serde(skip)]
    summary: Option<StepSummary>,
}

impl Pane {
    pub fn identity(&self) -> Option<&Ident> {
        self.events.as_ref().and_then(|e| e.identity.as_ref())
    }

    fn step(&mut self, at: i64, d: i64, sd: i64) {
        // A heartbeat moves a presence end: -1 at the old end and +1 at the new one
        // meet the earlier changes there and cancel, so the list stays short.
        match self.steps.binary_search_by_key(&at, |b| b.0) {
            Ok(i) => {
                let b = &mut self.steps[i];
                b.1 += d;
                b.2 += sd;
                if b.1 == 0 && b.2 == 0 {
                    self.steps.remove(i);
                }
            }
            Err(i) => self.steps.insert(i, (at, d, sd)),
        }
        self.summary = None;
    }

    fn summary(&mut self, start: i64, width: i64) -> StepSummary {
        if let Some(s) = self.summary {
            return s;
        }
        let merged = &self.steps;
        let end = start.saturating_add(width);
        let mut s = StepSummary::default();
        // The count holds from each change to the next; the first stretch, before any
        // change, only counts for the peak if it is not empty.
        let mut max_prefix = if merged.first().is_some_and(|b| b.0 == start) { i64::MIN } else { 0 };
        for &(at, d, sd) in merged {
            s.net += d;
            s.stranger_net += sd;
            s.lin += i128::from(d) * i128::from(end - at);
            s.stranger_lin += i128::from(sd) * i128::from(end - at);
            max_prefix = max_prefix.max(s.net);
            if at == start {
                s.at_start = d;
                s.stranger_at_start = sd;
            }
        }
        s.max_prefix = if max_prefix == i64::MIN { 0 } else { max_prefix };
        self.summary = Some(s);
        s
    }
}

/// Presence measures of one range of panes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PresenceRange {
    pub watch_ms: i128,
    pub stranger_watch_ms: i128,
    pub peak: i64,
    pub online_end: i64,
    pub present_uv: u64,
    pub stranger_present_uv: u64,
}

/// A room's panes, sparse: a pane exists where an event, an arrival or a presence
/// change fell, so a room whose timestamps jump far apart costs nothing for the gap.
#[derive(Debug, Serialize, Deserialize)]
pub struct Panes {
    /// Set from the configuration on restore, never read from a checkpoint: a width of
    /// 0 would divide by zero.
    #[serde(skip)]
    pub width: i64,
    pub map: BTreeMap<i64, Pane>,
    /// Online counts (all, strangers) just before the first kept pane.
    base: (i64, i64),
    /// The identity of the latest event in panes already freed.
    pub freed_identity: Option<Ident>,
}

impl Panes {
    pub fn new(width: i64) -> Panes {
        Panes { width, map: BTreeMap::new(), base: (0, 0), freed_identity: None }
    }

    pub fn add_event(&mut self, ts: i64, seq: u64, f: &Facts, identity: &Arc<Identity>, limit: usize) {
        let pane = self.map.entry(floor_to(ts, self.width)).or_default();
        let e = pane.events.get_or_insert_with(Box::default);
        e.tally.add(f);
        e.uvs.add(f, limit);
        e.bd.add(f, limit);
        later(&mut e.identity, &(ts, seq, identity.clone()));
    }

    fn step(&mut self, at: i64, d: i64, stranger: bool) {
        let pane = self.map.entry(floor_to(at, self.width)).or_default();
        pane.step(at, d, if stranger { d } else { 0 });
    }

    /// Applies one viewer's presence change: two steps, whatever its length.
    pub fn apply(&mut self, d: &Delta) {
        self.step(d.start, d.sign, d.stranger);
        self.step(d.end, -d.sign, d.stranger);
    }

    /// Adds (`sign` 1) or removes (-1) an arrival in the pane holding it.
    pub fn arrival(&mut self, a: &Arrival, sign: i64) {
        let pane = self.map.entry(floor_to(a.at, self.width)).or_default();
        if sign > 0 {
            pane.arrivals.push(*a);
        } else if let Some(i) = pane.arrivals.iter().position(|x| x == a) {
            pane.arrivals.swap_remove(i);
        } else {
            debug_assert!(false, "removing an arrival that was never added");
        }
    }

    /// Online counts (all, strangers) just before instant `t` (pane-aligned).
    fn count_before(&mut self, t: i64) -> (i64, i64) {
        let w = self.width;
        let mut c = self.base;
        for (&ps, pane) in self.map.range_mut(..t) {
            let s = pane.summary(ps, w);
            c.0 += s.net;
            c.1 += s.stranger_net;
        }
        c
    }

    /// Viewers online at instant `t` (any instant, not only pane starts).
    pub fn online_count_at(&mut self, t: i64) -> u64 {
        let w = self.width;
        let ps = floor_to(t, w);
        let mut c = self.count_before(ps).0;
        if let Some(pane) = self.map.get(&ps) {
            c += pane.steps.iter().take_while(|b| b.0 <= t).map(|b| b.1).sum::<i64>();
        }
        c.max(0) as u64
    }

    /// Whether anyone is online at instant `t` (pane-aligned).
    pub fn online_at(&mut self, t: i64) -> bool {
        let w = self.width;
        let at_t = self.map.get_mut(&t).map_or(0, |p| p.summary(t, w).at_start);
        self.count_before(t).0 + at_t > 0
    }

    /// Presence over `[start, end)` (pane-aligned).
    pub fn presence(&mut self, start: i64, end: i64) -> PresenceRange {
        let w = self.width;
        let (mut all, mut strangers) = self.count_before(start);
        let mut r = PresenceRange::default();
        let mut cursor = start;
        let mut first = true;
        let (mut start_all, mut start_strangers) = (all, strangers);
        for (&ps, pane) in self.map.range_mut(start..end) {
            if ps > cursor {
                // A stretch with no pane: the count holds.
                r.watch_ms += i128::from(all) * i128::from(ps - cursor);
                r.stranger_watch_ms += i128::from(strangers) * i128::from(ps - cursor);
                r.peak = r.peak.max(all);
            }
            let s = pane.summary(ps, w);
            if first && ps == start {
                start_all += s.at_start;
                start_strangers += s.stranger_at_start;
            }
            first = false;
            r.watch_ms += i128::from(all) * i128::from(w) + s.lin;
            r.stranger_watch_ms += i128::from(strangers) * i128::from(w) + s.stranger_lin;
            r.peak = r.peak.max(all + s.max_prefix);
            all += s.net;
            strangers += s.stranger_net;
            cursor = ps.saturating_add(w);
        }
        if end > cursor {
            r.watch_ms += i128::from(all) * i128::from(end - cursor);
            r.stranger_watch_ms += i128::from(strangers) * i128::from(end - cursor);
            r.peak = r.peak.max(all);
        }
        let at_end = self.map.get_mut(&end).map_or(0, |p| p.summary(end, w).at_start);
        r.online_end = (all + at_end).max(0);
        // Present: online at `start`, or arriving after it having been offline then.
        let (mut present, mut present_strangers) = (start_all, start_strangers);
        for pane in self.map.range(start..end).map(|(_, p)| p) {
            for a in pane.arrivals.iter().filter(|a| a.at > start && a.prev_end <= start) {
                if a.stranger {
                    present_strangers += 1;
                } else {
                    present += 1;
                }
            }
        }
        r.present_uv = present.max(0) as u64;
        r.stranger_present_uv = present_strangers.max(0) as u64;
        r.peak = r.peak.max(0);
        r
    }

    /// The smallest window end above `after` (a multiple of `slide`) whose window
    /// `[end - size, end)` holds a pane or has someone online.
    pub fn next_window_end(&mut self, after: i64, size: i64, slide: i64) -> Option<i64> {
        let mut end = floor_to(after, slide).checked_add(slide)?;
        loop {
            let start = end.saturating_sub(size);
            if self.map.range(start..end).next().is_some() || self.online_at(start) {
                return Some(end);
            }
            // Nobody online and no pane: nothing can exist before the next pane.
            let &next = self.map.range(end..).next()?.0;
            end = end.max(floor_to(next, slide).checked_add(slide)?);
        }
    }

    /// Frees panes that end at or before `before`, remembering their latest identity
    /// and the online counts they carried.
    pub fn free_before(&mut self, before: i64) {
        let w = self.width;
        while let Some(mut entry) = self.map.first_entry() {
            let ps = *entry.key();
            if ps.saturating_add(w) > before {
                break;
            }
            let s = entry.get_mut().summary(ps, w);
            self.base.0 += s.net;
            self.base.1 += s.stranger_net;
            let pane = entry.remove();
            if let Some(id) = pane.identity() {
                later(&mut self.freed_identity, id);
            }
        }
    }

    /// The identity for a row ending at `end`: the latest event before `end`.
    pub fn identity_before(&self, end: i64) -> Option<Ident> {
        self.map
            .range(..end)
            .rev()
            .find_map(|(_, p)| p.identity().cloned())
            .or_else(|| self.freed_identity.clone())
    }
}
