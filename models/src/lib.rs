//! Model files and the networks of the ocular learned image codec.
//!
//! Always built (no libtorch): [`model_file`] reads a model's description, tables and
//! fingerprint; [`infer`] runs its analysis and synthesis networks in pure Rust; [`pure`]
//! codes images with them ([`pure::PureModel`]: `compress_at`, `decompress`), bit-compatible
//! with the libtorch path; [`rate`] maps a variable-rate model's quality to its quantisation
//! step and lambda; [`distortion`] names the training distortions.
//!
//! With the `torch` feature (tch / libtorch; these modules exist only with it): layers
//! (`layers`) build the trainable transforms; entropy models (`entropy_models`) give
//! likelihoods at training time and integer tables at coding time; the model
//! (`hyperprior::MeanScaleHyperprior`) exposes the train-time `forward`, `compress` and
//! `decompress`; `refine` refines latents; `losses`, `msssim` and `observer` measure
//! distortion; `perceptual` holds the metrics for people measured with a network never used in
//! training (deep-feature distance, KID); `train` trains a model and `model_file` writes it.
// `deny`, not `forbid`: `infer::matmul` alone calls the `gemm` crate's unsafe product.
#![deny(unsafe_code)]

pub mod distortion;
pub mod infer;
pub mod latents;
pub mod model_file;
pub mod pure;
pub mod rate;
pub mod realism;
pub mod shrinkage;

#[cfg(feature = "torch")]
mod autocast;
#[cfg(feature = "torch")]
pub mod entropy_models;
#[cfg(feature = "torch")]
pub mod hyperprior;
#[cfg(feature = "torch")]
pub mod imaging;
#[cfg(feature = "torch")]
pub mod layers;
#[cfg(feature = "torch")]
pub mod losses;
#[cfg(feature = "torch")]
pub mod msssim;
#[cfg(feature = "torch")]
pub mod observer;
#[cfg(feature = "torch")]
pub mod perceptual;
#[cfg(feature = "torch")]
pub mod realism_train;
#[cfg(feature = "torch")]
pub mod refine;
#[cfg(feature = "torch")]
pub mod train;
#[cfg(feature = "torch")]
mod widen;

pub use distortion::Distortion;
pub use latents::{CompressedLatents, HyperpriorConfig, ModelTables};
pub use model_file::{ModelInfo, TrainingSummary};
pub use pure::PureModel;
pub use realism::{Realism, RealismDecoder};
pub use shrinkage::Shrinkage;

#[cfg(feature = "torch")]
pub use hyperprior::MeanScaleHyperprior;
#[cfg(feature = "torch")]
pub use layers::ComputePrecision;
#[cfg(feature = "torch")]
pub use model_file::CodecModel;

/// Errors of the models crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A model file (or checkpoint) is malformed or does not fit this build.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A tensor has a shape the operation cannot take.
    #[error("shape error: {0}")]
    Shape(String),
    /// Range coding failed (corrupt stream, symbol out of range).
    #[error("entropy coding: {0}")]
    Entropy(String),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// An image could not be decoded.
    #[error("{0}: {1}")]
    Image(String, #[source] image::ImageError),
    /// A training run directory already holds a checkpoint and resuming was not asked for.
    #[error("{0} already holds a training checkpoint: pass --resume to continue it, or choose another --run-dir")]
    RunExists(String),
    /// No usable training image was found.
    #[error("no readable image of at least {1} px in {0}")]
    NoImages(String, i64),
    /// The pure-Rust networks refused their weights or input.
    #[error("inference: {0}")]
    Inference(#[from] infer::InferError),
    /// libtorch reported an error.
    #[cfg(feature = "torch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl From<ocular_entropy::EncodeError> for ModelError {
    fn from(e: ocular_entropy::EncodeError) -> Self {
        ModelError::Entropy(e.to_string())
    }
}

impl From<ocular_entropy::DecodeError> for ModelError {
    fn from(e: ocular_entropy::DecodeError) -> Self {
        ModelError::Entropy(e.to_string())
    }
}
