//! Image quality measures used to report results: PSNR and MS-SSIM on 8-bit RGB.

use image::RgbImage;
use ocular_models::imaging::{mse, rgb_to_tensor};

/// Measured quality of a decoded image against its source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    /// RGB PSNR in dB (peak 255).
    pub psnr: f64,
    /// MS-SSIM in 0..1, `None` if a side is below 161 px (the 5-scale window does not fit).
    pub ms_ssim: Option<f64>,
}

impl Quality {
    /// MS-SSIM in dB, `-10 log10(1 - MS-SSIM)`.
    pub fn ms_ssim_db(&self) -> Option<f64> {
        self.ms_ssim.map(ocular_models::msssim::ms_ssim_db)
    }
}

/// Compares `decoded` with `original` (same size).
///
/// # Panics
/// If the sizes differ.
pub fn measure(original: &RgbImage, decoded: &RgbImage) -> Quality {
    assert_eq!(
        original.dimensions(),
        decoded.dimensions(),
        "images to compare must have the same size"
    );
    let a = rgb_to_tensor(original);
    let b = rgb_to_tensor(decoded);
    let psnr = ocular_models::losses::psnr(mse(&a, &b));
    let ms_ssim = tch::no_grad(|| ocular_models::msssim::ms_ssim(&a, &b, 1.0))
        .ok()
        .map(|t| t.double_value(&[0]));
    Quality { psnr, ms_ssim }
}
