//! Distinct counts: exact sets of 64-bit value hashes up to a limit, then a
//! HyperLogLog sketch, so memory per row is bounded whatever the traffic.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Values are xxh3 hashes already: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this hasher; fold anything else defensively.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub type BuildIdentity = BuildHasherDefault<IdentityHasher>;
pub type HashSet64 = HashSet<u64, BuildIdentity>;
pub type HashMap64<V> = std::collections::HashMap<u64, V, BuildIdentity>;

/// The 64-bit hash that stands for a viewer id (or any distinct-counted string).
pub fn hash_str(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

const HLL_BITS: u32 = 18;
const HLL_REGISTERS: usize = 1 << HLL_BITS;
/// Register values run from 0 to `HLL_Q + 1`.
const HLL_Q: usize = 64 - HLL_BITS as usize;

/// A HyperLogLog sketch with 2^18 registers (0.2 % standard error), read with
/// Ertl's improved estimator ("New cardinality estimation algorithms for
/// HyperLogLog sketches", 2017), which has no bias to correct at any cardinality.
/// Only rows beyond the exact limit pay its 256 KiB.
#[derive(Clone, PartialEq, Eq)]
pub struct Hll {
    registers: Box<[u8]>,
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hll(~{})", self.estimate())
    }
}

impl Default for Hll {
    fn default() -> Hll {
        Hll { registers: vec![0u8; HLL_REGISTERS].into_boxed_slice() }
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z == prev {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == prev {
            return z / 3.0;
        }
    }
}

impl Hll {
    pub fn insert(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_BITS)) as usize;
        // The low bits, with a sentinel so the rank is at most HLL_Q + 1.
        let rest = (hash << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        let r = &mut self.registers[index];
        if rank > *r {
            *r = rank;
        }
    }

    pub fn merge(&mut self, other: &Hll) {
        for (a, &b) in self.registers.iter_mut().zip(other.registers.iter()) {
            if b > *a {
                *a = b;
            }
        }
    }

    pub fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let mut histogram = [0u32; HLL_Q + 2];
        for &r in self.registers.iter() {
            histogram[r as usize] += 1;
        }
        if histogram[0] as usize == HLL_REGISTERS {
            return 0;
        }
        let mut z = m * tau(1.0 - f64::from(histogram[HLL_Q + 1]) / m);
        for k in (1..=HLL_Q).rev() {
            z = 0.5 * (z + f64::from(histogram[k]));
        }
        z += m * sigma(f64::from(histogram[0]) / m);
        let alpha = 0.5 / std::f64::consts::LN_2;
        (alpha * m * m / z).round() as u64
    }
}

/// Up to this many values a set is a plain vector: most pane-level sets hold a
/// handful of viewers, and a vector of 4 costs 32 bytes where a hash set costs 80.
const SMALL: usize = 16;

/// One distinct-count column of one pane, window or session.
#[derive(Debug, Clone)]
pub enum Distinct {
    Small(Vec<u64>),
    Exact(HashSet64),
    Sketch(Box<Hll>),
}

impl Default for Distinct {
    fn default() -> Distinct {
        Distinct::Small(Vec::new())
    }
}

impl Distinct {
    /// Inserts a hash; past `limit` exact values the set turns into a sketch.
    pub fn insert(&mut self, hash: u64, limit: usize) {
        match self {
            Distinct::Small(v) => {
                if v.contains(&hash) {
                    return;
                }
                if v.len() < SMALL.min(limit) {
                    v.push(hash);
                } else if v.len() < limit {
                    let mut set: HashSet64 = v.iter().copied().collect();
                    set.insert(hash);
                    *self = Distinct::Exact(set);
                } else {
                    let mut hll = Box::<Hll>::default();
                    v.iter().for_each(|&h| hll.insert(h));
                    hll.insert(hash);
                    *self = Distinct::Sketch(hll);
                }
            }
            Distinct::Exact(set) => {
                if set.insert(hash) && set.len() > limit {
                    let mut hll = Box::<Hll>::default();
                    for &h in set.iter() {
                        hll.insert(h);
                    }
                    *self = Distinct::Sketch(hll);
                }
            }
            Distinct::Sketch(hll) => hll.insert(hash),
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Distinct::Small(v) => v.len() as u64,
            Distinct::Exact(set) => set.len() as u64,
            Distinct::Sketch(hll) => hll.estimate(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checkpoint form of a [`Distinct`]: hashes are uniformly random, so they are written
/// as 8 fixed bytes (a varint would take 9 to 10), and a sketch as its raw registers.
mod serde_impl {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Distinct, HashSet64, Hll, HLL_REGISTERS};

    struct Fixed<I>(I, usize);

    impl<I: Iterator<Item = u64> + Clone> Serialize for Fixed<I> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.1))?;
            for h in self.0.clone() {
                seq.serialize_element(&h.to_le_bytes())?;
            }
            seq.end()
        }
    }

    struct Registers<'a>(&'a [u8]);

    impl Serialize for Registers<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    impl Serialize for Distinct {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Distinct::Small(v) => {
                    s.serialize_newtype_variant("Distinct", 0, "Small", &Fixed(v.iter().copied(), v.len()))
                }
                Distinct::Exact(set) => s.serialize_newtype_variant(
                    "Distinct",
                    1,
                    "Exact",
                    &Fixed(set.iter().copied(), set.len()),
                ),
                Distinct::Sketch(hll) => {
                    s.serialize_newtype_variant("Distinct", 2, "Sketch", &Registers(&hll.registers))
                }
            }
        }
    }

    /// Hashes read back from 8-byte groups.
    struct Hashes(Vec<u64>);

    impl<'de> Deserialize<'de> for Hashes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hashes, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Hashes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a sequence of 8-byte hashes")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Hashes, A::Error> {
                    // Never trust a length read from disk for an allocation.
                    let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                    while let Some(b) = seq.next_element::<[u8; 8]>()? {
                        v.push(u64::from_le_bytes(b));
                    }
                    Ok(Hashes(v))
                }
            }
            d.deserialize_seq(V)
        }
    }

    /// HLL registers: exactly [`HLL_REGISTERS`] bytes, each a possible rank.
    struct RegisterBuf(Box<[u8]>);

    impl<'de> Deserialize<'de> for RegisterBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RegisterBuf, D::Error> {
            struct V;
            impl V {
                fn check<E: de::Error>(v: &[u8]) -> Result<RegisterBuf, E> {
                    if v.len() != HLL_REGISTERS {
                        return Err(E::invalid_length(v.len(), &"2^18 sketch registers"));
                    }
                    if v.iter().any(|&r| usize::from(r) > super::HLL_Q + 1) {
                        return Err(E::custom("sketch register above the largest rank"));
                    }
                    Ok(RegisterBuf(v.into()))
                }
            }
            impl<'de> Visitor<'de> for V {
                type Value = RegisterBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("sketch registers as bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RegisterBuf, E> {
                    V::check(v)
                }
            }
            d.deserialize_bytes(V)
        }
    }

    #[derive(Deserialize)]
    #[serde(rename = "Distinct")]
    enum Repr {
        Small(Hashes),
        Exact(Hashes),
        Sketch(RegisterBuf),
    }

    impl<'de> Deserialize<'de> for Distinct {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Distinct, D::Error> {
            Ok(match Repr::deserialize(d)? {
                Repr::Small(h) => Distinct::Small(h.0),
                Repr::Exact(h) => Distinct::Exact(h.0.into_iter().collect::<HashSet64>()),
                Repr::Sketch(r) => Distinct::Sketch(Box::new(Hll { registers: r.0 })),
            })
        }
    }
}

/// Unions several [`Distinct`]s (the panes of a window) with a reusable buffer.
#[derive(Debug, Default)]
pub struct DistinctUnion {
    set: HashSet64,
    sketch: Option<Box<Hll>>,
}

impl DistinctUnion {
    pub fn clear(&mut self) {
        self.set.clear();
        self.sketch = None;
    }

    pub fn add(&mut self, d: &Distinct, limit: usize) {
        match d {
            Distinct::Small(v) => {
                for &h in v {
                    self.insert(h, limit);
                }
            }
            Distinct::Exact(s) => {
                if self.sketch.is_none() {
                    self.set.reserve(s.len());
                }
                for &h in s.iter() {
                    self.insert(h, limit);
                }
            }
            Distinct::Sketch(h) => {
                self.sketch_mut().merge(h);
            }
        }
    }

    pub fn insert(&mut self, hash: u64, limit: usize) {
        match &mut self.sketch {
            Some(s) => s.insert(hash),
            None => {
                if self.set.insert(hash) && self.set.len() > limit {
                    self.sketch_mut();
                }
            }
        }
    }

    fn sketch_mut(&mut self) -> &mut Hll {
        if self.sketch.is_none() {
            let mut hll = Box::<Hll>::default();
            for &h in self.set.iter() {
                hll.insert(h);
            }
            self.set.clear();
            self.sketch = Some(hll);
        }
        self.sketch.as_mut().expect("just set")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> u64 {
        match &self.sketch {
            Some(s) => s.estimate(),
            None => self.set.len() as u64,
        }
    }
}
