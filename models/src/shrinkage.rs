//! Reconstructing `y` nearer its predicted mean: the decoder's estimate of a latent from the
//! integer it received.
//!
//! # The estimate
//!
//! The encoder sends `k = round(u)`, `u = (y - μ) / Δ`, coded with the Gaussian prior
//! `u ~ N(0, s²)`, `s = σ / Δ` the scale of `k`'s table. The plain decoder puts `u` at the
//! centre of its bin, `k`. Given `k`, the prior's mean of `u` lies nearer 0, because the density
//! falls off across the bin:
//!
//! ```text
//! E[u | k] = sign(k) s (φ(a) - φ(b)) / (Φ(b) - Φ(a)),   a = (|k| - 1/2) / s,  b = (|k| + 1/2) / s
//! offset(k, s) = |k| - |E[u | k]|                         in [0, 1/2]; 0 for k = 0
//! ```
//!
//! (`φ`, `Φ`: the standard normal density and distribution; as `s -> 0` the offset tends to
//! 1/2, the inner edge of the bin). With a file's [`Shrinkage`] `w` the decoder reconstructs
//!
//! ```text
//! y_hat = μ + Δ sign(k) (|k| - w offset(|k|, s))
//! ```
//!
//! `w = 0` is the plain decoder, `w = 1` the posterior mean under the model's prior. The prior
//! is the model's, not the truth (`g_a`'s latents are not exactly Gaussian around `μ`), and
//! `g_s` was trained on bin centres, so the best `w` lies between: the encoder chooses it and
//! writes it in the file (docs/bitstream.md); the rate does not change, only the distortion.
//!
//! # Determinism
//!
//! Only `g_s` reads `y_hat`; no probability table depends on it, so these offsets may use the
//! platform's `exp` and `erfc` like the rest of `g_s` (docs/architecture.md). They are
//! computed once, for every scale of [`ocular_entropy::scale_table`] and `|k| <=`
//! [`TABULATED`], and on the fly beyond (rare: `|k|` that large is far in the tails).

use std::sync::OnceLock;

pub use ocular_entropy::Shrinkage;
use ocular_entropy::{scale_table, NUM_SCALES};

/// Magnitudes `|k|` whose offsets are tabulated.
pub const TABULATED: usize = 32;

/// The shrinkage an encoder writes for a variable-rate PSNR (`mse`) network at `quality`:
///
/// ```text
/// w(q) = 0.35                      q <= 4
///        0.35 (6.5 - q) / 2.5      4 < q < 6.5
///        none                      q >= 6.5
/// ```
///
/// Tuned on six training images (`../shared/data/train`) with the `mse-vr` of 2026-12-07 at
/// qualities 0, 2, 4 and 7 and `w` in {0, 0.2, 0.35, 0.5, 0.7}: the best `w` was 0.2–0.35 at
/// qualities 0–4 (+0.04 to +0.08 dB PSNR at the same bits), and at quality 7 every `w` cost
/// (-0.01 dB at 0.2); docs/results.md. Networks trained for other distortions get none (not
/// tuned).
#[must_use]
pub fn for_mse(quality: f32) -> Option<Shrinkage> {
    const W: f32 = 0.35;
    let w = if quality <= 4.0 {
        W
    } else {
        W * (6.5 - quality) / 2.5
    };
    (w > 0.0).then(|| Shrinkage::new(w.min(W))).flatten()
}

/// `y_hat = mean + Δ sign(k) (|k| - w offset(|k|, s))` for the symbol `k` of table `index`
/// (module docs); `mean + Δ k` for `w = 0` or `k = 0`, to the bit.
#[must_use]
pub fn reconstruct(k: i32, mean: f32, step: f32, index: u16, shrinkage: Shrinkage) -> f32 {
    let w = shrinkage.get();
    if k == 0 || w == 0.0 {
        return k as f32 * step + mean;
    }
    let magnitude = k.unsigned_abs() as usize;
    let scale_index = usize::from(index).min(NUM_SCALES - 1);
    let offset = if magnitude <= TABULATED {
        offsets()[scale_index * TABULATED + magnitude - 1]
    } else {
        offset(magnitude as f64, f64::from(scale_table()[scale_index])) as f32
    };
    let value = magnitude as f32 - w * offset;
    value.copysign(k as f32) * step + mean
}

/// `offset(|k|, s)` for every table scale `s` and `|k|` in `1..=TABULATED`, scale-major.
fn offsets() -> &'static [f32] {
    static OFFSETS: OnceLock<Vec<f32>> = OnceLock::new();
    OFFSETS.get_or_init(|| {
        let mut table = Vec::with_capacity(NUM_SCALES * TABULATED);
        for s in scale_table() {
            table.extend((1..=TABULATED).map(|m| offset(m as f64, f64::from(s)) as f32));
        }
        table
    })
}

/// `|k| - E[|u| | k]` for `u ~ N(0, s²)` in the bin of `|k| >= 1` (module docs), in [0, 1/2].
///
/// With `x = u / s`, `r = φ(b) / φ(a) = exp(-(b² - a²) / 2)` and Mills's ratio
/// `R(x) = (1 - Φ(x)) / φ(x)`:
///
/// ```text
/// E[u | k] / s = (φ(a) - φ(b)) / (Φ(b) - Φ(a)) = (1 - r) / (R(a) - r R(b))
/// ```
///
/// which, unlike the densities and tails themselves, neither underflows nor cancels far in the
/// tails.
fn offset(magnitude: f64, s: f64) -> f64 {
    let (a, b) = ((magnitude - 0.5) / s, (magnitude + 0.5) / s);
    let r = (-0.5 * (b - a) * (b + a)).exp();
    let mean = s * (1.0 - r) / (mills(a) - r * mills(b));
    if mean.is_finite() {
        (magnitude - mean).clamp(0.0, 0.5)
    } else {
        0.5
    }
}

/// Mills's ratio `(1 - Φ(x)) / φ(x)` for `x >= 0`: from `erfc` up to 8, beyond from its
/// asymptotic series (`1/x - 1/x³ + 3/x⁵ - 15/x⁷`, relative error below 1e-7 there).
fn mills(x: f64) -> f64 {
    if x < 8.0 {
        let tail = 0.5 * libm::erfc(x / std::f64::consts::SQRT_2);
        tail * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp()
    } else {
        let x2 = x * x;
        (1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)) / x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_prior() {
        // A wide prior is flat across a bin: the centre is its mean.
        assert!(offset(1.0, 100.0) < 1e-3);
        // A narrow one puts the mean near the inner edge: at s (a + 1/a) for large a.
        assert!(
            (offset(1.0, 0.05) - 0.495).abs() < 1e-4,
            "{}",
            offset(1.0, 0.05)
        );
        assert!((offset(40.0, 0.2) - (0.5 - 0.2 * 0.2 / 39.5)).abs() < 1e-6);
        // Between, the offset grows as the prior narrows and shrinks with the magnitude.
        for m in 1..=TABULATED {
            let mut last = 0.0;
            for s in scale_table().iter().rev() {
                let o = offset(m as f64, f64::from(*s));
                assert!(
                    (0.0..=0.5).contains(&o) && o >= last - 1e-12,
                    "|k| {m}, s {s}: {o}"
                );
                last = o;
            }
        }
        // Against a midpoint-rule integral of the density over the bin.
        let (m, s) = (2.0f64, 1.3f64);
        let (mut weight, mut moment) = (0.0, 0.0);
        for i in 0..100_000 {
            let u = m - 0.5 + (f64::from(i) + 0.5) / 100_000.0;
            let p = (-0.5 * (u / s).powi(2)).exp();
            weight += p;
            moment += p * u;
        }
        assert!((offset(m, s) - (m - moment / weight)).abs() < 1e-6);
    }

    #[test]
    fn the_mse_rule_fades_out_at_high_rates() {
        assert_eq!(for_mse(-2.0).map(Shrinkage::get), Some(0.35));
        assert_eq!(for_mse(4.0).map(Shrinkage::get), Some(0.35));
        let mid = for_mse(5.25).map(Shrinkage::get).expect("some");
        assert!((mid - 0.175).abs() < 1e-6, "{mid}");
        assert_eq!(for_mse(6.5), None);
        assert_eq!(for_mse(12.0), None);
        assert_eq!(for_mse(f32::NAN), None);
    }

    #[test]
    fn no_shrinkage_is_the_bin_centre_to_the_bit() {
        for (k, mean, step, index) in [
            (3, 0.25f32, 0.7f32, 10u16),
            (-7, -1.5, 1.3, 63),
            (0, 2.0, 0.4, 0),
        ] {
            let plain = k as f32 * step + mean;
            assert_eq!(
                reconstruct(k, mean, step, index, Shrinkage::NONE).to_bits(),
                plain.to_bits()
            );
        }
        // Zero stays at the mean whatever the weight; others move toward it, symmetrically.
        let full = Shrinkage::new(1.0).expect("in range");
        assert_eq!(reconstruct(0, 0.5, 2.0, 5, full), 0.5);
        let up = reconstruct(2, 0.0, 1.0, 5, full);
        let down = reconstruct(-2, 0.0, 1.0, 5, full);
        assert!((1.5..2.0).contains(&up) && down == -up, "{up} {down}");
        // Beyond the table, the same formula.
        let far = reconstruct(100, 0.0, 1.0, 0, full);
        let s = f64::from(scale_table()[0]);
        assert!(
            (f64::from(far) - (99.5 + s * s / 99.5)).abs() < 1e-4,
            "{far}"
        );
    }
}
