//! The scale table, the mapping from predicted scales to table indices, and the Gaussian tables.

use crate::table::{CdfTable, TableError, MAX_TABLE_LEN};

/// Number of Gaussian scales, i.e. of tables for the latent `y`.
pub const NUM_SCALES: usize = 64;

/// Smallest scale of the table (`scale_table()[0]`).
pub const SCALE_MIN: f32 = 0.11;

/// Largest scale of the table (`scale_table()[NUM_SCALES - 1]`).
pub const SCALE_MAX: f32 = 256.0;

/// Total probability that [`gaussian_tables`] leaves outside the support of each table (both
/// tails together), as in CompressAI's `GaussianConditional`.
pub const GAUSSIAN_TAIL_MASS: f64 = 1e-9;

/// `scale_table()`, precomputed: `exp(ln SCALE_MIN + i/63 (ln SCALE_MAX - ln SCALE_MIN))`
/// evaluated in `f64` and rounded to `f32`. A unit test recomputes it.
const SCALES: [f32; NUM_SCALES] = [
    0.11, 0.1244041, 0.14069436, 0.15911779, 0.1799537, 0.20351799, 0.23016793, 0.26030758,
    0.29439393, 0.33294374, 0.37654153, 0.4258483, 0.48161158, 0.5446769, 0.61600035, 0.6966634,
    0.78788894, 0.8910602, 1.0077413, 1.1397014, 1.2889411, 1.4577234, 1.648607, 1.8644861,
    2.1086338, 2.3847518, 2.6970265, 3.0501924, 3.449604, 3.9013174, 4.412181, 4.9899397,
    5.6433544, 6.3823314, 7.218075, 8.163256, 9.232204, 10.441129, 11.808356, 13.354618, 15.103357,
    17.081087, 19.317795, 21.84739, 24.708227, 27.94368, 31.602804, 35.741077, 40.42124, 45.71426,
    51.700375, 58.470352, 66.12684, 74.785904, 84.57885, 95.654144, 108.17971, 122.34546,
    138.36615, 156.4847, 176.97581, 200.15015, 226.3591, 256.0,
];

/// The [`NUM_SCALES`] Gaussian scales, log-spaced from [`SCALE_MIN`] to [`SCALE_MAX`] inclusive.
///
/// Entry `i` is `exp(ln(0.11) + i/63 * (ln(256) - ln(0.11)))` computed in `f64` and rounded to
/// `f32` (the ratio of neighbours is about 1.131). The table is strictly increasing, starts
/// with exactly `SCALE_MIN` and ends with exactly `SCALE_MAX`.
#[inline]
#[must_use]
pub fn scale_table() -> [f32; NUM_SCALES] {
    SCALES
}

/// Maps a predicted scale to the index of its table: the smallest `i` with
/// `scale_table()[i] >= scale`, clamped to `0..NUM_SCALES`.
///
/// So a scale is rounded *up* to the next table scale (a slightly too wide distribution costs
/// less than a too narrow one). Measured on the shipped `mse-q3` model over Kodak, rounding up
/// codes 0.3% fewer bits than picking the table nearest in KL divergence (0.4356 against
/// 0.4369 bpp; see docs/results.md): on unseen images the predicted scales are slightly too small,
/// and the wider table makes up for it. Everything up to `SCALE_MIN` (zero, negative values,
/// `-inf`) maps to 0; everything above `SCALE_MAX` (`+inf`) and NaN map to `NUM_SCALES - 1`.
///
/// This is the only place where the mapping is computed: the encoder and the decoder must
/// agree on every index bit for bit, or the range decoder desynchronises. It is a branch-free
/// binary search of six comparisons and never panics.
#[inline]
#[must_use]
pub fn scale_index(scale: f32) -> u8 {
    if scale.is_nan() {
        return (NUM_SCALES - 1) as u8;
    }
    // Invariant: SCALES[..index] < scale; finally `index` counts the entries below `scale`.
    let mut index = 0usize;
    let mut step = NUM_SCALES / 2;
    while step > 0 {
        if SCALES[index + step - 1] < scale {
            index += step;
        }
        step /= 2;
    }
    index.min(NUM_SCALES - 1) as u8
}

/// `-Phi^{-1}(GAUSSIAN_TAIL_MASS / 2)`: the support half-width in units of the scale.
///
/// Found by bisection on `0.5 erfc(t / sqrt 2) = GAUSSIAN_TAIL_MASS / 2`, deterministic
/// (about 6.1094).
fn tail_multiplier() -> f64 {
    let target = GAUSSIAN_TAIL_MASS / 2.0;
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if 0.5 * libm::erfc(mid * core::f64::consts::FRAC_1_SQRT_2) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Integer tables of zero-mean Gaussians quantised to the integers, one per scale.
///
/// For a scale `s` the table covers `k` in `-K..=K` with `K = ceil(s t)`, where
/// `t = -Phi^{-1}(GAUSSIAN_TAIL_MASS / 2)` ≈ 6.109, and puts the float masses
///
/// ```text
///     P(k) = Phi((k + 1/2) / s) - Phi((k - 1/2) / s),      Phi(x) = erfc(-x / sqrt 2) / 2,
///     P(escape) = 2 (1 - Phi((K + 1/2) / s)) = erfc((K + 1/2) / (s sqrt 2))  (<= 1e-9)
/// ```
///
/// through [`CdfTable::from_probabilities`]. The masses are evaluated with `libm`'s `erf`
/// and `erfc` on the upper tail (no cancellation), so the tables are the same on every
/// platform. For `s = SCALE_MIN` the support is `-1..=1`, for `s = SCALE_MAX` it is
/// `-1565..=1565`.
///
/// # Errors
///
/// - [`TableError::InvalidScale`] for a scale that is not finite and positive;
/// - [`TableError::TooLong`] for a scale so large (above about 5,300) that the table would
///   exceed [`MAX_TABLE_LEN`] entries.
pub fn gaussian_tables(scales: &[f32]) -> Result<Vec<CdfTable>, TableError> {
    let t = tail_multiplier();
    let max_half_width = ((MAX_TABLE_LEN - 2) / 2) as f64;
    let mut tables = Vec::with_capacity(scales.len());
    let mut masses = Vec::new();
    for (index, &scale) in scales.iter().enumerate() {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(TableError::InvalidScale {
                index,
                value: scale,
            });
        }
        let s = f64::from(scale);
        let half_width = (s * t).ceil();
        if half_width > max_half_width {
            return Err(TableError::TooLong {
                len: 2 * half_width as usize + 2,
                max: MAX_TABLE_LEN,
            });
        }
        let k_max = half_width as i32; // 1 <= k_max <= 32767
        let inv = core::f64::consts::FRAC_1_SQRT_2 / s; // 1 / (s sqrt 2)
        let upper_tail = |x: f64| 0.5 * libm::erfc(x * inv); // 1 - Phi(x / s)

        masses.clear();
        masses.resize(2 * k_max as usize + 1, 0.0);
        let center = k_max as usize;
        masses[center] = libm::erf(0.5 * inv);
        for k in 1..=k_max {
            let kf = f64::from(k);
            let p = upper_tail(kf - 0.5) - upper_tail(kf + 0.5);
            masses[center + k as usize] = p;
            masses[center - k as usize] = p;
        }
        let tail = 2.0 * upper_tail(f64::from(k_max) + 0.5);
        tables.push(CdfTable::from_probabilities(-k_max, &masses, tail)?);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_table_matches_formula() {
        let (lo, hi) = (libm::log(0.11), libm::log(256.0));
        for (i, &s) in SCALES.iter().enumerate() {
            let expected = libm::exp(lo + (hi - lo) * i as f64 / 63.0) as f32;
            assert_eq!(s.to_bits(), expected.to_bits(), "entry {i}");
        }
        assert_eq!(SCALES[0], SCALE_MIN);
        assert_eq!(SCALES[NUM_SCALES - 1], SCALE_MAX);
        assert!(SCALES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tail_multiplier_value() {
        assert!((tail_multiplier() - 6.109_410_204_869).abs() < 1e-9);
    }

    #[test]
    fn gaussian_table_shapes() {
        let tables = gaussian_tables(&scale_table()).unwrap();
        assert_eq!(tables.len(), NUM_SCALES);
        assert_eq!(tables[0].support(), -1..=1);
        assert_eq!(tables[NUM_SCALES - 1].support(), -1565..=1565);
        for t in &tables {
            assert_eq!(t.validate(), Ok(()));
            let pmf = t.pmf();
            let n = pmf.len() - 1;
            // Symmetric and unimodal, up to the one unit that breaks a tie between mirror bins.
            for k in 0..n / 2 {
                assert!(pmf[k].abs_diff(pmf[n - 1 - k]) <= 1, "{k}");
                assert!(pmf[k] <= pmf[k + 1] + 1, "{k}");
            }
        }
        assert!(matches!(
            gaussian_tables(&[1.0, 0.0]),
            Err(TableError::InvalidScale { index: 1, .. })
        ));
        assert!(gaussian_tables(&[f32::NAN]).is_err());
        assert!(matches!(
            gaussian_tables(&[1e6]),
            Err(TableError::TooLong { .. })
        ));
    }
}
