//! A hop or tumble window's row from its slots: additive counts summed, distinct
//! viewers counted by stamping their records (no set, no hashing), presence from the
//! online-count changes, breakdowns by interned key.

use rustc_hash::FxHashMap;

use super::agg::{self, uv, write_uvs, BdTally, Key, Tally};
use super::distinct::estimate;
use super::room::Room;
use super::Params;
use crate::row::{BreakdownKind, BreakdownRow, Counts, WindowRow};

/// Reusable buffers, so computing a row allocates nothing in the steady state.
#[derive(Default)]
pub struct Scratch {
    /// Per viewer index: the row it was last seen in, and the bits seen there.
    marks: Vec<(u32, u8)>,
    stamp: u32,
    /// Breakdown counts of the row by key, and its breakdown viewer entries.
    bd: FxHashMap<Key, BdTally>,
    bd_uv: Vec<(Key, u32, u8)>,
    keys: Vec<Key>,
    /// The breakdown rows of the last [`Room::window_row`] call, with their keys.
    pub bds: Vec<(Key, BreakdownRow)>,
    /// A row's bytes, for its fingerprint.
    pub bytes: Vec<u8>,
}

impl Scratch {
    /// A fresh stamp for a row of a room with `viewers` viewers.
    fn next_stamp(&mut self, viewers: usize) -> u32 {
        if self.marks.len() < viewers {
            self.marks.resize(viewers, (0, 0));
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.iter_mut().for_each(|m| *m = (0, 0));
            self.stamp = 1;
        }
        self.stamp
    }
}

impl Room {
    /// The row of window `def` ending at `end`, with its breakdown rows in `sc.bds` when
    /// `breakdowns` and the window has them. `None` when no row exists.
    pub fn window_row(
        &self,
        def: usize,
        end: i64,
        breakdowns: bool,
        p: &Params,
        sc: &mut Scratch,
    ) -> Option<WindowRow> {
        let d = &p.defs[def];
        let with_bd = breakdowns && d.breakdowns;
        let start = end.saturating_sub(d.size);
        sc.bds.clear();
        let stamp = sc.next_stamp(self.viewers.len());
        let mut tally = Tally::default();
        let mut n = [0u64; uv::COUNT];
        for (_, slot) in self.slots.range(start, end) {
            let Some(e) = slot.events() else { continue };
            tally.merge(&e.tally);
            for &(v, bits) in &e.uv {
                let m = &mut sc.marks[v as usize];
                if m.0 != stamp {
                    *m = (stamp, 0);
                }
                let new = bits & !m.1;
                if new != 0 {
                    m.1 |= new;
                    for (b, count) in n.iter_mut().enumerate() {
                        *count += u64::from(new >> b & 1);
                    }
                }
            }
        }
        let presence = self.slots.presence(start, end);
        if tally.events == 0 && presence.present_uv == 0 {
            return None;
        }
        for (b, count) in n.iter_mut().enumerate() {
            let marks = &sc.marks;
            let list = &self.viewers.list;
            *count = estimate(*count, p.limit, || {
                marks
                    .iter()
                    .zip(list)
                    .filter(move |(m, _)| m.0 == stamp && m.1 >> b & 1 != 0)
                    .map(|(_, v)| v.hash)
            });
        }
        let mut counts = Counts::default();
        tally.write(&mut counts);
        write_uvs(&n, &mut counts);
        counts.watch_ms = presence.watch_ms;
        counts.stranger_watch_ms = presence.stranger_watch_ms;
        counts.present_uv = presence.present_uv;
        counts.stranger_present_uv = presence.stranger_present_uv;
        counts.online_peak = presence.peak as u64;
        counts.online_end = presence.online_end as u64;
        let identity = self.slots.identity_before(end).expect("a row exists only after an event");
        let row = WindowRow {
            room_id: self.id.clone(),
            window: d.name.clone(),
            window_start: start,
            window_end: end,
            version: 0,
            identity: (*identity.2).clone(),
            counts,
        };
        if with_bd {
            self.breakdown_rows(&row, p, sc);
        }
        Some(row)
    }

    /// The breakdown rows of `row`'s window into `sc.bds`, sorted by kind and key.
    fn breakdown_rows(&self, row: &WindowRow, p: &Params, sc: &mut Scratch) {
        sc.bd.clear();
        sc.bd_uv.clear();
        for (_, slot) in self.slots.range(row.window_start, row.window_end) {
            let Some(e) = slot.events() else { continue };
            for (k, t) in &e.bd {
                sc.bd.entry(*k).or_default().merge(t);
            }
            sc.bd_uv.extend_from_slice(&e.bd_uv);
        }
        if sc.bd.is_empty() {
            return;
        }
        // Distinct viewers per key and measure: sorted, each (key, viewer) once.
        sc.bd_uv.sort_unstable();
        let mut uvs: FxHashMap<Key, ([u64; 3], usize, usize)> = FxHashMap::default();
        let mut i = 0;
        while i < sc.bd_uv.len() {
            let (key, v, _) = sc.bd_uv[i];
            let mut bits = 0u8;
            let from = i;
            while i < sc.bd_uv.len() && sc.bd_uv[i].0 == key && sc.bd_uv[i].1 == v {
                bits |= sc.bd_uv[i].2;
                i += 1;
            }
            let e = uvs.entry(key).or_insert(([0; 3], from, from));
            e.2 = i;
            for (b, c) in e.0.iter_mut().enumerate() {
                *c += u64::from(bits >> b & 1);
            }
        }
        sc.keys.clear();
        sc.keys.extend(sc.bd.keys().copied());
        let keys = &self.bd_keys;
        sc.keys.sort_by(|a, b| {
            (agg::key_kind(*a), keys.name(*a, p)).cmp(&(agg::key_kind(*b), keys.name(*b, p)))
        });
        for &key in &sc.keys {
            let (mut n, from, to) = uvs.get(&key).copied().unwrap_or(([0; 3], 0, 0));
            for (b, count) in n.iter_mut().enumerate() {
                let entries = &sc.bd_uv[from..to];
                let list = &self.viewers.list;
                *count = estimate(*count, p.limit, || {
                    let mut last = u32::MAX;
                    entries
                        .iter()
                        .filter(move |e| e.2 >> b & 1 != 0)
                        .filter(move |e| std::mem::replace(&mut last, e.1) != e.1)
                        .map(move |e| list[e.1 as usize].hash)
                });
            }
            let kind = match agg::key_kind(key) {
                agg::SOURCE => BreakdownKind::Source,
                agg::PLAN => BreakdownKind::Plan,
                _ => BreakdownKind::Product,
            };
            sc.bds.push((
                key,
                BreakdownRow {
                    kind,
                    room_id: self.id.clone(),
                    window: row.window.clone(),
                    window_start: row.window_start,
                    window_end: row.window_end,
                    version: 0,
                    org_id: row.identity.org_id.clone(),
                    key: keys.name(key, p).clone(),
                    counts: sc.bd[&key].counts(n),
                },
            ));
        }
    }
}
