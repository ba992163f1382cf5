//! Slots: a room's time line cut in slices of the gcd of the configured slides (10 s
//! by default), from the oldest slice a window that can still change needs to the
//! newest one touched. A window's row is a scan over its slots' plain integers:
//! the additive counts, one entry per viewer and measure for the distinct counts, the
//! breakdown counts by interned key, and the changes of the online count.
//!
//! A slot exists once an event, an arrival or a change of presence touched it, until
//! it is freed: windows exist, and rooms fall due, by the slots that exist (and by
//! the viewers online), exactly as the first engine's panes did.
//!
//! Presence is a step function: a slot stores only the changes of the online count
//! inside it (+1 where a viewer's segment starts, -1 where it ends), per session, so a
//! viewer online for an hour touches two slots. The count at a slot's start is the sum
//! of the changes before it.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agg::{BdTally, Key, Tally};
use super::presence::{Arrival, Delta};
use crate::row::Identity;

/// The identity of the room's latest event in a slot: (ts, arrival seq, identity).
pub type Ident = (i64, u64, Arc<Identity>);

/// Keeps the later of two identities by (ts, arrival), sharing the identity when equal.
pub fn later(a: &mut Option<Ident>, ts: i64, seq: u64, id: &Arc<Identity>) {
    match a {
        Some(x) if (x.0, x.1) >= (ts, seq) => {}
        Some(x) => {
            x.0 = ts;
            x.1 = seq;
            if !Arc::ptr_eq(&x.2, id) {
                x.2 = id.clone();
            }
        }
        None => *a = Some((ts, seq, id.clone())),
    }
}

pub fn floor_to(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width).saturating_mul(width)
}

/// A change of the online count at an instant, for one session's viewers: all of
/// them (`d`), strangers (`sd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub at: i64,
    pub session: u32,
    pub d: i32,
    pub sd: i32,
}

/// What the events of a slot add up to. Boxed: many slots hold only presence changes
/// (where a viewer's presence times out), and those stay small.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SlotEvents {
    pub tally: Tally,
    pub identity: Option<Ident>,
    /// One entry per viewer with a distinct-counted measure in the slot: (viewer
    /// index, bits of `agg::uv`).
    pub uv: Vec<(u32, u8)>,
    /// Breakdown counts by key (only for breakdown windows, and freed once those
    /// windows are final).
    pub bd: Vec<(Key, BdTally)>,
    /// Breakdown viewers: (key, viewer index, bits of `agg::bd_uv_bits`).
    pub bd_uv: Vec<(Key, u32, u8)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Slot {
    /// The sum of the steps (all, strangers); rebuilt on restore.
    #[serde(skip)]
    net: (i64, i64),
    /// A cache of the steps' summary, dropped when they change.
    #[serde(skip)]
    summary: std::cell::Cell<Option<Summary>>,
    pub ev: Option<Box<SlotEvents>>,
    /// Sorted by (instant, session), one entry per pair, none that cancelled out.
    steps: Vec<Step>,
    /// Offline→online moves inside the slot (see [`Arrival`]).
    pub arrivals: Vec<Arrival>,
}

/// A slot's online-count changes, relative to the count at its start `c`:
/// watch ms = `c * width + lin`, peak = `c + max_prefix`, count at the end = `c + net`.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    net: i64,
    stranger_net: i64,
    lin: i128,
    stranger_lin: i128,
    max_prefix: i64,
    /// The changes at the slot's very first instant (part of the count there).
    at_start: i64,
    stranger_at_start: i64,
}

impl Slot {
    fn net(&self) -> (i64, i64) {
        self.net
    }

    /// The steps merged by instant, as the count sees them.
    fn summary(&self, start: i64, width: i64) -> Summary {
        if let Some(s) = self.summary.get() {
            return s;
        }
        let s = self.summarize(start, width);
        self.summary.set(Some(s));
        s
    }

    fn summarize(&self, start: i64, width: i64) -> Summary {
        let end = start.saturating_add(width);
        let mut s = Summary::default();
        // The count holds from each change to the next; the first stretch, before any
        // change, only counts for the peak if it is not empty.
        let mut max_prefix = if self.steps.first().is_some_and(|b| b.at == start) { i64::MIN } else { 0 };
        let mut i = 0;
        while i < self.steps.len() {
            let at = self.steps[i].at;
            let (mut d, mut sd) = (0i64, 0i64);
            while i < self.steps.len() && self.steps[i].at == at {
                d += i64::from(self.steps[i].d);
                sd += i64::from(self.steps[i].sd);
                i += 1;
            }
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
        s
    }

    fn step(&mut self, at: i64, session: u32, d: i32, sd: i32) {
        self.summary.set(None);
        self.net.0 += i64::from(d);
        self.net.1 += i64::from(sd);
        // A heartbeat moves a presence end: -1 at the old end and +1 at the new one
        // meet the earlier changes there and cancel, so the list stays short.
        match self.steps.binary_search_by(|b| (b.at, b.session).cmp(&(at, session))) {
            Ok(i) => {
                let b = &mut self.steps[i];
                b.d += d;
                b.sd += sd;
                if b.d == 0 && b.sd == 0 {
                    self.steps.remove(i);
                    // Presence ends pass through a slot ahead of the watermark and move
                    // on with the next heartbeat: without this, every slot would keep the
                    // room for all of its viewers.
                    if self.steps.len() <= self.steps.capacity() / 4 {
                        self.steps.shrink_to(self.steps.len() * 2);
                    }
                }
            }
            Err(i) => self.steps.insert(i, Step { at, session, d, sd }),
        }
    }

    /// The sessions of the slot's presence changes.
    pub fn sessions(&self) -> impl Iterator<Item = u32> + '_ {
        self.steps.iter().map(|b| b.session)
    }

    pub fn events(&self) -> Option<&SlotEvents> {
        self.ev.as_deref()
    }
}

/// Presence measures of one range of slots.
#[derive(Debug, Default, Clone, Copy)]
pub struct PresenceRange {
    pub watch_ms: i128,
    pub stranger_watch_ms: i128,
    pub peak: i64,
    pub online_end: i64,
    pub present_uv: u64,
    pub stranger_present_uv: u64,
}

/// A room's slots, sparse: a slot exists where an event, an arrival or a presence
/// change fell, so a room whose timestamps jump far apart costs nothing for the gap.
/// Sorted by slot number; nearly every access is at one of the two ends.
#[derive(Debug, Serialize, Deserialize)]
pub struct Slots {
    /// Set from the configuration on restore, never read from a checkpoint: a width of
    /// 0 would divide by zero.
    #[serde(skip)]
    pub width: i64,
    /// (slot number: `ts / width` rounded down, slot).
    ring: VecDeque<(i64, Slot)>,
    /// The ring's slot numbers alone, in order: the searches read these 8 bytes a slot
    /// instead of a cache line of a 200-byte entry each; rebuilt on restore.
    #[serde(skip)]
    keys: VecDeque<i64>,
    /// Online counts (all, strangers) just before the first slot.
    base: (i64, i64),
    /// Per session, the count of its viewers online just before the first slot.
    session_base: Vec<i64>,
    /// The identity of the latest event in slots already freed.
    pub freed_identity: Option<Ident>,
    /// Breakdowns of the slots before this are freed already: each clean-up looks only
    /// at the slots since the last. From the first slot again after a restore.
    #[serde(skip, default = "before_every_slot")]
    bd_freed_before: i64,
}

fn before_every_slot() -> i64 {
    i64::MIN
}

impl Slots {
    pub fn new(width: i64) -> Slots {
        Slots {
            width,
            ring: VecDeque::new(),
            keys: VecDeque::new(),
            base: (0, 0),
            session_base: Vec::new(),
            freed_identity: None,
            bd_freed_before: before_every_slot(),
        }
    }

    /// After a restore: the sums derived from the steps.
    pub fn rebuild(&mut self, width: i64) {
        self.width = width;
        self.keys = self.ring.iter().map(|(k, _)| *k).collect();
        for (_, s) in &mut self.ring {
            s.net = s.steps.iter().fold((0, 0), |(a, t), b| (a + i64::from(b.d), t + i64::from(b.sd)));
        }
    }

    /// Whether a slot starts in `[start, end)` (both slot-aligned).
    fn any_in(&self, start: i64, end: i64) -> bool {
        self.keys.get(self.position(self.number(start))).is_some_and(|k| *k < self.number(end))
    }

    /// The start of the slot holding `ts`.
    pub fn slot_start(&self, ts: i64) -> i64 {
        floor_to(ts, self.width)
    }

    fn number(&self, ts: i64) -> i64 {
        ts.div_euclid(self.width)
    }

    fn start_of(&self, number: i64) -> i64 {
        number.saturating_mul(self.width)
    }

    /// The position of the first slot numbered `k` or more.
    fn position(&self, k: i64) -> usize {
        debug_assert_eq!(self.keys.len(), self.ring.len());
        let keys = &self.keys;
        let (Some(&first), Some(&last)) = (keys.front(), keys.back()) else { return 0 };
        if k > last {
            return keys.len();
        }
        if k <= first {
            return 0;
        }
        // Where the slots are consecutive, the slot number says where it is.
        let guess = (k - first) as usize;
        if keys.get(guess).is_some_and(|n| *n == k) {
            return guess;
        }
        // Numbers are distinct and increasing: at most `k - first` slots come before
        // `k` and at most `last - k + 1` from it on, which leaves a short stretch to
        // search when `k` is near either end, as nearly every access is.
        let (mut lo, mut hi) = (keys.len().saturating_sub((last - k + 1) as usize), guess.min(keys.len()));
        debug_assert!(lo <= hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if keys[mid] < k {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        debug_assert_eq!(lo, self.ring.partition_point(|(n, _)| *n < k));
        lo
    }

    /// The slot holding `ts`, created if needed.
    pub fn slot_mut(&mut self, ts: i64) -> &mut Slot {
        let k = self.number(ts);
        let i = self.position(k);
        if self.keys.get(i).is_none_or(|n| *n != k) {
            self.ring.insert(i, (k, Slot::default()));
            self.keys.insert(i, k);
        }
        &mut self.ring[i].1
    }

    /// The events part of the slot holding `ts`, created if needed.
    pub fn events_mut(&mut self, ts: i64) -> &mut SlotEvents {
        self.slot_mut(ts).ev.get_or_insert_with(Box::default)
    }

    fn get(&self, k: i64) -> Option<&Slot> {
        let i = self.position(k);
        self.keys.get(i).filter(|n| **n == k).and_then(|_| self.ring.get(i)).map(|(_, s)| s)
    }

    /// Slots whose start is in `[start, end)` (both slot-aligned), with their start.
    pub fn range(&self, start: i64, end: i64) -> impl DoubleEndedIterator<Item = (i64, &Slot)> + '_ {
        let (lo, hi) = (self.position(self.number(start)), self.position(self.number(end)));
        let w = self.width;
        self.ring.range(lo..hi.max(lo)).map(move |(k, s)| (k.saturating_mul(w), s))
    }

    /// Every slot, with its start, in time order.
    pub fn all(&self) -> impl Iterator<Item = (i64, &Slot)> + '_ {
        let w = self.width;
        self.ring.iter().map(move |(k, s)| (k.saturating_mul(w), s))
    }

    pub fn all_mut(&mut self) -> impl Iterator<Item = (i64, &mut Slot)> + '_ {
        let w = self.width;
        self.ring.iter_mut().map(move |(k, s)| (k.saturating_mul(w), s))
    }

    /// Applies one presence change of a viewer of `session`: two steps, whatever its length.
    pub fn apply(&mut self, d: &Delta) {
        let sd = if d.stranger { d.sign as i32 } else { 0 };
        self.slot_mut(d.start).step(d.start, d.session, d.sign as i32, sd);
        self.slot_mut(d.end).step(d.end, d.session, -d.sign as i32, -sd);
    }

    /// Adds (`sign` 1) or removes (-1) an arrival in the slot holding it.
    pub fn arrival(&mut self, a: &Arrival, sign: i64) {
        let slot = self.slot_mut(a.at);
        if sign > 0 {
            slot.arrivals.push(*a);
        } else if let Some(i) = slot.arrivals.iter().position(|x| x == a) {
            slot.arrivals.swap_remove(i);
        } else {
            debug_assert!(false, "removing an arrival that was never added");
        }
    }

    /// Online counts (all, strangers) just before instant `t` (slot-aligned).
    fn count_before(&self, t: i64) -> (i64, i64) {
        let mut c = self.base;
        for (_, s) in self.ring.range(..self.position(self.number(t))) {
            let (a, b) = s.net();
            c.0 += a;
            c.1 += b;
        }
        c
    }

    /// Viewers online at instant `t` (any instant, not only slot starts).
    pub fn online_count_at(&self, t: i64) -> u64 {
        let ps = floor_to(t, self.width);
        let mut c = self.count_before(ps).0;
        if let Some(slot) = self.get(self.number(ps)) {
            c += slot.steps.iter().take_while(|b| b.at <= t).map(|b| i64::from(b.d)).sum::<i64>();
        }
        c.max(0) as u64
    }

    /// Whether anyone is online at instant `t` (slot-aligned).
    fn online_at(&self, t: i64) -> bool {
        let at_t = self.get(self.number(t)).map_or(0, |s| s.summary(t, self.width).at_start);
        self.count_before(t).0 + at_t > 0
    }

    /// Presence over `[start, end)` (slot-aligned).
    pub fn presence(&self, start: i64, end: i64) -> PresenceRange {
        let w = self.width;
        let (mut all, mut strangers) = self.count_before(start);
        let mut r = PresenceRange::default();
        let mut cursor = start;
        let mut first = true;
        let (mut start_all, mut start_strangers) = (all, strangers);
        for (ps, slot) in self.range(start, end) {
            if ps > cursor {
                // A stretch with no slot: the count holds.
                r.watch_ms += i128::from(all) * i128::from(ps - cursor);
                r.stranger_watch_ms += i128::from(strangers) * i128::from(ps - cursor);
                r.peak = r.peak.max(all);
            }
            let s = slot.summary(ps, w);
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
        let at_end = self.get(self.number(end)).map_or(0, |s| s.summary(end, w).at_start);
        r.online_end = (all + at_end).max(0);
        // Present: online at `start`, or arriving after it having been offline then.
        let (mut present, mut present_strangers) = (start_all, start_strangers);
        for (_, slot) in self.range(start, end) {
            for a in slot.arrivals.iter().filter(|a| a.at > start && a.prev_end <= start) {
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
    /// `[end - size, end)` holds a slot or has someone online.
    pub fn next_window_end(&self, after: i64, size: i64, slide: i64) -> Option<i64> {
        let mut end = floor_to(after, slide).checked_add(slide)?;
        loop {
            let start = end.saturating_sub(size);
            if self.any_in(start, end) || self.online_at(start) {
                return Some(end);
            }
            // Nobody online and no slot: nothing can exist before the next slot.
            let &next = self.keys.get(self.position(self.number(end)))?;
            end = end.max(floor_to(self.start_of(next), slide).checked_add(slide)?);
        }
    }

    /// Frees slots that end at or before `before`, remembering their latest identity
    /// and the online counts they carried.
    pub fn free_before(&mut self, before: i64) {
        while let Some(&k) = self.keys.front() {
            if self.start_of(k).saturating_add(self.width) > before {
                break;
            }
            let (_, slot) = self.ring.pop_front().expect("peeked");
            self.keys.pop_front();
            for b in &slot.steps {
                self.base.0 += i64::from(b.d);
                self.base.1 += i64::from(b.sd);
                let s = b.session as usize;
                if self.session_base.len() <= s {
                    self.session_base.resize(s + 1, 0);
                }
                self.session_base[s] += i64::from(b.d);
            }
            if let Some(id) = slot.ev.as_ref().and_then(|e| e.identity.as_ref()) {
                later(&mut self.freed_identity, id.0, id.1, &id.2);
            }
        }
    }

    /// Frees the breakdown parts of slots that end at or before `before`.
    pub fn free_breakdowns_before(&mut self, before: i64) {
        // No event lands before an earlier call's bound any more (it is behind the
        // horizon): the slots there have nothing to free.
        let from = self.position(self.number(self.bd_freed_before));
        let n = self.position(self.number(before));
        for (_, slot) in self.ring.range_mut(from.min(n)..n) {
            if let Some(e) = &mut slot.ev {
                if !e.bd.is_empty() || !e.bd_uv.is_empty() {
                    e.bd = Vec::new();
                    e.bd_uv = Vec::new();
                }
            }
        }
        self.bd_freed_before = self.bd_freed_before.max(before);
    }

    /// Frees every slot's breakdowns (a room retiring: its next broadcast may put
    /// events in the slots that are left, which are then looked at again).
    pub fn free_all_breakdowns(&mut self) {
        self.bd_freed_before = before_every_slot();
        self.free_breakdowns_before(i64::MAX);
        self.bd_freed_before = before_every_slot();
    }

    /// The identity for a row ending at `end`: the latest event before `end`.
    pub fn identity_before(&self, end: i64) -> Option<Ident> {
        self.ring
            .range(..self.position(self.number(end)))
            .rev()
            .find_map(|(_, s)| s.ev.as_ref().and_then(|e| e.identity.clone()))
            .or_else(|| self.freed_identity.clone())
    }

    /// Viewers of `session` online at instant `t`, counting every change ever applied.
    pub fn session_count_at(&self, session: u32, t: i64) -> i64 {
        let mut c = self.session_base.get(session as usize).copied().unwrap_or(0);
        for (_, slot) in self.ring.range(..self.position(self.number(t).saturating_add(1))) {
            let mine = slot.steps.iter().filter(|b| b.session == session && b.at <= t);
            c += mine.map(|b| i64::from(b.d)).sum::<i64>();
        }
        c
    }

    /// The changes of `session`'s count at instants in `(lo, hi)`, in time order.
    pub fn session_steps(&self, session: u32, lo: i64, hi: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ring
            .range(self.position(self.number(lo))..)
            .flat_map(|(_, s)| s.steps.iter())
            .skip_while(move |b| b.at <= lo)
            .take_while(move |b| b.at < hi)
            .filter(move |b| b.session == session)
            .map(|b| (b.at, i64::from(b.d)))
    }
}
