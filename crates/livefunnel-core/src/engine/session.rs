//! Session rows (§3): one broadcast's measures, its first 30 minutes and cold start.
//!
//! Distinct counts are flags on the room's viewer records (one bit per measure and
//! session), counted as they are set; presence sums are kept per viewer and session
//! too; the peak comes from the room's slots, whose presence changes carry the session.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{uv, uv_bits, write_uvs, Facts, Tally};
use super::distinct::Counted;
use super::presence::{Delta, Ends, Seg};
use super::slots::{later, Ident, Slots};
use super::viewers::{flag, Viewers};
use crate::event::EventType;
use crate::row::{Counts, Identity};

pub const FIRST_MS: i64 = 30 * 60 * 1000;
pub const COLD_MS: i64 = 2 * 3600 * 1000;
pub const COLD_VIEWERS: u64 = 200;

/// The session's viewer count over time, read from the room's slots: only what the
/// horizon has not folded, plus the peak of what it folded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    cut: Option<i64>,
    /// Max count over folded instants and the earliest instant reaching it.
    peak_before: (i64, Option<i64>),
}

impl Timeline {
    /// Viewers online at instant `t` (0 for folded instants, where only probes know).
    fn count_at(&self, slots: &Slots, me: u32, t: i64) -> i64 {
        if self.cut.is_some_and(|c| t < c) {
            return 0;
        }
        slots.session_count_at(me, t)
    }

    /// Max count over instants in `[lo, hi)` at or above the cut, with the earliest instant.
    fn max_in(&self, slots: &Slots, me: u32, lo: i64, hi: i64) -> (i64, Option<i64>) {
        let lo = self.cut.map_or(lo, |c| lo.max(c));
        if lo >= hi {
            return (0, None);
        }
        let mut count = self.count_at(slots, me, lo);
        let mut best = (count, Some(lo));
        for (at, d) in slots.session_steps(me, lo, hi) {
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
    fn peak(&self, slots: &Slots, me: u32) -> (i64, Option<i64>) {
        let after = self.max_in(slots, me, i64::MIN, i64::MAX);
        if after.0 > self.peak_before.0 {
            after
        } else {
            self.peak_before
        }
    }

    /// Folds instants below `cut`; callers read what they need of that range first.
    fn fold(&mut self, slots: &Slots, me: u32, cut: i64) {
        if self.cut.is_some_and(|c| c >= cut) {
            return;
        }
        let before = self.max_in(slots, me, i64::MIN, cut);
        if before.0 > self.peak_before.0 {
            self.peak_before = before;
        }
        self.cut = Some(cut);
    }
}

/// Presence measures over one range: totals, and how many viewers have any.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceSums {
    watch_ms: i128,
    stranger_ms: i128,
    present: u64,
    stranger_present: u64,
}

impl PresenceSums {
    /// Adds `sign` × `[start, end)` to a viewer whose own sums are `mine`.
    fn apply(&mut self, mine: &mut [u64; 2], start: i64, end: i64, stranger: bool, sign: i64) {
        if end <= start {
            return;
        }
        let ms = (i128::from(end) - i128::from(start)) * i128::from(sign);
        let was = (mine[0] != 0, mine[1] != 0);
        // Truncation keeps the sum right modulo 2^64, and the true sum fits.
        mine[0] = mine[0].wrapping_add(ms as u64);
        self.watch_ms += ms;
        if stranger {
            mine[1] = mine[1].wrapping_add(ms as u64);
            self.stranger_ms += ms;
        }
        let now = (mine[0] != 0, mine[1] != 0);
        self.present = self.present + u64::from(now.0) - u64::from(was.0);
        self.stranger_present = self.stranger_present + u64::from(now.1) - u64::from(was.1);
    }

    fn write(&self, c: &mut Counts) {
        c.watch_ms = self.watch_ms;
        c.stranger_watch_ms = self.stranger_ms;
        c.present_uv = self.present;
        c.stranger_present_uv = self.stranger_present;
    }
}

/// Distinct counts of the measures of `agg::uv`.
type Uvs = [Counted; uv::COUNT];

fn uv_lens(uvs: &Uvs) -> [u64; uv::COUNT] {
    std::array::from_fn(|i| uvs[i].len())
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
    cold: Counted,
    /// The session's events at or above the horizon, kept while `start` may still move.
    log: Option<Vec<(i64, Facts)>>,
    /// (last emitted version, its fingerprint); version 0 before the first emission.
    pub emitted: (u64, u128),
    /// Retired: the row no longer changes.
    pub is_final: bool,
    /// Ended by `session_idle_timeout` (§2); a later event does not reopen it.
    pub timed_out: bool,
    /// Live mode: the wall clock when the session's latest accepted event arrived.
    pub arrival_wall: i64,
    /// Where the session waits for its timeout while live.
    #[serde(skip)]
    pub timeout_key: Option<super::lifecycle::TimeoutKey>,
}

/// The hashes of the viewers with flag bits `bits` in session `me`.
fn members(viewers: &Viewers, me: u32, bits: u32) -> impl Iterator<Item = u64> + '_ {
    viewers.list.iter().filter(move |v| v.session(me).is_some_and(|s| s.flags & bits != 0)).map(|v| v.hash)
}

/// Sets flag bits `bits << shift` of viewer `v` in session `me`, counting each bit newly
/// set in `counts`.
fn count_flags(counts: &mut Uvs, viewers: &mut Viewers, me: u32, v: u32, bits: u8, shift: u32, limit: usize) {
    let rec = viewers.list[v as usize].session_mut(me);
    let new = (u32::from(bits) << shift) & !rec.flags;
    if new == 0 {
        return;
    }
    rec.flags |= new;
    let hash = viewers.list[v as usize].hash;
    for (b, count) in counts.iter_mut().enumerate() {
        let bit = 1 << (b as u32 + shift);
        if new & bit != 0 {
            count.add(hash, limit, || members(viewers, me, bit));
        }
    }
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

    /// Adds an accepted event of this session (number `me` in its room). Returns true
    /// when `session_start_ts` moved: the caller must then rebuild the first-30-minute
    /// presence with [`Self::rebuild_f30_presence`].
    pub fn add(
        &mut self,
        me: u32,
        ts: i64,
        f: &Facts,
        (seq, id): (u64, &Arc<Identity>),
        viewers: &mut Viewers,
        limit: usize,
    ) -> bool {
        let old_start = self.start();
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        if f.kind == EventType::SessionStart {
            self.earliest_start_event = Some(self.earliest_start_event.map_or(ts, |s| s.min(ts)));
        }
        later(&mut self.identity, ts, seq, id);
        self.tally.add(f);
        if let Some(v) = f.viewer {
            count_flags(&mut self.uvs, viewers, me, v, uv_bits(f), 0, limit);
        }
        if let Some(log) = &mut self.log {
            log.push((ts, *f));
        }
        let start = self.start();
        if start != old_start {
            self.rebuild_f30_events(me, viewers, limit);
            true
        } else {
            self.add_f30(me, ts, f, viewers, limit);
            false
        }
    }

    fn add_f30(&mut self, me: u32, ts: i64, f: &Facts, viewers: &mut Viewers, limit: usize) {
        let start = self.start();
        if ts >= start && ts < start.saturating_add(FIRST_MS) {
            self.f30_tally.add(f);
            if let Some(v) = f.viewer {
                count_flags(&mut self.f30_uvs, viewers, me, v, uv_bits(f), flag::F30_SHIFT, limit);
            }
        }
        if f.kind == EventType::Enter && ts >= start && ts < start.saturating_add(COLD_MS) {
            if let Some(v) = f.viewer {
                // Only "fewer than 200" matters, so a final start needs no more than that.
                if self.log.is_some() || self.cold.len() < COLD_VIEWERS {
                    let rec = viewers.list[v as usize].session_mut(me);
                    if rec.flags & flag::COLD == 0 {
                        rec.flags |= flag::COLD;
                        let hash = viewers.list[v as usize].hash;
                        self.cold.add(hash, limit, || members(viewers, me, flag::COLD));
                    }
                }
            }
        }
    }

    fn rebuild_f30_events(&mut self, me: u32, viewers: &mut Viewers, limit: usize) {
        self.f30_tally = Tally::default();
        self.f30_uvs = Uvs::default();
        self.cold = Counted::default();
        self.f30_peak_before = 0;
        self.f30_end_probe = None;
        let clear = flag::COLD | (0x7f << flag::F30_SHIFT);
        for v in &mut viewers.list {
            for s in v.sessions.iter_mut().filter(|s| s.session == me) {
                s.flags &= !clear;
            }
        }
        let log = self.log.take().unwrap_or_default();
        for (ts, f) in &log {
            self.add_f30(me, *ts, f, viewers, limit);
        }
        self.log = Some(log);
    }

    /// Rebuilds first-30-minute presence from the viewers' segments of this session.
    pub fn rebuild_f30_presence(
        &mut self,
        me: u32,
        viewers: &mut Viewers,
        ends: &impl Ends,
        segs: &mut Vec<Seg>,
    ) {
        self.f30_presence = PresenceSums::default();
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        for v in &mut viewers.list {
            let Some(i) = v.sessions.iter().position(|s| s.session == me) else { continue };
            v.sessions[i].f30_watch = [0; 2];
            v.presence.segs(ends, segs);
            for s in segs.iter().filter(|s| s.session == me) {
                let mine = &mut v.sessions[i].f30_watch;
                self.f30_presence.apply(mine, s.start.max(lo), s.end.min(hi), s.stranger, 1);
            }
        }
    }

    /// A change of the presence of viewer `v`, whose segment entered this session.
    pub fn apply_presence(&mut self, me: u32, viewers: &mut Viewers, v: u32, d: &Delta) {
        if self.is_final {
            return;
        }
        let rec = viewers.list[v as usize].session_mut(me);
        self.presence.apply(&mut rec.watch, d.start, d.end, d.stranger, d.sign);
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        self.f30_presence.apply(&mut rec.f30_watch, d.start.max(lo), d.end.min(hi), d.stranger, d.sign);
    }

    /// Called as the horizon `h` rises: drops what can no longer change.
    pub fn fold(&mut self, slots: &Slots, me: u32, h: i64) {
        if self.is_final {
            return;
        }
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        // Read the folded range's probes before the timeline forgets it.
        let part = self.timeline.max_in(slots, me, lo, hi.min(h)).0;
        self.f30_peak_before = self.f30_peak_before.max(part);
        if hi < h && self.f30_end_probe.is_none() {
            self.f30_end_probe = Some(self.timeline.count_at(slots, me, hi));
        }
        if self.max_ts < h && self.live_end_probe.is_none_or(|(at, _)| at != self.max_ts) {
            self.live_end_probe = Some((self.max_ts, self.timeline.count_at(slots, me, self.max_ts)));
        }
        self.timeline.fold(slots, me, h);
        if self.earliest_start_event.is_some() && self.start() < h {
            self.log = None;
        } else if let Some(log) = &mut self.log {
            log.retain(|(ts, _)| *ts >= h);
        }
    }

    /// Frees everything but what a final row and later presence need.
    pub fn retire(&mut self) {
        self.is_final = true;
        self.uvs = Uvs::default();
        self.f30_uvs = Uvs::default();
        self.presence = PresenceSums::default();
        self.f30_presence = PresenceSums::default();
        self.timeline = Timeline::default();
        self.cold = Counted::default();
        self.log = None;
    }

    fn count_at(&self, slots: &Slots, me: u32, t: i64) -> i64 {
        match self.live_end_probe {
            Some((at, c)) if at == t => c,
            _ => self.timeline.count_at(slots, me, t),
        }
    }

    /// The counts, first-30-minute counts, peak and peak instant of the row.
    pub fn counts(&self, slots: &Slots, me: u32) -> (Counts, Counts, (i64, Option<i64>)) {
        let mut c = Counts::default();
        self.tally.write(&mut c);
        write_uvs(&uv_lens(&self.uvs), &mut c);
        self.presence.write(&mut c);
        let peak = self.timeline.peak(slots, me);
        c.online_peak = peak.0 as u64;
        c.online_end = self.count_at(slots, me, self.latest_end.unwrap_or(self.max_ts)) as u64;

        let mut f = Counts::default();
        self.f30_tally.write(&mut f);
        write_uvs(&uv_lens(&self.f30_uvs), &mut f);
        self.f30_presence.write(&mut f);
        let (lo, hi) = (self.start(), self.start().saturating_add(FIRST_MS));
        f.online_peak = self.f30_peak_before.max(self.timeline.max_in(slots, me, lo, hi).0) as u64;
        f.online_end = self.f30_end_probe.unwrap_or_else(|| self.timeline.count_at(slots, me, hi)) as u64;
        (c, f, peak)
    }

    pub fn cold_start(&self) -> bool {
        self.cold.len() < COLD_VIEWERS
    }
}
