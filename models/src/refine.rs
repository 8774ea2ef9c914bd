//! Encoder-side refinement of the latent: the encoder searches for better integers to send.
//!
//! The decoder only ever sees the integers `round((y - mean) / Δ)` (`Δ` = 1 but for a
//! variable-rate model, [`crate::rate`]); which integers the encoder sends
//! is its own business. The analysis transform `g_a` gives a good guess, amortised over all
//! images; a few steps of gradient descent on one image's own objective give a better one
//! (Campos, Meierhans, Djelouah, Schroers, "Content Adaptive Optimization for Neural Image
//! Compression", CVPR workshops 2019; Yang, Bamler, Mandt, "Improving Inference for Neural
//! Image Compression", NeurIPS 2020). The bitstream format and the decoder do not change.
//!
//! # The objective
//!
//! With `z` quantised once from `y_0 = g_a(x)` and then held fixed (so the coder's means `mu`
//! and the network's scales `sigma` of `y` are fixed), minimise over `y`
//!
//! ```text
//! L(y)   = R(y) + lambda * D(x, g_s(y_hat)),        y_hat = mu + Δ round((y - mu) / Δ)
//! R(y)   = -sum_i log2 P(round((y_i - mu_i) / Δ) | sigma_i / Δ) / pixels
//! P(v|s) = Phi((v + 1/2) / s) - Phi((v - 1/2) / s)
//! ```
//!
//! `D` and `lambda` are the model's own training distortion and trade-off, so refinement
//! optimises per image exactly what training optimised on average: for an observer model the
//! classifier's features, for an `mse` model the squared error. `L` is the exact objective of
//! the integers sent (the coded size is within about 1% of `R`, see the consistency test).
//!
//! # Views (expectation over transformation)
//!
//! A latent refined against one classifier on one pixel grid fits that grid: about half of what
//! refinement recovers for the training classifier does not survive a shifted view
//! (docs/results.md). With `V` views ([`Refinement::views`]; Athalye et al., "Synthesizing
//! Robust Adversarial Examples", ICML 2018) the distortion becomes the mean over the identity
//! and `V` views `t_k` drawn once per image from a seeded generator ([`View::draw`]):
//!
//! ```text
//! D_V(x, x') = (D(x, x') + sum_k D(t_k(x), t_k(x'))) / (V + 1)
//! t_k = rescale(s_k) . mirror(m_k) . crop(shift_k):  shift_k in [-4, 4]^2 px,
//!       m_k a fair coin, s_k in [0.9, 1.1] (bilinear)
//! ```
//!
//! The views are fixed for the whole search, so `L` stays one deterministic function of `y`
//! and the invariant below holds for it; `V = 0` is plain refinement.
//!
//! # The gradient
//!
//! `round` has no useful gradient, so, as in training ([`crate::MeanScaleHyperprior::forward`]):
//! the rate term is evaluated at `y - mu + u` with uniform noise `u` in `[-1/2, 1/2)`, and the
//! distortion term at `y_hat` with the straight-through estimator
//! (`d y_hat / d y = 1`). The noise comes from a fixed-seed generator, so refining the same
//! image with the same libtorch thread count gives the same file.
//!
//! # The search
//!
//! Adam from `y_0`, its learning rate halved after every step that fails to improve on the
//! best `L` so far: objectives differ in how fast they turn (the classifier's features want
//! long steps, the squared error short ones), and halving on overshoot serves both.
//!
//! # Invariant
//!
//! Every step first evaluates the exact `L` of the current `y` (that costs nothing extra: the
//! forward pass is shared) and the best `y` seen is the one coded, `y_0` included: refinement
//! never sends integers with a worse objective than the unrefined encoder would.
//!
//! # Rate budget
//!
//! Left alone, refinement spends some more bits for a lower `L` (about 10% more on 224x224
//! crops). Under a budget `B` for the `y` stream (rate control: the file must fit a target
//! bpp) it solves `min L(y) subject to bytes(y) <= B` instead:
//!
//! ```text
//! gradient of   beta * R(y) + lambda * D        beta_0 = 1
//! beta <- 1.2 beta            after a step whose latent does not fit
//! beta <- max(1, 0.97 beta)   after one that does
//! ```
//!
//! (a multiplicative dual ascent on the constraint) and keeps the best latent among those that
//! fit (or, if none does, the best of all). `bytes(y)` is estimated as `R(y)` scaled by the
//! ratio of the coded size of `y_0` to its `R`, with a 0.5% margin; the caller checks the file.

use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::entropy_models::gaussian_likelihood;
use crate::hyperprior::{check_one_rgb_image, CompressedLatents, MeanScaleHyperprior, ModelTables};
use crate::losses::DistortionMeasure;
use crate::ModelError;

/// Default initial learning rate of the Adam search over `y` (about the first step's size, in
/// quantisation bins), halved whenever a step fails to improve.
///
/// Measured with 20 steps: on the first 30 `imagenet-dev` crops coded by `machine-q1`, 0.01,
/// 0.02 and 0.05 all keep the uncompressed top-1 (86.7%, against 50.0% unrefined) at 0.217,
/// 0.201 and 0.198 bpp; on a 256x256 corner of `kodim05` the objective falls by 2.7%, 2.9%,
/// 0.4% for `mse-q3` and by 4.4%, 5.1%, 5.0% for `msssim-q2` (0.01, 0.02, 0.05).
pub const DEFAULT_REFINE_LEARNING_RATE: f64 = 0.02;

/// How to refine: the per-image objective and the search.
#[derive(Debug)]
pub struct Refinement<'a> {
    /// `D`, normally the model's training distortion.
    pub distortion: &'a DistortionMeasure,
    /// `lambda`, normally the model's (at [`Self::step`], for a variable-rate model).
    pub lambda: f64,
    /// The grid `y` is coded on: 1 for a fixed-rate model, the rate's step for a variable-rate
    /// one ([`crate::rate`]).
    pub step: ocular_entropy::QuantizationStep,
    /// Adam steps (each costs one synthesis and one distortion evaluation, forward and
    /// backward).
    pub steps: usize,
    /// Adam learning rate (see [`DEFAULT_REFINE_LEARNING_RATE`]).
    pub learning_rate: f64,
    /// A budget for the coded `y` stream, in bytes: only latents whose stream is estimated to
    /// fit are kept (see [Rate budget](self#rate-budget)). `None`: no budget.
    pub max_y_bytes: Option<usize>,
    /// Views the distortion is averaged over besides the identity (see
    /// [Views](self#views-expectation-over-transformation)); 0: plain refinement.
    pub views: usize,
    /// Seed of the views' generator: the same seed, the same views, the same file.
    pub view_seed: u64,
}

/// The largest shift of a view, in pixels, each way.
pub const MAX_VIEW_SHIFT: i64 = 4;

/// The smallest side (visible pixels) refinement with views accepts: a view crops
/// `2 MAX_VIEW_SHIFT` and rescales by down to 0.9.
pub const MIN_VIEW_SIDE: i64 = 32;

/// A small change of view of an image: a crop shifted by `shift` (rows, columns) from the
/// centred one, `2 MAX_VIEW_SHIFT` pixels smaller each way, mirrored left–right if `mirror`,
/// rescaled by `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    /// Offset of the crop from the centred crop, each within `±MAX_VIEW_SHIFT`.
    pub shift: (i64, i64),
    /// Mirrored left to right.
    pub mirror: bool,
    /// Size factor of the (bilinear) rescaling, in `[0.9, 1.1]`.
    pub scale: f64,
}

impl View {
    /// `count` views from a SplitMix64 stream seeded with `seed`.
    pub fn draw(count: usize, seed: u64) -> Vec<View> {
        let mut state = seed ^ 0x7669_6577_7365_6564;
        let mut uniform = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        };
        let span = 2 * MAX_VIEW_SHIFT + 1;
        (0..count)
            .map(|_| {
                let mut shift = || (uniform() * span as f64).floor() as i64 - MAX_VIEW_SHIFT;
                let shift = (shift(), shift());
                View {
                    shift,
                    mirror: uniform() < 0.5,
                    scale: 0.9 + 0.2 * uniform(),
                }
            })
            .collect()
    }

    /// The view of `image` (N, C, H, W), H and W at least [`MIN_VIEW_SIDE`].
    pub fn apply(&self, image: &Tensor) -> Tensor {
        let size = image.size();
        let (height, width) = (size[2] - 2 * MAX_VIEW_SHIFT, size[3] - 2 * MAX_VIEW_SHIFT);
        let crop = image
            .narrow(2, MAX_VIEW_SHIFT + self.shift.0, height)
            .narrow(3, MAX_VIEW_SHIFT + self.shift.1, width);
        let crop = if self.mirror { crop.flip([3]) } else { crop };
        let scaled = |side: i64| ((side as f64 * self.scale).round() as i64).max(1);
        crop.upsample_bilinear2d([scaled(height), scaled(width)], false, None, None)
    }
}

/// What a refinement achieved, in units of the objective `L = R + lambda * D`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefinementReport {
    /// `L` of the unrefined latent `y_0`.
    pub initial_objective: f64,
    /// `L` of the latent coded: never above `initial_objective` unless a budget was given
    /// that `y_0` itself does not fit.
    pub final_objective: f64,
    /// The step whose latent was coded (0 = `y_0`).
    pub best_step: usize,
}

impl MeanScaleHyperprior {
    /// Compresses one image (1, 3, H, W) in [0, 1], H and W multiples of
    /// [`crate::hyperprior::Y_DOWNSAMPLING`], after refining its latent (see the [module
    /// documentation](self)). `visible` = (height, width) of the image inside the padding: the
    /// distortion is measured there only.
    ///
    /// # Errors
    /// [`ModelError::Shape`] for a batch other than one RGB image or a `visible` area outside
    /// it; errors of the distortion measure (e.g. MS-SSIM on too small an image) and of coding.
    pub fn compress_refined(
        &self,
        x: &Tensor,
        visible: (i64, i64),
        tables: &ModelTables,
        refinement: &Refinement<'_>,
    ) -> Result<(CompressedLatents, RefinementReport), ModelError> {
        check_refinable(x, visible, refinement.views)?;
        let (height, width) = visible;
        let views = View::draw(refinement.views, refinement.view_seed);
        let y_0 = tch::no_grad(|| self.analysis(x));
        let hyperprior = self.encode_hyperprior(&y_0, tables, refinement.step)?;
        let means = &hyperprior.y_means;
        // Residuals and scales in units of the step: the unit grid the tables code.
        let delta = f64::from(refinement.step.get());
        let scales = &(self.y_scales(&hyperprior) / delta);
        let original = x.narrow(2, 0, height).narrow(3, 0, width);
        let pixels = (height * width) as f64;
        let lambda = refinement.lambda;
        let budget = match refinement.max_y_bytes {
            Some(bytes) => {
                let coded = hyperprior.code(&y_0, tables)?.y_stream.len();
                let estimated = tch::no_grad(|| bits(&((&y_0 - means) / delta).round(), scales));
                Budget::measured(bytes, coded, estimated.double_value(&[]))
            }
            None => Budget::Unlimited,
        };

        let variables = nn::VarStore::new(Device::Cpu);
        let y = variables.root().var_copy("y", &y_0);
        let mut optimizer = nn::Adam::default().build(&variables, refinement.learning_rate)?;
        let mut rate_weight = 1.0;
        let mut learning_rate = refinement.learning_rate;
        let mut noise = UniformNoise::new(y_0.numel());
        let mut best: Option<Kept> = None;
        let mut initial_objective = f64::NAN;
        for step in 0..=refinement.steps {
            let residual = (&y - means) / delta;
            let rounded = residual.round();
            let y_hat = &y + (&rounded * delta + means - &y).detach();
            let x_hat = self
                .synthesis(&y_hat)
                .narrow(2, 0, height)
                .narrow(3, 0, width);
            let distortion = view_distortion(refinement.distortion, &views, &original, &x_hat)?;
            let exact_bits = tch::no_grad(|| bits(&rounded, scales)).double_value(&[]);
            let candidate = Candidate {
                objective: exact_bits / pixels + lambda * distortion.double_value(&[]),
                feasible: budget.fits(exact_bits),
                step,
            };
            if step == 0 {
                initial_objective = candidate.objective;
            }
            let feasible = candidate.feasible;
            if best.as_ref().is_none_or(|b| candidate.beats(b)) {
                best = Some(candidate.keeping(&y));
            } else if feasible {
                // Overshot: a smaller step size (objectives differ in how fast they turn).
                learning_rate *= 0.5;
                optimizer.set_lr(learning_rate);
            }
            if step == refinement.steps {
                break;
            }
            rate_weight = if feasible {
                f64::max(1.0, 0.97 * rate_weight)
            } else {
                1.2 * rate_weight
            };
            let noisy = &residual + noise.sample(&residual);
            let loss = bits(&noisy, scales) * (rate_weight / pixels) + distortion * lambda;
            optimizer.backward_step(&loss);
        }
        let best =
            best.ok_or_else(|| ModelError::Shape("refinement evaluated no latent".into()))?;
        let latents = hyperprior.code(&best.y, tables)?;
        Ok((
            latents,
            RefinementReport {
                initial_objective,
                final_objective: best.candidate.objective,
                best_step: best.candidate.step,
            },
        ))
    }
}

/// That `x` is one RGB image in which the `visible` (height, width) area lies, large enough
/// for `views` views.
fn check_refinable(
    x: &Tensor,
    (height, width): (i64, i64),
    views: usize,
) -> Result<(), ModelError> {
    check_one_rgb_image(x)?;
    let size = x.size();
    if height < 1 || width < 1 || height > size[2] || width > size[3] {
        return Err(ModelError::Shape(format!(
            "visible area {height}x{width} is not inside the {}x{} image",
            size[2], size[3]
        )));
    }
    if views > 0 && height.min(width) < MIN_VIEW_SIDE {
        return Err(ModelError::Shape(format!(
            "refinement with views needs images of at least {MIN_VIEW_SIDE} px a side, got {height}x{width}"
        )));
    }
    Ok(())
}

/// The budget of the `y` stream (module docs, "Rate budget").
enum Budget {
    /// No budget: every latent fits.
    Unlimited,
    /// At most `bytes`, estimated as `bits * bytes_per_bit` (measured on `y_0`) with a 0.5%
    /// margin.
    Bytes { bytes: usize, bytes_per_bit: f64 },
}

impl Budget {
    /// A budget of `bytes`, from `y_0`'s `coded` bytes and `estimated` bits.
    fn measured(bytes: usize, coded: usize, estimated: f64) -> Self {
        Self::Bytes {
            bytes,
            bytes_per_bit: coded as f64 / estimated.max(1.0),
        }
    }

    /// Whether a latent of `estimated_bits` fits.
    fn fits(&self, estimated_bits: f64) -> bool {
        match self {
            Self::Unlimited => true,
            Self::Bytes {
                bytes,
                bytes_per_bit,
            } => estimated_bits * bytes_per_bit <= 0.995 * *bytes as f64,
        }
    }
}

/// A latent the search evaluated: its exact objective `L`, whether it fits the budget, its step.
struct Candidate {
    objective: f64,
    feasible: bool,
    step: usize,
}

impl Candidate {
    /// A latent that fits beats one that does not (`y_0` may not), then the lower `L` wins.
    fn beats(&self, best: &Kept) -> bool {
        let other = &best.candidate;
        (self.feasible, -self.objective) > (other.feasible, -other.objective)
    }

    /// This candidate with a copy of its latent `y`.
    fn keeping(self, y: &Tensor) -> Kept {
        Kept {
            candidate: self,
            y: tch::no_grad(|| y.copy()),
        }
    }
}

/// The best latent so far and what it scored.
struct Kept {
    candidate: Candidate,
    y: Tensor,
}

/// `D_V`: the distortion averaged over the identity and `views`.
fn view_distortion(
    measure: &DistortionMeasure,
    views: &[View],
    original: &Tensor,
    decoded: &Tensor,
) -> Result<Tensor, ModelError> {
    let identity = measure.compute(original, decoded)?.total;
    if views.is_empty() {
        return Ok(identity);
    }
    let mut terms = vec![identity];
    for view in views {
        terms.push(
            measure
                .compute(&view.apply(original), &view.apply(decoded))?
                .total,
        );
    }
    Ok(Tensor::stack(&terms, 0).mean(Kind::Float))
}

/// `-sum log2 P(v | sigma)`, differentiable in `v`.
fn bits(residuals: &Tensor, scales: &Tensor) -> Tensor {
    -gaussian_likelihood(residuals, scales)
        .log2()
        .sum(Kind::Float)
}

/// Uniform noise in [-1/2, 1/2) from a fixed-seed SplitMix64 stream: refinement must not
/// depend on (or disturb) libtorch's global generator.
struct UniformNoise {
    state: u64,
    buffer: Vec<f32>,
}

impl UniformNoise {
    fn new(len: usize) -> Self {
        Self {
            state: 0x6f63_756c_6172_2121,
            buffer: vec![0.0; len],
        }
    }

    /// Fresh noise shaped like `like` (which has the length given to [`Self::new`]).
    fn sample(&mut self, like: &Tensor) -> Tensor {
        for value in &mut self.buffer {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits: exactly representable in f32.
            *value = (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        Tensor::from_slice(&self.buffer).view(like.size().as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_seeded_bounded_and_change_the_picture() {
        let views = View::draw(200, 7);
        assert_eq!(views, View::draw(200, 7));
        assert_ne!(views, View::draw(200, 8));
        assert!(views.iter().all(|v| v.shift.0.abs() <= MAX_VIEW_SHIFT
            && v.shift.1.abs() <= MAX_VIEW_SHIFT
            && (0.9..=1.1).contains(&v.scale)));
        let mirrored = views.iter().filter(|v| v.mirror).count();
        assert!((60..140).contains(&mirrored), "{mirrored}");
        let extremes = |f: fn(&View) -> i64| {
            views
                .iter()
                .map(f)
                .collect::<std::collections::HashSet<_>>()
        };
        assert_eq!(extremes(|v| v.shift.0).len(), 9, "every shift from -4 to 4");

        let image = Tensor::arange(3 * 40 * 48, (Kind::Float, Device::Cpu)).view([1, 3, 40, 48]);
        let identity = View {
            shift: (0, 0),
            mirror: false,
            scale: 1.0,
        };
        let centred = identity.apply(&image);
        assert_eq!(centred.size(), [1, 3, 32, 40]);
        assert!(centred.equal(&image.narrow(2, 4, 32).narrow(3, 4, 40)));
        let shifted = View {
            shift: (-4, 3),
            ..identity
        }
        .apply(&image);
        assert!(shifted.equal(&image.narrow(2, 0, 32).narrow(3, 7, 40)));
        let mirrored = View {
            mirror: true,
            ..identity
        }
        .apply(&image);
        assert!(mirrored.equal(&centred.flip([3])));
        let larger = View {
            scale: 1.1,
            ..identity
        }
        .apply(&image);
        assert_eq!(larger.size(), [1, 3, 35, 44]);
    }

    #[test]
    fn noise_is_uniform_in_half_open_unit_interval_and_repeatable() {
        let like = Tensor::zeros([1, 4, 50, 50], (Kind::Float, Device::Cpu));
        let a = UniformNoise::new(like.numel()).sample(&like);
        let b = UniformNoise::new(like.numel()).sample(&like);
        assert!(a.equal(&b));
        assert_eq!(a.size(), like.size());
        let min = a.min().double_value(&[]);
        let max = a.max().double_value(&[]);
        let mean = a.mean(Kind::Float).double_value(&[]);
        assert!((-0.5..-0.49).contains(&min), "{min}");
        assert!((0.49..0.5).contains(&max), "{max}");
        assert!(mean.abs() < 0.01, "{mean}");
    }
}
