//! Distortion measures the training objective can use: `loss = bpp + lambda * distortion`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::msssim::ms_ssim;
use crate::ModelError;

/// The distortion term of the training loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distortion {
    /// `255^2 * MSE` on 0..1 images (the scale of the published lambdas).
    Mse,
    /// `1 - MS-SSIM`; needs crops of at least [`crate::msssim::MIN_SIDE`] pixels.
    MsSsim,
}

impl Distortion {
    /// The distortion of `x_hat` against `x` (N, 3, H, W), averaged over the batch.
    ///
    /// # Errors
    /// [`ModelError::Shape`] if MS-SSIM cannot be computed at this size.
    pub fn compute(self, x: &Tensor, x_hat: &Tensor) -> Result<Tensor, ModelError> {
        match self {
            Distortion::Mse => Ok((x - x_hat).square().mean(Kind::Float) * (255.0 * 255.0)),
            Distortion::MsSsim => Ok(1.0 - ms_ssim(x, x_hat, 1.0)?.mean(Kind::Float)),
        }
    }
}

impl std::fmt::Display for Distortion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distortion::Mse => "mse",
            Distortion::MsSsim => "ms-ssim",
        })
    }
}

/// PSNR in dB of a mean squared error on 0..1 images.
pub fn psnr(mse: f64) -> f64 {
    -10.0 * mse.max(1e-12).log10()
}
