//! Synthetic latent-`y`-like data for the entropy tests and benches (included with `#[path]`,
//! not a test target of its own).
//!
//! A trained mean-scale hyperprior at about 0.5 bpp spends most of `y` on channels it has
//! switched off (predicted scale near the minimum) and the rest on Gaussians with scales of
//! order one. We model the predicted scale `s` as a mixture:
//! - with probability 0.7, `ln s ~ N(ln 0.15, 0.3^2)` (switched-off channels);
//! - otherwise `ln s ~ N(ln 1.0, 1.0^2)`;
//!
//! then pick the table with `scale_index(s)` and draw the symbol as `round(N(0, s^2))`, so the
//! data follow the predicted Gaussian while the table is the next wider one, as in the codec.
//! This averages about 0.7 bits per symbol (the real codec: ~0.5 bpp over 1/256 as many
//! symbols of 192 channels as pixels, i.e. 0.67 bits per symbol).

#![allow(dead_code)]

/// SplitMix64: a tiny deterministic generator, stable across crate versions.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_14EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `n` y-like symbols and their table indices into `gaussian_tables(&scale_table())`.
pub fn y_like(n: usize, seed: u64) -> (Vec<i32>, Vec<u16>) {
    let mut rng = SplitMix64(seed);
    let mut symbols = Vec::with_capacity(n);
    let mut indices = Vec::with_capacity(n);
    for _ in 0..n {
        let ln_s = if rng.next_f64() < 0.7 {
            0.15f64.ln() + 0.3 * rng.normal()
        } else {
            1.0 * rng.normal()
        };
        let s = ln_s.exp();
        indices.push(u16::from(ocular_entropy::scale_index(s as f32)));
        symbols.push((s * rng.normal()).round() as i32);
    }
    (symbols, indices)
}
