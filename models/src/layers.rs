//! Network layers: convolutions with an optional bf16 compute path, and GDN.
//!
//! Every layer owns its variables in a [`tch::nn::Path`], so the variable names follow the usual
//! PyTorch `state_dict` keys (`g_a.0.weight`, `g_a.1.beta`, ...).

use std::borrow::Borrow;

use crate::ModelError;
use tch::{nn, Kind, Tensor};

/// Numeric type the convolutions compute in.
///
/// On CPUs with AVX-512 bf16 / AMX, bf16 convolutions train about 1.8x faster (DESIGN.md). Inputs and
/// weights are cast to bf16 inside the layer and the result back to f32, so everything around the
/// convolutions (GDN, entropy models, losses) stays f32. Coding always runs in f32: the rate a model
/// is trained for does not depend on this switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputePrecision {
    /// Plain f32 everywhere.
    #[default]
    F32,
    /// Convolutions in bf16, accumulated and returned as f32.
    Bf16,
    /// Convolutions under libtorch's CPU autocast to bf16 (its kernels and casts), returned as
    /// f32 ([`crate::autocast`]).
    Autocast,
}

/// A 2-d convolution or transposed convolution with "same"-style padding.
///
/// A stride-`s` convolution maps a side of `n` pixels to `ceil(n / s)`; the transposed version maps
/// `n` to `s * n`.
#[derive(Debug)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
    transposed: bool,
}

impl Conv {
    /// A `kernel x kernel` convolution from `in_channels` to `out_channels` with the given stride.
    pub fn new(
        path: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
    ) -> Self {
        let config = nn::ConvConfig {
            stride,
            padding: kernel / 2,
            ..Default::default()
        };
        let conv = nn::conv2d(path, in_channels, out_channels, kernel, config);
        Self {
            weight: conv.ws,
            bias: conv.bs.expect("conv2d creates a bias by default"),
            stride,
            padding: kernel / 2,
            transposed: false,
        }
    }

    /// A transposed convolution that upsamples by `stride`.
    pub fn transposed(
        path: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
    ) -> Self {
        let config = nn::ConvTransposeConfig {
            stride,
            padding: kernel / 2,
            output_padding: stride - 1,
            ..Default::default()
        };
        let conv = nn::conv_transpose2d(path, in_channels, out_channels, kernel, config);
        Self {
            weight: conv.ws,
            bias: conv.bs.expect("conv_transpose2d creates a bias by default"),
            stride,
            padding: kernel / 2,
            transposed: true,
        }
    }

    /// Applies the convolution to `x` (N, C, H, W).
    pub fn forward(&self, x: &Tensor, precision: ComputePrecision) -> Tensor {
        match precision {
            ComputePrecision::F32 => self.apply(x, &self.weight, &self.bias),
            ComputePrecision::Bf16 => {
                let x = x.to_kind(Kind::BFloat16);
                let weight = self.weight.to_kind(Kind::BFloat16);
                let bias = self.bias.to_kind(Kind::BFloat16);
                self.apply(&x, &weight, &bias).to_kind(Kind::Float)
            }
            ComputePrecision::Autocast => {
                let _autocast = crate::autocast::CpuAutocast::enable();
                self.apply(x, &self.weight, &self.bias).to_kind(Kind::Float)
            }
        }
    }

    /// The layer as the coder's reproducible hyper-synthesis runs it (f32 weights), with a
    /// ReLU after it if `relu`.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] for a layer the reproducible path does not support (padding
    /// other than `kernel / 2`, non-square or even kernels).
    pub fn coding_layer(&self, relu: bool) -> Result<ocular_entropy::ConvLayer, ModelError> {
        let invalid = |m: String| ModelError::InvalidModel(format!("hyper-synthesis layer: {m}"));
        let size = self.weight.size();
        let [a, b, k, k2] = size[..] else {
            return Err(invalid(format!("weight of shape {size:?}")));
        };
        if k != k2 || self.padding != k / 2 {
            return Err(invalid(format!(
                "weight of shape {size:?} with padding {}",
                self.padding
            )));
        }
        let (in_channels, out_channels) = if self.transposed { (a, b) } else { (b, a) };
        let to_usize = |v: i64| usize::try_from(v).map_err(|_| invalid(format!("size {v}")));
        let shape = ocular_entropy::ConvShape {
            kind: if self.transposed {
                ocular_entropy::ConvKind::Transposed
            } else {
                ocular_entropy::ConvKind::Regular
            },
            in_channels: to_usize(in_channels)?,
            out_channels: to_usize(out_channels)?,
            kernel: to_usize(k)?,
            stride: to_usize(self.stride)?,
            relu,
        };
        let values = |t: &Tensor| -> Result<Vec<f32>, ModelError> {
            Ok(Vec::<f32>::try_from(
                t.detach().to_kind(Kind::Float).contiguous().flatten(0, -1),
            )?)
        };
        ocular_entropy::ConvLayer::from_torch_layout(
            shape,
            &values(&self.weight)?,
            &values(&self.bias)?,
        )
        .map_err(|e| invalid(e.to_string()))
    }

    fn apply(&self, x: &Tensor, weight: &Tensor, bias: impl Borrow<Tensor>) -> Tensor {
        let (s, p) = (self.stride, self.padding);
        if self.transposed {
            x.conv_transpose2d(
                weight,
                Some(bias),
                [s, s],
                [p, p],
                [s - 1, s - 1],
                1,
                [1, 1],
            )
        } else {
            x.conv2d(weight, Some(bias), [s, s], [p, p], [1, 1], 1)
        }
    }
}

/// Keeps a trainable parameter non-negative (Ballé et al. 2016, appendix).
///
/// The variable stores `v = sqrt(max(p, minimum) + pedestal)` and the layer uses
/// `p = max(v, bound)^2 - pedestal` with `bound = sqrt(minimum + pedestal)` and `pedestal = 2^-36`.
/// Optimising `v` instead of `p` keeps gradients well scaled near zero. The bound passes gradients
/// through unchanged (straight-through) so a variable that hits it can come back.
#[derive(Debug)]
struct NonNegative {
    variable: Tensor,
    bound: f64,
}

const PEDESTAL: f64 = 1.0 / (1u64 << 36) as f64;

impl NonNegative {
    fn new(path: &nn::Path, name: &str, initial: &Tensor, minimum: f64) -> Self {
        let stored = (initial.clamp_min(minimum) + PEDESTAL).sqrt();
        let variable = path.var_copy(name, &stored);
        Self {
            variable,
            bound: (minimum + PEDESTAL).sqrt(),
        }
    }

    fn value(&self) -> Tensor {
        let v = &self.variable;
        let bounded = v + (v.clamp_min(self.bound) - v).detach();
        bounded.square() - PEDESTAL
    }
}

/// Generalized divisive normalization (Ballé, Laparra, Simoncelli 2016).
///
/// `y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`; the inverse (used in the synthesis transform)
/// multiplies instead: `y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)`. The sum is a 1x1 convolution
/// of `x^2` with `gamma` as its weight. `beta >= 1e-6` and `gamma >= 0` through [`NonNegative`].
#[derive(Debug)]
pub struct Gdn {
    beta: NonNegative,
    gamma: NonNegative,
    inverse: bool,
}

impl Gdn {
    /// GDN over `channels` channels (`inverse` for IGDN). Initialised to `beta = 1`, `gamma = 0.1 I`.
    pub fn new(path: nn::Path, channels: i64, inverse: bool) -> Self {
        let beta = Tensor::ones([channels], (Kind::Float, path.device()));
        let gamma = Tensor::eye(channels, (Kind::Float, path.device())) * 0.1;
        Self {
            beta: NonNegative::new(&path, "beta", &beta, 1e-6),
            gamma: NonNegative::new(&path, "gamma", &gamma, 0.0),
            inverse,
        }
    }

    /// Applies GDN (or IGDN) to `x` (N, C, H, W).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let channels = x.size()[1];
        let beta = self.beta.value();
        let gamma = self.gamma.value().view([channels, channels, 1, 1]);
        let norm = x
            .square()
            .conv2d(&gamma, Some(&beta), [1, 1], [0, 0], [1, 1], 1)
            .sqrt();
        if self.inverse {
            x * norm
        } else {
            x / norm
        }
    }
}

/// A per-channel affine map that moves with the observer mix `alpha` (FiLM, Perez et al. 2018,
/// made linear in `alpha`):
///
/// ```text
/// x_c  ->  x_c · (1 + alpha · u_c) + alpha · v_c
/// ```
///
/// `u` and `v` (variables `scale` and `shift`) start at zero, so a network that gains the layer
/// starts as the network it was, and at `alpha = 0` the layer is the identity whatever it has
/// learnt: the mix's person end is the shared network itself (the other layers absorb any affine
/// map of their own there).
#[derive(Debug)]
pub struct AlphaAffine {
    scale: Tensor,
    shift: Tensor,
}

impl AlphaAffine {
    /// The layer over `channels` channels, at identity.
    pub fn new(path: nn::Path, channels: i64) -> Self {
        Self {
            scale: path.zeros("scale", &[channels]),
            shift: path.zeros("shift", &[channels]),
        }
    }

    /// Applies the map at `alpha` to `x` (N, C, H, W).
    pub fn forward(&self, x: &Tensor, alpha: f64) -> Tensor {
        if alpha == 0.0 {
            return x.shallow_clone();
        }
        let channels = self.scale.size()[0];
        let scale = (&self.scale * alpha + 1.0).view([1, channels, 1, 1]);
        let shift = (&self.shift * alpha).view([1, channels, 1, 1]);
        x * scale + shift
    }
}

/// A per-channel gain on the latent `y` that moves with the observer mix `alpha` (the gain units
/// of Cui et al., CVPR 2021, interpolated in `alpha` instead of the rate): the analysis ends in
/// `y_c · exp(alpha · g_c)` and the synthesis starts with `y_hat_c · exp(-alpha · g_c)`, so each
/// mix spends its bits over the channels in its own proportions (a channel with `g_c > 0` is
/// quantised finer). `g` (variable `log_gain`) starts at zero: no gain.
#[derive(Debug)]
pub struct AlphaGain {
    log_gain: Tensor,
}

impl AlphaGain {
    /// The gain over `channels` channels, at 1.
    pub fn new(path: nn::Path, channels: i64) -> Self {
        Self {
            log_gain: path.zeros("log_gain", &[channels]),
        }
    }

    /// `y · exp(sign · alpha · g)` for `y` (N, C, H, W): `sign` 1 in the analysis, -1 in the
    /// synthesis.
    pub fn forward(&self, y: &Tensor, alpha: f64, sign: f64) -> Tensor {
        if alpha == 0.0 {
            return y.shallow_clone();
        }
        let channels = self.log_gain.size()[0];
        y * (&self.log_gain * (sign * alpha))
            .exp()
            .view([1, channels, 1, 1])
    }
}
