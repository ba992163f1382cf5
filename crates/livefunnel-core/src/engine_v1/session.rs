//! Session rows (§3): one broadcast's measures, its first 30 minutes and cold start.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{Facts, Tally, Uvs, UvsUnion};
use super::distinct::{Distinct, HashMap64, HashSet64};
use super::pane::{later, Ident};
use super::presence::{Delta, Seg};
use crate::event::EventType;
use crate::row::Counts;

pub const FIRST_MS: i64 = 30 * 60 * 1000;
pub const COLD_MS: i64 = 2 * 3600 * 1000;
pub const COLD_VIEWERS: u64 = 200;

/// A viewer-count step function: count deltas at instants, folded below `cut`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    cut: Option<i64>,
    /// Count at instants from `cut` up to the first delta.
    base: i64,
    deltas: BTreeMap<i64, i64>,
    /// Max count over folded instants and the earliest instant reaching it.
    peak_before: (i64, Option<i64>),
}

impl Timeline {
    pub fn add(&mut self, start: i64, end: i64, sign: i64) {
        debug_assert!(self.cut.is_none_or(|c| start >= c), "presence change below the horizon");
        for (at, d) in [(start, sign), (end, -sign)] {
            let e = self.deltas.entry(at).or_insert(0);
            *e += d;
            if *e == 0 {
                self.deltas.remove(&at);
            }
        }
    }

    /// Viewers online at instant `t` (0 for folded instants, where only probes know).
    pub fn count_at(&self, t: i64) -> i64 {
        if self.cut.is_some_and(|c| t < c) {
            return 0;
        }
        self.base + self.deltas.range(..=t).map(|(_, d)| d).sum::<i64>()
    }

    /// Max count over instants in `[lo, hi)` at or above the cut, with the earliest instant.
    pub fn max_in(&self, lo: i64, hi: i64) -> (i64, Option<i64>) {
        let lo = self.cut.map_or(lo, |c| lo.max(c));
        if lo >= hi {
            return (0, None);
        }
        let mut count = self.count_at(lo);
        let mut best = (count, Some(lo));
        for (&at, &d) in self.deltas.range(lo..hi) {
            if at == lo {
                continue;
            }
            count += d;
            if count > best.0 {
                best = (count, Some(at));
            }
        }
        if best.0 <= 0 {
            (0, None)
        } else {
            best
        }
    }

    /// The overall peak and the earliest instant it was reached.
    pub fn peak(&self) -> (i64, Option<i64>) {
        let after = self.max_in(i64::MIN, i64::MAX);
        if after.0 > self.peak_before.0 {
            after
        } else {
            self.peak_before
        }
    }

    /// Folds deltas below `cut`; callers read what they need of that range first.
    pub fn fold(&mut self, cut: i64) {
        if self.cut.is_some_and(|c| c >= cut) {
            return;
        }
        let before = self.max_in(i64::MIN, cut);
        if before.0 > self.peak_before.0 {
            self.peak_before = before;
        }
        // Deltas at `cut` itself stay in the map; the base is the count just before.
        self.base += self.deltas.range(..cut).map(|(_, d)| d).sum::<i64>();
        let rest = self.deltas.split_off(&cut);
        self.deltas = rest;
        self.cut = Some(cut);
    }
}

/// Presence measures over one range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceSums {
    pub present: HashMap64<(i128, i128)>,
    pub watch_ms: i128,
    pub stranger_ms: i128,
}

impl PresenceSums {
    pub fn apply(&mut self, viewer: u64, start: i64, end: i64, stranger: bool, sign: i64) {
        if end <= start {
            return;
        }
        let ms = (i128::from(end) - i128::from(start)) * i128::from(sign);
        let e = self.present.entry(viewer).or_insert((0, 0));
        e.0 += ms;
        self.watch_ms += ms;
        if stranger {
            e.1 += ms;
            self.stranger_ms += ms;
        }
        if *e == (0, 0) {
            self.present.remove(&viewer);
        }
    }

    fn write(&self, c: &mut Counts) {
        c.watch_ms = self.watch_ms;
        c.stranger_watch_ms = self.stranger_ms;
        c.present_uv = self.present.len() as u64;
        c.stranger_present_uv = self.present.values().filter(|e| e.1 > 0).count() as u64;
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SessionState {
    pub id: Arc<str>,
    pub earliest_start_event: Option<i64>,
    pub min_ts: i64,
    pub max_ts: i64,
    pub latest_end: Option<i64>,
    pub earliest_end: Option<i64>,
    pub home_city: Option<Arc<str>>,
    pub identity: Option<Ident>,
    tally: Tally,
    uvs: Uvs,
    presence: PresenceSums,
    timeline: Timeline,
    f30_tally: Tally,
    f30_uvs: Uvs,
    f30_presence: PresenceSums,
    f30_peak_before: i64,
    f30_end_probe: Option<i64>,
    live_end_probe: Option<(i64, i64)>,
    cold: Distinct,
    /// The session's events at or above the horizon, kept while `start` may still move.
    log: Option<Vec<(i64, Facts)>>,
    /// Viewers whose segments may belong to this session.
    pub viewers: HashSet64,
    /// (last emitted version, its fingerprint); version 0 before the first emission.
    pub emitted: (u64, u128),
    /// Retired: the row no longer changes.
    pub is_final: bool,
    // The fields below are added by state format 3, written after the format-2 state.
    /// Ended by `session_idle_timeout` (§2); a later event does not reopen it.
    #[serde(skip)]
    pub timed_out: bool,
    /// Live mode: the wall clock when the session's latest accepted event arrived.
    #[serde(skip)]
    pub arrival_wall: i64,
    /// Where the session waits for its timeout while live.
    #[serde(skip)]
    pub timeout_key: Option<super::lifecycle::TimeoutKey>,
}

impl SessionState {
    pub fn new(id: Arc<str>) -> SessionState {
        SessionState {
            id,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            log: Some(Vec::new()),
            arrival_wall: i64::MIN,
            ..SessionState::default()
        }
    }

    /// `session_start_ts` (semantics: the earliest `session_start`, else the smallest ts).
    pub fn start(&self) -> i64 {
        self.earliest_start_event.unwrap_or(self.min_ts)
    }

    pub fn is_live(&self) -> bool {
        !self.ended() && !self.is_final
    }

    /// Ended by an accepted `session_end` or by timeout.
    pub fn ended(&self) -> bool {
        self.latest_end.is_some() || self.timed_out
    }

    /// `session_end_ts` (§2, §3): the latest `session_end`; after a timeout without
    /// one, the session's largest accepted `ts`; `None` while live.
    pub fn end_ts(&self) -> Option<i64> {
        self.latest_end.or(self.timed_out.then_some(self.max_ts))
    }

    /// Ended by timeout, and no `session_end` since (a real one wins).
    pub fn ended_by_timeout(&self) -> bool {
        self.timed_out && self.latest_end.is_none()
    }

    /// Adds an accepted event. Returns true when `session_start_ts` moved: the caller
    /// must then rebuild the first-30-minute presence with [`Self::rebuild_f30_presence`].
    pub fn add(&mut self, ts: i64, f: &Facts, ident: &Ident, limit: usize) -> bool {
        let old_start = self.start();
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        if f.kind == EventType::SessionStart {
            self.earliest_start_event = Some(self.earliest_start_event.map_or(ts, |s| s.min(ts)));
        }
        later(&mut self.identity, ident);
        self.tally.add(f);
        self.uvs.add(f, limit);
        if let Some(log) = &mut self.log {
            log.push((ts, f.clone()));
        }
        let start = self.start();
        if start != old_start {
            self.rebuild_f30_events(limit);
            true
        } else {
            self.add_f30(ts, f, limit);
            false
        }
    }

    fn add_f30(&mut self, ts: i64, f: &Facts, limit: usize) {
        let start = self.start();
        if ts >= start && ts < start.saturating_add(FIRST_MS) {
            self.f30_tally.add(f);
            self.f30_uvs.add(f, limit);
        }
        if f.kind == EventType::Enter && ts >= start && ts < start.saturating_add(COLD_MS) {
            if let Some(u) = f.user {
                // Only "fewer than 200" matters, so a final start needs no more than that.
                if self.log.is_some() || self.cold.len() < COLD_VIEWERS {
                    self.cold.insert(u, limit);
                }
            }
        }
    }

    fn rebuild_f30_events(&mut self, limit: usize) {
        self.f30_tally = Tally::default();
        self.f30_uvs = Uvs::default();
        self.cold = Distinct::default();
        self.f30_peak_before = 0;
        self.f30_end_probe = None;
        let log = self.log.take().unwrap_or_default();
        for (ts, f) in &log {
            self.add_f30(*ts, f, limit);
        }
        self.log = Some(log);
    }

    /// Rebuilds first-30-minute presence from the viewers' segments of this session.
    pub fn rebuild_f30_presence<'a>(&mut self, segs: impl Iterator<Item = (u64, &'a Seg)>, me: u32) {
        self.f30_presence = PresenceSums::default();
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        for (viewer, s) in segs.filter(|(_, s)| s.session == me) {
            self.f30_presence.apply(viewer, s.start.max(lo), s.end.min(hi), s.stranger, 1);
        }
    }

    pub fn apply_presence(&mut self, viewer: u64, d: &Delta) {
        if self.is_final {
            return;
        }
        self.presence.apply(viewer, d.start, d.end, d.stranger, d.sign);
        self.timeline.add(d.start, d.end, d.sign);
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        self.f30_presence.apply(viewer, d.start.max(lo), d.end.min(hi), d.stranger, d.sign);
    }

    /// Called as the horizon `h` rises: drops what can no longer change.
    pub fn fold(&mut self, h: i64) {
        if self.is_final {
            return;
        }
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        // Read the folded range's probes before the timeline forgets it.
        let part = self.timeline.max_in(lo, hi.min(h)).0;
        self.f30_peak_before = self.f30_peak_before.max(part);
        if hi < h && self.f30_end_probe.is_none() {
            self.f30_end_probe = Some(self.timeline.count_at(hi));
        }
        if self.max_ts < h && self.live_end_probe.is_none_or(|(at, _)| at != self.max_ts) {
            self.live_end_probe = Some((self.max_ts, self.timeline.count_at(self.max_ts)));
        }
        self.timeline.fold(h);
        if self.earliest_start_event.is_some() && self.start() < h {
            self.log = None;
        } else if let Some(log) = &mut self.log {
            log.retain(|(ts, _)| *ts >= h);
        }
    }

    /// Frees everything but what a final row and later presence need (the caller keeps
    /// the viewers still online).
    pub fn retire(&mut self) {
        self.is_final = true;
        self.uvs = Uvs::default();
        self.f30_uvs = Uvs::default();
        self.presence = PresenceSums::default();
        self.f30_presence = PresenceSums::default();
        self.timeline = Timeline::default();
        self.cold = Distinct::default();
        self.log = None;
    }

    fn count_at(&self, t: i64) -> i64 {
        match self.live_end_probe {
            Some((at, c)) if at == t => c,
            _ => self.timeline.count_at(t),
        }
    }

    /// The counts, first-30-minute counts, peak and peak instant of the row.
    pub fn counts(&self, union: &mut UvsUnion, limit: usize) -> (Counts, Counts, (i64, Option<i64>)) {
        let mut c = Counts::default();
        self.tally.write(&mut c);
        union.clear();
        union.add(&self.uvs, limit);
        union.write(&mut c);
        self.presence.write(&mut c);
        let peak = self.timeline.peak();
        c.online_peak = peak.0 as u64;
        c.online_end = self.count_at(self.latest_end.unwrap_or(self.max_ts)) as u64;

        let mut f = Counts::default();
        self.f30_tally.write(&mut f);
        union.clear();
        union.add(&self.f30_uvs, limit);
        union.write(&mut f);
        self.f30_presence.write(&mut f);
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        f.online_peak = self.f30_peak_before.max(self.timeline.max_in(lo, hi).0) as u64;
        f.online_end = self.f30_end_probe.unwrap_or_else(|| self.timeline.count_at(hi)) as u64;
        (c, f, peak)
    }

    pub fn cold_start(&self) -> bool {
        self.cold.len() < COLD_VIEWERS
    }
}
