//! The engine's rooms, each with its encoding as of the last incremental snapshot.
//!
//! A checkpoint encodes every room, yet between two checkpoints many rooms of a large
//! partition may not change (ended broadcasts waiting to retire, retired rooms, quiet
//! rooms). The table keeps each room's bytes from the last
//! [`Engine::snapshot_incremental`](super::Engine::snapshot_incremental) and forgets
//! them whenever the room is borrowed mutably: every change to a room goes through
//! `IndexMut` or `iter_mut`, so a room whose bytes are kept is one nobody could have
//! changed since they were written. A changed room's buffer, sized to its encoding,
//! is kept for the next: the table holds about one encoded state of its rooms.

use std::ops::{Index, IndexMut};

use super::room::Room;

#[derive(Default)]
pub(crate) struct Rooms {
    list: Vec<Room>,
    /// Per room: its encoding, or empty when it must be encoded again (an encoded room
    /// is never empty: it starts with its id). Cleared, not freed.
    encoded: Vec<Vec<u8>>,
}

impl Rooms {
    pub fn push(&mut self, room: Room) {
        self.list.push(room);
        self.encoded.push(Vec::new());
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Room> {
        self.list.iter()
    }

    /// Every room, mutably: every kept encoding is dropped.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Room> {
        self.encoded.iter_mut().for_each(Vec::clear);
        self.list.iter_mut()
    }

    /// Room `i` and its kept encoding, for a snapshot to fill when it is empty.
    pub fn with_encoding(&mut self, i: usize) -> (&Room, &mut Vec<u8>) {
        (&self.list[i], &mut self.encoded[i])
    }

    /// Every room's kept encoding, in order.
    pub fn encodings(&self) -> impl Iterator<Item = &[u8]> {
        self.encoded.iter().map(Vec::as_slice)
    }
}

impl Index<usize> for Rooms {
    type Output = Room;

    fn index(&self, i: usize) -> &Room {
        &self.list[i]
    }
}

impl IndexMut<usize> for Rooms {
    fn index_mut(&mut self, i: usize) -> &mut Room {
        self.encoded[i].clear();
        &mut self.list[i]
    }
}
