//! Models: the ones built into the binary, and model files.

use std::borrow::Cow;
use std::path::Path;

use ocular_entropy::QuantizationStep;
use ocular_models::{Distortion, ModelInfo, PureModel, RealismDecoder};

use crate::container::{ModelFingerprint, ObserverMix};
use crate::Error;

/// A model built into ocular.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinModel {
    /// Its name, e.g. `mse-q3`.
    pub name: &'static str,
    /// Its model file.
    bytes: &'static [u8],
    /// Its realism decoder's companion file, if it ships one.
    realism: Option<&'static [u8]>,
}

impl BuiltinModel {
    /// The model, with its realism decoder if it ships one.
    fn load(&self) -> Result<Model, Error> {
        match self.realism {
            Some(companion) => Model::with_companion(self.bytes, companion),
            None => Model::from_bytes(self.bytes),
        }
    }
}

/// The models compiled into this build, trained by `scripts/train-models.sh` (see
/// docs/results.md); within a family by increasing quality.
const BUILTIN: &[BuiltinModel] = &[
    BuiltinModel {
        name: "mse-q1",
        bytes: include_bytes!("../../models/trained/mse-q1.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "mse-q2",
        bytes: include_bytes!("../../models/trained/mse-q2.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "mse-q3",
        bytes: include_bytes!("../../models/trained/mse-q3.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "mse-q4",
        bytes: include_bytes!("../../models/trained/mse-q4.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "mse-q5",
        bytes: include_bytes!("../../models/trained/mse-q5.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "msssim-q1",
        bytes: include_bytes!("../../models/trained/msssim-q1.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "msssim-q2",
        bytes: include_bytes!("../../models/trained/msssim-q2.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "msssim-q3",
        bytes: include_bytes!("../../models/trained/msssim-q3.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "machine-q1",
        bytes: include_bytes!("../../models/trained/machine-q1.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "machine-q2",
        bytes: include_bytes!("../../models/trained/machine-q2.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "mixed-q1",
        bytes: include_bytes!("../../models/trained/mixed-q1.safetensors"),
        realism: None,
    },
    BuiltinModel {
        name: "mixed-q2",
        bytes: include_bytes!("../../models/trained/mixed-q2.safetensors"),
        realism: None,
    },
    // The variable-rate PSNR network (qualities -2..12): exact rate control for `--bpp`; with
    // its realism decoder for `decode --realism` (docs/results.md, issue 12).
    BuiltinModel {
        name: "mse-vr",
        bytes: include_bytes!("../../models/trained/mse-vr.safetensors"),
        realism: Some(include_bytes!(
            "../../models/trained/mse-vr.realism.safetensors"
        )),
    },
];

/// Earlier versions of built-in models, kept so that the files they made still decode
/// ([`Model::builtin_for`] finds them by fingerprint); never listed, never chosen to encode.
/// Each keeps its own realism decoder, which was trained for it.
const RETIRED: &[BuiltinModel] = &[
    // The variable-rate PSNR network shipped as `mse-vr` on 2026-12-07 (session 9: step 17,230
    // of the balanced campaign + 1,000 steps of decay), until the next decay branch beat it.
    BuiltinModel {
        name: "mse-vr",
        bytes: include_bytes!("../../models/trained/retired/mse-vr-2026-12-07.safetensors"),
        realism: Some(include_bytes!(
            "../../models/trained/retired/mse-vr-2026-12-07.realism.safetensors"
        )),
    },
    // The variable-rate PSNR network shipped as `mse-vr` from 2026-12-02 to 2026-12-07.
    BuiltinModel {
        name: "mse-vr",
        bytes: include_bytes!("../../models/trained/retired/mse-vr-2026-12-02.safetensors"),
        realism: Some(include_bytes!(
            "../../models/trained/retired/mse-vr-2026-12-02.realism.safetensors"
        )),
    },
];

/// The built-in model used when none is asked for ([`Model::builtin_default`]): the
/// variable-rate PSNR network, one network for every rate.
pub const DEFAULT_MODEL: &str = "mse-vr";

/// The quality a variable-rate model codes at when none is asked for
/// ([`crate::Encoder::with_quality`]). With the default model, qualities are a continuous scale
/// from -2 to 12; measured anchor points on Kodak (24 images, mean bpp and PSNR of real files,
/// docs/results.md): 1 ≈ 0.089 bpp / 25.1 dB, 3 ≈ 0.23 / 28.1, 5 ≈ 0.47 / 30.7,
/// 7 ≈ 0.75 / 32.0, 9 ≈ 1.09 / 32.5.
pub const DEFAULT_QUALITY: f32 = ocular_models::rate::REFERENCE_QUALITY;

/// A trained model: networks plus the integer tables it codes with.
///
/// Encoding and decoding run its networks in pure Rust ([`PureModel`]). With the `torch`
/// feature the libtorch networks of the same file are loaded the first time they are needed
/// (refinement, evaluation), never for plain coding.
#[derive(Debug)]
pub struct Model {
    pure: PureModel,
    /// The realism decoder `g_s'` of its companion file, if one is attached.
    realism: Option<RealismDecoder>,
    #[cfg(feature = "torch")]
    torch: crate::torch_model::LazyTorchModel,
    /// What refinement optimises instead of the model's own training distortion, if set.
    #[cfg(feature = "torch")]
    refinement_objective: Option<Distortion>,
    /// Views refinement averages its distortion over (0: none).
    #[cfg(feature = "torch")]
    refinement_views: usize,
    /// The built-in classifiers refinement observes at once (empty: the model's own observer).
    #[cfg(feature = "torch")]
    refinement_observers: Vec<ocular_models::observer::Variant>,
}

impl Model {
    /// Reads a model from the bytes of a model file (`.safetensors` written by `ocular train`).
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if the bytes are not a valid model file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Self {
            pure: PureModel::from_bytes(bytes)?,
            realism: None,
            #[cfg(feature = "torch")]
            torch: crate::torch_model::LazyTorchModel::new(bytes.to_vec()),
            #[cfg(feature = "torch")]
            refinement_objective: None,
            #[cfg(feature = "torch")]
            refinement_views: 0,
            #[cfg(feature = "torch")]
            refinement_observers: Vec::new(),
        })
    }

    /// Reads a model file, and the realism decoder of its companion file
    /// (`NAME.realism.safetensors` beside `NAME.safetensors`) if there is one.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if either file cannot be read or is not valid, or the companion
    /// belongs to another model.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| Error::InvalidModel(format!("{}: {e}", path.display())))
        };
        let bytes = read(path)?;
        let companion = ocular_models::realism::companion_path(path);
        if companion.is_file() {
            return Self::with_companion(&bytes, &read(&companion)?);
        }
        Self::from_bytes(&bytes)
    }

    /// The model of `bytes` with the realism decoder of `companion`, the two read side by side.
    fn with_companion(bytes: &[u8], companion: &[u8]) -> Result<Self, Error> {
        let (model, decoder) = rayon::join(
            || Self::from_bytes(bytes),
            || RealismDecoder::from_bytes(companion),
        );
        model?.with_loaded_realism_decoder(decoder?)
    }

    /// This model with the realism decoder `g_s'` of a companion file's bytes, which
    /// [`Decoder::with_realism`](crate::Decoder::with_realism) mixes with the model's own
    /// synthesis. The model file and its fingerprint do not change, so every file it made
    /// decodes with either synthesis.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if the bytes are not a companion file, or one trained for another
    /// model (by fingerprint).
    pub fn with_realism_decoder(self, bytes: &[u8]) -> Result<Self, Error> {
        self.with_loaded_realism_decoder(RealismDecoder::from_bytes(bytes)?)
    }

    /// [`Self::with_realism_decoder`] of a decoder already read.
    fn with_loaded_realism_decoder(mut self, decoder: RealismDecoder) -> Result<Self, Error> {
        if decoder.model_fingerprint() != self.pure.fingerprint() {
            return Err(Error::InvalidModel(format!(
                "the realism decoder was trained for model '{}' ({}), not for '{}' ({})",
                decoder.info().model_name,
                decoder.info().model_fingerprint,
                self.name(),
                self.fingerprint()
            )));
        }
        self.realism = Some(decoder);
        Ok(self)
    }

    /// This model refining (`Encoder::with_refinement`) against `objective` instead of the
    /// distortion it was trained with: e.g. the observer distortion with another alpha or
    /// other classifier layers (the built-in classifier), to screen objectives without
    /// training. The model's `lambda` still weighs it; under a rate target the budget binds.
    #[cfg(feature = "torch")]
    pub fn with_refinement_objective(mut self, objective: Distortion) -> Self {
        self.refinement_objective = Some(objective);
        self
    }

    /// Makes refinement average its distortion over the identity and `views` small changes of
    /// view (shifts of up to 4 px, mirroring, rescaling by ±10 %, drawn once per image from a
    /// fixed seed), so what it keeps for a classifier survives another view of the picture
    /// (`ocular_models::refine`, "Views"). Each view costs one more evaluation of the objective
    /// per step. Needs images of at least 32 px a side.
    #[cfg(feature = "torch")]
    pub fn with_refinement_views(mut self, views: usize) -> Self {
        self.refinement_views = views;
        self
    }

    /// Makes refinement observe the picture with several built-in classifiers at once (e.g.
    /// EfficientNet-Lite0 and -Lite2) instead of the model's own observer: the feature term of
    /// its distortion becomes the mean of theirs (`ocular_models::observer::Ensemble`), so what
    /// refinement keeps is what these classifiers agree on rather than what one of them needs.
    /// Only for a distortion that compares classifier features (refinement then fails with
    /// [`Error::ObserverUnavailable`] otherwise, and when a classifier's weights are not
    /// installed). Empty: the model's own observer.
    #[cfg(feature = "torch")]
    pub fn with_refinement_observers(
        mut self,
        observers: Vec<ocular_models::observer::Variant>,
    ) -> Self {
        self.refinement_observers = observers;
        self
    }

    /// The classifiers set by [`Self::with_refinement_observers`].
    #[cfg(feature = "torch")]
    pub(crate) fn refinement_observers(&self) -> &[ocular_models::observer::Variant] {
        &self.refinement_observers
    }

    /// The views set by [`Self::with_refinement_views`].
    #[cfg(feature = "torch")]
    pub(crate) fn refinement_views(&self) -> usize {
        self.refinement_views
    }

    /// The objective set by [`Self::with_refinement_objective`].
    #[cfg(feature = "torch")]
    pub(crate) fn refinement_objective(&self) -> Option<&Distortion> {
        self.refinement_objective.as_ref()
    }

    /// Whether a realism decoder is attached ([`Self::with_realism_decoder`]).
    pub fn has_realism_decoder(&self) -> bool {
        self.realism.is_some()
    }

    /// The attached realism decoder.
    pub(crate) fn realism_decoder(&self) -> Option<&RealismDecoder> {
        self.realism.as_ref()
    }

    /// The names of the built-in models.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|m| m.name)
    }

    /// The built-in model called `name`.
    ///
    /// # Errors
    /// [`Error::NoSuchModel`] if there is none.
    pub fn builtin(name: &str) -> Result<Self, Error> {
        let model = BUILTIN.iter().find(|m| m.name == name).ok_or_else(|| {
            Error::NoSuchModel(format!("named '{name}' (built in: {})", builtin_list()))
        })?;
        model.load()
    }

    /// The default built-in model, [`DEFAULT_MODEL`] (`mse-vr`): the variable-rate PSNR
    /// network, at [`DEFAULT_QUALITY`] unless the encoder asks for another quality.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] only if the built-in file were damaged (a test loads it).
    pub fn builtin_default() -> Result<Self, Error> {
        Self::builtin(DEFAULT_MODEL)
    }

    /// The built-in fixed-rate MSE-trained model of the given rate point (`mse-q1` .. `mse-q5`),
    /// the family [`DEFAULT_MODEL`] replaces; kept until the variable-rate networks replace
    /// every old family.
    ///
    /// # Errors
    /// [`Error::NoSuchModel`] if no built-in model has that quality.
    pub fn builtin_quality(quality: u8) -> Result<Self, Error> {
        for (candidate, info) in builtin_infos()? {
            let fixed_rate = info.variable_rate.is_none();
            if fixed_rate && info.quality == quality && info.distortion == Distortion::Mse {
                return candidate.load();
            }
        }
        Err(Error::NoSuchModel(format!(
            "of quality {quality} (built in: {})",
            builtin_list()
        )))
    }

    /// The built-in variable-rate model trained with `distortion` (`"mse"`: `mse-vr`), for
    /// [`crate::encode_to_bpp`] and [`crate::Encoder::with_quality`].
    ///
    /// # Errors
    /// [`Error::NoSuchModel`] if there is none.
    pub fn builtin_variable_rate(distortion: &str) -> Result<Self, Error> {
        for (candidate, info) in builtin_infos()? {
            if info.variable_rate.is_some() && info.distortion.to_string() == distortion {
                return candidate.load();
            }
        }
        Err(Error::NoSuchModel(format!(
            "with a variable rate trained for {distortion} (built in: {})",
            builtin_list()
        )))
    }

    /// The built-in fixed-rate models trained with `distortion` (`"mse"`, `"ms-ssim"`), by
    /// increasing quality.
    ///
    /// # Errors
    /// [`Error::NoSuchModel`] if there is none.
    pub fn builtin_family(distortion: &str) -> Result<Vec<Self>, Error> {
        load_all(family_members(distortion)?)
    }

    /// The built-in family made for an observer, by increasing quality: the family trained at
    /// the mix [`ObserverMix::from_name`] reads from `observer` — `machine` is the mix that
    /// serves classifiers best ([`ObserverMix::MACHINE`], 0.5), a number `a` the mix trained
    /// with alpha `a` (e.g. `1`, the classifier alone), `human` (alpha 0: `observer-0` if built
    /// in, else the `ms-ssim` family — the observer loss at alpha 0 *is* the MS-SSIM loss —
    /// else the MSE-trained family).
    ///
    /// # Errors
    /// [`Error::NoSuchModel`] for another name or a family not built in.
    pub fn builtin_observer_family(observer: &str) -> Result<Vec<Self>, Error> {
        load_all(observer_family_members(observer)?)
    }

    /// The names of the models [`Model::builtin_observer_family`] selects for `observer`, by
    /// increasing quality, read from the model files' descriptions without building any network
    /// (for listings).
    ///
    /// # Errors
    /// As [`Model::builtin_observer_family`].
    pub fn builtin_observer_family_names(observer: &str) -> Result<Vec<&'static str>, Error> {
        Ok(observer_family_members(observer)?
            .into_iter()
            .map(|member| member.name)
            .collect())
    }

    /// The built-in model whose fingerprint is `fingerprint` (to decode a file): a current one
    /// or an earlier version it replaced, which stays to decode its files.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] if there is none.
    pub fn builtin_for(name: &str, fingerprint: ModelFingerprint) -> Result<Self, Error> {
        // The current model of the same name is the likely one: it is loaded (which hashes its
        // file) and checked. Every other candidate (the retired ones of that name first) is
        // hashed first and loaded only if it is the one.
        let (named, others): (Vec<&BuiltinModel>, Vec<&BuiltinModel>) =
            BUILTIN.iter().chain(RETIRED).partition(|m| m.name == name);
        if let Some(current) = named.first() {
            let model = current.load()?;
            if model.fingerprint() == fingerprint {
                return Ok(model);
            }
        }
        for candidate in named.iter().skip(1).chain(&others) {
            if ModelFingerprint(ocular_models::model_file::fingerprint(candidate.bytes))
                == fingerprint
            {
                return candidate.load();
            }
        }
        Err(Error::UnknownModel {
            name: name.to_string(),
            fingerprint,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.pure.info().name
    }

    /// Its rate point (higher = more bits).
    pub fn quality(&self) -> u8 {
        self.pure.info().quality
    }

    /// What its training measured distortion with, which is also its family name: `mse`,
    /// `ms-ssim` or `observer-<alpha>`.
    pub fn distortion(&self) -> String {
        self.pure.info().distortion.to_string()
    }

    /// The rate-distortion trade-off it was trained for.
    pub fn lambda(&self) -> f64 {
        self.pure.info().lambda
    }

    /// The qualities a variable-rate model codes at (`(min, max)`, see
    /// [`Encoder::with_quality`](crate::Encoder::with_quality)); `None` for a fixed-rate model.
    pub fn quality_range(&self) -> Option<(f32, f32)> {
        self.pure.info().variable_rate.map(|r| (r.min, r.max))
    }

    /// The grid a file at `quality` codes `y` on: `None` (the unit grid, no record in the
    /// file) for a fixed-rate model asked for no quality; for a variable-rate model the step of
    /// `quality`, by default [`ocular_models::rate::REFERENCE_QUALITY`].
    ///
    /// # Errors
    /// [`Error::FixedRateModel`] for a quality asked of a fixed-rate model,
    /// [`Error::QualityOutOfRange`] for one outside a variable-rate model's range.
    pub(crate) fn step_for(&self, quality: Option<f32>) -> Result<Option<QuantizationStep>, Error> {
        let info = self.pure.info();
        let Some(range) = info.variable_rate else {
            return match quality {
                None => Ok(None),
                Some(_) => Err(Error::FixedRateModel {
                    model: info.name.clone(),
                }),
            };
        };
        let quality = quality.unwrap_or(ocular_models::rate::REFERENCE_QUALITY);
        range
            .step(quality)
            .map(Some)
            .map_err(|_| Error::QualityOutOfRange {
                model: info.name.clone(),
                quality,
                min: range.min,
                max: range.max,
            })
    }

    /// Whether it is one network for every observer mix (`train --observer-mix`): it codes at
    /// any mix `alpha` in [0, 1] ([`Encoder::with_observer_mix`](crate::Encoder::with_observer_mix)).
    pub fn has_observer_mix(&self) -> bool {
        self.pure.info().observer_mix
    }

    /// The pure-Rust coder at the observer mix `alpha` (`None`: 0, every model's own).
    ///
    /// # Errors
    /// [`Error::ObserverMixUnavailable`] for a mix outside [0, 1], or other than 0 of a model
    /// not conditioned on the mix.
    pub(crate) fn pure_at(&self, alpha: Option<f32>) -> Result<Cow<'_, PureModel>, Error> {
        let alpha = alpha.unwrap_or(0.0);
        self.pure
            .at_observer_mix(alpha)
            .map_err(|_| Error::ObserverMixUnavailable {
                model: self.name().to_string(),
                alpha,
                reason: if !(0.0..=1.0).contains(&alpha) {
                    "a mix is a number in [0, 1]".into()
                } else {
                    "it is not a network for every observer mix".into()
                },
            })
    }

    /// Optimiser steps it was trained for.
    pub fn training_steps(&self) -> u64 {
        self.pure.info().training.steps
    }

    /// Identifies the exact weights and tables; written into every file the model makes.
    pub fn fingerprint(&self) -> ModelFingerprint {
        ModelFingerprint(self.pure.fingerprint())
    }

    /// The full description stored in the model file, as JSON.
    pub fn description_json(&self) -> String {
        serde_json::to_string_pretty(self.pure.info()).unwrap_or_default()
    }

    /// The libtorch model of the same file, loaded on first use.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if libtorch cannot load it.
    #[cfg(feature = "torch")]
    pub(crate) fn inner(&self) -> Result<&ocular_models::CodecModel, Error> {
        self.torch.get()
    }
}

/// Every built-in model with its description, read from the metadata alone (choosing a model
/// must not pay for loading the others).
fn builtin_infos() -> Result<Vec<(&'static BuiltinModel, ModelInfo)>, Error> {
    BUILTIN
        .iter()
        .map(|candidate| {
            Ok((
                candidate,
                ocular_models::model_file::read_info(candidate.bytes)?,
            ))
        })
        .collect()
}

/// The built-in fixed-rate models trained with `distortion`, by increasing quality, found from
/// their descriptions alone ([`Model::builtin_family`] loads them).
fn family_members(distortion: &str) -> Result<Vec<&'static BuiltinModel>, Error> {
    let mut members: Vec<_> = builtin_infos()?
        .into_iter()
        .filter(|(_, info)| info.distortion.to_string() == distortion)
        .filter(|(_, info)| info.variable_rate.is_none())
        .collect();
    if members.is_empty() {
        return Err(Error::NoSuchModel(format!(
            "trained for {distortion} (built in: {})",
            builtin_list()
        )));
    }
    members.sort_by_key(|(_, info)| info.quality);
    Ok(members.into_iter().map(|(member, _)| member).collect())
}

/// The members of [`Model::builtin_observer_family`], not loaded.
fn observer_family_members(observer: &str) -> Result<Vec<&'static BuiltinModel>, Error> {
    let mix = ObserverMix::from_name(observer).ok_or_else(|| {
        Error::NoSuchModel(format!(
            "for observer '{observer}' (human, machine, or an alpha in 0..=1)"
        ))
    })?;
    let family = family_members(&format!("observer-{}", mix.get()));
    if mix == ObserverMix::HUMAN {
        family
            .or_else(|_| family_members("ms-ssim"))
            .or_else(|_| family_members("mse"))
    } else {
        family
    }
}

fn load_all(members: Vec<&BuiltinModel>) -> Result<Vec<Model>, Error> {
    members.into_iter().map(BuiltinModel::load).collect()
}

fn builtin_list() -> String {
    let names: Vec<&str> = Model::builtin_names().collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
