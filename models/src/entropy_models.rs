//! Entropy models: the learned factorized prior of `z` and the Gaussian conditional of `y`.
//!
//! Both give, at training time, differentiable likelihoods of noisy latents (rate = -log2 of their
//! product) and, at coding time, the integer tables of [`ocular_entropy`] that the range coder uses.

use ocular_entropy::CdfTable;
use tch::{nn, Kind, Tensor};

use crate::ModelError;

/// Smallest likelihood a latent element can get (bounds the rate of outliers at ~30 bits).
pub const LIKELIHOOD_BOUND: f64 = 1e-9;

/// Mass left outside the integer table of every `z` channel (split over both tails).
pub const TAIL_MASS: f64 = 1e-9;

/// Widest support a `z` table may get; wider densities are clipped and their tails escaped.
const MAX_Z_SUPPORT: i64 = 1 << 12;

/// Learned per-channel density of the hyper-latent `z` (Ballé et al. 2018, appendix 6.1).
///
/// For every channel `c` the cumulative density is a small monotone network
/// `F_c(x) = sigmoid(f_K o ... o f_1(x))`, with layers
/// `f_k(x) = h_k(softplus(H_k) x + b_k)` and `h_k(x) = x + tanh(a_k) tanh(x)` (the last layer without
/// `h_k`). Softplus keeps the matrices positive, `|tanh(a_k)| < 1` keeps `h_k` increasing, so `F_c` is
/// a valid CDF. The likelihood of a noisy sample is the mass of the unit bin around it:
/// `p(x) = F_c(x + 1/2) - F_c(x - 1/2)`, evaluated on the side of the median where the sigmoid is
/// not saturated (for precision).
///
/// `quantiles` holds, per channel, the points where `F_c` should be `TAIL_MASS / 2`, `1/2` and
/// `1 - TAIL_MASS / 2`; they are fitted by [`Self::aux_loss`] and bound the integer tables. The middle
/// one is the median, which coding subtracts before rounding: `z_hat = round(z - median) + median`.
#[derive(Debug)]
pub struct EntropyBottleneck {
    matrices: Vec<Tensor>,
    biases: Vec<Tensor>,
    factors: Vec<Tensor>,
    quantiles: Tensor,
    channels: i64,
}

impl EntropyBottleneck {
    const FILTERS: [i64; 3] = [3, 3, 3];
    const INIT_SCALE: f64 = 10.0;

    /// Creates the density for `channels` channels. `quantiles` go to optimiser group 1 (they are
    /// fitted by the auxiliary loss with their own learning rate).
    pub fn new(path: nn::Path, channels: i64) -> Self {
        let widths: Vec<i64> = [1].into_iter().chain(Self::FILTERS).chain([1]).collect();
        let layers = widths.len() - 1;
        let scale = Self::INIT_SCALE.powf(1.0 / layers as f64);
        let mut matrices = Vec::new();
        let mut biases = Vec::new();
        let mut factors = Vec::new();
        for k in 0..layers {
            let (fan_in, fan_out) = (widths[k], widths[k + 1]);
            // softplus(init) = 1 / scale / fan_out, so the initial density spreads over INIT_SCALE.
            let init = (1.0 / scale / fan_out as f64).exp_m1().ln();
            matrices.push(path.var(
                &format!("_matrix{k}"),
                &[channels, fan_out, fan_in],
                nn::Init::Const(init),
            ));
            biases.push(path.var(
                &format!("_bias{k}"),
                &[channels, fan_out, 1],
                nn::Init::Uniform { lo: -0.5, up: 0.5 },
            ));
            if k + 1 < layers {
                factors.push(path.zeros(&format!("_factor{k}"), &[channels, fan_out, 1]));
            }
        }
        let init = Tensor::from_slice(&[-Self::INIT_SCALE as f32, 0.0, Self::INIT_SCALE as f32])
            .view([1, 1, 3])
            .repeat([channels, 1, 1])
            .to_device(path.device());
        let quantiles = path.set_group(1).var_copy("quantiles", &init);
        Self {
            matrices,
            biases,
            factors,
            quantiles,
            channels,
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> i64 {
        self.channels
    }

    /// `logit(F_c(x))` for `x` of shape (C, 1, n). With `detach_network`, gradients reach only `x`
    /// (the auxiliary loss must move the quantiles, not the density).
    fn logits_cumulative(&self, x: &Tensor, detach_network: bool) -> Tensor {
        let param = |t: &Tensor| {
            if detach_network {
                t.detach()
            } else {
                t.shallow_clone()
            }
        };
        let mut logits = x.shallow_clone();
        for (k, matrix) in self.matrices.iter().enumerate() {
            logits = param(matrix).softplus().matmul(&logits) + param(&self.biases[k]);
            if let Some(factor) = self.factors.get(k) {
                logits = &logits + param(factor).tanh() * logits.tanh();
            }
        }
        logits
    }

    /// Per-channel medians (C,).
    pub fn medians(&self) -> Tensor {
        self.quantiles.select(2, 1).squeeze_dim(1).detach()
    }

    /// Likelihood of every element of `z` (N, C, H, W), same shape, bounded below by
    /// [`LIKELIHOOD_BOUND`].
    pub fn likelihood(&self, z: &Tensor) -> Tensor {
        let shape = z.size();
        // (N, C, H, W) -> (C, 1, N*H*W): each channel through its own network.
        let flat = z.transpose(0, 1).reshape([self.channels, 1, -1]);
        let lower = self.logits_cumulative(&(&flat - 0.5), false);
        let upper = self.logits_cumulative(&(&flat + 0.5), false);
        // Evaluate on the side of the median where sigmoid is far from 1 (more precision).
        let sign = -(&lower + &upper).sign().detach();
        let likelihood = ((&sign * &upper).sigmoid() - (&sign * &lower).sigmoid()).abs();
        let likelihood = likelihood.clamp_min(LIKELIHOOD_BOUND);
        likelihood
            .reshape([shape[1], shape[0], shape[2], shape[3]])
            .transpose(0, 1)
    }

    /// Adds uniform noise U(-1/2, 1/2) (training) or rounds around the median (evaluation).
    pub fn quantize(&self, z: &Tensor, training: bool) -> Tensor {
        if training {
            z + (z.rand_like() - 0.5)
        } else {
            let medians = self.medians().view([1, -1, 1, 1]);
            (z - &medians).round() + medians
        }
    }

    /// Auxiliary loss fitting the quantiles: `sum |logit F_c(q) - target|` with targets
    /// `logit(TAIL_MASS / 2)`, `0` and `logit(1 - TAIL_MASS / 2)`.
    pub fn aux_loss(&self) -> Tensor {
        let logits = self.logits_cumulative(&self.quantiles, true);
        let t = (2.0 / TAIL_MASS - 1.0).ln() as f32;
        let target = Tensor::from_slice(&[-t, 0.0, t])
            .to_device(logits.device())
            .view([1, 1, 3]);
        (logits - target).abs().sum(Kind::Float)
    }

    /// Integer tables for coding `round(z - median)`, one per channel.
    ///
    /// Channel `c` covers the integers `floor(q_low - m) ..= ceil(q_high - m)` (`m` the median,
    /// `q` the quantiles), each with the mass `F_c(m + k + 1/2) - F_c(m + k - 1/2)`; everything
    /// outside goes to the escape bin.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if the learned density is not finite.
    pub fn tables(&self) -> Result<Vec<CdfTable>, ModelError> {
        tch::no_grad(|| {
            let quantiles = Vec::<f32>::try_from(self.quantiles.flatten(0, -1))?;
            let mut ranges = Vec::with_capacity(self.channels as usize);
            for c in 0..self.channels as usize {
                let (low, median, high) =
                    (quantiles[3 * c], quantiles[3 * c + 1], quantiles[3 * c + 2]);
                if !(low.is_finite() && median.is_finite() && high.is_finite()) {
                    return Err(ModelError::InvalidModel(format!(
                        "entropy bottleneck quantiles of channel {c} are not finite"
                    )));
                }
                let start = ((low - median).floor() as i64).clamp(-MAX_Z_SUPPORT / 2, 0);
                let end = ((high - median).ceil() as i64).clamp(0, MAX_Z_SUPPORT / 2);
                ranges.push((start, end));
            }
            let longest = ranges.iter().map(|(s, e)| e - s + 1).max().unwrap_or(1);
            // Sample every channel on its own grid, padded to the longest: (C, 1, longest).
            let device = self.quantiles.device();
            let offsets: Vec<f32> = ranges.iter().map(|&(s, _)| s as f32).collect();
            let steps = Tensor::arange(longest, (Kind::Float, device)).view([1, 1, -1]);
            let grid = steps
                + Tensor::from_slice(&offsets)
                    .to_device(device)
                    .view([-1, 1, 1])
                + self.medians().view([-1, 1, 1]);
            let lower = self.logits_cumulative(&(&grid - 0.5), false);
            let upper = self.logits_cumulative(&(&grid + 0.5), false);
            let sign = -(&lower + &upper).sign();
            let pmf = ((&sign * &upper).sigmoid() - (&sign * &lower).sigmoid()).abs();
            let pmf = Vec::<f32>::try_from(pmf.flatten(0, -1))?;
            // Mass below the first and above the last bin of each channel.
            let below = Vec::<f32>::try_from(lower.select(2, 0).sigmoid().flatten(0, -1))?;
            let above = Vec::<f32>::try_from((-upper).sigmoid().flatten(0, -1))?;
            let mut tables = Vec::with_capacity(ranges.len());
            for (c, &(start, end)) in ranges.iter().enumerate() {
                let len = (end - start + 1) as usize;
                let row = &pmf[c * longest as usize..][..len];
                let probabilities: Vec<f64> = row.iter().map(|&p| f64::from(p)).collect();
                let tail = f64::from(below[c]) + f64::from(above[c * longest as usize + len - 1]);
                let table = CdfTable::from_probabilities(start as i32, &probabilities, tail)
                    .map_err(|e| {
                        ModelError::InvalidModel(format!("z table of channel {c}: {e}"))
                    })?;
                tables.push(table);
            }
            Ok(tables)
        })
    }
}

/// Standard normal CDF, `Phi(x) = erfc(-x / sqrt 2) / 2`.
fn standard_normal_cdf(x: &Tensor) -> Tensor {
    (x * -std::f64::consts::FRAC_1_SQRT_2).erfc() * 0.5
}

/// Smallest scale the Gaussian conditional uses (the first entry of the scale table).
pub const SCALE_BOUND: f64 = ocular_entropy::SCALE_MIN as f64;

/// Gaussian conditional of `y` given the hyperprior's mean and scale (Minnen et al. 2018).
///
/// With `v = y_tilde - mean`, the likelihood is the mass of a Gaussian of the given scale over
/// the unit bin around `v`, computed on the left tail for precision:
/// `p = Phi((1/2 - |v|) / s) - Phi((-1/2 - |v|) / s)`, `s = max(scale, SCALE_BOUND)`.
pub fn gaussian_likelihood(values: &Tensor, scales: &Tensor) -> Tensor {
    let scales = scales.clamp_min(SCALE_BOUND);
    let v = values.abs();
    let upper = standard_normal_cdf(&((0.5 - &v) / &scales));
    let lower = standard_normal_cdf(&((-0.5 - v) / &scales));
    (upper - lower).clamp_min(LIKELIHOOD_BOUND)
}
