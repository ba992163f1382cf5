//! Distinct counts beyond the exact limit: a HyperLogLog sketch of the members'
//! 64-bit value hashes. Below the limit, counts are exact: the engine counts viewers
//! (one record per viewer and room) by flags and stamps, never by sets of hashes.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Checkpoint form of a sketch: its raw registers, checked when read back.
impl Serialize for Hll {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.registers)
    }
}

impl<'de> Deserialize<'de> for Hll {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hll, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Hll;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("sketch registers as bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Hll, E> {
                if v.len() != HLL_REGISTERS {
                    return Err(E::invalid_length(v.len(), &"2^18 sketch registers"));
                }
                if v.iter().any(|&r| usize::from(r) > HLL_Q + 1) {
                    return Err(E::custom("sketch register above the largest rank"));
                }
                Ok(Hll { registers: v.into() })
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A distinct count whose members the caller keeps (as flags on its viewers): exact
/// while at most `limit`, then a sketch of every member, which later members go into.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counted {
    n: u64,
    sketch: Option<Box<Hll>>,
}

impl Counted {
    /// A new member with value hash `hash`; `members` lists every member so far
    /// (this one included), read once when the count passes the limit.
    pub fn add<I: Iterator<Item = u64>>(&mut self, hash: u64, limit: usize, members: impl FnOnce() -> I) {
        self.n += 1;
        match &mut self.sketch {
            Some(s) => s.insert(hash),
            None if self.n > limit as u64 => {
                let mut hll = Box::<Hll>::default();
                members().for_each(|h| hll.insert(h));
                self.sketch = Some(hll);
            }
            None => {}
        }
    }

    pub fn len(&self) -> u64 {
        match &self.sketch {
            Some(s) => s.estimate(),
            None => self.n,
        }
    }
}

/// The distinct count of a row from its exact member count `n`: exact up to `limit`,
/// else the sketch of the members (`hashes`, read only then).
pub fn estimate<I: Iterator<Item = u64>>(n: u64, limit: usize, hashes: impl FnOnce() -> I) -> u64 {
    if n <= limit as u64 {
        return n;
    }
    let mut hll = Hll::default();
    hashes().for_each(|h| hll.insert(h));
    hll.estimate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> u64 {
        hash_str(&format!("user-{i}"))
    }

    #[test]
    fn exact_up_to_the_limit_then_a_sketch_of_every_member() {
        let mut c = Counted::default();
        for i in 0..1000 {
            c.add(h(i), 1000, || -> std::iter::Empty<u64> { panic!("no sketch below the limit") });
        }
        assert_eq!(c.len(), 1000);
        c.add(h(1000), 1000, || (0..=1000).map(h));
        let est = c.len();
        assert!((990..=1010).contains(&est), "{est}");
        assert_eq!(estimate(5, 5, || -> std::iter::Empty<u64> { unreachable!() }), 5);
        let tiny = estimate(4, 3, || (0..4).map(h));
        assert!((3..=5).contains(&tiny), "a small limit still applies: {tiny}");
    }

    #[test]
    fn sketch_is_within_one_percent_from_the_limit_up() {
        // 100,000 is the contract's limit: the sketch must hold 1 % from there on.
        for n in [100_001u64, 150_000, 200_000, 300_000, 500_000, 700_000, 1_000_000, 2_000_000, 5_000_000] {
            let mut c = Counted::default();
            for i in 0..n {
                c.add(h(i), 100_000, || (0..=i).map(h));
            }
            let est = c.len() as f64;
            let err = (est - n as f64).abs() / n as f64;
            eprintln!("hll n={n} estimate={est} error={err:.5}");
            assert!(err < 0.01, "n={n} estimate={est} error={err}");
        }
    }

    #[test]
    fn checkpoint_form_round_trips_and_rejects_bad_sketches() {
        let mut c = Counted::default();
        for i in 0..200 {
            c.add(h(i), 100, || (0..=i).map(h));
        }
        let bytes = postcard::to_stdvec(&c).unwrap();
        let back: Counted = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), c.len());
        // A sketch of the wrong size would index out of bounds later: refused at decoding.
        let bytes = postcard::to_stdvec(&Registers(&[0u8; 16])).unwrap();
        assert!(postcard::from_bytes::<Hll>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&Registers(&[60u8; HLL_REGISTERS])).unwrap();
        assert!(postcard::from_bytes::<Hll>(&bytes).is_err());
    }

    struct Registers<'a>(&'a [u8]);

    impl serde::Serialize for Registers<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
}
