//! The error type of the codec, grouped by who is at fault.

use crate::container::{ContainerError, ModelFingerprint};

/// Everything that can go wrong encoding or decoding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `.ocu` input is malformed, unsupported or over the limits (the file's fault).
    #[error("invalid .ocu file: {0}")]
    Container(#[from] ContainerError),
    /// A range-coded stream could not be decoded (the file is corrupt).
    #[error("corrupt .ocu file: {0}")]
    CorruptStream(String),
    /// The file was made by another model than the one given to the decoder.
    #[error(
        "this file was made by model '{file_model}' ({file_fingerprint}), not by '{model}' ({fingerprint}); \
         decode it with the model that encoded it"
    )]
    ModelMismatch {
        /// Model name in the file.
        file_model: String,
        /// Model fingerprint in the file.
        file_fingerprint: ModelFingerprint,
        /// Name of the decoder's model.
        model: String,
        /// Fingerprint of the decoder's model.
        fingerprint: ModelFingerprint,
    },
    /// No built-in model has the fingerprint of the file (pass its model file explicitly).
    #[error(
        "this file was made by model '{name}' ({fingerprint}), which is not built into this ocular; \
         pass its model file with --model"
    )]
    UnknownModel {
        /// Model name in the file.
        name: String,
        /// Model fingerprint in the file.
        fingerprint: ModelFingerprint,
    },
    /// No built-in model fits the request (name, quality, ...).
    #[error("no built-in model {0}")]
    NoSuchModel(String),
    /// No rate point gives a file as small as the target.
    #[error("no model reaches {target_bpp} bpp on this image; the lowest rate point spends more")]
    RateTargetUnreachable {
        /// The requested bits per pixel.
        target_bpp: f64,
    },
    /// A quality outside the range a variable-rate model codes at.
    #[error("quality {quality} is outside the range of model '{model}' ({min}..={max})")]
    QualityOutOfRange {
        /// The model's name.
        model: String,
        /// The quality asked for.
        quality: f32,
        /// Its lowest quality.
        min: f32,
        /// Its highest quality.
        max: f32,
    },
    /// A continuous quality (or an exact rate) asked of a fixed-rate model.
    #[error("model '{model}' is a fixed-rate model: it codes at one rate only")]
    FixedRateModel {
        /// The model's name.
        model: String,
    },
    /// A variable-rate model cannot make a file of the target size for this image.
    #[error(
        "cannot reach {target_bpp} bpp on this image: model '{model}' spans {min_bpp:.4}..={max_bpp:.4} bpp here"
    )]
    BppOutOfReach {
        /// The model's name.
        model: String,
        /// The requested bits per pixel.
        target_bpp: f64,
        /// Bits per pixel at its lowest quality.
        min_bpp: f64,
        /// Bits per pixel at its highest quality.
        max_bpp: f64,
    },
    /// A model file is invalid.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The input image cannot be read or is empty / too large.
    #[error("unusable input image: {0}")]
    Image(String),
    /// Refinement needs the model's observer classifier and it cannot be loaded (install the
    /// built-in one with `make setup`).
    #[error("observer unavailable: {0}")]
    ObserverUnavailable(String),
    /// An observer mix outside [0, 1], or other than 0 of a model not conditioned on the mix
    /// (the caller's fault; a file's mix is checked by the container).
    #[error("model '{model}' cannot code at observer mix {alpha}: {reason}")]
    ObserverMixUnavailable {
        /// The model's name.
        model: String,
        /// The mix asked for.
        alpha: f32,
        /// Why not.
        reason: String,
    },
    /// A realism weight outside 0..=1 was asked for (the caller's fault).
    #[error("realism {0} is outside 0..=1")]
    RealismOutOfRange(f32),
    /// A realism weight above 0 was asked for, and the model has no realism decoder (the
    /// caller's: attach its companion file).
    #[error(
        "model '{model}' has no realism decoder (its companion file {model}.realism.safetensors)"
    )]
    NoRealismDecoder {
        /// The model's name.
        model: String,
    },
    /// The decoded image could not be written where the caller asked
    /// ([`Decoder::decode_rows`](crate::Decoder::decode_rows)): the environment's fault.
    #[error("cannot write the decoded image: {0}")]
    Output(#[source] std::io::Error),
    /// The computation failed inside libtorch (a bug or resource exhaustion, not bad input).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ocular_models::ModelError> for Error {
    fn from(error: ocular_models::ModelError) -> Self {
        use ocular_models::ModelError;
        match error {
            ModelError::Entropy(message) => Error::CorruptStream(message),
            ModelError::InvalidModel(message) => Error::InvalidModel(message),
            ModelError::Io(path, e) => Error::InvalidModel(format!("{path}: {e}")),
            other => Error::Internal(other.to_string()),
        }
    }
}
