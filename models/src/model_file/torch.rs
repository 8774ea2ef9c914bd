//! The libtorch side of model files (feature `torch`): loading the networks into tch, writing
//! a trained network with its tables, untrained models for tests.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use tch::{nn, Device, Kind, Tensor};

use super::{
    fingerprint, read_info_and_tables, ModelInfo, StoredTables, TrainingSummary, INFO_KEY,
    MODEL_FORMAT_VERSION, TABLES_KEY,
};
use crate::distortion::Distortion;
use crate::hyperprior::{is_mix_variable, HyperpriorConfig, MeanScaleHyperprior, ModelTables};
use crate::ModelError;

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
        let (info, stored) = read_info_and_tables(bytes)?;

        let mut variables = nn::VarStore::new(Device::Cpu);
        let network = if info.observer_mix {
            MeanScaleHyperprior::with_observer_mix(&variables.root(), info.network)
        } else {
            MeanScaleHyperprior::new(&variables.root(), info.network)
        };
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
    /// e.g. to start training one rate point from another. A network conditioned on the
    /// observer mix may start from one that is not: its conditioning keeps its initial values.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if a variable is missing here (other than the
    /// conditioning's) or has another shape.
    pub fn copy_weights_to(&self, variables: &mut nn::VarStore) -> Result<(), ModelError> {
        let source = self.variables.variables();
        tch::no_grad(|| {
            for (name, mut variable) in variables.variables() {
                match source.get(&name) {
                    Some(value) if value.size() == variable.size() => variable.copy_(value),
                    Some(value) => {
                        return Err(ModelError::InvalidModel(format!(
                            "tensor {name} has shape {:?}, the network expects {:?}",
                            value.size(),
                            variable.size()
                        )))
                    }
                    None if is_mix_variable(&name) => {}
                    None => return Err(ModelError::InvalidModel(format!("missing tensor {name}"))),
                }
            }
            Ok(())
        })
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
    load_tensors_but(bytes, variables, |_| false)
}

/// [`load_tensors`], except that the variables `may_lack` accepts may be absent from the file
/// (all of them then are): they keep their values. E.g. the observer-mix conditioning of a
/// network started from a checkpoint of one without it.
///
/// # Errors
/// As [`load_tensors`].
pub(crate) fn load_tensors_but(
    bytes: &[u8],
    variables: &nn::VarStore,
    may_lack: impl Fn(&str) -> bool,
) -> Result<(), ModelError> {
    let invalid = |what: String| ModelError::InvalidModel(what);
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
    let mut named = variables.variables();
    let lacking: Vec<String> = named
        .keys()
        .filter(|name| may_lack(name) && file.tensor(name).is_err())
        .cloned()
        .collect();
    for name in &lacking {
        named.remove(name);
    }
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

fn tensor_from_view(view: &TensorView<'_>) -> Result<Tensor, String> {
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let values = super::tensor_f32(view).map_err(|dtype| format!("unsupported dtype {dtype}"))?;
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
    let bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| ModelError::InvalidModel(e.to_string()))?;
    with_sorted_header(&bytes).map_err(|e| ModelError::InvalidModel(e.to_string()))
}

/// `bytes` of a safetensors file with its JSON header's keys in sorted order.
///
/// safetensors writes the metadata map in the order of a `HashMap`, which differs from process
/// to process, and a model's fingerprint is that of its bytes ([`fingerprint`]): without this
/// the same network written twice would be two models. The tensors' entries keep their offsets,
/// which count from the end of the header, so only the header is rewritten (padded with spaces
/// to a multiple of 8 bytes, as safetensors pads it).
fn with_sorted_header(bytes: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    use serde::de::Error;
    use std::collections::BTreeMap;
    let length = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
        .ok_or_else(|| serde_json::Error::custom("no header length"))?;
    let (header, data) = bytes[8..]
        .split_at_checked(length)
        .ok_or_else(|| serde_json::Error::custom("header beyond the end"))?;
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)?;
    if let Some(metadata) = entries.remove("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(metadata)?;
        entries.insert("__metadata__".to_string(), serde_json::to_value(sorted)?);
    }
    let mut header = serde_json::to_vec(&entries)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    Ok(out)
}

/// A model file of a freshly initialised (untrained) network: codes correctly but poorly.
/// For tests and for trying the tool chain without a trained model.
///
/// The file is a function of the arguments alone: every weight that the network's constructor
/// draws at random is redrawn from `seed` ([`redraw_random_init`]), so libtorch's global
/// generator, shared with whatever else runs in the process, plays no part.
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

/// [`untrained_variable_rate_model_bytes`] of a network conditioned on the observer mix, its
/// conditioning drawn at random (uniform, standard deviation 0.3) instead of its untrained
/// identity, so that the mixes code differently.
///
/// # Errors
/// As [`serialize_model`].
pub fn untrained_observer_mix_model_bytes(
    network: HyperpriorConfig,
    name: &str,
    seed: i64,
    range: crate::rate::QualityRange,
) -> Result<Vec<u8>, ModelError> {
    let variables = nn::VarStore::new(Device::Cpu);
    let model = MeanScaleHyperprior::with_observer_mix(&variables.root(), network);
    redraw_random_init(&variables, seed, |name, _| {
        is_mix_variable(name).then_some(0.3 * 3f64.sqrt())
    });
    let mut info = untrained_info(network, name, Some(range));
    info.distortion = Distortion::observer(0.5);
    info.observer_mix = true;
    serialize_model(&info, &variables, &model)
}

fn untrained_bytes(
    network: HyperpriorConfig,
    name: &str,
    seed: i64,
    variable_rate: Option<crate::rate::QualityRange>,
) -> Result<Vec<u8>, ModelError> {
    let variables = nn::VarStore::new(Device::Cpu);
    let model = MeanScaleHyperprior::new(&variables.root(), network);
    redraw_random_init(&variables, seed, |_, _| None);
    serialize_model(
        &untrained_info(network, name, variable_rate),
        &variables,
        &model,
    )
}

/// Redraws, from a generator seeded with `seed` and in the order of the variables' names, every
/// variable of a freshly built network that its constructor drew from libtorch's generator, from
/// the same distribution:
///
/// ```text
/// convolution weights (4-D, "...weight"), fan_in = size[1] size[2] size[3]:
///     U(-b, b),  b = sqrt(6 / fan_in)             (tch's default Kaiming-uniform, ReLU gain)
/// the factorised prior's biases ("entropy_bottleneck._bias<k>"):  U(-1/2, 1/2)
/// ```
///
/// and those for which `extra(name, variable)` gives a bound `b` from U(-b, b). Every other
/// variable is a constant of its constructor. The rule is pinned by a test that builds a network
/// under two global seeds: the variables that differ are exactly those redrawn here.
fn redraw_random_init(
    variables: &nn::VarStore,
    seed: i64,
    extra: impl Fn(&str, &Tensor) -> Option<f64>,
) {
    use rand::{Rng, SeedableRng};
    let mut generator = rand::rngs::StdRng::seed_from_u64(seed as u64);
    let mut named: Vec<(String, Tensor)> = variables.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut variable) in named {
            let Some(bound) = random_init_bound(&name, &variable).or(extra(&name, &variable))
            else {
                continue;
            };
            let bound = bound as f32;
            let values: Vec<f32> = (0..variable.numel())
                .map(|_| generator.gen_range(-bound..bound))
                .collect();
            variable.copy_(&Tensor::from_slice(&values).view(variable.size().as_slice()));
        }
    });
}

/// The bound `b` of U(-b, b) from which the network's constructor drew `variable`, if it drew
/// it at random ([`redraw_random_init`]).
fn random_init_bound(name: &str, variable: &Tensor) -> Option<f64> {
    let size = variable.size();
    if name.ends_with("weight") && size.len() == 4 {
        let fan_in = (size[1] * size[2] * size[3]) as f64;
        Some((6.0 / fan_in).sqrt())
    } else if name.starts_with("entropy_bottleneck._bias") {
        Some(0.5)
    } else {
        None
    }
}

fn untrained_info(
    network: HyperpriorConfig,
    name: &str,
    variable_rate: Option<crate::rate::QualityRange>,
) -> ModelInfo {
    ModelInfo {
        format_version: MODEL_FORMAT_VERSION,
        name: name.to_string(),
        quality: 1,
        network,
        distortion: Distortion::Mse,
        lambda: 0.0,
        variable_rate,
        observer_mix: false,
        training: TrainingSummary::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables of a network built twice (libtorch's generator moves on in between) that
    /// differ between the two are exactly those [`random_init_bound`] names: every random draw
    /// of the constructors is redrawn, and no constant is.
    #[test]
    fn the_redrawn_variables_are_the_randomly_initialised_ones() {
        let network = HyperpriorConfig { n: 4, m: 6 };
        let build = || {
            let variables = nn::VarStore::new(Device::Cpu);
            let _model = MeanScaleHyperprior::new(&variables.root(), network);
            variables.variables()
        };
        let (first, second) = (build(), build());
        assert!(!first.is_empty());
        for (name, value) in &first {
            let drawn = !value.equal(&second[name]);
            assert_eq!(
                drawn,
                random_init_bound(name, value).is_some(),
                "{name}: drawn at random by its constructor: {drawn}"
            );
        }
    }

    /// An untrained model file depends on its seed alone, not on libtorch's global generator.
    #[test]
    fn untrained_models_depend_on_their_seed_alone() {
        let network = HyperpriorConfig { n: 4, m: 6 };
        let make = |seed| untrained_model_bytes(network, "t", seed).expect("model");
        let first = make(3);
        let _ = Tensor::rand([100], (Kind::Float, Device::Cpu));
        assert!(first == make(3), "the same seed gave another file");
        assert!(first != make(4), "another seed gave the same file");
    }
}
