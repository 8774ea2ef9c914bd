//! The libtorch model behind a [`crate::Model`] (feature `torch`), loaded from the model file's
//! bytes the first time refinement or the harness needs it: plain coding never loads it.

use std::path::Path;
use std::sync::OnceLock;

use image::{DynamicImage, GenericImageView};
use ocular_entropy::QuantizationStep;
use ocular_models::hyperprior::Y_DOWNSAMPLING;
use ocular_models::imaging::{pad_to_multiple, rgb_to_tensor};
use ocular_models::losses::DistortionMeasure;
use ocular_models::msssim::MIN_SIDE;
use ocular_models::observer::{
    default_weights_path, load_observer, weights_path, Classifier, Variant,
};
use ocular_models::refine::{Refinement, DEFAULT_REFINE_LEARNING_RATE, MIN_VIEW_SIDE};
use ocular_models::{CodecModel, CompressedLatents, Distortion};

use crate::{Error, Model};

/// A model file's bytes and, once asked for, its libtorch model.
pub(crate) struct LazyTorchModel {
    bytes: Vec<u8>,
    model: OnceLock<CodecModel>,
}

impl std::fmt::Debug for LazyTorchModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyTorchModel")
            .field("bytes", &self.bytes.len())
            .field("loaded", &self.model.get().is_some())
            .finish()
    }
}

impl LazyTorchModel {
    /// Keeps `bytes` (a model file already validated by the pure-Rust reader).
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            model: OnceLock::new(),
        }
    }

    /// The libtorch model, loaded now if it was not yet.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] if libtorch cannot load the file.
    pub(crate) fn get(&self) -> Result<&CodecModel, Error> {
        if let Some(model) = self.model.get() {
            return Ok(model);
        }
        let loaded = CodecModel::from_bytes(&self.bytes)?;
        // Another thread may have loaded it meanwhile: either copy is the same model.
        Ok(self.model.get_or_init(|| loaded))
    }
}

/// The latents of `image` on the grid of `step` after `steps` steps of refinement
/// (`ocular_models::refine`), the `y` stream within `max_y_bytes`.
///
/// # Errors
/// [`Error::ObserverUnavailable`] if the model's observer cannot be loaded; else as
/// `compress_refined`.
pub(crate) fn refined_latents(
    model: &Model,
    image: &DynamicImage,
    step: QuantizationStep,
    steps: usize,
    max_y_bytes: Option<usize>,
) -> Result<CompressedLatents, Error> {
    let views = model.refinement_views();
    let inner = model.inner()?;
    let objective = model.refinement_objective().copied();
    check_refinable(
        image.dimensions(),
        views,
        objective.unwrap_or(inner.info().distortion),
    )?;
    let x = pad_to_multiple(&rgb_to_tensor(&image.to_rgb8()), Y_DOWNSAMPLING);
    let observers = model.refinement_observers();
    let measure = match objective {
        _ if !observers.is_empty() => {
            ensemble_measure(objective.unwrap_or(inner.info().distortion), observers)?
        }
        Some(objective) => DistortionMeasure::new(objective, &default_weights_path())
            .map_err(|e| Error::ObserverUnavailable(format!("refining for {objective}: {e}")))?,
        None => refinement_measure(inner)?,
    };
    let refinement = Refinement {
        distortion: &measure,
        lambda: model.lambda(),
        steps,
        learning_rate: DEFAULT_REFINE_LEARNING_RATE,
        max_y_bytes,
        step,
        views,
        view_seed: 0,
    };
    let (width, height) = image.dimensions();
    let visible = (i64::from(height), i64::from(width));
    let (latents, _) =
        inner
            .network()
            .compress_refined(&x, visible, inner.tables(), &refinement)?;
    Ok(latents)
}

/// Refuses, before any work, an image too small for the refinement asked: views need
/// [`MIN_VIEW_SIDE`] pixels a side, an objective with an MS-SSIM term (`ms-ssim`, an observer
/// mix below 1) [`MIN_SIDE`] (its five scales).
fn check_refinable(
    (width, height): (u32, u32),
    views: usize,
    objective: Distortion,
) -> Result<(), Error> {
    let side = i64::from(width.min(height));
    let too_small = |what: String, min: i64| {
        Err(Error::Image(format!(
            "{what} needs at least {min} px a side, the image is {width}x{height}"
        )))
    };
    if views > 0 && side < MIN_VIEW_SIDE {
        return too_small("refinement over views".into(), MIN_VIEW_SIDE);
    }
    if objective.needs_ms_ssim() && side < MIN_SIDE {
        return too_small(
            format!("refinement against {objective} (MS-SSIM)"),
            MIN_SIDE,
        );
    }
    Ok(())
}

/// `distortion` observed by the built-in classifiers `observers` at once.
fn ensemble_measure(
    distortion: Distortion,
    observers: &[Variant],
) -> Result<DistortionMeasure, Error> {
    let names: Vec<&str> = observers.iter().map(|v| v.short_name()).collect();
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::ObserverUnavailable(format!(
            "refining for {distortion} observed by {}: {e}",
            names.join(", ")
        ))
    };
    let classifiers = observers
        .iter()
        .map(|&v| Classifier::load_variant(&weights_path(v), v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unavailable(&e))?;
    DistortionMeasure::with_classifiers(distortion, classifiers).map_err(|e| unavailable(&e))
}

/// The distortion `model` was trained with, with its observer when it has one: the built-in
/// classifier, or the TorchScript module recorded in the model file.
fn refinement_measure(model: &CodecModel) -> Result<DistortionMeasure, Error> {
    let info = model.info();
    let distortion = info.distortion;
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::ObserverUnavailable(format!("refining for {distortion}: {e}"))
    };
    let torchscript = info
        .training
        .observer
        .as_deref()
        .and_then(|o| o.strip_prefix("torchscript:"));
    match torchscript {
        Some(path) if distortion.needs_classifier() => {
            let observer =
                load_observer(Some(Path::new(path)), None).map_err(|e| unavailable(&e))?;
            DistortionMeasure::with_observer(distortion, Some(observer))
                .map_err(|e| unavailable(&e))
        }
        _ => {
            DistortionMeasure::new(distortion, &default_weights_path()).map_err(|e| unavailable(&e))
        }
    }
}
