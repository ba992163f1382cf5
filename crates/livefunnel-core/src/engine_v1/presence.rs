//! Presence (contract §1.5): each viewer's online segments, derived in event time
//! from its accepted events, and the differences to apply when an event changes them.
//!
//! Every accepted event has `ts >= H` (the acceptance horizon), and an event can only
//! change presence at instants at or after its own `ts`: so segments that end before
//! `H` are final. [`Viewer::fold`] drops them, keeping memory per viewer small.

use serde::{Deserialize, Serialize};

/// A viewer event, reduced to what presence needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PKind {
    Enter { stranger: bool, session: u32 },
    Leave,
    Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PEvent {
    pub ts: i64,
    pub seq: u64,
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
struct Open {
    start: i64,
    stranger: bool,
    session: u32,
    last_refresh: i64,
}

/// Parameters of the timeline: the presence timeout and each session's end.
pub trait Ends {
    fn presence_timeout(&self) -> i64;
    /// The smallest accepted `session_end` ts of a session, if any.
    fn session_end(&self, session: u32) -> Option<i64>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Viewer {
    pub hash: u64,
    base: Option<Open>,
    /// Unfolded events, sorted by (ts, seq).
    events: Vec<PEvent>,
    /// Segments derived from `base` and `events`.
    segs: Vec<Seg>,
    /// End of the last forgotten segment, and of the last forgotten stranger segment:
    /// what the first kept segment's arrival is measured from.
    folded_end: i64,
    folded_stranger_end: i64,
}

/// A viewer going from offline to online at `at`, last online until `prev_end`
/// (`i64::MIN` if never). Per pane, these answer "distinct viewers present in a window"
/// without keeping every online viewer in every pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    pub at: i64,
    pub prev_end: i64,
    pub stranger: bool,
}

impl Viewer {
    pub fn new(hash: u64) -> Viewer {
        Viewer { hash, folded_end: i64::MIN, folded_stranger_end: i64::MIN, ..Viewer::default() }
    }

    /// Arrivals of the current segments: into presence at all (`stranger` false), and
    /// into stranger presence (`stranger` true). Adjacent segments are one stretch.
    pub fn arrivals(&self, out: &mut Vec<Arrival>) {
        let (mut end, mut stranger_end) = (self.folded_end, self.folded_stranger_end);
        for s in &self.segs {
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

    fn forget(&mut self, n: usize) {
        for s in self.segs.drain(..n) {
            self.folded_end = s.end;
            if s.stranger {
                self.folded_stranger_end = s.end;
            }
        }
    }

    pub fn segs(&self) -> &[Seg] {
        &self.segs
    }

    /// Nothing left that can change, and the forgotten ends are before `before`: a
    /// later arrival measured from "never" instead counts the same in every window
    /// that can still hold it.
    pub fn droppable(&self, before: i64) -> bool {
        self.base.is_none()
            && self.events.is_empty()
            && self.segs.is_empty()
            && self.folded_end <= before
            && self.folded_stranger_end <= before
    }

    pub fn insert(&mut self, ev: PEvent) {
        let at = self.events.partition_point(|e| (e.ts, e.seq) < (ev.ts, ev.seq));
        self.events.insert(at, ev);
    }

    /// Recomputes the segments; returns the old ones for diffing.
    /// Recomputes the segments; the previous ones are left in `old` for diffing.
    pub fn recompute_into(&mut self, ends: &impl Ends, old: &mut Vec<Seg>) {
        old.clear();
        std::mem::swap(old, &mut self.segs);
        let segs = &mut self.segs;
        run(self.base, &self.events, self.events.len(), ends, |s| segs.push(s));
    }

    pub fn recompute(&mut self, ends: &impl Ends) -> Vec<Seg> {
        let mut old = Vec::new();
        self.recompute_into(ends, &mut old);
        old
    }

    /// Folds events below `cut` into the base state and forgets final segments.
    /// Must be called with `cut <= H`, where no accepted event can be below `H`.
    pub fn fold(&mut self, cut: i64, ends: &impl Ends) {
        let n = self.events.partition_point(|e| e.ts < cut);
        if n > 0 {
            let (open, closed_by_events) = run(self.base, &self.events, n, ends, |_| {});
            // Those segments closed before an event below the cut: none can change.
            self.forget(closed_by_events);
            self.events.drain(..n);
            self.base = open;
        }
        if self.events.is_empty() && self.base.is_some_and(|o| close_at(&o, ends) <= cut) {
            // Offline for good before the cut: its last segment is final too.
            self.base = None;
            self.forget(self.segs.len());
        }
        debug_assert!(self.segs.windows(2).all(|w| w[0].end <= w[1].start));
    }
}

fn close_at(o: &Open, ends: &impl Ends) -> i64 {
    let timeout = o.last_refresh.saturating_add(ends.presence_timeout());
    match ends.session_end(o.session) {
        Some(end) => timeout.min(end),
        None => timeout,
    }
}

/// Runs the presence state machine over `events[..n]` from `base`, handing each
/// segment to `push` (the last one closed by timeout or session end if still open).
/// Returns the open state after the `n` events and how many segments they closed.
fn run(
    base: Option<Open>,
    events: &[PEvent],
    n: usize,
    ends: &impl Ends,
    mut push: impl FnMut(Seg),
) -> (Option<Open>, usize) {
    let pushed = std::cell::Cell::new(0);
    let mut emit = |o: &Open, end: i64| {
        if end > o.start {
            push(Seg { start: o.start, end, stranger: o.stranger, session: o.session });
            pushed.set(pushed.get() + 1);
        }
    };
    let mut open = base;
    for ev in &events[..n] {
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
    let closed_by_events = pushed.get();
    if let Some(o) = open {
        emit(&o, close_at(&o, ends));
    }
    (open, closed_by_events)
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
/// an open segment touches only the panes it extends into.
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
