//! Byte scanning shared by the decoder and the row writer.

/// The index of the first byte at or after `i` that ends a plain string (`"`, `\\` or
/// a control character), or `s.len()`. Eight bytes at a time: a byte equal to `c`
/// is a zero byte of `x ^ c…c`, found as in "Bit Twiddling Hacks" (haszero,
/// hasless); the lowest flagged byte is always a true one.
pub(crate) fn special(s: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = s.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let hit = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + s[i..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(s.len() - i)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn special_finds_the_first_special_byte(
            s in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, 0x20u8..0x7f],
                0..40,
            ),
            from in 0usize..40,
        ) {
            let from = from.min(s.len());
            let naive = s[from..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).map_or(s.len(), |p| from + p);
            prop_assert_eq!(super::special(&s, from), naive);
        }
    }
}
