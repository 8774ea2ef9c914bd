//! Variable rate: one network for a continuous range of rates.
//!
//! A variable-rate model quantises `y` on a grid of step `Δ` ([`QuantizationStep`]; QVRF, Tong
//! et al. 2023; the "vbr" models of CompressAI, Kamisli et al. 2024) and is trained with a
//! rate-dependent trade-off, so a single set of weights serves every rate of its range. Rates
//! are named by a continuous *quality* `q` (higher: more bits), anchored to the lambdas of
//! Ballé et al.'s hyperprior models (qualities 1..8 there are `q` = 3..10 here):
//!
//! ```text
//! lambda(q) = lambda_ref · 2^(q - Q_REF)          Q_REF = 5
//! Δ(q)      = sqrt(lambda_ref / lambda(q)) = 2^((Q_REF - q) / 2)
//! ```
//!
//! `lambda_ref` is the model's `lambda` (0.0067 for the PSNR network: `q` = 5 codes at about
//! 0.4 bpp on Kodak, as the fixed-rate `mse-q3` did). The step follows from the rate-distortion
//! slope of a uniform quantiser at high rate: the squared error grows as `Δ²`, the rate falls
//! as `-log2 Δ`, so the lambda at which a step is optimal scales as `1 / Δ²`.
//!
//! # Training
//!
//! Each step draws `q` uniformly from the model's range and minimises
//!
//! ```text
//! Δ(q) · (R + lambda(q) · D)
//! ```
//!
//! The factor `Δ` evens out the size of the loss across the range (at `q` = 10 the bracket is
//! about 30 times larger than at `q` = 0; `Δ` is about 32 times smaller), so Adam serves every
//! rate rather than the highest.
//!
//! The file carries `Δ` itself (as `f32` bits), never `q`: decoding needs no float function of
//! the quality, so nothing but the division of [`QuantizationStep::table_index`] selects a
//! table.

use ocular_entropy::QuantizationStep;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The quality whose step is 1 (where `lambda` = the model's reference lambda).
pub const REFERENCE_QUALITY: f32 = 5.0;

/// The range of qualities a variable-rate model was trained for (stored in its model file).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityRange {
    /// Lowest quality (fewest bits).
    pub min: f32,
    /// Highest quality.
    pub max: f32,
}

impl QualityRange {
    /// The range the shipped variable-rate networks train over: about 0.05 to 1.6 bpp on Kodak.
    pub const DEFAULT: Self = Self {
        min: 0.0,
        max: 10.0,
    };

    /// A validated range.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] unless `min < max` and both steps are valid
    /// ([`QuantizationStep::new`]).
    pub fn new(min: f32, max: f32) -> Result<Self, ModelError> {
        let range = Self { min, max };
        let valid = min < max && range.step_checked(min).is_ok() && range.step_checked(max).is_ok();
        if valid {
            Ok(range)
        } else {
            Err(ModelError::InvalidModel(format!(
                "quality range {min}..{max} is empty or outside the steps a file can carry"
            )))
        }
    }

    /// Whether `quality` is inside the range.
    pub fn contains(&self, quality: f32) -> bool {
        (self.min..=self.max).contains(&quality)
    }

    /// The step of `quality`, which must be inside the range.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] for a quality outside the range (or NaN).
    pub fn step(&self, quality: f32) -> Result<QuantizationStep, ModelError> {
        if !self.contains(quality) {
            return Err(ModelError::InvalidModel(format!(
                "quality {quality} is outside this model's range {}..{}",
                self.min, self.max
            )));
        }
        self.step_checked(quality)
    }

    fn step_checked(&self, quality: f32) -> Result<QuantizationStep, ModelError> {
        QuantizationStep::new(step_value(quality))
            .map_err(|e| ModelError::InvalidModel(e.to_string()))
    }
}

/// `Δ(q) = 2^((Q_REF - q) / 2)` as an `f32` (module docs). The encoder computes it once and
/// stores the bits; no decoder ever evaluates it.
pub fn step_value(quality: f32) -> f32 {
    2f64.powf(f64::from(REFERENCE_QUALITY - quality) / 2.0) as f32
}

/// `lambda(q) = lambda_ref · 2^(q - Q_REF)`.
pub fn lambda_at(reference_lambda: f64, quality: f32) -> f64 {
    reference_lambda * 2f64.powf(f64::from(quality - REFERENCE_QUALITY))
}

/// The quality of a step: the inverse of [`step_value`] (for reporting what a file holds).
pub fn quality_of_step(step: QuantizationStep) -> f32 {
    (f64::from(REFERENCE_QUALITY) - 2.0 * f64::from(step.get()).log2()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_quality_is_the_unit_step_and_lambda() {
        assert_eq!(step_value(REFERENCE_QUALITY), 1.0);
        assert_eq!(lambda_at(0.0067, REFERENCE_QUALITY), 0.0067);
    }

    #[test]
    fn steps_and_lambdas_follow_the_quality() {
        for q in [0.0f32, 1.5, 5.0, 7.25, 10.0] {
            let step = QualityRange::DEFAULT.step(q).expect("inside");
            assert!((quality_of_step(step) - q).abs() < 1e-5, "{q}");
            // lambda · Δ² is the reference lambda at every quality.
            let product = lambda_at(0.0067, q) * f64::from(step.get()).powi(2);
            assert!((product / 0.0067 - 1.0).abs() < 1e-6, "{q}: {product}");
        }
        assert!(step_value(2.0) > step_value(3.0));
    }

    #[test]
    fn qualities_outside_the_range_are_errors() {
        let range = QualityRange::DEFAULT;
        for q in [-0.1, 10.1, f32::NAN] {
            assert!(range.step(q).is_err(), "{q}");
        }
        assert!(QualityRange::new(3.0, 3.0).is_err());
        assert!(QualityRange::new(-10.0, 2.0).is_err());
        assert!(QualityRange::new(0.0, 10.0).is_ok());
    }
}
