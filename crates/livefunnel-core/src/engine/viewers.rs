//! A room's viewers: one record per viewer id (its 64-bit xxh3 hash, the identity
//! distinct counts compare, `docs/semantics.md`), found through a keyed table and
//! referred to everywhere else by its index: slots' distinct entries, sessions'
//! member flags, inheritance, presence.

use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::keyed::Keyed;
use super::presence::Presence;
use crate::event::Source;

/// Flags of a viewer in one session (`ViewerSession::flags`).
pub mod flag {
    /// Bits 0-6: the session's distinct measures (`agg::uv`); bits 8-14: the same in
    /// its first 30 minutes.
    pub const F30_SHIFT: u32 = 8;
    /// Counted among the session's viewers with an `enter` in its first 2 hours.
    pub const COLD: u32 = 1 << 16;
    /// Entered this session: its segments may belong to it.
    pub const ENTERED: u32 = 1 << 17;
}

/// A viewer's part in one session of the room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewerSession {
    pub session: u32,
    pub flags: u32,
    /// The attribution the viewer's latest `enter` of the session leaves for its later
    /// events (`None` before any): its source and (uncapped) plan.
    pub inherit: Option<(Source, Option<Arc<str>>)>,
    /// Presence covered in the session's time line and in its first 30 minutes (all,
    /// strangers), in ms. Wrapping sums: a viewer's segments are disjoint, so the true
    /// value fits in a u64, and only whether it is 0 is read.
    pub watch: [u64; 2],
    pub f30_watch: [u64; 2],
}

impl ViewerSession {
    fn new(session: u32) -> ViewerSession {
        ViewerSession { session, flags: 0, inherit: None, watch: [0; 2], f30_watch: [0; 2] }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Viewer {
    pub hash: u64,
    pub presence: Presence,
    /// The sessions the viewer took part in since the room was created or retired:
    /// nearly always one, held in the record (serialized as a list, as a `Vec` is).
    pub sessions: SmallVec<[ViewerSession; 1]>,
    /// The slot (start) where the viewer has its latest distinct entry, and where.
    pub uv_slot: i64,
    pub uv_pos: u32,
    /// In [`Viewers::active`]; rebuilt on restore.
    #[serde(skip)]
    active: bool,
}

impl Viewer {
    fn new(hash: u64) -> Viewer {
        Viewer {
            hash,
            presence: Presence::default(),
            sessions: SmallVec::new(),
            uv_slot: i64::MIN,
            uv_pos: 0,
            active: false,
        }
    }

    /// The viewer's record of session `s`, created if needed.
    pub fn session_mut(&mut self, s: u32) -> &mut ViewerSession {
        let i = match self.sessions.iter().position(|v| v.session == s) {
            Some(i) => i,
            None => {
                self.sessions.push(ViewerSession::new(s));
                self.sessions.len() - 1
            }
        };
        &mut self.sessions[i]
    }

    pub fn session(&self, s: u32) -> Option<&ViewerSession> {
        self.sessions.iter().find(|v| v.session == s)
    }
}

/// The viewers of a room.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Viewers {
    pub list: Vec<Viewer>,
    /// Indexes into `list` by keyed hash of the viewer hash; rebuilt on restore.
    #[serde(skip)]
    table: HashTable<u32>,
    /// The viewers whose presence is not fresh: what the horizon folds.
    #[serde(skip)]
    active: Vec<u32>,
}

impl Viewers {
    pub fn find(&self, k: &Keyed, hash: u64) -> Option<u32> {
        let list = &self.list;
        self.table.find(k.u64(hash), |&i| list[i as usize].hash == hash).copied()
    }

    /// The index of viewer `hash`, created if new.
    pub fn get_or_insert(&mut self, k: &Keyed, hash: u64) -> u32 {
        if let Some(i) = self.find(k, hash) {
            return i;
        }
        let i = self.list.len() as u32;
        let list = &self.list;
        self.table.insert_unique(k.u64(hash), i, |&j| k.u64(list[j as usize].hash));
        self.list.push(Viewer::new(hash));
        i
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Marks viewer `v`'s presence as one the horizon folds.
    pub fn activate(&mut self, v: u32) {
        let rec = &mut self.list[v as usize];
        if !rec.active {
            rec.active = true;
            self.active.push(v);
        }
    }

    /// Folds the presence of every active viewer with `fold`; a viewer for which it
    /// says so starts afresh (its presence fresh, as a viewer never seen).
    pub fn fold_active(&mut self, mut fold: impl FnMut(&mut Presence) -> bool) {
        let list = &mut self.list;
        self.active.retain(|&v| {
            let rec = &mut list[v as usize];
            if fold(&mut rec.presence) {
                rec.presence = Presence::default();
                rec.active = false;
            }
            rec.active
        });
    }

    /// Viewers whose presence is still held (folded from time to time).
    #[cfg(test)]
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Rebuilds the table after a restore; false if a viewer is listed twice.
    pub fn rebuild(&mut self, k: &Keyed) -> bool {
        self.active.clear();
        for (i, v) in self.list.iter_mut().enumerate() {
            v.active = !v.presence.is_fresh();
            if v.active {
                self.active.push(i as u32);
            }
        }
        self.table = HashTable::with_capacity(self.list.len());
        for (i, v) in self.list.iter().enumerate() {
            let list = &self.list;
            if self.table.find(k.u64(v.hash), |&j| list[j as usize].hash == v.hash).is_some() {
                return false;
            }
            self.table.insert_unique(k.u64(v.hash), i as u32, |&j| k.u64(list[j as usize].hash));
        }
        true
    }
}
