//! Networks, entropy models, losses and training of the ocular learned image codec.
//!
//! Layers ([`layers`]) build the transforms; entropy models ([`entropy_models`]) give
//! likelihoods at training time and integer tables at coding time; the model
//! ([`hyperprior::MeanScaleHyperprior`]) exposes the train-time `forward`, `compress` and
//! `decompress`; [`rate`] maps a variable-rate model's quality to its quantisation step and
//! lambda; [`model_file`] stores a trained model with its tables; [`train`] trains one.
// `deny`, not `forbid`: `infer::matmul` alone calls the `gemm` crate's unsafe product.
#![deny(unsafe_code)]

pub mod entropy_models;
pub mod hyperprior;
pub mod imaging;
pub mod infer;
pub mod layers;
pub mod losses;
pub mod model_file;
pub mod msssim;
pub mod observer;
pub mod rate;
pub mod refine;
pub mod train;

pub use hyperprior::{CompressedLatents, HyperpriorConfig, MeanScaleHyperprior, ModelTables};
pub use layers::ComputePrecision;
pub use losses::Distortion;
pub use model_file::{CodecModel, ModelInfo, TrainingSummary};

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
    /// libtorch reported an error.
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
