//! The names and parameters of the distortion measures a model is trained with, as model files
//! record them ([`crate::ModelInfo::distortion`]): pure data, no libtorch.
//!
//! The measures themselves (`losses::DistortionMeasure`, MS-SSIM, the observer classifiers)
//! need the `torch` feature; their formulas are documented in `losses`:
//!
//! ```text
//! D = 255² MSE                                           (mse)
//! D = 1 - MS-SSIM                                        (ms-ssim)
//! D = (1 - alpha) w_ms (1 - MS-SSIM) + alpha w_f L_f      (observer-<alpha>)
//! ```
//!
//! Invariant: [`Distortion`]'s [`Display`](fmt::Display) form is the model's family name and
//! [`FromStr`] parses it back; [`FeatureLayers`] serialises as layer names in network order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelError;

/// Number of block groups of EfficientNet-Lite; [`FeatureLayer::Stage`] takes `0..NUM_STAGES`.
pub const NUM_STAGES: usize = 7;

/// A point of the network whose activations `observer::Classifier::forward_with_features` (feature `torch`) returns.
///
/// | layer | channels | resolution at 224x224 input (stride) |
/// |---|---|---|
/// | `Stem` (conv 3x3/2 + BN + ReLU6) | 32 | 112 (2) |
/// | `Stage(0)` | 16 | 112 (2) |
/// | `Stage(1)` | 24 | 56 (4) |
/// | `Stage(2)` | 40 | 28 (8) |
/// | `Stage(3)` | 80 | 14 (16) |
/// | `Stage(4)` | 112 | 14 (16) |
/// | `Stage(5)` | 192 | 7 (32) |
/// | `Stage(6)` | 320 | 7 (32) |
/// | `Head` (conv 1x1 + BN + ReLU6, before pooling) | 1280 | 7 (32) |
/// | `Logits` (pooled head, linear layer) | 1000 | none: shape (N, 1000) |
///
/// `Stage(k)` is the output of the last block of group `k` (block groups as in the reference
/// package's `blocks_args`; Lite0 blocks 0, 1-2, 3-4, 5-7, 8-10, 11-14, 15; Lite1 blocks 0,
/// 1-3, 4-6, 7-10, 11-14, 15-19, 20). Stage outputs have no activation (linear bottlenecks);
/// stem and head end in ReLU6. Channels and strides are those of both variants (sides scale
/// with the input: at 240, `Stage(1)` is 60x60).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureLayer {
    /// After the stem.
    Stem,
    /// After block group `k` (`0..NUM_STAGES`).
    Stage(usize),
    /// After the head convolution (the 1280 maps that are average-pooled into the classifier).
    Head,
    /// The classifier's output scores, (N, 1000). Compared by the observer loss like
    /// a feature map (relative MSE), this is logit matching, the distillation loss of Ba and
    /// Caruana ("Do deep nets really need to be deep?", 2014): the term that asks most
    /// directly for the same decision.
    Logits,
}

impl FeatureLayer {
    /// Every layer, from the earliest.
    pub fn all() -> Vec<FeatureLayer> {
        let mut v = vec![FeatureLayer::Stem];
        v.extend((0..NUM_STAGES).map(FeatureLayer::Stage));
        v.push(FeatureLayer::Head);
        v.push(FeatureLayer::Logits);
        v
    }
}

impl fmt::Display for FeatureLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureLayer::Stem => write!(f, "stem"),
            FeatureLayer::Stage(k) => write!(f, "stage{k}"),
            FeatureLayer::Head => write!(f, "head"),
            FeatureLayer::Logits => write!(f, "logits"),
        }
    }
}

/// A string that is not a feature layer name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown feature layer {0:?} (stem, stage0..stage6, head, logits)")]
pub struct ParseFeatureLayerError(pub String);

impl From<ParseFeatureLayerError> for ModelError {
    fn from(e: ParseFeatureLayerError) -> Self {
        ModelError::InvalidModel(e.to_string())
    }
}

impl FromStr for FeatureLayer {
    type Err = ParseFeatureLayerError;

    /// Parses `stem`, `stage0`..`stage6`, `head` or `logits` (the [`Display`](fmt::Display)
    /// form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stem" => Ok(FeatureLayer::Stem),
            "head" => Ok(FeatureLayer::Head),
            "logits" => Ok(FeatureLayer::Logits),
            _ => s
                .strip_prefix("stage")
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|&k| k < NUM_STAGES)
                .map(FeatureLayer::Stage)
                .ok_or_else(|| ParseFeatureLayerError(s.to_string())),
        }
    }
}

/// The default early and late feature layers for the observer loss: `Stage(1)` (24 x 56 x 56,
/// edges and textures) and `Head` (1280 x 7 x 7, what the classifier's linear layer reads).
pub const DEFAULT_FEATURE_LAYERS: [FeatureLayer; 2] = [FeatureLayer::Stage(1), FeatureLayer::Head];

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
    /// `1 - MS-SSIM`; needs crops of at least `msssim::MIN_SIDE` (161, feature `torch`) pixels.
    MsSsim,
    /// `(1 - alpha) * w_ms * (1 - MS-SSIM) + alpha * w_f * L_features`: human and classifier
    /// ("observer") quality mixed (see `losses`, feature `torch`).
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
    /// `msssim::MIN_SIDE` (161, feature `torch`) pixels.
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
    /// Feed the classifier its full preprocessing (`observer::preprocess`: center crop of
    /// 224/256 of the side, bicubic resize to 224) instead of the crop at its own resolution
    /// (default `false`, see `losses::observer_input`).
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
