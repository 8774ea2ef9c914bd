//! The escape payload: how a symbol outside a table's support is written after the escape bin.
//!
//! A symbol `v` outside the support `lo..=hi` is mapped to its *zig-zag distance*
//!
//! ```text
//!     u = 2 (v - hi - 1)        if v > hi,
//!     u = 2 (lo - v - 1) + 1    if v < lo,
//! ```
//!
//! a bijection between the `i32`s outside `lo..=hi` and a subset of `0..2^33`. The payload is
//! the bit length `b = bits(u)` (`0..=33`, coded under a uniform model over 34 values), then the
//! `b - 1` bits of `u` below its leading one (the leading one is implied), in chunks of at most
//! [`CHUNK_BITS`] bits, least significant chunk first, each under an exactly uniform model over
//! `2^k` values, which costs exactly `k` bits.

use constriction::stream::model::DefaultUniformModel;

use crate::PRECISION;

/// Number of possible bit lengths of a zig-zag distance: `0..=33`.
pub(crate) const NUM_BIT_LENGTHS: usize = 34;

/// Largest number of raw bits coded with one uniform model.
pub(crate) const CHUNK_BITS: u32 = 16;

/// Zig-zag distance of `symbol` (outside `lo..=hi`) beyond the support.
///
/// Returns a value `< 2^33`. For a symbol inside the support the result is meaningless but
/// still computed without overflow.
#[inline]
pub(crate) fn zigzag_distance(symbol: i32, lo: i32, hi: i32) -> u64 {
    let (v, lo, hi) = (i64::from(symbol), i64::from(lo), i64::from(hi));
    if v > hi {
        ((v - hi - 1) as u64) << 1
    } else {
        (((lo - v - 1).max(0) as u64) << 1) | 1
    }
}

/// Inverse of [`zigzag_distance`]: the symbol at zig-zag distance `u` beyond `lo..=hi`, or
/// `None` if that is not an `i32` (only possible for corrupt data).
#[inline]
pub(crate) fn symbol_from_distance(u: u64, lo: i32, hi: i32) -> Option<i32> {
    let distance = i64::try_from(u >> 1).ok()?;
    let value = if u & 1 == 0 {
        i64::from(hi).checked_add(1)?.checked_add(distance)?
    } else {
        i64::from(lo).checked_sub(1)?.checked_sub(distance)?
    };
    i32::try_from(value).ok()
}

/// Bit length of `u`: 0 for 0, else `floor(log2 u) + 1`.
#[inline]
pub(crate) fn bit_length(u: u64) -> u32 {
    u64::BITS - u.leading_zeros()
}

/// The uniform model for the bit length.
#[inline]
pub(crate) fn bit_length_model() -> DefaultUniformModel {
    DefaultUniformModel::new(NUM_BIT_LENGTHS)
}

/// Exactly uniform models over `2^k` values for `k = 1..=CHUNK_BITS` (entry `k - 1`).
pub(crate) fn chunk_models() -> [DefaultUniformModel; CHUNK_BITS as usize] {
    core::array::from_fn(|i| DefaultUniformModel::new(1usize << (i + 1)))
}

/// Information content in bits of the payload of zig-zag distance `u`, matching what
/// [`bit_length_model`] and [`chunk_models`] spend.
pub(crate) fn payload_bits(u: u64) -> f64 {
    // `DefaultUniformModel::new(34)` gives every value floor(2^24 / 34) and the last one the rest.
    let total = 1u64 << PRECISION;
    let per_bin = total / NUM_BIT_LENGTHS as u64;
    let b = bit_length(u);
    let p = if (b as usize) < NUM_BIT_LENGTHS - 1 {
        per_bin
    } else {
        total - per_bin * (NUM_BIT_LENGTHS as u64 - 1)
    };
    f64::from(PRECISION) - libm::log2(p as f64) + f64::from(b.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_at_extremes() {
        let supports = [
            (0, 0),
            (-5, 5),
            (i32::MIN, i32::MIN),
            (i32::MAX, i32::MAX),
            (i32::MIN, 0),
            (0, i32::MAX),
            (-1000, -990),
        ];
        for (lo, hi) in supports {
            for v in [
                i32::MIN,
                i32::MIN + 1,
                -1001,
                -1,
                0,
                1,
                6,
                1000,
                i32::MAX - 1,
                i32::MAX,
            ] {
                if (lo..=hi).contains(&v) {
                    continue;
                }
                let u = zigzag_distance(v, lo, hi);
                assert!(bit_length(u) <= 33);
                assert_eq!(symbol_from_distance(u, lo, hi), Some(v), "{v} {lo} {hi}");
            }
        }
        assert_eq!(zigzag_distance(6, -5, 5), 0);
        assert_eq!(zigzag_distance(-6, -5, 5), 1);
        assert_eq!(symbol_from_distance(u64::MAX, 0, 0), None);
        assert_eq!(symbol_from_distance((1 << 33) - 2, 0, 0), None);
    }

    #[test]
    fn payload_bits_match_models() {
        assert_eq!(payload_bits(0), payload_bits(1));
        assert_eq!(payload_bits(2) - payload_bits(1), 1.0);
        assert!((payload_bits(0) - libm::log2(34.0)).abs() < 1e-3);
        let _ = bit_length_model();
        let models = chunk_models();
        assert_eq!(models.len(), 16);
    }
}
