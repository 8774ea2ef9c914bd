//! Multi-scale structural similarity (Wang, Simoncelli, Bovik 2003), differentiable.
//!
//! Matches the common reference (`pytorch-msssim`): 5 scales, an 11-tap Gaussian window with
//! sigma 1.5 applied separably without padding ("valid"), K1 = 0.01, K2 = 0.03, weights
//! (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales (padding odd
//! sides). For every channel and scale `j`,
//!
//! ```text
//! cs_j   = mean over the map of (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
//! ssim_j = mean over the map of (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) * that map
//! MS-SSIM = prod_{j<5} relu(cs_j)^w_j * relu(ssim_5)^w_5,   C1 = (K1 L)^2, C2 = (K2 L)^2
//! ```
//! averaged over channels; `L` is the data range.

use tch::{Kind, Tensor};

use crate::ModelError;

const WINDOW: i64 = 11;
const SIGMA: f64 = 1.5;
const WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const K1: f64 = 0.01;
const K2: f64 = 0.03;

/// Smallest image side MS-SSIM accepts: the window must fit after four 2x downsamplings,
/// so both sides must exceed `(11 - 1) * 2^4 = 160` pixels.
pub const MIN_SIDE: i64 = (WINDOW - 1) * 16 + 1;

/// Converts MS-SSIM to decibels, `-10 log10(1 - MS-SSIM)`, the usual way to plot it.
pub fn ms_ssim_db(ms_ssim: f64) -> f64 {
    -10.0 * (1.0 - ms_ssim).max(1e-12).log10()
}

/// The normalised 1-d Gaussian window, in the kind (f32, f64, ...) of the images it blurs.
fn gaussian_window(channels: i64, kind: Kind, device: tch::Device) -> Tensor {
    let coords = Tensor::arange(WINDOW, (Kind::Double, device)) - (WINDOW / 2) as f64;
    let g = (-coords.square() / (2.0 * SIGMA * SIGMA)).exp();
    let g = (&g / g.sum(Kind::Double)).to_kind(kind);
    // One window per channel, grouped convolution: (C, 1, 1, WINDOW).
    g.view([1, 1, 1, WINDOW]).repeat([channels, 1, 1, 1])
}

/// Separable Gaussian blur without padding.
fn blur(x: &Tensor, window: &Tensor) -> Tensor {
    let channels = x.size()[1];
    let no_bias: Option<Tensor> = None;
    let horizontal = x.conv2d(window, no_bias.as_ref(), [1, 1], [0, 0], [1, 1], channels);
    horizontal.conv2d(
        &window.transpose(2, 3),
        no_bias.as_ref(),
        [1, 1],
        [0, 0],
        [1, 1],
        channels,
    )
}

/// Per (batch, channel) SSIM and contrast-structure terms at one scale.
fn ssim_and_cs(x: &Tensor, y: &Tensor, window: &Tensor, data_range: f64) -> (Tensor, Tensor) {
    let c1 = (K1 * data_range).powi(2);
    let c2 = (K2 * data_range).powi(2);
    let mu_x = blur(x, window);
    let mu_y = blur(y, window);
    let mu_xx = mu_x.square();
    let mu_yy = mu_y.square();
    let mu_xy = &mu_x * &mu_y;
    let sigma_xx = blur(&x.square(), window) - &mu_xx;
    let sigma_yy = blur(&y.square(), window) - &mu_yy;
    let sigma_xy = blur(&(x * y), window) - &mu_xy;
    let cs_map = (sigma_xy * 2.0 + c2) / (sigma_xx + sigma_yy + c2);
    let ssim_map = (mu_xy * 2.0 + c1) / (mu_xx + mu_yy + c1) * &cs_map;
    let per_channel = |m: Tensor| m.flatten(2, -1).mean_dim(-1, false, m.kind());
    (per_channel(ssim_map), per_channel(cs_map))
}

/// MS-SSIM of every image of a batch: `x`, `y` of shape (N, C, H, W) with values in
/// `0..=data_range`; returns (N,).
///
/// # Errors
/// [`ModelError::Shape`] if the shapes differ or a side is shorter than [`MIN_SIDE`].
pub fn ms_ssim(x: &Tensor, y: &Tensor, data_range: f64) -> Result<Tensor, ModelError> {
    let shape = x.size();
    if shape != y.size() || shape.len() != 4 {
        return Err(ModelError::Shape(format!(
            "ms_ssim needs two equal 4-d shapes, got {shape:?} and {:?}",
            y.size()
        )));
    }
    if shape[2] < MIN_SIDE || shape[3] < MIN_SIDE {
        return Err(ModelError::Shape(format!(
            "MS-SSIM needs both sides >= {MIN_SIDE} pixels, got {}x{}",
            shape[3], shape[2]
        )));
    }
    let window = gaussian_window(shape[1], x.kind(), x.device());
    let (mut x, mut y) = (x.shallow_clone(), y.shallow_clone());
    let mut factors = Vec::with_capacity(WEIGHTS.len());
    for (level, &weight) in WEIGHTS.iter().enumerate() {
        let (ssim, cs) = ssim_and_cs(&x, &y, &window, data_range);
        if level + 1 == WEIGHTS.len() {
            factors.push(ssim.relu().pow_tensor_scalar(weight));
        } else {
            factors.push(cs.relu().pow_tensor_scalar(weight));
            let size = x.size();
            let padding = [size[2] % 2, size[3] % 2];
            x = x.avg_pool2d([2, 2], [2, 2], padding, false, true, None::<i64>);
            y = y.avg_pool2d([2, 2], [2, 2], padding, false, true, None::<i64>);
        }
    }
    let product = factors
        .into_iter()
        .reduce(|a, b| a * b)
        .expect("five levels");
    Ok(product.mean_dim(-1, false, product.kind()))
}
