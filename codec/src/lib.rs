//! ocular: a learned lossy image codec.
//!
//! An analysis network turns an image into a latent `y`; a hyperprior `z` tells the decoder the
//! mean and scale of every element of `y`; both are range-coded into an `.ocu` file
//! ([`container`]). Models are trained with `ocular train` and the best ones are built in.
//!
//! ```no_run
//! # fn main() -> Result<(), ocular::Error> {
//! let model = ocular::Model::builtin_default()?;
//! let image = image::open("photo.png").map_err(|e| ocular::Error::Image(e.to_string()))?;
//! let file = ocular::Encoder::new(&model).encode(&image)?;
//! let decoded = ocular::Decoder::new(&model).decode(&file)?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `codec` (default): [`Model`], [`Encoder`], [`Decoder`], rate control, [`metrics`] (PSNR)
//!   and [`open_image`], in pure Rust: no libtorch, nothing to install. Without it only the
//!   container ([`Bitstream`], [`Limits`]) is built, so it can be fuzzed on its own.
//! - `torch`: libtorch (tch) for refinement (`Encoder::with_refinement`,
//!   `encode_within_bpp_refined`), training (`train`), the observer classifiers (`observer`),
//!   MS-SSIM in [`metrics`], and the perceptual metrics (`perceptual`).
//!
//! The `ocular` command and the evaluation harness (`ocular eval`, `ocular bench imagenet`,
//! their JPEG / WebP baselines, plots and HTML reports) are the `ocular-cli` package, built on
//! this library's public API only.
#![forbid(unsafe_code)]

pub mod container;
pub mod limits;

pub use container::{
    Bitstream, ContainerError, Header, LatentShape, ModelFingerprint, ObserverMix,
};
pub use limits::Limits;
/// The grid step of a variable-rate model's file ([`Header::quantization_step`]).
pub use ocular_entropy::{QuantizationStep, Shrinkage};

#[cfg(feature = "codec")]
mod codec;
#[cfg(feature = "codec")]
mod error;
#[cfg(feature = "codec")]
pub mod metrics;
#[cfg(feature = "codec")]
mod model;
#[cfg(feature = "codec")]
mod rate_control;
#[cfg(feature = "codec")]
mod rows;
#[cfg(feature = "torch")]
mod torch_model;

#[cfg(feature = "codec")]
pub use codec::{open_image, Decoder, Encoder};
#[cfg(feature = "codec")]
pub use error::Error;
#[cfg(feature = "codec")]
pub use model::{Model, DEFAULT_MODEL, DEFAULT_QUALITY};
#[cfg(feature = "codec")]
pub use ocular_models::rate::quality_of_step;
#[cfg(feature = "codec")]
pub use rate_control::{
    encode_to_bpp, encode_within_bpp, ExactRate, RateControlled, EXACT_RATE_TOLERANCE,
    MAX_RATE_SEARCH_ENCODES,
};
#[cfg(feature = "torch")]
pub use rate_control::{encode_within_bpp_refined, refine_within};
#[cfg(feature = "codec")]
pub use rows::{PngRows, RowSink};

/// The ImageNet classifier that observes reconstructions (EfficientNet-Lite0), for `ocular classify`
/// and observer-dependent training, and EfficientNet-Lite1, a judge the codec is never trained
/// for (`ocular bench imagenet --judges`). `make setup` installs their weights.
#[cfg(feature = "torch")]
pub mod observer {
    pub use ocular_models::observer::{
        default_weights_path, load_image, load_observer, preprocess, top_k, weights_path,
        Classifier, FeatureLayer, Observation, Observer, ObserverError, Synsets,
        TorchScriptObserver, Variant,
    };
}

/// Perceptual metrics for people, measured with EfficientNet-Lite1 (a network the codec is
/// never trained with): the deep-feature distance per image and KID per set of images. See
/// `docs/observer.md`; `make setup` installs the weights.
#[cfg(feature = "torch")]
pub mod perceptual {
    pub use ocular_models::perceptual::{
        kid, patch_origins, DeepFeatures, FeatureSet, Kid, KidConfig, PerceptualError,
        PerceptualNet, DEEP_LAYERS, FEATURE_DIM, NORM_EPSILON, PATCH_SHIFT, PATCH_SIZE,
    };
}

/// Training of new models (for the `ocular train` command and for embedding programs).
#[cfg(feature = "torch")]
pub mod train {
    pub use ocular_models::losses::{
        FeatureLayers, ObserverDistortion, DEFAULT_FEATURE_WEIGHT, DEFAULT_MS_SSIM_WEIGHT,
    };
    pub use ocular_models::model_file::{
        untrained_model_bytes, untrained_observer_mix_model_bytes,
        untrained_variable_rate_model_bytes,
    };
    pub use ocular_models::rate::QualityRange;
    pub use ocular_models::realism_train::{train_realism, RealismConfig, RealismOutcome};
    pub use ocular_models::train::{
        image_files, train, TrainConfig, TrainOutcome, Validation, DEFAULT_MIX_LEARNING_RATE_FACTOR,
    };
    pub use ocular_models::{ComputePrecision, Distortion, HyperpriorConfig};

    /// Sets the number of threads libtorch computes with (results differ bit-for-bit between
    /// thread counts; coding does not depend on it, training speed does).
    pub fn set_threads(threads: i32) {
        tch::set_num_threads(threads);
    }
}
