//! The mean-scale hyperprior autoencoder (Ballé et al. 2018; Minnen et al. 2018).
//!
//! ```text
//! x --g_a--> y --h_a--> z --Q--> z_hat --h_s--> (mean, scale) of every element of y
//! y --Q around mean--> y_hat --g_s--> x_hat
//! ```
//! `z_hat` is coded with the learned factorized prior ([`EntropyBottleneck`]), `y_hat` with a
//! Gaussian of the predicted scale, as the integer `round((y - mean) / Δ)`.
//!
//! `Δ` is the quantisation step ([`QuantizationStep`]): 1 for a fixed-rate model; a
//! variable-rate model is trained over a range of steps, each with its own lambda
//! ([`crate::rate`]), so one network codes at every rate in that range: `y` is rounded on a
//! grid of step `Δ` around its mean, and its rate is that of the Gaussian of scale `σ / Δ` on
//! the unit grid, so the same integer tables serve every step.

use ocular_entropy::{CdfTable, QuantizationStep};
use tch::{nn, Kind, Tensor};

pub use crate::latents::{
    CompressedLatents, HyperpriorConfig, ModelTables, Y_DOWNSAMPLING, Z_DOWNSAMPLING,
};

use crate::entropy_models::{gaussian_likelihood, EntropyBottleneck};
use crate::layers::{AlphaAffine, AlphaGain, ComputePrecision, Conv, Gdn};
use crate::ModelError;

/// What the training-time forward pass returns.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Reconstruction (N, 3, H, W), not clamped.
    pub x_hat: Tensor,
    /// Likelihoods of the elements of `y` (noisy during training).
    pub y_likelihoods: Tensor,
    /// Likelihoods of the elements of `z`.
    pub z_likelihoods: Tensor,
}

impl ForwardOutput {
    /// Estimated rate in bits per pixel of an image of `pixels` pixels per batch element:
    /// `-sum(log2 p) / (N * pixels)`.
    pub fn bits_per_pixel(&self, pixels: i64) -> Tensor {
        let batch = self.x_hat.size()[0];
        let bits = -(self.y_likelihoods.log2().sum(Kind::Float)
            + self.z_likelihoods.log2().sum(Kind::Float));
        bits / (batch * pixels) as f64
    }
}

impl ModelTables {
    /// Validates the tables, prepares their coders and takes the reproducible hyper-synthesis
    /// from `network`'s current weights (so build these after the weights are final).
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if a table is broken or the counts do not fit the network.
    pub fn new(
        z: Vec<CdfTable>,
        y: Vec<CdfTable>,
        network: &MeanScaleHyperprior,
    ) -> Result<Self, ModelError> {
        let hyper_synthesis = network.coding_hyper_synthesis()?;
        Self::from_parts(z, y, network.config.n, hyper_synthesis)
    }
}

/// Mean-scale hyperprior autoencoder.
///
/// Variables are named as in CompressAI's `MeanScaleHyperprior` state dict (`g_a.0.weight`,
/// `g_a.1.beta`, `h_s.4.bias`, `entropy_bottleneck._matrix0`, ...).
#[derive(Debug)]
pub struct MeanScaleHyperprior {
    config: HyperpriorConfig,
    g_a: Vec<(Conv, Option<Gdn>)>,
    g_s: Vec<(Conv, Option<Gdn>)>,
    h_a: Vec<Conv>,
    h_s: Vec<Conv>,
    entropy_bottleneck: EntropyBottleneck,
    precision: ComputePrecision,
    /// The observer-mix conditioning, in a network trained for every mix.
    mix: Option<MixConditioning>,
}

/// What conditions a network on the observer mix `alpha` (docs/architecture.md): an
/// [`AlphaAffine`] after each GDN of `g_a` and each IGDN of `g_s`, and an [`AlphaGain`] on `y`.
/// At `alpha = 0` all of it is the identity. Variables under `alpha.`, named after the layer they
/// follow: `alpha.g_a.1.scale`, `alpha.g_s.5.shift`, `alpha.y.log_gain`.
#[derive(Debug)]
struct MixConditioning {
    g_a: Vec<AlphaAffine>,
    g_s: Vec<AlphaAffine>,
    y: AlphaGain,
}

/// Whether `name` is a variable of the observer-mix conditioning. A network without them is the
/// same network at `alpha = 0`, so a network for every mix can start from one: its own stay at
/// their initial identity.
pub(crate) fn is_mix_variable(name: &str) -> bool {
    name.starts_with("alpha.")
}

/// Where a variable of this network keeps its channels: the dimension that indexes the layer's
/// outputs (1 for the weight of a transposed convolution, stored `(in, out, kh, kw)`; 0 for
/// everything else), and whether those outputs are two halves of different meaning (the
/// hyper-synthesis' last layer: the scales of `y`, then its means). The layer list in
/// [`MeanScaleHyperprior::new`] is what this describes; `widen` relies on it.
pub(crate) struct ChannelDims {
    pub output: usize,
    pub halves: bool,
}

/// [`ChannelDims`] of the variable `name`.
pub(crate) fn channel_dims(name: &str) -> ChannelDims {
    let transposed =
        name.starts_with("g_s.") || name.starts_with("h_s.0.") || name.starts_with("h_s.2.");
    let is_weight = name.ends_with(".weight");
    ChannelDims {
        output: usize::from(transposed && is_weight),
        halves: name.starts_with("h_s.4."),
    }
}

/// The optimiser group of the observer-mix conditioning's variables (0: the network's other
/// weights, 1: the entropy bottleneck's quantiles), so that training can give it its own
/// learning rate.
pub const MIX_GROUP: usize = 2;

impl MixConditioning {
    fn new(root: &nn::Path, HyperpriorConfig { n, m }: HyperpriorConfig) -> Self {
        let path = root.set_group(MIX_GROUP) / "alpha";
        let affines = |transform: &str| {
            (0..3)
                .map(|i| AlphaAffine::new(&path / transform / (2 * i + 1), n))
                .collect()
        };
        Self {
            g_a: affines("g_a"),
            g_s: affines("g_s"),
            y: AlphaGain::new(&path / "y", m),
        }
    }
}

impl MeanScaleHyperprior {
    /// Creates the network's variables under `root` (randomly initialised).
    pub fn new(root: &nn::Path, config: HyperpriorConfig) -> Self {
        let HyperpriorConfig { n, m } = config;
        let g_a_path = root / "g_a";
        let g_a = [(3, n), (n, n), (n, n), (n, m)]
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| {
                let conv = Conv::new(&g_a_path / (2 * i), cin, cout, 5, 2);
                let gdn = (i < 3).then(|| Gdn::new(&g_a_path / (2 * i + 1), cout, false));
                (conv, gdn)
            })
            .collect();
        let g_s_path = root / "g_s";
        let g_s = [(m, n), (n, n), (n, n), (n, 3)]
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| {
                let conv = Conv::transposed(&g_s_path / (2 * i), cin, cout, 5, 2);
                let gdn = (i < 3).then(|| Gdn::new(&g_s_path / (2 * i + 1), cout, true));
                (conv, gdn)
            })
            .collect();
        let h_a_path = root / "h_a";
        let h_a = vec![
            Conv::new(&h_a_path / 0, m, n, 3, 1),
            Conv::new(&h_a_path / 2, n, n, 5, 2),
            Conv::new(&h_a_path / 4, n, n, 5, 2),
        ];
        let h_s_path = root / "h_s";
        let wide = m * 3 / 2;
        let h_s = vec![
            Conv::transposed(&h_s_path / 0, n, m, 5, 2),
            Conv::transposed(&h_s_path / 2, m, wide, 5, 2),
            Conv::new(&h_s_path / 4, wide, 2 * m, 3, 1),
        ];
        let entropy_bottleneck = EntropyBottleneck::new(root / "entropy_bottleneck", n);
        Self {
            config,
            g_a,
            g_s,
            h_a,
            h_s,
            entropy_bottleneck,
            precision: ComputePrecision::F32,
            mix: None,
        }
    }

    /// [`Self::new`] conditioned on the observer mix `alpha` ([`MixConditioning`]): one network
    /// for every mix of the person's and the classifier's distortion, whose `alpha = 0` is the
    /// plain network (so it can start from one).
    pub fn with_observer_mix(root: &nn::Path, config: HyperpriorConfig) -> Self {
        let mut network = Self::new(root, config);
        network.mix = Some(MixConditioning::new(root, config));
        network
    }

    /// Whether the network is conditioned on the observer mix.
    pub fn has_observer_mix(&self) -> bool {
        self.mix.is_some()
    }

    /// The network's shape.
    pub fn config(&self) -> HyperpriorConfig {
        self.config
    }

    /// Chooses the numeric type of the convolutions (see [`ComputePrecision`]).
    pub fn set_precision(&mut self, precision: ComputePrecision) {
        self.precision = precision;
    }

    /// The learned prior of `z`.
    pub fn entropy_bottleneck(&self) -> &EntropyBottleneck {
        &self.entropy_bottleneck
    }

    /// Analysis transform: image (N, 3, H, W) in [0, 1] -> `y` (N, M, ceil(H/16), ceil(W/16)).
    /// A network conditioned on the observer mix runs at `alpha = 0`.
    pub fn analysis(&self, x: &Tensor) -> Tensor {
        self.analysis_mixed(x, 0.0)
    }

    /// [`Self::analysis`] at the observer mix `alpha` (ignored by a network not conditioned on
    /// it).
    pub fn analysis_mixed(&self, x: &Tensor, alpha: f64) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, (conv, gdn)) in self.g_a.iter().enumerate() {
            h = conv.forward(&h, self.precision);
            if let Some(gdn) = gdn {
                h = gdn.forward(&h);
                if let Some(mix) = &self.mix {
                    h = mix.g_a[i].forward(&h, alpha);
                }
            }
        }
        match &self.mix {
            Some(mix) => mix.y.forward(&h, alpha, 1.0),
            None => h,
        }
    }

    /// Synthesis transform: `y_hat` -> reconstruction (N, 3, 16 h, 16 w), not clamped. A
    /// network conditioned on the observer mix runs at `alpha = 0`.
    pub fn synthesis(&self, y_hat: &Tensor) -> Tensor {
        self.synthesis_mixed(y_hat, 0.0)
    }

    /// [`Self::synthesis`] at the observer mix `alpha` (ignored by a network not conditioned on
    /// it).
    pub fn synthesis_mixed(&self, y_hat: &Tensor, alpha: f64) -> Tensor {
        let mut h = match &self.mix {
            Some(mix) => mix.y.forward(y_hat, alpha, -1.0),
            None => y_hat.shallow_clone(),
        };
        for (i, (conv, gdn)) in self.g_s.iter().enumerate() {
            h = conv.forward(&h, self.precision);
            if let Some(gdn) = gdn {
                h = gdn.forward(&h);
                if let Some(mix) = &self.mix {
                    h = mix.g_s[i].forward(&h, alpha);
                }
            }
        }
        h
    }

    /// Hyper-analysis transform: `y` -> `z` (N, N, ceil(h/4), ceil(w/4)), before quantisation.
    pub fn hyper_analysis(&self, y: &Tensor) -> Tensor {
        let h = self.h_a[0].forward(y, self.precision).relu();
        let h = self.h_a[1].forward(&h, self.precision).relu();
        self.h_a[2].forward(&h, self.precision)
    }

    /// Hyper-synthesis: `z_hat` -> (means, scales) of `y`, cropped to `y`'s height and width.
    fn hyper_synthesis(&self, z_hat: &Tensor, y_height: i64, y_width: i64) -> (Tensor, Tensor) {
        let h = self.h_s[0].forward(z_hat, self.precision).relu();
        let h = self.h_s[1].forward(&h, self.precision).relu();
        let params = self.h_s[2].forward(&h, self.precision);
        let params = params.narrow(2, 0, y_height).narrow(3, 0, y_width);
        let mut halves = params.chunk(2, 1);
        let means = halves.remove(1);
        let scales = halves.remove(0);
        (means, scales)
    }

    /// Train-time forward pass.
    ///
    /// With `training`, `z` gets uniform noise; `y` gets uniform noise for the rate term and is
    /// rounded around its mean with a straight-through gradient for the synthesis transform
    /// ("mixed" quantization, Minnen & Singh 2020). Without `training`, both are rounded as when
    /// coding, so the rate is the one the coder will spend (up to table precision).
    pub fn forward(&self, x: &Tensor, training: bool) -> ForwardOutput {
        self.forward_at(x, QuantizationStep::ONE, training)
    }

    /// [`Self::forward`] with `y` quantised on the grid of `step` (module docs): rounding
    /// `round((y - μ) / Δ) Δ + μ`, noise of width `Δ`, likelihoods of `(y - μ) / Δ` under
    /// scales `σ / Δ`.
    pub fn forward_at(&self, x: &Tensor, step: QuantizationStep, training: bool) -> ForwardOutput {
        self.forward_mixed(x, step, 0.0, training)
    }

    /// [`Self::forward_at`] at the observer mix `alpha` (ignored by a network not conditioned
    /// on it).
    pub fn forward_mixed(
        &self,
        x: &Tensor,
        step: QuantizationStep,
        alpha: f64,
        training: bool,
    ) -> ForwardOutput {
        let delta = f64::from(step.get());
        let y = self.analysis_mixed(x, alpha);
        let (_, _, y_height, y_width) = y.size4().expect("analysis output is 4-d");
        let z = self.hyper_analysis(&y);
        let z_hat = self.entropy_bottleneck.quantize(&z, training);
        let z_likelihoods = self.entropy_bottleneck.likelihood(&z_hat);
        let (means, scales) = self.hyper_synthesis(&z_hat, y_height, y_width);
        let rounded = ((&y - &means) / delta).round() * delta + &means;
        let (y_for_rate, y_hat) = if training {
            let noisy = &y + (y.rand_like() - 0.5) * delta;
            let straight_through = &y + (&rounded - &y).detach();
            (noisy, straight_through)
        } else {
            (rounded.shallow_clone(), rounded)
        };
        let y_likelihoods =
            gaussian_likelihood(&((y_for_rate - &means) / delta), &(scales / delta));
        let (_, _, height, width) = x.size4().expect("input is 4-d");
        let x_hat = self
            .synthesis_mixed(&y_hat, alpha)
            .narrow(2, 0, height)
            .narrow(3, 0, width);
        ForwardOutput {
            x_hat,
            y_likelihoods,
            z_likelihoods,
        }
    }

    /// The quantised `y` of `x` on the grid of `step`, as the decoder sees it:
    /// `round((y - μ) / Δ) Δ + μ` with `μ` from the rounded `z` (no noise, no gradient needed).
    pub fn quantized_latents_at(&self, x: &Tensor, step: QuantizationStep) -> Tensor {
        let delta = f64::from(step.get());
        let (y, means, _) = self.coded_parameters(x);
        ((&y - &means) / delta).round() * delta + &means
    }

    /// What the coder codes for `x` at `step`: the symbols `k = round((y - μ) / Δ)` of `y` and
    /// the scales `σ / Δ` of the zero-mean Gaussians they are coded with (`μ`, `σ` from the
    /// rounded `z`), both (N, M, H/16, W/16); no gradient needed. For studies of the entropy
    /// model on a trained network's latents.
    pub fn symbols_at(&self, x: &Tensor, step: QuantizationStep) -> (Tensor, Tensor) {
        let delta = f64::from(step.get());
        let (y, means, scales) = self.coded_parameters(x);
        (((&y - &means) / delta).round(), scales / delta)
    }

    /// `y` of `x` and the means and scales the coder gives it, from the rounded `z`.
    fn coded_parameters(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let y = self.analysis(x);
        let (_, _, y_height, y_width) = y.size4().expect("analysis output is 4-d");
        let z_hat = self
            .entropy_bottleneck
            .quantize(&self.hyper_analysis(&y), false);
        let (means, scales) = self.hyper_synthesis(&z_hat, y_height, y_width);
        (y, means, scales)
    }

    /// The auxiliary loss that fits the quantiles of the entropy bottleneck.
    pub fn aux_loss(&self) -> Tensor {
        self.entropy_bottleneck.aux_loss()
    }

    /// Computes the integer tables this model codes with (after training, before saving).
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if the learned prior is degenerate.
    pub fn build_tables(&self) -> Result<ModelTables, ModelError> {
        let z = self.entropy_bottleneck.tables()?;
        let y = ocular_entropy::gaussian_tables(&ocular_entropy::scale_table())
            .map_err(|e| ModelError::InvalidModel(e.to_string()))?;
        ModelTables::new(z, y, self)
    }

    /// Compresses one image (1, 3, H, W) in [0, 1] into its two streams.
    ///
    /// H and W should be multiples of [`Y_DOWNSAMPLING`] (the codec pads); other sizes work but
    /// code the zero padding of the convolutions.
    ///
    /// # Errors
    /// [`ModelError::Shape`] for a batch other than one RGB image, [`ModelError::Entropy`] if coding fails.
    pub fn compress(
        &self,
        x: &Tensor,
        tables: &ModelTables,
    ) -> Result<CompressedLatents, ModelError> {
        self.compress_at(x, tables, QuantizationStep::ONE)
    }

    /// [`Self::compress`] with `y` coded on the grid of `step` (a variable-rate model's rate).
    ///
    /// # Errors
    /// As [`Self::compress`].
    pub fn compress_at(
        &self,
        x: &Tensor,
        tables: &ModelTables,
        step: QuantizationStep,
    ) -> Result<CompressedLatents, ModelError> {
        self.compress_mixed(x, tables, step, 0.0)
    }

    /// [`Self::compress_at`] at the observer mix `alpha` (ignored by a network not conditioned
    /// on it).
    ///
    /// # Errors
    /// As [`Self::compress`].
    pub fn compress_mixed(
        &self,
        x: &Tensor,
        tables: &ModelTables,
        step: QuantizationStep,
        alpha: f64,
    ) -> Result<CompressedLatents, ModelError> {
        check_one_rgb_image(x)?;
        tch::no_grad(|| {
            let y = self.analysis_mixed(x, alpha);
            let hyperprior = self.encode_hyperprior(&y, tables, step)?;
            hyperprior.code(&y, tables)
        })
    }

    /// The first half of coding `y` (1, M, h, w): its hyperprior `z`, quantised and fixed, and
    /// what `z` tells the coder about `y`. Runs without gradients.
    pub(crate) fn encode_hyperprior(
        &self,
        y: &Tensor,
        tables: &ModelTables,
        step: QuantizationStep,
    ) -> Result<CodedHyperprior, ModelError> {
        tch::no_grad(|| {
            let z = self.hyper_analysis(y);
            let y_shape = shape3(y);
            let z_shape = shape3(&z);
            let medians = self.entropy_bottleneck.medians().view([1, -1, 1, 1]);
            let z_integers = (&z - &medians).round();
            let z_symbols = tensor_to_symbols(&z_integers)?;
            let (y_means, y_indices) = y_parameters(tables, &z_symbols, z_shape, y_shape, step)?;
            Ok(CodedHyperprior {
                z_symbols,
                z_hat: z_integers + medians,
                z_shape,
                y_shape,
                y_means,
                y_indices,
                step,
            })
        })
    }

    /// The network's (libtorch) scales of `y` given `hyperprior`, for estimating its rate
    /// during refinement; coding uses the reproducible table indices instead. Runs without
    /// gradients.
    pub(crate) fn y_scales(&self, hyperprior: &CodedHyperprior) -> Tensor {
        let [_, height, width] = hyperprior.y_shape;
        tch::no_grad(|| self.hyper_synthesis(&hyperprior.z_hat, height, width).1)
    }

    /// Decompresses the streams of [`Self::compress`] into an image (1, 3, 16 h, 16 w) in [0, 1]
    /// (crop it to the original size).
    ///
    /// # Errors
    /// [`ModelError::Shape`] if the shapes do not fit this model, [`ModelError::Entropy`] if a
    /// stream is corrupt.
    pub fn decompress(
        &self,
        latents: &CompressedLatents,
        tables: &ModelTables,
    ) -> Result<Tensor, ModelError> {
        self.decompress_mixed(latents, tables, 0.0)
    }

    /// [`Self::decompress`] at the observer mix `alpha` (ignored by a network not conditioned
    /// on it).
    ///
    /// # Errors
    /// As [`Self::decompress`].
    pub fn decompress_mixed(
        &self,
        latents: &CompressedLatents,
        tables: &ModelTables,
        alpha: f64,
    ) -> Result<Tensor, ModelError> {
        latents.check_shapes(self.config)?;
        let [y_channels, y_height, y_width] = latents.y_shape;
        tch::no_grad(|| {
            let y_hat = Tensor::from_slice(&tables.dequantized_y(latents)?)
                .view([1, y_channels, y_height, y_width]);
            Ok(self.synthesis_mixed(&y_hat, alpha).clamp(0.0, 1.0))
        })
    }

    /// The hyper-synthesis as the coder runs it ([`ocular_entropy::HyperSynthesis`]): the same
    /// weights as [`Self::forward`]'s, evaluated in a fixed order of `f32` operations.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if a layer does not fit the reproducible path.
    fn coding_hyper_synthesis(&self) -> Result<ocular_entropy::HyperSynthesis, ModelError> {
        let medians = Vec::<f32>::try_from(
            self.entropy_bottleneck
                .medians()
                .detach()
                .to_kind(Kind::Float)
                .flatten(0, -1),
        )?;
        let layers = vec![
            self.h_s[0].coding_layer(true)?,
            self.h_s[1].coding_layer(true)?,
            self.h_s[2].coding_layer(false)?,
        ];
        ocular_entropy::HyperSynthesis::new(medians, layers)
            .map_err(|e| ModelError::InvalidModel(e.to_string()))
    }
}

/// A quantised hyperprior `z` and what it tells the coder about `y`
/// ([`MeanScaleHyperprior::encode_hyperprior`]).
pub(crate) struct CodedHyperprior {
    z_symbols: Vec<i32>,
    /// `z_hat = z_symbols + medians`, as the network's hyper-synthesis takes it.
    z_hat: Tensor,
    z_shape: [i64; 3],
    y_shape: [i64; 3],
    /// The coder's means of `y` (reproducible, [`y_parameters`]): `y` is coded as
    /// `round((y - y_means) / step)`.
    pub(crate) y_means: Tensor,
    y_indices: Vec<u16>,
    /// The grid `y` is coded on.
    pub(crate) step: QuantizationStep,
}

impl CodedHyperprior {
    /// Range-codes `z` and `round((y - y_means) / step)`.
    pub(crate) fn code(
        &self,
        y: &Tensor,
        tables: &ModelTables,
    ) -> Result<CompressedLatents, ModelError> {
        let z_stream = tables.encode_z(&self.z_symbols, self.z_shape)?;
        let delta = f64::from(self.step.get());
        let y_symbols = tch::no_grad(|| tensor_to_symbols(&((y - &self.y_means) / delta).round()))?;
        let y_stream = tables.encode_y(&y_symbols, &self.y_indices)?;
        Ok(CompressedLatents {
            z_stream,
            y_stream,
            step: self.step,
            shrinkage: crate::Shrinkage::NONE,
            y_shape: self.y_shape,
            z_shape: self.z_shape,
        })
    }
}

/// Means (1, M, h, w) and table indices of `y` coded on the grid of `step` from the integer
/// symbols of `z` ([`crate::latents::y_parameters`], the same for the encoder and the decoder).
fn y_parameters(
    tables: &ModelTables,
    z_symbols: &[i32],
    z_shape: [i64; 3],
    y_shape: [i64; 3],
    step: QuantizationStep,
) -> Result<(Tensor, Vec<u16>), ModelError> {
    let (means, indices) = crate::latents::y_parameters(tables, z_symbols, z_shape, y_shape, step)?;
    let [y_channels, y_height, y_width] = y_shape;
    let means = Tensor::from_slice(&means).view([1, y_channels, y_height, y_width]);
    Ok((means, indices))
}

/// What compressing takes: one RGB image, (1, 3, H, W).
pub(crate) fn check_one_rgb_image(x: &Tensor) -> Result<(), ModelError> {
    let size = x.size();
    if size.len() != 4 || size[0] != 1 || size[1] != 3 {
        return Err(ModelError::Shape(format!(
            "compress takes one RGB image (1, 3, H, W), got {size:?}"
        )));
    }
    Ok(())
}

fn shape3(t: &Tensor) -> [i64; 3] {
    let s = t.size();
    [s[1], s[2], s[3]]
}

/// The rounded values of `symbols` as integers, in `(channel, row, column)` order.
fn tensor_to_symbols(symbols: &Tensor) -> Result<Vec<i32>, ModelError> {
    // Latents of a sane network stay far inside i32; saturate rather than wrap if one does not.
    let values = Vec::<f32>::try_from(symbols.flatten(0, -1))?;
    Ok(values.into_iter().map(|v| v as i32).collect())
}

#[cfg(test)]
fn symbols_to_tensor(values: &[i32], shape: [i64; 4]) -> Tensor {
    let floats: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_slice(&floats)
        .view(shape)
        .to_device(tch::Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A network for every observer mix starts as the plain network it is given (at every
    /// `alpha`), and whatever its conditioning learns, it stays that network at `alpha = 0`.
    #[test]
    fn a_network_for_every_mix_is_the_plain_network_at_alpha_0() {
        let config = HyperpriorConfig { n: 8, m: 12 };
        tch::manual_seed(5);
        let plain_variables = nn::VarStore::new(Device::Cpu);
        let plain = MeanScaleHyperprior::new(&plain_variables.root(), config);
        let variables = nn::VarStore::new(Device::Cpu);
        let mixed = MeanScaleHyperprior::with_observer_mix(&variables.root(), config);
        assert!(mixed.has_observer_mix() && !plain.has_observer_mix());
        let source = plain_variables.variables();
        let mut conditioning = Vec::new();
        tch::no_grad(|| {
            for (name, mut variable) in variables.variables() {
                match source.get(&name) {
                    Some(value) => variable.copy_(value),
                    None => conditioning.push((name, variable)),
                }
            }
        });
        let mut names: Vec<&str> = conditioning.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names.len(), 13, "{names:?}");
        assert!(names.iter().all(|n| is_mix_variable(n)), "{names:?}");
        assert!(names.contains(&"alpha.g_s.5.shift") && names.contains(&"alpha.y.log_gain"));

        let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let step = QuantizationStep::ONE;
        let image = |network: &MeanScaleHyperprior, alpha: f64| {
            tch::no_grad(|| network.forward_mixed(&x, step, alpha, false).x_hat)
        };
        let reference = image(&plain, 0.0);
        for alpha in [0.0, 0.7, 1.0] {
            assert!(image(&mixed, alpha).equal(&reference), "alpha {alpha}");
        }
        // What training might make of the conditioning.
        tch::no_grad(|| {
            for (_, variable) in &mut conditioning {
                let _ = variable.fill_(0.3);
            }
        });
        assert!(image(&mixed, 0.0).equal(&reference));
        let moved = (image(&mixed, 0.7) - &reference)
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved > 1e-3, "alpha 0.7 moved the image by {moved}");
    }

    /// The coder's reproducible hyper-synthesis computes what the training network computes,
    /// up to float rounding: the same means, the same table for (nearly) every element.
    #[test]
    fn reproducible_hyper_synthesis_agrees_with_libtorch() {
        tch::manual_seed(3);
        let variables = nn::VarStore::new(Device::Cpu);
        let network = MeanScaleHyperprior::new(&variables.root(), HyperpriorConfig::default());
        // Larger weights than at initialisation, so the scales spread over many tables.
        tch::no_grad(|| {
            for (name, mut v) in variables.variables() {
                if name.starts_with("h_s.") && name.ends_with("weight") {
                    let _ = v.g_mul_scalar_(8.0);
                }
            }
        });
        let (n, m) = (network.config.n, network.config.m);
        let z_shape = [n, 3, 5];
        let z_symbols: Vec<i32> = (0..n * 15).map(|i| ((i * 7919) % 11) as i32 - 5).collect();
        let y_shape = [m, 11, 18];
        let tables = network.build_tables().expect("tables");
        let (means, indices) =
            y_parameters(&tables, &z_symbols, z_shape, y_shape, QuantizationStep::ONE)
                .expect("parameters");
        let z_hat = symbols_to_tensor(&z_symbols, [1, n, 3, 5])
            + network.entropy_bottleneck.medians().view([1, -1, 1, 1]);
        let (torch_means, torch_scales) =
            tch::no_grad(|| network.hyper_synthesis(&z_hat, y_shape[1], y_shape[2]));
        let difference = (&means - &torch_means).abs().max().double_value(&[]);
        let magnitude = torch_means.abs().max().double_value(&[]);
        assert!(
            difference <= 1e-5 * magnitude.max(1.0),
            "{difference} of {magnitude}"
        );
        let torch_indices: Vec<u16> = Vec::<f32>::try_from(torch_scales.flatten(0, -1))
            .expect("scales")
            .into_iter()
            .map(|s| u16::from(ocular_entropy::scale_index(s)))
            .collect();
        assert_eq!(indices.len(), torch_indices.len());
        let distinct: std::collections::BTreeSet<_> = indices.iter().collect();
        assert!(distinct.len() > 10, "{} distinct tables", distinct.len());
        let differing = indices
            .iter()
            .zip(&torch_indices)
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            differing * 1000 <= indices.len(),
            "{differing} of {}",
            indices.len()
        );
    }
}
