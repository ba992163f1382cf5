//! Presence (contract §1.5): each viewer's online segments, derived in event time
//! from its accepted events, and the differences to apply when an event changes them.
//!
//! Every accepted event has `ts >= H` (the acceptance horizon), and an event can only
//! change presence at instants at or after its own `ts`: so segments that end before
//! `H` are final. [`Presence::fold`] drops the events below `H` into a base state,
//! keeping memory per viewer small. Segments are not stored: they follow from the base
//! and the few events after it whenever a change needs them.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A viewer event, reduced to what presence needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PKind {
    Enter { stranger: bool, session: u32 },
    Leave,
    Refresh,
}

/// One event of a viewer. Events of a viewer are kept in (ts, arrival) order; a new
/// one arrives after every kept one, so it goes after those of the same `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PEvent {
    pub ts: i64,
    pub kind: PKind,
}

/// `[start, end)` online, with the class and entered session of the `enter` that began it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seg {
    pub start: i64,
    pub end: i64,
    pub stranger: bool,
    pub session: u32,
}

/// The state carried over from folded events: online since `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    start: i64,
    last_refresh: i64,
    session: u32,
    stranger: bool,
}

/// Parameters of the timeline: the presence timeout and each session's end.
pub trait Ends {
    fn presence_timeout(&self) -> i64;
    /// The smallest accepted `session_end` ts of a session, if any.
    fn session_end(&self, session: u32) -> Option<i64>;
}

/// A viewer going from offline to online at `at`, last online until `prev_end`
/// (`i64::MIN` if never). Per slot, these answer "distinct viewers present in a window"
/// without keeping every online viewer in every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    pub at: i64,
    pub prev_end: i64,
    pub stranger: bool,
}

/// One viewer's presence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    base: Option<Open>,
    /// Unfolded events, in (ts, arrival) order: one or two for a viewer who beats
    /// steadily, held in the record (serialized as a list, as a `Vec` is).
    events: SmallVec<[PEvent; 2]>,
    /// End of the last forgotten segment, and of the last forgotten stranger segment:
    /// what the first kept segment's arrival is measured from.
    folded_end: i64,
    folded_stranger_end: i64,
}

impl Default for Presence {
    fn default() -> Presence {
        Presence { base: None, events: SmallVec::new(), folded_end: i64::MIN, folded_stranger_end: i64::MIN }
    }
}

/// Reused buffers of one presence change: no allocation per event.
#[derive(Debug, Default)]
pub struct Buffers {
    pub old_segs: Vec<Seg>,
    pub new_segs: Vec<Seg>,
    pub old_arrivals: Vec<Arrival>,
    pub new_arrivals: Vec<Arrival>,
    pub deltas: Vec<Delta>,
}

impl Presence {
    /// The sessions this presence refers to (entered sessions of its state and events).
    pub fn sessions(&self) -> impl Iterator<Item = u32> + '_ {
        let events = self.events.iter().filter_map(|e| match e.kind {
            PKind::Enter { session, .. } => Some(session),
            _ => None,
        });
        self.base.map(|o| o.session).into_iter().chain(events)
    }

    /// Never online: nothing to fold, nothing to remember.
    pub fn is_fresh(&self) -> bool {
        self.is_empty() && self.folded_end == i64::MIN && self.folded_stranger_end == i64::MIN
    }

    /// Whether nothing is left: no state, no event, no segment.
    pub fn is_empty(&self) -> bool {
        self.base.is_none() && self.events.is_empty()
    }

    /// Nothing left that can change, and the forgotten ends are before `before`: a
    /// later arrival measured from "never" instead counts the same in every window
    /// that can still hold it.
    pub fn droppable(&self, before: i64) -> bool {
        self.is_empty() && self.folded_end <= before && self.folded_stranger_end <= before
    }

    /// The current segments (the last one closed by timeout or session end if open).
    pub fn segs(&self, ends: &impl Ends, out: &mut Vec<Seg>) {
        out.clear();
        run(self.base, &self.events, ends, true, |s| out.push(s));
    }

    /// Arrivals of `segs` (this viewer's): into presence at all (`stranger` false), and
    /// into stranger presence (`stranger` true). Adjacent segments are one stretch.
    pub fn arrivals(&self, segs: &[Seg], out: &mut Vec<Arrival>) {
        out.clear();
        let (mut end, mut stranger_end) = (self.folded_end, self.folded_stranger_end);
        for s in segs {
            if s.start != end {
                out.push(Arrival { at: s.start, prev_end: end, stranger: false });
            }
            end = s.end;
            if s.stranger {
                if s.start != stranger_end {
                    out.push(Arrival { at: s.start, prev_end: stranger_end, stranger: true });
                }
                stranger_end = s.end;
            }
        }
    }

    /// Inserts `ev`; when it comes after every kept event, a heartbeat between it and
    /// an event less than `timeout` before it is dropped first. Such a heartbeat decides
    /// nothing: whatever state the earlier event leaves, the viewer is still online at
    /// `ev` without it, an event inserted later in between leaves the same true, and
    /// `ev` overwrites what it set. So a viewer who beats far more often than the
    /// timeout keeps one or two events, not the acceptance horizon's worth.
    fn append_or_insert(&mut self, ev: PEvent, timeout: i64) {
        if let [.., p, last] = self.events[..] {
            if last.ts <= ev.ts && last.kind == PKind::Refresh && ev.ts.saturating_sub(p.ts) < timeout {
                self.events.pop();
            }
        }
        self.insert(ev);
    }

    pub fn insert(&mut self, ev: PEvent) {
        let at = self.events.partition_point(|e| e.ts <= ev.ts);
        self.events.insert(at, ev);
    }

    /// Applies `ev`, or with `None` a change of a session's end (`before` are the ends
    /// before it, `ends` after): the changes of the segments go to `b.deltas`, the
    /// arrivals that go and come to `b.old_arrivals` and `b.new_arrivals` from index
    /// `same` on (the return value).
    pub fn change(
        &mut self,
        ev: Option<PEvent>,
        before: &impl Ends,
        ends: &impl Ends,
        b: &mut Buffers,
    ) -> usize {
        b.deltas.clear();
        self.segs(before, &mut b.old_segs);
        self.arrivals(&b.old_segs, &mut b.old_arrivals);
        if let Some(ev) = ev {
            self.append_or_insert(ev, ends.presence_timeout());
        }
        self.segs(ends, &mut b.new_segs);
        diff(&b.old_segs, &b.new_segs, &mut b.deltas);
        self.arrivals(&b.new_segs, &mut b.new_arrivals);
        b.old_arrivals.iter().zip(&b.new_arrivals).take_while(|(a, b)| a == b).count()
    }

    fn forget(&mut self, segs: &[Seg]) {
        for s in segs {
            self.folded_end = s.end;
            if s.stranger {
                self.folded_stranger_end = s.end;
            }
        }
    }

    /// Folds events below `cut` into the base state and forgets final segments.
    /// Must be called with `cut <= H`, where no accepted event can be below `H`.
    pub fn fold(&mut self, cut: i64, ends: &impl Ends) {
        let n = self.events.partition_point(|e| e.ts < cut);
        if n > 0 {
            // Those segments closed before an event below the cut: none can change.
            let (mut end, mut stranger_end) = (self.folded_end, self.folded_stranger_end);
            let open = run(self.base, &self.events[..n], ends, false, |s| {
                end = s.end;
                if s.stranger {
                    stranger_end = s.end;
                }
            });
            (self.folded_end, self.folded_stranger_end) = (end, stranger_end);
            self.events.drain(..n);
            self.base = open;
        }
        if self.events.is_empty() {
            if let Some(o) = self.base.filter(|o| close_at(o, ends) <= cut) {
                // Offline for good before the cut: its last segment is final too.
                self.base = None;
                let end = close_at(&o, ends);
                if end > o.start {
                    self.forget(&[Seg { start: o.start, end, stranger: o.stranger, session: o.session }]);
                }
            }
        }
    }
}

fn close_at(o: &Open, ends: &impl Ends) -> i64 {
    let timeout = o.last_refresh.saturating_add(ends.presence_timeout());
    match ends.session_end(o.session) {
        Some(end) => timeout.min(end),
        None => timeout,
    }
}

/// Runs the presence state machine over `events` from `base`, handing each non-empty
/// segment to `push`, and with `close_last` the one still open after them, closed by
/// timeout or session end. Returns the state after the events.
fn run(
    base: Option<Open>,
    events: &[PEvent],
    ends: &impl Ends,
    close_last: bool,
    mut push: impl FnMut(Seg),
) -> Option<Open> {
    let mut emit = |o: &Open, end: i64| {
        if end > o.start {
            push(Seg { start: o.start, end, stranger: o.stranger, session: o.session });
        }
    };
    let mut open = base;
    for ev in events {
        if let Some(o) = open {
            let end = close_at(&o, ends);
            if end <= ev.ts {
                emit(&o, end);
                open = None;
            }
        }
        match ev.kind {
            PKind::Enter { stranger, session } => {
                if let Some(o) = open {
                    emit(&o, ev.ts);
                }
                open = Some(Open { start: ev.ts, stranger, session, last_refresh: ev.ts });
            }
            PKind::Leave => {
                if let Some(o) = open.take() {
                    emit(&o, ev.ts);
                }
            }
            PKind::Refresh => {
                if let Some(o) = &mut open {
                    o.last_refresh = ev.ts;
                }
            }
        }
    }
    if let (true, Some(o)) = (close_last, open) {
        emit(&o, close_at(&o, ends));
    }
    open
}

/// A change of one viewer's coverage: `sign` +1 adds `[start, end)`, -1 removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub start: i64,
    pub end: i64,
    pub stranger: bool,
    pub session: u32,
    pub sign: i64,
}

/// The changes that turn `old` into `new`. Shared prefixes cost nothing, and a
/// segment whose end moved yields only the moved part, so a heartbeat extending
/// an open segment touches only the slots it extends into.
pub fn diff(old: &[Seg], new: &[Seg], out: &mut Vec<Delta>) {
    let common = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (mut old, mut new) = (&old[common..], &new[common..]);
    if let (Some(a), Some(b)) = (old.first(), new.first()) {
        if a.start == b.start && a.stranger == b.stranger && a.session == b.session {
            let (lo, hi, sign) = if a.end < b.end { (a.end, b.end, 1) } else { (b.end, a.end, -1) };
            out.push(Delta { start: lo, end: hi, stranger: a.stranger, session: a.session, sign });
            old = &old[1..];
            new = &new[1..];
        }
    }
    for s in old {
        out.push(Delta { start: s.start, end: s.end, stranger: s.stranger, session: s.session, sign: -1 });
    }
    for s in new {
        out.push(Delta { start: s.start, end: s.end, stranger: s.stranger, session: s.session, sign: 1 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E {
        pt: i64,
        end: Option<i64>,
    }

    impl Ends for E {
        fn presence_timeout(&self) -> i64 {
            self.pt
        }
        fn session_end(&self, _: u32) -> Option<i64> {
            self.end
        }
    }

    fn ev(ts: i64, kind: PKind) -> PEvent {
        PEvent { ts, kind }
    }

    const IN: PKind = PKind::Enter { stranger: false, session: 0 };
    const IN_STRANGER: PKind = PKind::Enter { stranger: true, session: 0 };

    fn segs_of(events: &[PEvent], ends: &E) -> Vec<(i64, i64, bool)> {
        let mut v = Presence::default();
        for e in events {
            v.insert(*e);
        }
        let mut segs = Vec::new();
        v.segs(ends, &mut segs);
        segs.iter().map(|s| (s.start, s.end, s.stranger)).collect()
    }

    #[test]
    fn enter_leave_timeout_and_session_end() {
        let ends = E { pt: 100, end: None };
        assert_eq!(segs_of(&[ev(10, IN), ev(50, PKind::Leave)], &ends), vec![(10, 50, false)]);
        // No leave: offline at last refresh + timeout.
        assert_eq!(segs_of(&[ev(10, IN), ev(60, PKind::Refresh)], &ends), vec![(10, 160, false)]);
        // A refresh after the timeout does not bring the viewer back.
        assert_eq!(segs_of(&[ev(10, IN), ev(200, PKind::Refresh)], &ends), vec![(10, 110, false)]);
        // Refresh exactly at the timeout instant: already offline (online while t < until).
        assert_eq!(segs_of(&[ev(10, IN), ev(110, PKind::Refresh)], &ends), vec![(10, 110, false)]);
        let ended = E { pt: 100, end: Some(40) };
        assert_eq!(segs_of(&[ev(10, IN)], &ended), vec![(10, 40, false)]);
        // Entering after the session ended: never online.
        assert_eq!(segs_of(&[ev(50, IN)], &ended), vec![]);
    }

    #[test]
    fn re_enter_starts_a_segment_with_the_new_class() {
        let ends = E { pt: 100, end: None };
        let segs = segs_of(&[ev(0, IN_STRANGER), ev(30, IN), ev(60, PKind::Leave)], &ends);
        assert_eq!(segs, vec![(0, 30, true), (30, 60, false)]);
        // Out of arrival order: the timeline is in event time.
        let segs = segs_of(&[ev(60, PKind::Leave), ev(0, IN_STRANGER), ev(30, IN)], &ends);
        assert_eq!(segs, vec![(0, 30, true), (30, 60, false)]);
    }

    #[test]
    fn diff_of_an_extension_is_only_the_extension() {
        let a = Seg { start: 0, end: 100, stranger: false, session: 0 };
        let b = Seg { end: 130, ..a };
        let mut out = Vec::new();
        diff(&[a], &[b], &mut out);
        assert_eq!(out, vec![Delta { start: 100, end: 130, stranger: false, session: 0, sign: 1 }]);
        out.clear();
        diff(&[b], &[a], &mut out);
        assert_eq!(out, vec![Delta { start: 100, end: 130, stranger: false, session: 0, sign: -1 }]);
    }

    #[test]
    fn steady_heartbeats_keep_few_events_and_the_same_segments() {
        let ends = E { pt: 100, end: Some(1_000) };
        // Every late event at each instant, into a viewer beating every 30 (and once
        // after a gap longer than the timeout): the kept events give the segments all
        // of them give, before and after the late one.
        let beats: Vec<PEvent> = std::iter::once(ev(0, IN))
            .chain((1..20).map(|i| ev(i * 30, PKind::Refresh)))
            .chain((0..5).map(|i| ev(720 + i * 30, PKind::Refresh)))
            .collect();
        for late in [PKind::Leave, IN_STRANGER, PKind::Refresh] {
            for t in (0..900).step_by(5) {
                let (mut all, mut kept) = (Presence::default(), Presence::default());
                for e in &beats {
                    all.insert(*e);
                    kept.append_or_insert(*e, ends.pt);
                }
                // One beat in three or so: each kept one is less than the timeout after
                // the one before the last.
                assert!(kept.events.len() * 2 < all.events.len(), "{} events kept", kept.events.len());
                let (mut a, mut k) = (Vec::new(), Vec::new());
                all.segs(&ends, &mut a);
                kept.segs(&ends, &mut k);
                assert_eq!(a, k);
                all.insert(ev(t, late));
                kept.append_or_insert(ev(t, late), ends.pt);
                all.segs(&ends, &mut a);
                kept.segs(&ends, &mut k);
                assert_eq!(a, k, "late {late:?} at {t}");
            }
        }
    }

    #[test]
    fn fold_keeps_the_same_segments_ahead() {
        let ends = E { pt: 100, end: None };
        let mut v = Presence::default();
        for e in [ev(0, IN), ev(20, PKind::Leave), ev(40, IN), ev(90, PKind::Refresh)] {
            v.insert(e);
        }
        let (mut before, mut after) = (Vec::new(), Vec::new());
        v.segs(&ends, &mut before);
        v.fold(50, &ends);
        v.segs(&ends, &mut after);
        assert_eq!(after, &before[1..]);
        assert_eq!(v.folded_end, 20);
        v.insert(ev(120, PKind::Leave));
        v.segs(&ends, &mut after);
        assert_eq!(after, &[Seg { start: 40, end: 120, stranger: false, session: 0 }]);
    }
}
