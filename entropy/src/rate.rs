//! The quantisation step of a variable-rate model, and how it scales the predicted scales.
//!
//! A variable-rate model (QVRF, Tong et al. 2023; CompressAI's "vbr" models, Kamisli et al.
//! 2024) codes `y` on a grid of step `Δ` instead of the unit grid:
//!
//! ```text
//! symbol = round((y - μ) / Δ)        y_hat = symbol · Δ + μ
//! P(symbol) = N(0, (σ / Δ)²) integrated over [symbol - 1/2, symbol + 1/2]
//! ```
//!
//! so the same 64 integer Gaussian tables serve every rate: the table of an element is
//! `scale_index(σ / Δ)`. A larger `Δ` spends fewer bits (coarser grid), a smaller one more.
//! `Δ = 1` is the fixed-rate codec exactly (`σ / 1.0 == σ` in IEEE 754), so files of
//! fixed-rate models decode as before.
//!
//! # Reproducibility
//!
//! `Δ` travels in the file as the bits of an `f32`, and the division `σ / Δ` is one correctly
//! rounded IEEE 754 operation, so the encoder and every decoder derive the same table index
//! from the same `σ` (itself reproducible, see [`crate::HyperSynthesis`]). Nothing here may use
//! a fused multiply-add, a reciprocal approximation or any run-time-selected kernel.

use thiserror::Error;

use crate::gaussian::scale_index;

/// A quantisation step outside [`QuantizationStep::MIN`]..=[`QuantizationStep::MAX`] (or not
/// a number).
#[derive(Debug, Error, Clone, Copy, PartialEq)]
#[error("quantisation step {0} is outside {min}..={max}", min = QuantizationStep::MIN, max = QuantizationStep::MAX)]
pub struct StepError(pub f32);

/// The step `Δ` of the grid `y` is coded on (module docs).
///
/// Invariant: finite and within [`Self::MIN`]..=[`Self::MAX`], so `σ / Δ` never overflows to a
/// NaN and a hostile file cannot ask for a degenerate grid.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, serde::Serialize)]
#[serde(transparent)]
pub struct QuantizationStep(f32);

// Never NaN (nor a signed zero) by the invariant, so `==` is an equivalence relation.
impl Eq for QuantizationStep {}

impl QuantizationStep {
    /// The smallest step: 64 times finer than the unit grid.
    pub const MIN: f32 = 1.0 / 64.0;
    /// The largest step: 64 times coarser than the unit grid.
    pub const MAX: f32 = 64.0;
    /// The unit grid of fixed-rate models.
    pub const ONE: Self = Self(1.0);

    /// A validated step.
    ///
    /// # Errors
    /// [`StepError`] if `step` is NaN or outside [`Self::MIN`]..=[`Self::MAX`].
    pub fn new(step: f32) -> Result<Self, StepError> {
        if (Self::MIN..=Self::MAX).contains(&step) {
            Ok(Self(step))
        } else {
            Err(StepError(step))
        }
    }

    /// The step as an `f32` (what the file stores).
    #[must_use]
    pub fn get(self) -> f32 {
        self.0
    }

    /// The table index of an element whose predicted scale is `scale`: `scale_index(scale / Δ)`.
    #[inline]
    #[must_use]
    pub fn table_index(self, scale: f32) -> u8 {
        scale_index(scale / self.0)
    }
}

impl Default for QuantizationStep {
    fn default() -> Self {
        Self::ONE
    }
}

/// How far the decoder moves each non-zero latent from the centre of its bin toward the
/// prior's mean of the bin (`ocular_models::shrinkage`: `y_hat = μ + Δ sign(k) (|k| - w offset)`;
/// no probability table depends on it): a number in [0, 1]. Two are equal when their bits are.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Shrinkage(f32);

impl Shrinkage {
    /// The plain decoder: every latent at the centre of its bin.
    pub const NONE: Self = Self(0.0);

    /// `w` if it is in [0, 1].
    #[must_use]
    pub fn new(w: f32) -> Option<Self> {
        (0.0..=1.0).contains(&w).then_some(Self(w))
    }

    /// The weight `w`.
    #[must_use]
    pub fn get(self) -> f32 {
        self.0
    }
}

impl PartialEq for Shrinkage {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Shrinkage {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_outside_the_range_are_refused() {
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-3, 65.0] {
            assert_eq!(
                QuantizationStep::new(bad).map(|s| s.get()).ok(),
                None,
                "{bad}"
            );
        }
        for good in [QuantizationStep::MIN, 0.37, 1.0, QuantizationStep::MAX] {
            assert_eq!(QuantizationStep::new(good).map(|s| s.get()), Ok(good));
        }
    }

    #[test]
    fn unit_step_is_the_fixed_rate_mapping() {
        for i in 0..10_000 {
            let scale = i as f32 * 0.037;
            assert_eq!(QuantizationStep::ONE.table_index(scale), scale_index(scale));
        }
    }

    #[test]
    fn coarser_steps_pick_narrower_tables() {
        let fine = QuantizationStep::new(0.25).expect("step");
        let coarse = QuantizationStep::new(4.0).expect("step");
        for i in 1..1000 {
            let scale = i as f32 * 0.25;
            assert!(coarse.table_index(scale) <= QuantizationStep::ONE.table_index(scale));
            assert!(fine.table_index(scale) >= QuantizationStep::ONE.table_index(scale));
        }
    }

    #[test]
    fn shrinkage_is_a_weight_in_the_unit_interval() {
        assert!(Shrinkage::new(-0.1).is_none() && Shrinkage::new(1.5).is_none());
        assert!(Shrinkage::new(f32::NAN).is_none());
        assert_eq!(Shrinkage::new(0.35).map(Shrinkage::get), Some(0.35));
        assert_eq!(Shrinkage::NONE.get(), 0.0);
    }
}
