//! The realism decoder: a second synthesis network `g_s'` for the latents of one model, trained
//! for natural-looking reconstructions (issue "The perception–distortion knob"), and the knob
//! that mixes it with the model's own `g_s` at decode time.
//!
//! # What is decoded
//!
//! ```text
//! x_hat(R) = clamp((1 - R) · g_s(y_hat) + R · g_s'(y_hat), 0, 1),   R in [0, 1]
//! ```
//!
//! Yan et al. (ICML 2022) show that mixing the outputs of a minimum-distortion decoder and a
//! perfect-realism decoder traces the perception–distortion bound (Blau & Michaeli, CVPR 2018);
//! `R` moves along it. `R = 0` runs `g_s` alone (the plain decoder's pixels, to the bit) and
//! `R = 1` runs `g_s'` alone; between them both run on every strip.
//!
//! # The companion file
//!
//! `g_s'` lives in a file of its own beside the model file (`NAME.realism.safetensors`), so the
//! model file, whose SHA-256 every `.ocu` file names, does not change: every existing file keeps
//! decoding, with either synthesis. The companion holds the `g_s.*` tensors of `g_s'` (the
//! shapes of the model's `g_s`) and, in its safetensors metadata under `ocular.realism`, a
//! [`RealismInfo`] naming the model (and its fingerprint) it was trained for. The encoder, the
//! hyperprior and the entropy model are the model's; nothing that selects a probability table
//! is involved, so the determinism contract is untouched (`g_s'` is a `g_s`).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::infer::Synthesis;
use crate::ModelError;

/// The metadata key of a companion file's [`RealismInfo`].
pub const REALISM_KEY: &str = "ocular.realism";

/// The companion file of the model file at `model`: `NAME.realism.safetensors` beside
/// `NAME.safetensors`.
pub fn companion_path(model: &std::path::Path) -> std::path::PathBuf {
    let stem = model.file_stem().unwrap_or_default().to_string_lossy();
    model.with_file_name(format!("{stem}.realism.safetensors"))
}

/// What a companion file says about its realism decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealismInfo {
    /// The name of the model whose latents it decodes.
    pub model_name: String,
    /// That model file's fingerprint (first 8 bytes of its SHA-256), in hex.
    pub model_fingerprint: String,
    /// The weight of the adversarial term it was trained with.
    pub adversarial_weight: f64,
    /// Training steps of `g_s'`.
    pub steps: u64,
    /// CPU seconds of its training (user + system).
    pub cpu_seconds: f64,
}

/// A realism decoder `g_s'` read from its companion file (module docs).
#[derive(Clone, Debug)]
pub struct RealismDecoder {
    info: RealismInfo,
    fingerprint: [u8; 8],
    synthesis: Synthesis,
}

impl RealismDecoder {
    /// Reads a companion file.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if the bytes are not a companion file: no or malformed
    /// `ocular.realism` metadata, or `g_s.*` tensors that do not form a synthesis network.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let invalid = |e: String| ModelError::InvalidModel(format!("realism decoder: {e}"));
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| invalid(e.to_string()))?;
        let text = metadata
            .metadata()
            .as_ref()
            .and_then(|entries| entries.get(REALISM_KEY))
            .ok_or_else(|| invalid(format!("no {REALISM_KEY} metadata")))?;
        let info: RealismInfo = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = parse_fingerprint(&info.model_fingerprint)
            .ok_or_else(|| invalid(format!("fingerprint {:?}", info.model_fingerprint)))?;
        let synthesis = Synthesis::from_safetensors(bytes).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            info,
            fingerprint,
            synthesis,
        })
    }

    /// What the companion file says.
    pub fn info(&self) -> &RealismInfo {
        &self.info
    }

    /// The fingerprint of the model file it belongs to.
    pub fn model_fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// `g_s'`.
    pub fn synthesis(&self) -> &Synthesis {
        &self.synthesis
    }
}

/// The realism knob `R` of a decode, with the decoder it weighs.
#[derive(Clone, Copy, Debug)]
pub struct Realism<'a> {
    decoder: &'a RealismDecoder,
    weight: f32,
}

impl<'a> Realism<'a> {
    /// `R = weight` with `decoder`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] if `weight` is not in [0, 1].
    pub fn new(decoder: &'a RealismDecoder, weight: f32) -> Result<Self, ModelError> {
        if !(0.0..=1.0).contains(&weight) {
            return Err(ModelError::Shape(format!(
                "realism {weight} is outside 0..=1"
            )));
        }
        Ok(Self { decoder, weight })
    }

    /// The decoder.
    pub fn decoder(&self) -> &'a RealismDecoder {
        self.decoder
    }

    /// `R`.
    pub fn weight(&self) -> f32 {
        self.weight
    }
}

/// `(1 - r) · plain + r · realistic`, element by element, into `plain`: one multiply-add order,
/// no fused operations (Rust never fuses), so every build mixes alike.
pub(crate) fn mix(plain: &mut [f32], realistic: &[f32], r: f32) {
    let keep = 1.0 - r;
    for (p, q) in plain.iter_mut().zip(realistic) {
        *p = *p * keep + *q * r;
    }
}

/// The bytes of a companion file: `info` in the metadata, the `g_s.*` tensors of `g_s'`
/// (name, shape, values) stored as fp16 like the shipped model files.
///
/// # Errors
/// [`ModelError::InvalidModel`] if a tensor's values do not fit its shape or serialisation
/// fails.
pub fn realism_file_bytes(
    info: &RealismInfo,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Vec<u8>, ModelError> {
    let invalid = |e: String| ModelError::InvalidModel(format!("realism decoder: {e}"));
    let mut stored = Vec::with_capacity(tensors.len());
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(invalid(format!(
                "{name}: {} values for {shape:?}",
                values.len()
            )));
        }
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        stored.push((name.clone(), shape.clone(), bytes));
    }
    let views = stored
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F16, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_string(info).map_err(|e| invalid(e.to_string()))?;
    let metadata = HashMap::from([(REALISM_KEY.to_string(), json)]);
    safetensors::serialize(views, &Some(metadata)).map_err(|e| invalid(e.to_string()))
}

/// Hex of a fingerprint, as [`RealismInfo::model_fingerprint`] stores it.
pub fn fingerprint_hex(fingerprint: [u8; 8]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_fingerprint(hex: &str) -> Option<[u8; 8]> {
    if hex.len() != 16 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 8];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
