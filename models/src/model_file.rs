//! Model files: safetensors weights (fp16) plus, in the safetensors metadata, the model's
//! description and its integer coding tables.
//!
//! A model file is everything a decoder needs: the networks and the exact tables the encoder
//! used. Tables are computed from the fp16-rounded weights that are stored, so a loaded model codes
//! exactly like the model that was saved.

//!
//! Reading the description, the tables and the fingerprint needs no libtorch; loading the
//! networks into tch, writing model files and untrained models need the `torch` feature
//! (`CodecModel`, `serialize_model`, `untrained_model_bytes`).

use std::collections::HashMap;

use ocular_entropy::CdfTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::distortion::Distortion;
use crate::latents::HyperpriorConfig;
use crate::ModelError;

#[cfg(feature = "torch")]
mod torch;
#[cfg(feature = "torch")]
pub(crate) use torch::{load_tensors, load_tensors_but};
#[cfg(feature = "torch")]
pub use torch::{
    serialize_model, untrained_model_bytes, untrained_observer_mix_model_bytes,
    untrained_variable_rate_model_bytes, CodecModel,
};

/// Version of the model-file layout this crate writes and reads.
pub const MODEL_FORMAT_VERSION: u32 = 1;
pub(crate) const INFO_KEY: &str = "ocular.info";
pub(crate) const TABLES_KEY: &str = "ocular.tables";

/// How a model was trained (recorded for users; not needed to code).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Optimiser steps taken in total.
    pub steps: u64,
    /// Wall-clock seconds of training in total.
    pub seconds: f64,
    /// Images per step.
    pub batch_size: i64,
    /// Side of the square training crops.
    pub crop_size: i64,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Where the training images came from.
    pub dataset: String,
    /// Model this one was initialised from, if any.
    pub initialised_from: Option<String>,
    /// The observer classifier of an observer distortion, when it is not the built-in one
    /// (e.g. `torchscript:inception_resnet_v2.pt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer: Option<String>,
}

/// Description of a model, stored in its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Layout version of the file ([`MODEL_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Short name, e.g. `mse-q3`; written into every `.ocu` file the model makes.
    pub name: String,
    /// Rate point within its family (higher = more bits, better quality).
    pub quality: u8,
    /// Network shape.
    pub network: HyperpriorConfig,
    /// What the distortion term measured.
    pub distortion: Distortion,
    /// Rate-distortion trade-off: loss = bpp + lambda * distortion (for a variable-rate
    /// model, at its reference quality: [`crate::rate`]).
    pub lambda: f64,
    /// The qualities a variable-rate model codes at; `None` for a fixed-rate model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable_rate: Option<crate::rate::QualityRange>,
    /// Whether the network is conditioned on the observer mix `alpha` (one network for every
    /// mix of the person's and the classifier's distortion, trained with the observer
    /// distortion; its file holds the conditioning's `alpha.*` tensors).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observer_mix: bool,
    /// How it was trained.
    pub training: TrainingSummary,
}

/// The integer tables stored in a model file.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredTables {
    /// One per channel of `z`.
    pub z: Vec<CdfTable>,
    /// One per entry of the scale table.
    pub y: Vec<CdfTable>,
}

/// The description and the stored tables of a model file (no weights are read).
///
/// # Errors
/// [`ModelError::InvalidModel`] if the metadata or the tables are missing or malformed.
pub(crate) fn read_info_and_tables(bytes: &[u8]) -> Result<(ModelInfo, StoredTables), ModelError> {
    let invalid = |what: String| ModelError::InvalidModel(what);
    let (info, entries) = read_metadata(bytes)?;
    let tables_json = entries
        .get(TABLES_KEY)
        .ok_or_else(|| invalid(format!("no {TABLES_KEY} entry")))?;
    let stored: StoredTables =
        serde_json::from_str(tables_json).map_err(|e| invalid(format!("bad {TABLES_KEY}: {e}")))?;
    Ok((info, stored))
}

/// The description stored in a model file, read from its metadata alone (no weights are
/// loaded): for choosing among model files cheaply.
///
/// # Errors
/// [`ModelError::InvalidModel`] if the metadata is missing, malformed or of another version.
pub fn read_info(bytes: &[u8]) -> Result<ModelInfo, ModelError> {
    Ok(read_metadata(bytes)?.0)
}

/// The validated description and the raw metadata entries of a model file.
pub(crate) fn read_metadata(
    bytes: &[u8],
) -> Result<(ModelInfo, HashMap<String, String>), ModelError> {
    let invalid = |what: String| ModelError::InvalidModel(what);
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
    let entries = metadata
        .metadata()
        .clone()
        .ok_or_else(|| invalid("no ocular metadata".into()))?;
    let info_json = entries
        .get(INFO_KEY)
        .ok_or_else(|| invalid(format!("no {INFO_KEY} entry")))?;
    let info: ModelInfo =
        serde_json::from_str(info_json).map_err(|e| invalid(format!("bad {INFO_KEY}: {e}")))?;
    if info.format_version != MODEL_FORMAT_VERSION {
        return Err(invalid(format!(
            "model format version {} is not supported (this build reads {MODEL_FORMAT_VERSION})",
            info.format_version
        )));
    }
    let HyperpriorConfig { n, m } = info.network;
    if !(1..=1024).contains(&n) || !(1..=1024).contains(&m) {
        return Err(invalid(format!("implausible network shape N={n}, M={m}")));
    }
    Ok((info, entries))
}

/// First 8 bytes of the SHA-256 of a model file's bytes.
pub fn fingerprint(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(bytes);
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The values of a stored tensor as `f32`: fp16 and bf16 (as model files store them) widened
/// exactly, f32 (as checkpoints store them) as is.
///
/// # Errors
/// The dtype's name if it is none of those three.
pub fn tensor_f32(view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>, String> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    use safetensors::tensor::Dtype;
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F16 => widen(data, |bits, out| {
            bits.reinterpret_cast::<half::f16>()
                .convert_to_f32_slice(out)
        }),
        Dtype::BF16 => widen(data, |bits, out| {
            bits.reinterpret_cast::<half::bf16>()
                .convert_to_f32_slice(out)
        }),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => return Err(format!("{other:?}")),
    })
}

/// Little-endian 16-bit floats widened exactly by `convert` (bits to values, `f16` or `bf16`).
/// The data need not be aligned for `u16`, so blocks of it are copied to the stack first; each
/// block is then converted at once (F16C where the CPU has it): converting value by value asks
/// for the CPU's features at every value, several times slower, and loading a model is a good
/// part of a whole-process decode.
fn widen(data: &[u8], convert: impl Fn(&[u16], &mut [f32])) -> Vec<f32> {
    const BLOCK: usize = 256;
    let mut values = vec![0.0f32; data.len() / 2];
    let mut bits = [0u16; BLOCK];
    for (bytes, out) in data.chunks(2 * BLOCK).zip(values.chunks_mut(BLOCK)) {
        let bits = &mut bits[..out.len()];
        for (b, pair) in bits.iter_mut().zip(bytes.chunks_exact(2)) {
            *b = u16::from_le_bytes([pair[0], pair[1]]);
        }
        convert(bits, out);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    /// Every 16-bit pattern (NaNs, infinities, subnormals, both zeros), over several blocks and
    /// a partial one, from data at an odd address: each value as the value-by-value conversion
    /// gives it, to the bit.
    #[test]
    fn half_floats_widen_exactly_from_unaligned_data() {
        let patterns: Vec<u16> = (0..=u16::MAX).collect();
        let mut bytes = vec![0u8];
        bytes.extend(patterns.iter().flat_map(|p| p.to_le_bytes()));
        let data = &bytes[1..];
        for (dtype, one) in [
            (
                Dtype::F16,
                (|b| half::f16::from_bits(b).to_f32()) as fn(u16) -> f32,
            ),
            (Dtype::BF16, |b| half::bf16::from_bits(b).to_f32()),
        ] {
            let view = TensorView::new(dtype, vec![patterns.len()], data).expect("a view");
            let widened = tensor_f32(&view).expect("a float type");
            let expected: Vec<u32> = patterns.iter().map(|&p| one(p).to_bits()).collect();
            let found: Vec<u32> = widened.iter().map(|v| v.to_bits()).collect();
            assert!(found == expected, "{dtype:?} differs");
        }
    }
}
