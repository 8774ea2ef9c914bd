//! Image quality measures used to report results: PSNR (pure Rust) and, with the `torch`
//! feature, MS-SSIM on 8-bit RGB.
//!
//! `PSNR = -10 log10(MSE)` of values in [0, 1] over all three channels, the MSE floored at
//! 1e-12 (identical images give 120 dB).

use image::RgbImage;

/// Measured quality of a decoded image against its source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    /// RGB PSNR in dB (peak 255).
    pub psnr: f64,
    /// MS-SSIM in 0..1, `None` if a side is below 161 px (the 5-scale window does not fit) or
    /// the crate is built without the `torch` feature.
    pub ms_ssim: Option<f64>,
}

impl Quality {
    /// MS-SSIM in dB, `-10 log10(1 - MS-SSIM)`.
    pub fn ms_ssim_db(&self) -> Option<f64> {
        self.ms_ssim.map(|m| -10.0 * (1.0 - m).max(1e-12).log10())
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
    Quality {
        psnr: psnr(original, decoded),
        ms_ssim: ms_ssim(original, decoded),
    }
}

/// RGB PSNR in dB (peak 255) of two images of the same size (module docs).
///
/// # Panics
/// If the sizes differ.
pub fn psnr(original: &RgbImage, decoded: &RgbImage) -> f64 {
    assert_eq!(original.dimensions(), decoded.dimensions(), "same size");
    let squared: f64 = original
        .as_raw()
        .iter()
        .zip(decoded.as_raw())
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let mse = squared / original.as_raw().len().max(1) as f64 / (255.0 * 255.0);
    -10.0 * mse.max(1e-12).log10()
}

#[cfg(feature = "torch")]
fn ms_ssim(original: &RgbImage, decoded: &RgbImage) -> Option<f64> {
    use ocular_models::imaging::rgb_to_tensor;
    let (a, b) = (rgb_to_tensor(original), rgb_to_tensor(decoded));
    tch::no_grad(|| ocular_models::msssim::ms_ssim(&a, &b, 1.0))
        .ok()
        .map(|t| t.double_value(&[0]))
}

#[cfg(not(feature = "torch"))]
fn ms_ssim(_original: &RgbImage, _decoded: &RgbImage) -> Option<f64> {
    None
}
