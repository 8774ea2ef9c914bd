//! Generalized divisive normalization and its inverse, per pixel of a channels-last row.
//!
//! ```text
//! GDN:  out_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
//! IGDN: out_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)
//! ```
//!
//! The sum is a product of the row's squares (`pixels x C`) with `gamma^T` (`C x C`), exactly the
//! 1x1 convolution [`crate::layers::Gdn`] runs. The model file stores the reparametrised
//! variables `v` of [`crate::layers`]' `NonNegative`; the effective parameters are
//! `p = (v + (max(v, bound) - v))^2 - 2^-36` with `bound = sqrt(minimum + 2^-36)` (`minimum` 1e-6
//! for `beta`, 0 for `gamma`), evaluated in `f32` in the same order as libtorch's forward pass.

use super::matmul::{add_product, Layout};

/// `2^-36`, the pedestal of the reparametrisation.
const PEDESTAL: f64 = 1.0 / (1u64 << 36) as f64;

/// The effective value of a stored reparametrised variable (module docs).
fn effective(stored: f32, minimum: f64) -> f32 {
    let bound = (minimum + PEDESTAL).sqrt() as f32;
    let bounded = stored + (stored.max(bound) - stored);
    bounded * bounded - PEDESTAL as f32
}

/// GDN or inverse GDN over `channels` channels.
#[derive(Clone, Debug)]
pub struct Gdn {
    channels: usize,
    beta: Vec<f32>,
    /// `gamma^T`: `[j][i] = gamma_ij`.
    gamma_t: Vec<f32>,
    inverse: bool,
}

impl Gdn {
    /// From the stored (reparametrised) `beta` (`C`) and `gamma` (`C x C`, `[i][j]`).
    ///
    /// # Panics
    /// If the lengths do not fit one channel count (the loader checks them first).
    pub(crate) fn from_stored(beta: &[f32], gamma: &[f32], inverse: bool) -> Self {
        let channels = beta.len();
        assert_eq!(
            gamma.len(),
            channels * channels,
            "gamma of {channels} channels"
        );
        let mut gamma_t = vec![0.0f32; gamma.len()];
        for i in 0..channels {
            for j in 0..channels {
                gamma_t[j * channels + i] = effective(gamma[i * channels + j], 0.0);
            }
        }
        Self {
            channels,
            beta: beta.iter().map(|&b| effective(b, 1e-6)).collect(),
            gamma_t,
            inverse,
        }
    }

    /// Normalises every pixel of a channels-last `row` in place; `scratch` is reused memory.
    ///
    /// # Panics
    /// If `row` is not a whole number of pixels.
    pub(crate) fn apply(&self, row: &mut [f32], scratch: &mut Vec<f32>) {
        let c = self.channels;
        assert_eq!(row.len() % c, 0, "a row of whole pixels");
        let pixels = row.len() / c;
        scratch.clear();
        scratch.extend(row.iter().map(|&x| x * x));
        for _ in 0..pixels {
            scratch.extend_from_slice(&self.beta);
        }
        let (squares, norm) = scratch.split_at_mut(row.len());
        add_product(
            (norm, Layout::dense(pixels, c)),
            (squares, Layout::dense(pixels, c)),
            (&self.gamma_t, Layout::dense(c, c)),
        );
        if self.inverse {
            for (x, n) in row.iter_mut().zip(norm.iter()) {
                *x *= n.sqrt();
            }
        } else {
            for (x, n) in row.iter_mut().zip(norm.iter()) {
                *x /= n.sqrt();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition() {
        let c = 3;
        let beta = [1.1f32, 0.9, 1.0];
        let gamma: Vec<f32> = (0..c * c).map(|i| 0.1 + 0.05 * i as f32).collect();
        let row: Vec<f32> = (0..2 * c).map(|i| i as f32 * 0.7 - 1.5).collect();
        for inverse in [false, true] {
            let gdn = Gdn::from_stored(&beta, &gamma, inverse);
            let mut out = row.clone();
            gdn.apply(&mut out, &mut Vec::new());
            for p in 0..2 {
                for i in 0..c {
                    let p_of = |v: f32| f64::from(v) * f64::from(v) - PEDESTAL;
                    let norm = p_of(beta[i])
                        + (0..c)
                            .map(|j| p_of(gamma[i * c + j]) * f64::from(row[p * c + j]).powi(2))
                            .sum::<f64>();
                    let x = f64::from(row[p * c + i]);
                    let expected = if inverse {
                        x * norm.sqrt()
                    } else {
                        x / norm.sqrt()
                    };
                    let got = f64::from(out[p * c + i]);
                    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
                }
            }
        }
    }

    #[test]
    fn the_bound_holds_small_variables() {
        // A stored beta below its bound acts as the bound: p = 1e-6.
        let p = effective(0.0, 1e-6);
        assert!((p - 1e-6).abs() < 1e-9, "{p}");
        assert!(effective(-0.5, 0.0).abs() < 1e-9);
    }
}
