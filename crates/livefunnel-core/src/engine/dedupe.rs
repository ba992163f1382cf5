//! Duplicate memory of a room (contract §1.4): the accepted `event_id`s whose `ts` is
//! still inside the acceptance horizon, each kept as a 128-bit xxh3 digest with its
//! `ts` (two ids are the same id when their digests are: a false duplicate needs a
//! 128-bit collision). Expired ids are swept out when the table would grow, so its
//! size follows the events inside the horizon, not the stream.

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use super::keyed::Keyed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    digest: [u64; 2],
    ts: i64,
}

/// The digest of an `event_id`.
pub fn digest(id: &str) -> [u64; 2] {
    let d = xxhash_rust::xxh3::xxh3_128(id.as_bytes());
    [d as u64, (d >> 64) as u64]
}

fn place(k: &Keyed, d: &[u64; 2]) -> u64 {
    k.u64(d[0])
}

#[derive(Debug, Default, Clone)]
pub struct Dedupe {
    seen: HashTable<Seen>,
}

impl Dedupe {
    /// Whether an accepted event with this id has its `ts` at or above `horizon`.
    pub fn contains(&self, k: &Keyed, d: &[u64; 2], horizon: i64) -> bool {
        self.seen.find(place(k, d), |s| s.digest == *d).is_some_and(|s| s.ts >= horizon)
    }

    /// Remembers an accepted id; ids below `horizon` may be forgotten meanwhile.
    pub fn insert(&mut self, k: &Keyed, d: [u64; 2], ts: i64, horizon: i64) {
        if let Some(s) = self.seen.find_mut(place(k, &d), |s| s.digest == d) {
            // A copy forgotten by the horizon came back as a new event.
            s.ts = s.ts.max(ts);
            return;
        }
        if self.seen.len() == self.seen.capacity() {
            // Before growing, forget what the horizon made useless.
            self.seen.retain(|s| s.ts >= horizon);
            if self.seen.len() < self.seen.capacity() / 2 {
                self.seen.shrink_to(self.seen.len() * 2, |s| place(k, &s.digest));
            }
        }
        self.seen.insert_unique(place(k, &d), Seen { digest: d, ts }, |s| place(k, &s.digest));
    }

    /// The ids at or above `horizon`, for a checkpoint, in a fixed order.
    pub fn live(&self, horizon: i64) -> Vec<([u64; 2], i64)> {
        let mut v: Vec<([u64; 2], i64)> =
            self.seen.iter().filter(|s| s.ts >= horizon).map(|s| (s.digest, s.ts)).collect();
        v.sort_unstable();
        v
    }

    /// Read back from [`Dedupe::live`]; `None` if an id is listed twice.
    pub fn from_live(k: &Keyed, live: Vec<([u64; 2], i64)>) -> Option<Dedupe> {
        let mut d = Dedupe { seen: HashTable::with_capacity(live.len()) };
        for (digest, ts) in live {
            if d.seen.find(place(k, &digest), |s| s.digest == digest).is_some() {
                return None;
            }
            d.seen.insert_unique(place(k, &digest), Seen { digest, ts }, |s| place(k, &s.digest));
        }
        Some(d)
    }
}
