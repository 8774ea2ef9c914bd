//! Distortion measures the training objective can use: `loss = bpp + lambda * D`.
//!
//! [`Distortion`] names the measure (it is recorded in model files and its
//! [`Display`](fmt::Display) form is the model's family name); [`DistortionMeasure`] computes
//! it, built once per training run because the observer measure owns a frozen classifier.
//!
//! # The observer distortion
//!
//! Weber, Renggli, Grabner, Zhang, "Observer Dependent Lossy Image Compression" (GCPR 2020),
//! see `../shared/DESIGN.md`: the distortion interpolates between human quality and classifier
//! quality with `alpha` in [0, 1],
//!
//! ```text
//! D = (1 - alpha) * w_ms * (1 - MS-SSIM(x, x_hat)) + alpha * w_f * L_f(x, x_hat)
//!
//! L_f = 1/|S| * sum over layers l in S of
//!         mean_{n,c,h,w} (phi_l(x_hat') - phi_l(x))^2  /  sg( mean_{n,c,h,w} phi_l(x)^2 + eps )
//! ```
//!
//! `phi_l` is the frozen observer classifier's feature map after layer `l` (EfficientNet-Lite0,
//! [`crate::observer`]; `S` = [`DEFAULT_FEATURE_LAYERS`], Stage(1) and Head, unless configured),
//! applied to the classifier's normalisation of the images (see [`observer_input`]); the means
//! run over the whole batch; `sg` stops the gradient; `eps` = [`FEATURE_EPSILON`];
//! `x_hat' = clamp(x_hat, 0, 1)` in the forward pass with the identity as its gradient
//! (straight-through), see [`feature_distance`].
//!
//! **Normalisation.** Each layer's MSE is divided by the mean squared magnitude of the
//! *original's* features of that layer in the same batch, detached: a relative squared error.
//! Chosen over a fixed per-layer constant measured once on training data because it makes every
//! layer's term dimensionless and comparable whatever the layer or observer (a constant would
//! have to be re-measured, and stored, for every layer set and observer), because it needs no
//! calibration pass and no data at construction, and because for the default layers the two
//! differ little anyway: the magnitudes are stable statistics of natural images (mean squared
//! feature over batches of eight 192x192 training crops: Stage(1) 77.7, batch-to-batch
//! standard deviation 7.6; Head 0.83, sd 0.064), so a fixed constant would only trade this
//! ~10% per-batch re-weighting for a stored, observer-specific number. Detaching keeps the
//! gradient that of a plain MSE (rescaled by a positive per-batch factor): the network cannot
//! lower the term by changing the normaliser, which depends on the original only.
//!
//! **Weights.** `w_ms` = 1 (the term then equals the `ms-ssim` distortion, so the lambdas of
//! `ms-ssim` models carry over) and `w_f` = [`DEFAULT_FEATURE_WEIGHT`], measured so both terms
//! have the same mean at the start of fine-tuning from a human-oriented model (see that
//! constant).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Kind, Tensor};

use crate::msssim::ms_ssim;
use crate::observer::{self, Classifier, FeatureLayer, Observer, DEFAULT_FEATURE_LAYERS};
use crate::ModelError;

/// The distortion term of the training loss.
///
/// Serialised (in model files and training configs) as `"mse"`, `"ms-ssim"`, or
/// `{"observer": {"alpha": 0.5, "ms_ssim_weight": 1.0, "feature_weight": .., "layers":
/// ["stage1", "head"], "crop_and_resize": false}}` (all observer fields but `alpha` optional).
/// Displayed as `mse`, `ms-ssim`, `observer-<alpha>` (e.g. `observer-0.5`, `observer-1`), the
/// model's family name; [`FromStr`] parses that form back (with the default weights and
/// layers).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distortion {
    /// `255^2 * MSE` on 0..1 images (the scale of the published lambdas).
    Mse,
    /// `1 - MS-SSIM`; needs crops of at least [`crate::msssim::MIN_SIDE`] pixels.
    MsSsim,
    /// `(1 - alpha) * w_ms * (1 - MS-SSIM) + alpha * w_f * L_features`: human and classifier
    /// ("observer") quality mixed (see the [module documentation](self)).
    Observer(ObserverDistortion),
}

impl Distortion {
    /// The observer distortion with this `alpha` and the default weights and layers.
    pub fn observer(alpha: f64) -> Self {
        Distortion::Observer(ObserverDistortion::new(alpha))
    }

    /// Whether computing it needs the observer classifier (an observer distortion with
    /// `alpha * w_f != 0`).
    pub fn needs_classifier(&self) -> bool {
        matches!(self, Distortion::Observer(o) if o.feature_coefficient() != 0.0)
    }

    /// Whether computing it needs MS-SSIM, hence crops of at least
    /// [`crate::msssim::MIN_SIDE`] pixels.
    pub fn needs_ms_ssim(&self) -> bool {
        match self {
            Distortion::Mse => false,
            Distortion::MsSsim => true,
            Distortion::Observer(o) => o.ms_ssim_coefficient() != 0.0,
        }
    }

    /// Checks the parameters (only the observer distortion has any).
    ///
    /// # Errors
    /// As [`ObserverDistortion::validate`].
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Distortion::Observer(o) => o.validate(),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Distortion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distortion::Mse => f.write_str("mse"),
            Distortion::MsSsim => f.write_str("ms-ssim"),
            // Shortest round-trip decimal: `observer-0`, `observer-0.25`, `observer-0.5`,
            // `observer-1`. For alphas in [0, 1] these names sort like the alphas.
            Distortion::Observer(o) => write!(f, "observer-{}", o.alpha),
        }
    }
}

/// A string that is not a distortion name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown distortion {0:?} (mse, ms-ssim, or observer-<alpha> with alpha in [0, 1], \
     e.g. observer-0.5)"
)]
pub struct ParseDistortionError(pub String);

impl FromStr for Distortion {
    type Err = ParseDistortionError;

    /// Parses the [`Display`](fmt::Display) form: `mse`, `ms-ssim`, `observer-<alpha>` (alpha
    /// in [0, 1]; default weights and layers).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mse" => Ok(Distortion::Mse),
            "ms-ssim" => Ok(Distortion::MsSsim),
            _ => s
                .strip_prefix("observer-")
                .and_then(|a| a.parse::<f64>().ok())
                .filter(|a| (0.0..=1.0).contains(a))
                .map(Distortion::observer)
                .ok_or_else(|| ParseDistortionError(s.to_string())),
        }
    }
}

/// Default `w_ms`: the MS-SSIM term weighs exactly like the `ms-ssim` distortion.
pub const DEFAULT_MS_SSIM_WEIGHT: f64 = 1.0;

/// Default `w_f`, measured so that `w_f * L_f` has the mean of `1 - MS-SSIM` at the start of
/// fine-tuning from a human-oriented model: on 48 random 192x192 training crops
/// (`../shared/data/train`) reconstructed by the N=64, M=96 `mse` model of lambda 0.0067
/// (`models/trained/mse-q3.safetensors`, 65 minutes of training: 0.51 bpp, 27.0 dB on these
/// crops), the mean of `1 - MS-SSIM` is 0.0395 and the mean of `L_f` over the default layers
/// 0.496 (Stage(1) 0.404, Head 0.588): a ratio of 0.080. JPEG reconstructions of the same
/// crops at quality 20, 40, 60, 80 (0.9 to 2.4 bpp) give 0.089, 0.069, 0.065, 0.062, so the
/// value holds within about 30% across rates.
///
/// Matching the values does not match the gradients: at the same reconstructions the
/// gradient norm of `L_f` with respect to `x_hat` is about 125 times that of `1 - MS-SSIM`
/// (ratio 0.008 for the model, 0.005 to 0.010 for JPEG), so with this `w_f` the feature term
/// pulls about 10 times harder per unit of `alpha`, and an `alpha` = 0.5 update is dominated
/// by it; `w_f` near 0.008 would balance the gradients instead.
/// (`OBSERVER_CALIBRATION_MODEL=<model file or checkpoint> cargo test -p ocular-models --test
/// observer_loss calibrate -- --ignored --nocapture`.)
pub const DEFAULT_FEATURE_WEIGHT: f64 = 0.08;

/// `eps` of the feature normalisation: keeps the division finite for a (degenerate) layer whose
/// features are all zero; negligible next to real mean squared features (about 0.8 for Head,
/// 80 for Stage(1) on training crops).
pub const FEATURE_EPSILON: f64 = 1e-8;

/// Parameters of the observer distortion ([`Distortion::Observer`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObserverDistortion {
    /// Mix between human (0) and classifier (1) quality, in [0, 1].
    pub alpha: f64,
    /// `w_ms`, weight of `1 - MS-SSIM` (default [`DEFAULT_MS_SSIM_WEIGHT`]).
    #[serde(default = "default_ms_ssim_weight")]
    pub ms_ssim_weight: f64,
    /// `w_f`, weight of the feature term (default [`DEFAULT_FEATURE_WEIGHT`]).
    #[serde(default = "default_feature_weight")]
    pub feature_weight: f64,
    /// The classifier layers compared (default [`DEFAULT_FEATURE_LAYERS`]).
    #[serde(default)]
    pub layers: FeatureLayers,
    /// Feed the classifier its full preprocessing ([`observer::preprocess`]: center crop of
    /// 224/256 of the side, bicubic resize to 224) instead of the crop at its own resolution
    /// (default `false`, see [`observer_input`]).
    #[serde(default)]
    pub crop_and_resize: bool,
}

fn default_ms_ssim_weight() -> f64 {
    DEFAULT_MS_SSIM_WEIGHT
}

fn default_feature_weight() -> f64 {
    DEFAULT_FEATURE_WEIGHT
}

impl ObserverDistortion {
    /// `alpha` with the default weights and layers.
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha,
            ms_ssim_weight: DEFAULT_MS_SSIM_WEIGHT,
            feature_weight: DEFAULT_FEATURE_WEIGHT,
            layers: FeatureLayers::default(),
            crop_and_resize: false,
        }
    }

    /// `(1 - alpha) * w_ms`, what `1 - MS-SSIM` is multiplied by.
    pub fn ms_ssim_coefficient(&self) -> f64 {
        (1.0 - self.alpha) * self.ms_ssim_weight
    }

    /// `alpha * w_f`, what `L_f` is multiplied by.
    pub fn feature_coefficient(&self) -> f64 {
        self.alpha * self.feature_weight
    }

    /// Checks that `alpha` is in [0, 1], the weights are finite and non-negative, and at least
    /// one layer is chosen.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] naming the offending parameter.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| {
            Err(ModelError::InvalidModel(format!(
                "observer distortion: {m}"
            )))
        };
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad(format!("alpha {} is outside [0, 1]", self.alpha));
        }
        for (name, w) in [("w_ms", self.ms_ssim_weight), ("w_f", self.feature_weight)] {
            if !w.is_finite() || w < 0.0 {
                return bad(format!("{name} {w} must be finite and >= 0"));
            }
        }
        if self.layers.is_empty() {
            return bad("no feature layer chosen".into());
        }
        Ok(())
    }
}

impl Default for ObserverDistortion {
    /// `alpha` = 0.5 with the default weights and layers.
    fn default() -> Self {
        Self::new(0.5)
    }
}

/// A set of classifier layers ([`FeatureLayer`]), `Copy` so that [`Distortion`] stays `Copy`.
/// Serialised as a list of layer names in network order, e.g. `["stage1", "head"]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureLayers(u16);

impl FeatureLayers {
    /// The set of `layers` (order and repeats do not matter).
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] for a stage index out of range.
    pub fn new(layers: &[FeatureLayer]) -> Result<Self, ModelError> {
        let all = FeatureLayer::all();
        let mut bits = 0u16;
        for layer in layers {
            let index = all.iter().position(|l| l == layer).ok_or_else(|| {
                ModelError::InvalidModel(format!("feature layer {layer} does not exist"))
            })?;
            bits |= 1 << index;
        }
        Ok(Self(bits))
    }

    /// The layers, from the earliest.
    pub fn to_vec(&self) -> Vec<FeatureLayer> {
        FeatureLayer::all()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, l)| l)
            .collect()
    }

    /// Whether no layer is chosen.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl Default for FeatureLayers {
    /// [`DEFAULT_FEATURE_LAYERS`].
    fn default() -> Self {
        let all = FeatureLayer::all();
        Self(
            DEFAULT_FEATURE_LAYERS
                .iter()
                .filter_map(|l| all.iter().position(|a| a == l))
                .fold(0, |bits, i| bits | 1 << i),
        )
    }
}

impl fmt::Debug for FeatureLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl fmt::Display for FeatureLayers {
    /// Comma-separated names, e.g. `stage1,head`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.to_vec().iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for FeatureLayers {
    type Err = ModelError;

    /// Parses comma-separated layer names (`stem`, `stage0`..`stage6`, `head`), e.g.
    /// `stage1,head`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let layers = s
            .split(',')
            .map(|name| name.trim().parse::<FeatureLayer>())
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(&layers)
    }
}

impl Serialize for FeatureLayers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.to_vec().iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for FeatureLayers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let layers = names
            .iter()
            .map(|n| n.parse::<FeatureLayer>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Self::new(&layers).map_err(serde::de::Error::custom)
    }
}

/// The terms of one evaluation of a [`DistortionMeasure`].
#[derive(Debug)]
pub struct DistortionTerms {
    /// `D`, the distortion that `lambda` multiplies (a scalar, differentiable).
    pub total: Tensor,
    /// `1 - MS-SSIM` (unweighted), when it was computed.
    pub ms_ssim: Option<Tensor>,
    /// `L_f` (unweighted), when it was computed.
    pub features: Option<Tensor>,
}

/// Computes a [`Distortion`]: built once per training run, it owns the frozen observer
/// classifier when the distortion needs one (the built-in [`Classifier`] looking at the
/// distortion's layers, or any other [`Observer`], e.g. a user's TorchScript module).
#[derive(Debug)]
pub struct DistortionMeasure {
    distortion: Distortion,
    observer: Option<Box<dyn Observer>>,
}

impl DistortionMeasure {
    /// The measure of `distortion`, loading the observer classifier from `observer_weights`
    /// (e.g. [`observer::default_weights_path`]) only if the distortion needs it
    /// ([`Distortion::needs_classifier`]).
    ///
    /// # Errors
    /// As [`Distortion::validate`]; when the classifier is needed, as
    /// [`Classifier::load`] (converted to [`ModelError`]: missing weights are
    /// [`ModelError::InvalidModel`] with the path and how to install them).
    pub fn new(distortion: Distortion, observer_weights: &Path) -> Result<Self, ModelError> {
        let classifier = if distortion.needs_classifier() {
            Some(Classifier::load(observer_weights)?)
        } else {
            None
        };
        Self::with_classifier(distortion, classifier)
    }

    /// The measure of `distortion` with an already loaded built-in classifier (kept only if
    /// needed), set to compare the distortion's layers.
    ///
    /// # Errors
    /// As [`Distortion::validate`]; [`ModelError::InvalidModel`] when the distortion needs a
    /// classifier and `classifier` is `None`.
    pub fn with_classifier(
        distortion: Distortion,
        classifier: Option<Classifier>,
    ) -> Result<Self, ModelError> {
        let observer = match (distortion, classifier) {
            (Distortion::Observer(o), Some(mut classifier)) => {
                classifier.set_feature_layers(&o.layers.to_vec())?;
                Some(Box::new(classifier) as Box<dyn Observer>)
            }
            _ => None,
        };
        Self::with_observer(distortion, observer)
    }

    /// The measure of `distortion` with any observer (kept only if needed). The feature term
    /// compares what [`Observer::observe_features`] returns; the distortion's `layers` name
    /// layers of the built-in classifier and do not apply.
    ///
    /// # Errors
    /// As [`Distortion::validate`]; [`ModelError::InvalidModel`] when the distortion needs a
    /// classifier and `observer` is `None`.
    pub fn with_observer(
        distortion: Distortion,
        observer: Option<Box<dyn Observer>>,
    ) -> Result<Self, ModelError> {
        distortion.validate()?;
        let observer = if distortion.needs_classifier() {
            Some(observer.ok_or_else(|| {
                ModelError::InvalidModel(format!("{distortion} needs the observer classifier"))
            })?)
        } else {
            None
        };
        Ok(Self {
            distortion,
            observer,
        })
    }

    /// The distortion measured.
    pub fn distortion(&self) -> Distortion {
        self.distortion
    }

    /// The observer classifier, if the distortion needs one.
    pub fn observer(&self) -> Option<&dyn Observer> {
        self.observer.as_deref()
    }

    /// The distortion of `x_hat` against `x` (N, 3, H, W), values nominally in [0, 1], averaged
    /// over the batch, with its terms. `x_hat` is used unclamped, as the training forward pass
    /// returns it, except by the feature term (see [`feature_distance`]). Terms whose
    /// coefficient is zero are not computed (`alpha` = 0 never runs the classifier, `alpha` = 1
    /// never computes MS-SSIM).
    ///
    /// # Errors
    /// [`ModelError::Shape`] if the shapes differ or MS-SSIM cannot be computed at this size
    /// (sides below [`crate::msssim::MIN_SIDE`]), or the classifier rejects the batch.
    pub fn compute(&self, x: &Tensor, x_hat: &Tensor) -> Result<DistortionTerms, ModelError> {
        if x.size() != x_hat.size() || x.dim() != 4 {
            return Err(ModelError::Shape(format!(
                "distortion needs two equal (N, 3, H, W) shapes, got {:?} and {:?}",
                x.size(),
                x_hat.size()
            )));
        }
        let one_minus_ms_ssim = || -> Result<Tensor, ModelError> {
            Ok(1.0 - ms_ssim(x, x_hat, 1.0)?.mean(Kind::Float))
        };
        match self.distortion {
            Distortion::Mse => Ok(DistortionTerms {
                total: (x - x_hat).square().mean(Kind::Float) * (255.0 * 255.0),
                ms_ssim: None,
                features: None,
            }),
            Distortion::MsSsim => {
                let term = one_minus_ms_ssim()?;
                Ok(DistortionTerms {
                    total: term.shallow_clone(),
                    ms_ssim: Some(term),
                    features: None,
                })
            }
            Distortion::Observer(o) => {
                let ms_coefficient = o.ms_ssim_coefficient();
                let f_coefficient = o.feature_coefficient();
                let ms_ssim = if ms_coefficient != 0.0 {
                    Some(one_minus_ms_ssim()?)
                } else {
                    None
                };
                let features = match &self.observer {
                    Some(observer) if f_coefficient != 0.0 => Some(observer_feature_distance(
                        observer.as_ref(),
                        x,
                        x_hat,
                        o.crop_and_resize,
                    )?),
                    _ => None,
                };
                let total = match (&ms_ssim, &features) {
                    (Some(m), Some(f)) => m * ms_coefficient + f * f_coefficient,
                    (Some(m), None) => m * ms_coefficient,
                    (None, Some(f)) => f * f_coefficient,
                    // Both weights zero: a valid (if useless) rate-only objective.
                    (None, None) => Tensor::zeros([], (Kind::Float, x.device())),
                };
                Ok(DistortionTerms {
                    total,
                    ms_ssim,
                    features,
                })
            }
        }
    }
}

/// What the classifier is given for images in [0, 1] (N, 3, H, W): with `crop_and_resize`,
/// the full preprocessing [`observer::preprocess`] (center crop of 224/256 of the short side,
/// antialiased bicubic resize to 224x224, normalisation); without, only
/// [`observer::normalize`], the images at their own resolution. Both are differentiable.
///
/// The default (without) mirrors the evaluation protocol, where the compressed image *is* the
/// classifier's 224x224 crop and goes through `normalize` only: the classifier sees the codec's
/// artifacts at the scale they have in the decoded image, not magnified and low-passed by the
/// 4/3 upsampling (168 -> 224) a 192 crop would get, every pixel of the crop gets a gradient
/// (the center crop would leave a 12-pixel border of a 192 crop, 23% of its pixels, without
/// one), and it is cheaper: the classifier runs on 192^2 instead of 224^2 pixels and the
/// backward pass of the antialiased bicubic resize is skipped. EfficientNet is fully
/// convolutional up to its global pooling, so any side of at least 32 pixels works.
///
/// # Errors
/// [`ModelError::Shape`] as [`observer::preprocess`].
pub fn observer_input(images: &Tensor, crop_and_resize: bool) -> Result<Tensor, ModelError> {
    if crop_and_resize {
        Ok(observer::preprocess(images)?)
    } else {
        Ok(observer::normalize(images))
    }
}

/// `L_f`: the mean over `layers` of the normalised feature MSE between the original `x` and
/// the reconstruction `x_hat` (module documentation):
///
/// ```text
/// L_f = 1/|S| sum_l mean (phi_l(x_hat') - phi_l(x))^2 / sg(mean phi_l(x)^2 + eps)
/// ```
///
/// * `x_hat' = x_hat + sg(clamp(x_hat, 0, 1) - x_hat)`: the classifier sees the reconstruction
///   clamped to [0, 1] as the decoder outputs it (`decompress` clamps), while the gradient
///   passes straight through, also for pixels outside [0, 1] (a plain clamp would give them
///   none from this term).
/// * The original's features are computed without autograd (the classifier is frozen and `x`
///   is data), the reconstruction's with it, so gradients reach `x_hat` (and through it the
///   codec) but never the classifier's weights. The classifier runs only up to the deepest
///   layer of `layers` ([`Classifier::features`]).
///
/// # Errors
/// [`ModelError::Shape`] for shapes that differ, an empty `layers`, or a batch the classifier
/// cannot take.
pub fn feature_distance(
    classifier: &Classifier,
    layers: &[FeatureLayer],
    x: &Tensor,
    x_hat: &Tensor,
    crop_and_resize: bool,
) -> Result<Tensor, ModelError> {
    if layers.is_empty() {
        return Err(ModelError::Shape("feature distance needs a layer".into()));
    }
    relative_feature_mse(
        |images| classifier.features(images, layers),
        x,
        x_hat,
        crop_and_resize,
    )
}

/// `L_f` as [`feature_distance`], over the maps any observer compares
/// ([`Observer::observe_features`]: its feature maps, or its logits if it returns none).
///
/// # Errors
/// [`ModelError::Shape`] for shapes that differ, an observer that returns no map, or a batch
/// the observer cannot take.
pub fn observer_feature_distance(
    observer: &dyn Observer,
    x: &Tensor,
    x_hat: &Tensor,
    crop_and_resize: bool,
) -> Result<Tensor, ModelError> {
    relative_feature_mse(
        |images| observer.observe_features(images),
        x,
        x_hat,
        crop_and_resize,
    )
}

fn relative_feature_mse(
    features: impl Fn(&Tensor) -> Result<Vec<Tensor>, observer::ObserverError>,
    x: &Tensor,
    x_hat: &Tensor,
    crop_and_resize: bool,
) -> Result<Tensor, ModelError> {
    if x.size() != x_hat.size() {
        return Err(ModelError::Shape(format!(
            "feature distance needs two equal shapes, got {:?} and {:?}",
            x.size(),
            x_hat.size()
        )));
    }
    let reference = tch::no_grad(|| -> Result<Vec<Tensor>, ModelError> {
        Ok(features(&observer_input(x, crop_and_resize)?)?)
    })?;
    let clamped = x_hat + (x_hat.clamp(0.0, 1.0) - x_hat).detach();
    let observed = features(&observer_input(&clamped, crop_and_resize)?)?;
    if reference.is_empty() || reference.len() != observed.len() {
        return Err(ModelError::Shape(format!(
            "the observer returned {} and {} feature maps",
            reference.len(),
            observed.len()
        )));
    }
    let per_layer: Vec<Tensor> = reference
        .iter()
        .zip(&observed)
        .map(|(r, o)| {
            let energy = r.square().mean(Kind::Float) + FEATURE_EPSILON;
            (o - r).square().mean(Kind::Float) / energy
        })
        .collect();
    Ok(Tensor::stack(&per_layer, 0).mean(Kind::Float))
}

/// PSNR in dB of a mean squared error on 0..1 images.
pub fn psnr(mse: f64) -> f64 {
    -10.0 * mse.max(1e-12).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_alphas() {
        let names: Vec<String> = [0.0, 0.125, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|&a| Distortion::observer(a).to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[3], "observer-0.5");
        assert_eq!(names[5], "observer-1");
        for name in names.iter().map(String::as_str).chain(["mse", "ms-ssim"]) {
            assert_eq!(
                name.parse::<Distortion>().map(|d| d.to_string()).ok(),
                Some(name.into())
            );
        }
        for bad in [
            "observer-1.5",
            "observer-",
            "observer-x",
            "MSE",
            "observer--0.1",
        ] {
            assert!(bad.parse::<Distortion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_layers_and_their_names() {
        let layers = FeatureLayers::default();
        assert_eq!(layers.to_vec(), DEFAULT_FEATURE_LAYERS.to_vec());
        assert_eq!(layers.to_string(), "stage1,head");
        assert_eq!("head, stage1".parse::<FeatureLayers>().ok(), Some(layers));
        assert!("stage9".parse::<FeatureLayers>().is_err());
    }
}
