//! Model files: safetensors weights (fp16) plus, in the safetensors metadata, the model's
//! description and its integer coding tables.
//!
//! A model file is everything a decoder needs: the networks and the exact tables the encoder
//! used. Tables are computed from the fp16-rounded weights that are stored, so a loaded model codes
//! exactly like the model that was saved.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use ocular_entropy::CdfTable;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Kind, Tensor};

use crate::hyperprior::{HyperpriorConfig, MeanScaleHyperprior, ModelTables};
use crate::losses::Distortion;
use crate::ModelError;

/// Version of the model-file layout this crate writes and reads.
pub const MODEL_FORMAT_VERSION: u32 = 1;
const INFO_KEY: &str = "ocular.info";
const TABLES_KEY: &str = "ocular.tables";

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
    /// How it was trained.
    pub training: TrainingSummary,
}

#[derive(Serialize, Deserialize)]
struct StoredTables {
    z: Vec<CdfTable>,
    y: Vec<CdfTable>,
}

/// A model ready to code: networks, tables and description.
#[derive(Debug)]
pub struct CodecModel {
    info: ModelInfo,
    network: MeanScaleHyperprior,
    tables: ModelTables,
    fingerprint: [u8; 8],
    // Owns the variables the network refers to.
    variables: nn::VarStore,
}

impl CodecModel {
    /// Reads a model from the bytes of a model file.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if the bytes are not a valid ocular model file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let invalid = |what: String| ModelError::InvalidModel(what);
        let (info, entries) = read_metadata(bytes)?;
        let tables_json = entries
            .get(TABLES_KEY)
            .ok_or_else(|| invalid(format!("no {TABLES_KEY} entry")))?;
        let stored: StoredTables = serde_json::from_str(tables_json)
            .map_err(|e| invalid(format!("bad {TABLES_KEY}: {e}")))?;

        let mut variables = nn::VarStore::new(Device::Cpu);
        let network = MeanScaleHyperprior::new(&variables.root(), info.network);
        load_tensors(bytes, &variables)?;
        variables.freeze();
        let tables = ModelTables::new(stored.z, stored.y, &network)?;
        Ok(Self {
            info,
            network,
            tables,
            fingerprint: fingerprint(bytes),
            variables,
        })
    }

    /// Reads a model file.
    ///
    /// # Errors
    /// [`ModelError::Io`] if it cannot be read, else as [`Self::from_bytes`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|e| ModelError::Io(path.display().to_string(), e))?;
        Self::from_bytes(&bytes)
    }

    /// The model's description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The networks.
    pub fn network(&self) -> &MeanScaleHyperprior {
        &self.network
    }

    /// The integer tables.
    pub fn tables(&self) -> &ModelTables {
        &self.tables
    }

    /// First 8 bytes of the SHA-256 of the model file: identifies the exact weights and tables.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Copies this model's weights into `variables` (a store holding a network of the same shape),
    /// e.g. to start training one rate point from another.
    ///
    /// # Errors
    /// [`ModelError::Torch`] if the variables do not match.
    pub fn copy_weights_to(&self, variables: &mut nn::VarStore) -> Result<(), ModelError> {
        Ok(variables.copy(&self.variables)?)
    }
}

/// Copies every variable of `variables` from the tensor of the same name in the safetensors
/// `bytes` (a model file's fp16 or a checkpoint's f32 weights); the file must hold exactly
/// those tensors, in the same shapes.
///
/// # Errors
/// [`ModelError::InvalidModel`] if the bytes are not safetensors or a tensor is missing,
/// extra or of another shape.
pub(crate) fn load_tensors(bytes: &[u8], variables: &nn::VarStore) -> Result<(), ModelError> {
    let invalid = |what: String| ModelError::InvalidModel(what);
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
    let named = variables.variables();
    if file.len() != named.len() {
        return Err(invalid(format!(
            "{} tensors in the file, the network has {}",
            file.len(),
            named.len()
        )));
    }
    tch::no_grad(|| {
        for (name, mut variable) in named {
            let view = file
                .tensor(&name)
                .map_err(|_| invalid(format!("missing tensor {name}")))?;
            let stored =
                tensor_from_view(&view).map_err(|e| invalid(format!("tensor {name}: {e}")))?;
            if stored.size() != variable.size() {
                return Err(invalid(format!(
                    "tensor {name} has shape {:?}, the network expects {:?}",
                    stored.size(),
                    variable.size()
                )));
            }
            variable.copy_(&stored);
        }
        Ok(())
    })
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
fn read_metadata(bytes: &[u8]) -> Result<(ModelInfo, HashMap<String, String>), ModelError> {
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

fn tensor_from_view(view: &TensorView<'_>) -> Result<Tensor, String> {
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    let expected: i64 = shape.iter().product();
    if values.len() as i64 != expected {
        return Err(format!("{} values for shape {shape:?}", values.len()));
    }
    Ok(Tensor::from_slice(&values).view(shape.as_slice()))
}

/// Serialises a trained network into model-file bytes.
///
/// Rounds the variables to fp16 **in place** first (storage is fp16), then builds the tables from
/// the rounded weights, so the file codes exactly like the network after this call.
///
/// # Errors
/// [`ModelError::InvalidModel`] if the tables cannot be built (a degenerate prior).
pub fn serialize_model(
    info: &ModelInfo,
    variables: &nn::VarStore,
    network: &MeanScaleHyperprior,
) -> Result<Vec<u8>, ModelError> {
    let mut named: Vec<(String, Tensor)> = variables.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut halves = Vec::with_capacity(named.len());
    tch::no_grad(|| -> Result<(), ModelError> {
        for (_, variable) in named.iter_mut() {
            let rounded = variable.to_kind(Kind::Half);
            variable.copy_(&rounded.to_kind(Kind::Float));
            let values = Vec::<f32>::try_from(rounded.to_kind(Kind::Float).flatten(0, -1))?;
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect();
            halves.push((bytes, variable.size()));
        }
        Ok(())
    })?;
    let tables = network.build_tables()?;
    let stored = StoredTables {
        z: tables.z,
        y: tables.y,
    };
    let metadata = HashMap::from([
        (
            INFO_KEY.to_string(),
            serde_json::to_string(info).map_err(|e| ModelError::InvalidModel(e.to_string()))?,
        ),
        (
            TABLES_KEY.to_string(),
            serde_json::to_string(&stored).map_err(|e| ModelError::InvalidModel(e.to_string()))?,
        ),
    ]);
    let views = named
        .iter()
        .zip(&halves)
        .map(|((name, _), (bytes, shape))| {
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            TensorView::new(Dtype::F16, shape, bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ModelError::InvalidModel(e.to_string()))?;
    safetensors::serialize(views, &Some(metadata))
        .map_err(|e| ModelError::InvalidModel(e.to_string()))
}

/// A model file of a freshly initialised (untrained) network: codes correctly but poorly.
/// For tests and for trying the tool chain without a trained model.
///
/// # Errors
/// As [`serialize_model`].
pub fn untrained_model_bytes(
    network: HyperpriorConfig,
    name: &str,
    seed: i64,
) -> Result<Vec<u8>, ModelError> {
    untrained_bytes(network, name, seed, None)
}

/// [`untrained_model_bytes`] of a variable-rate model for the qualities `range`.
///
/// # Errors
/// As [`serialize_model`].
pub fn untrained_variable_rate_model_bytes(
    network: HyperpriorConfig,
    name: &str,
    seed: i64,
    range: crate::rate::QualityRange,
) -> Result<Vec<u8>, ModelError> {
    untrained_bytes(network, name, seed, Some(range))
}

fn untrained_bytes(
    network: HyperpriorConfig,
    name: &str,
    seed: i64,
    variable_rate: Option<crate::rate::QualityRange>,
) -> Result<Vec<u8>, ModelError> {
    tch::manual_seed(seed);
    let variables = nn::VarStore::new(Device::Cpu);
    let model = MeanScaleHyperprior::new(&variables.root(), network);
    let info = ModelInfo {
        format_version: MODEL_FORMAT_VERSION,
        name: name.to_string(),
        quality: 1,
        network,
        distortion: Distortion::Mse,
        lambda: 0.0,
        variable_rate,
        training: TrainingSummary::default(),
    };
    serialize_model(&info, &variables, &model)
}
