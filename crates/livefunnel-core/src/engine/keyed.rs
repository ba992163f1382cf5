//! Keyed hashing of the ids in events, and the tables that turn them into small
//! integers. Ids are attacker-controlled input: every table is placed by a hash with a
//! random key per engine (foldhash's quality variant), so nobody can aim a flood of ids
//! at one bucket. The key never reaches an output or a checkpoint: tables are rebuilt
//! from the ids on restore, and nothing iterates a table to decide an order.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

/// The keyed hasher of one engine.
#[derive(Clone, Debug)]
pub struct Keyed(foldhash::quality::SeedableRandomState);

impl Default for Keyed {
    fn default() -> Keyed {
        Keyed(foldhash::quality::SeedableRandomState::random())
    }
}

impl Keyed {
    pub fn str(&self, s: &str) -> u64 {
        self.0.hash_one(s.as_bytes())
    }

    pub fn u64(&self, x: u64) -> u64 {
        self.0.hash_one(x)
    }
}

/// Strings interned in first-seen order: index to string and back.
#[derive(Debug, Default, Clone)]
pub struct Interned {
    names: Vec<Arc<str>>,
    table: HashTable<u32>,
}

impl Interned {
    pub fn get(&self, k: &Keyed, s: &str) -> Option<u32> {
        let names = &self.names;
        self.table.find(k.str(s), |&i| &*names[i as usize] == s).copied()
    }

    /// Interns `s`, which [`Interned::get`] did not find.
    pub fn insert(&mut self, k: &Keyed, s: Arc<str>) -> u32 {
        let i = self.names.len() as u32;
        let names = &self.names;
        self.table.insert_unique(k.str(&s), i, |&j| k.str(&names[j as usize]));
        self.names.push(s);
        i
    }

    pub fn name(&self, i: u32) -> &Arc<str> {
        &self.names[i as usize]
    }

    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Rebuilds from names read back from a checkpoint; `None` if one is listed twice.
    pub fn from_names(k: &Keyed, names: Vec<Arc<str>>) -> Option<Interned> {
        let mut t = Interned::default();
        for n in names {
            if t.get(k, &n).is_some() {
                return None;
            }
            t.insert(k, n);
        }
        Some(t)
    }
}
