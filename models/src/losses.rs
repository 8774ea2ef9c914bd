//! Distortion measures the training objective can use: `loss = bpp + lambda * D`.
//!
//! [`Distortion`] names the measure (it is recorded in model files and its
//! [`Display`](fmt::Display) form is the model's family name); [`DistortionMeasure`] computes
//! it, built once per training run because the observer measure owns a frozen classifier.
//!
//! # The observer distortion
//!
//! Weber, Renggli, Grabner, Zhang, "Observer Dependent Lossy Image Compression" (GCPR 2020),
//! see `../shared/DESIGN.md`: the distortion interpolates between human quality and classifier
//! quality with `alpha` in [0, 1],
//!
//! ```text
//! D = (1 - alpha) * w_ms * (1 - MS-SSIM(x, x_hat)) + alpha * w_f * L_f(x, x_hat)
//!
//! L_f = 1/|S| * sum over layers l in S of
//!         mean_{n,c,h,w} (phi_l(x_hat') - phi_l(x))^2  /  sg( mean_{n,c,h,w} phi_l(x)^2 + eps )
//! ```
//!
//! `phi_l` is the frozen observer classifier's feature map after layer `l` (EfficientNet-Lite0,
//! [`crate::observer`]; `S` = [`DEFAULT_FEATURE_LAYERS`], Stage(1) and Head, unless configured),
//! applied to the classifier's normalisation of the images (see [`observer_input`]); the means
//! run over the whole batch; `sg` stops the gradient; `eps` = [`FEATURE_EPSILON`];
//! `x_hat' = clamp(x_hat, 0, 1)` in the forward pass with the identity as its gradient
//! (straight-through), see [`feature_distance`].
//!
//! **Normalisation.** Each layer's MSE is divided by the mean squared magnitude of the
//! *original's* features of that layer in the same batch, detached: a relative squared error.
//! Chosen over a fixed per-layer constant measured once on training data because it makes every
//! layer's term dimensionless and comparable whatever the layer or observer (a constant would
//! have to be re-measured, and stored, for every layer set and observer), because it needs no
//! calibration pass and no data at construction, and because for the default layers the two
//! differ little anyway: the magnitudes are stable statistics of natural images (mean squared
//! feature over batches of eight 192x192 training crops: Stage(1) 77.7, batch-to-batch
//! standard deviation 7.6; Head 0.83, sd 0.064), so a fixed constant would only trade this
//! ~10% per-batch re-weighting for a stored, observer-specific number. Detaching keeps the
//! gradient that of a plain MSE (rescaled by a positive per-batch factor): the network cannot
//! lower the term by changing the normaliser, which depends on the original only.
//!
//! **Weights.** `w_ms` = 1 (the term then equals the `ms-ssim` distortion, so the lambdas of
//! `ms-ssim` models carry over) and `w_f` = [`DEFAULT_FEATURE_WEIGHT`], measured so both terms
//! have the same mean at the start of fine-tuning from a human-oriented model (see that
//! constant).

use std::path::Path;

use tch::{Kind, Tensor};

use crate::msssim::ms_ssim;
use crate::observer::{self, Classifier, FeatureLayer, Observer};
use crate::ModelError;

pub use crate::distortion::{
    Distortion, FeatureLayers, ObserverDistortion, ParseDistortionError, DEFAULT_FEATURE_WEIGHT,
    DEFAULT_MS_SSIM_WEIGHT,
};

/// `eps` of the feature normalisation: keeps the division finite for a (degenerate) layer whose
/// features are all zero; negligible next to real mean squared features (about 0.8 for Head,
/// 80 for Stage(1) on training crops).
pub const FEATURE_EPSILON: f64 = 1e-8;

/// The terms of one evaluation of a [`DistortionMeasure`].
#[derive(Debug)]
pub struct DistortionTerms {
    /// `D`, the distortion that `lambda` multiplies (a scalar, differentiable).
    pub total: Tensor,
    /// `1 - MS-SSIM` (unweighted), when it was computed.
    pub ms_ssim: Option<Tensor>,
    /// `L_f` (unweighted), when it was computed.
    pub features: Option<Tensor>,
}

/// Computes a [`Distortion`]: built once per training run, it owns the frozen observer
/// classifier when the distortion needs one (the built-in [`Classifier`] looking at the
/// distortion's layers, or any other [`Observer`], e.g. a user's TorchScript module).
#[derive(Debug)]
pub struct DistortionMeasure {
    distortion: Distortion,
    observer: Option<Box<dyn Observer>>,
}

impl DistortionMeasure {
    /// The measure of `distortion`, loading the observer classifier from `observer_weights`
    /// (e.g. [`observer::default_weights_path`]) only if the distortion needs it
    /// ([`Distortion::needs_classifier`]).
    ///
    /// # Errors
    /// As [`Distortion::validate`]; when the classifier is needed, as
    /// [`Classifier::load`] (converted to [`ModelError`]: missing weights are
    /// [`ModelError::InvalidModel`] with the path and how to install them).
    pub fn new(distortion: Distortion, observer_weights: &Path) -> Result<Self, ModelError> {
        let classifier = if distortion.needs_classifier() {
            Some(Classifier::load(observer_weights)?)
        } else {
            None
        };
        Self::with_classifier(distortion, classifier)
    }

    /// The measure of `distortion` with an already loaded built-in classifier (kept only if
    /// needed), set to compare the distortion's layers.
    ///
    /// # Errors
    /// As [`Distortion::validate`]; [`ModelError::InvalidModel`] when the distortion needs a
    /// classifier and `classifier` is `None`.
    pub fn with_classifier(
        distortion: Distortion,
        classifier: Option<Classifier>,
    ) -> Result<Self, ModelError> {
        let observer = match (distortion, classifier) {
            (Distortion::Observer(o), Some(mut classifier)) => {
                classifier.set_feature_layers(&o.layers.to_vec())?;
                Some(Box::new(classifier) as Box<dyn Observer>)
            }
            _ => None,
        };
        Self::with_observer(distortion, observer)
    }

    /// The measure of `distortion` against several built-in classifiers at once: each set to
    /// compare the distortion's layers, together an [`observer::Ensemble`], so the feature term
    /// is the mean of the classifiers' own terms (see that module for the objective).
    ///
    /// # Errors
    /// As [`Distortion::validate`]; [`ModelError::InvalidModel`] when `distortion` compares no
    /// classifier (there is nothing to average) or `classifiers` is empty.
    pub fn with_classifiers(
        distortion: Distortion,
        classifiers: Vec<Classifier>,
    ) -> Result<Self, ModelError> {
        let layers = match distortion {
            Distortion::Observer(o) if distortion.needs_classifier() => o.layers.to_vec(),
            _ => {
                return Err(ModelError::InvalidModel(format!(
                    "{distortion} compares no classifier features, so it cannot use several"
                )))
            }
        };
        if classifiers.is_empty() {
            return Err(ModelError::InvalidModel(format!(
                "{distortion} needs at least one classifier"
            )));
        }
        let members = classifiers
            .into_iter()
            .map(|mut c| {
                c.set_feature_layers(&layers)?;
                Ok(Box::new(c) as Box<dyn Observer>)
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let ensemble = observer::Ensemble::new(members)?;
        Self::with_observer(distortion, Some(Box::new(ensemble)))
    }

    /// The measure of `distortion` with any observer (kept only if needed). The feature term
    /// compares what [`Observer::observe_features`] returns; the distortion's `layers` name
    /// layers of the built-in classifier and do not apply.
    ///
    /// # Errors
    /// As [`Distortion::validate`]; [`ModelError::InvalidModel`] when the distortion needs a
    /// classifier and `observer` is `None`.
    pub fn with_observer(
        distortion: Distortion,
        observer: Option<Box<dyn Observer>>,
    ) -> Result<Self, ModelError> {
        distortion.validate()?;
        let observer = if distortion.needs_classifier() {
            Some(observer.ok_or_else(|| {
                ModelError::InvalidModel(format!("{distortion} needs the observer classifier"))
            })?)
        } else {
            None
        };
        Ok(Self {
            distortion,
            observer,
        })
    }

    /// The distortion measured.
    pub fn distortion(&self) -> Distortion {
        self.distortion
    }

    /// The observer classifier, if the distortion needs one.
    pub fn observer(&self) -> Option<&dyn Observer> {
        self.observer.as_deref()
    }

    /// The distortion of `x_hat` against `x` (N, 3, H, W), values nominally in [0, 1], averaged
    /// over the batch, with its terms. `x_hat` is used unclamped, as the training forward pass
    /// returns it, except by the feature term (see [`feature_distance`]). Terms whose
    /// coefficient is zero are not computed (`alpha` = 0 never runs the classifier, `alpha` = 1
    /// never computes MS-SSIM).
    ///
    /// # Errors
    /// [`ModelError::Shape`] if the shapes differ or MS-SSIM cannot be computed at this size
    /// (sides below [`crate::msssim::MIN_SIDE`]), or the classifier rejects the batch.
    pub fn compute(&self, x: &Tensor, x_hat: &Tensor) -> Result<DistortionTerms, ModelError> {
        self.compute_as(self.distortion, x, x_hat)
    }

    /// [`Self::compute`] with the observer distortion's `alpha` replaced by `alpha` (the
    /// training of a network for every observer mix); any other distortion as it is.
    ///
    /// # Errors
    /// As [`Self::compute`]; [`ModelError::InvalidModel`] if `alpha` is outside [0, 1], or
    /// needs the classifier and this measure has none.
    pub fn compute_mixed(
        &self,
        x: &Tensor,
        x_hat: &Tensor,
        alpha: f64,
    ) -> Result<DistortionTerms, ModelError> {
        let Distortion::Observer(observer) = self.distortion else {
            return self.compute(x, x_hat);
        };
        let mixed = Distortion::Observer(ObserverDistortion { alpha, ..observer });
        mixed.validate()?;
        if mixed.needs_classifier() && self.observer.is_none() {
            return Err(ModelError::InvalidModel(format!(
                "{mixed} needs the observer classifier"
            )));
        }
        self.compute_as(mixed, x, x_hat)
    }

    fn compute_as(
        &self,
        distortion: Distortion,
        x: &Tensor,
        x_hat: &Tensor,
    ) -> Result<DistortionTerms, ModelError> {
        if x.size() != x_hat.size() || x.dim() != 4 {
            return Err(ModelError::Shape(format!(
                "distortion needs two equal (N, 3, H, W) shapes, got {:?} and {:?}",
                x.size(),
                x_hat.size()
            )));
        }
        let one_minus_ms_ssim = || -> Result<Tensor, ModelError> {
            Ok(1.0 - ms_ssim(x, x_hat, 1.0)?.mean(Kind::Float))
        };
        match distortion {
            Distortion::Mse => Ok(DistortionTerms {
                total: (x - x_hat).square().mean(Kind::Float) * (255.0 * 255.0),
                ms_ssim: None,
                features: None,
            }),
            Distortion::MsSsim => {
                let term = one_minus_ms_ssim()?;
                Ok(DistortionTerms {
                    total: term.shallow_clone(),
                    ms_ssim: Some(term),
                    features: None,
                })
            }
            Distortion::Observer(o) => {
                let ms_coefficient = o.ms_ssim_coefficient();
                let f_coefficient = o.feature_coefficient();
                let ms_ssim = if ms_coefficient != 0.0 {
                    Some(one_minus_ms_ssim()?)
                } else {
                    None
                };
                let features = match &self.observer {
                    Some(observer) if f_coefficient != 0.0 => Some(observer_feature_distance(
                        observer.as_ref(),
                        x,
                        x_hat,
                        o.crop_and_resize,
                    )?),
                    _ => None,
                };
                let total = match (&ms_ssim, &features) {
                    (Some(m), Some(f)) => m * ms_coefficient + f * f_coefficient,
                    (Some(m), None) => m * ms_coefficient,
                    (None, Some(f)) => f * f_coefficient,
                    // Both weights zero: a valid (if useless) rate-only objective.
                    (None, None) => Tensor::zeros([], (Kind::Float, x.device())),
                };
                Ok(DistortionTerms {
                    total,
                    ms_ssim,
                    features,
                })
            }
        }
    }
}

/// What the classifier is given for images in [0, 1] (N, 3, H, W): with `crop_and_resize`,
/// the full preprocessing [`observer::preprocess`] (center crop of 224/256 of the short side,
/// antialiased bicubic resize to 224x224, normalisation); without, only
/// [`observer::normalize`], the images at their own resolution. Both are differentiable.
///
/// The default (without) mirrors the evaluation protocol, where the compressed image *is* the
/// classifier's 224x224 crop and goes through `normalize` only: the classifier sees the codec's
/// artifacts at the scale they have in the decoded image, not magnified and low-passed by the
/// 4/3 upsampling (168 -> 224) a 192 crop would get, every pixel of the crop gets a gradient
/// (the center crop would leave a 12-pixel border of a 192 crop, 23% of its pixels, without
/// one), and it is cheaper: the classifier runs on 192^2 instead of 224^2 pixels and the
/// backward pass of the antialiased bicubic resize is skipped. EfficientNet is fully
/// convolutional up to its global pooling, so any side of at least 32 pixels works.
///
/// # Errors
/// [`ModelError::Shape`] as [`observer::preprocess`].
pub fn observer_input(images: &Tensor, crop_and_resize: bool) -> Result<Tensor, ModelError> {
    if crop_and_resize {
        Ok(observer::preprocess(images)?)
    } else {
        Ok(observer::normalize(images))
    }
}

/// `L_f`: the mean over `layers` of the normalised feature MSE between the original `x` and
/// the reconstruction `x_hat` (module documentation):
///
/// ```text
/// L_f = 1/|S| sum_l mean (phi_l(x_hat') - phi_l(x))^2 / sg(mean phi_l(x)^2 + eps)
/// ```
///
/// * `x_hat' = x_hat + sg(clamp(x_hat, 0, 1) - x_hat)`: the classifier sees the reconstruction
///   clamped to [0, 1] as the decoder outputs it (`decompress` clamps), while the gradient
///   passes straight through, also for pixels outside [0, 1] (a plain clamp would give them
///   none from this term).
/// * The original's features are computed without autograd (the classifier is frozen and `x`
///   is data), the reconstruction's with it, so gradients reach `x_hat` (and through it the
///   codec) but never the classifier's weights. The classifier runs only up to the deepest
///   layer of `layers` ([`Classifier::features`]).
///
/// # Errors
/// [`ModelError::Shape`] for shapes that differ, an empty `layers`, or a batch the classifier
/// cannot take.
pub fn feature_distance(
    classifier: &Classifier,
    layers: &[FeatureLayer],
    x: &Tensor,
    x_hat: &Tensor,
    crop_and_resize: bool,
) -> Result<Tensor, ModelError> {
    if layers.is_empty() {
        return Err(ModelError::Shape("feature distance needs a layer".into()));
    }
    relative_feature_mse(
        |images| classifier.features(images, layers),
        x,
        x_hat,
        crop_and_resize,
    )
}

/// `L_f` as [`feature_distance`], over the maps any observer compares
/// ([`Observer::observe_features`]: its feature maps, or its logits if it returns none).
///
/// # Errors
/// [`ModelError::Shape`] for shapes that differ, an observer that returns no map, or a batch
/// the observer cannot take.
pub fn observer_feature_distance(
    observer: &dyn Observer,
    x: &Tensor,
    x_hat: &Tensor,
    crop_and_resize: bool,
) -> Result<Tensor, ModelError> {
    relative_feature_mse(
        |images| observer.observe_features(images),
        x,
        x_hat,
        crop_and_resize,
    )
}

fn relative_feature_mse(
    features: impl Fn(&Tensor) -> Result<Vec<Tensor>, observer::ObserverError>,
    x: &Tensor,
    x_hat: &Tensor,
    crop_and_resize: bool,
) -> Result<Tensor, ModelError> {
    if x.size() != x_hat.size() {
        return Err(ModelError::Shape(format!(
            "feature distance needs two equal shapes, got {:?} and {:?}",
            x.size(),
            x_hat.size()
        )));
    }
    let reference = tch::no_grad(|| -> Result<Vec<Tensor>, ModelError> {
        Ok(features(&observer_input(x, crop_and_resize)?)?)
    })?;
    let clamped = x_hat + (x_hat.clamp(0.0, 1.0) - x_hat).detach();
    let observed = features(&observer_input(&clamped, crop_and_resize)?)?;
    if reference.is_empty() || reference.len() != observed.len() {
        return Err(ModelError::Shape(format!(
            "the observer returned {} and {} feature maps",
            reference.len(),
            observed.len()
        )));
    }
    let per_layer: Vec<Tensor> = reference
        .iter()
        .zip(&observed)
        .map(|(r, o)| {
            let energy = r.square().mean(Kind::Float) + FEATURE_EPSILON;
            (o - r).square().mean(Kind::Float) / energy
        })
        .collect();
    Ok(Tensor::stack(&per_layer, 0).mean(Kind::Float))
}

/// PSNR in dB of a mean squared error on 0..1 images.
pub fn psnr(mse: f64) -> f64 {
    -10.0 * mse.max(1e-12).log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::DEFAULT_FEATURE_LAYERS;

    #[test]
    fn names_sort_like_alphas() {
        let names: Vec<String> = [0.0, 0.125, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|&a| Distortion::observer(a).to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[3], "observer-0.5");
        assert_eq!(names[5], "observer-1");
        for name in names.iter().map(String::as_str).chain(["mse", "ms-ssim"]) {
            assert_eq!(
                name.parse::<Distortion>().map(|d| d.to_string()).ok(),
                Some(name.into())
            );
        }
        for bad in [
            "observer-1.5",
            "observer-",
            "observer-x",
            "MSE",
            "observer--0.1",
        ] {
            assert!(bad.parse::<Distortion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_layers_and_their_names() {
        let layers = FeatureLayers::default();
        assert_eq!(layers.to_vec(), DEFAULT_FEATURE_LAYERS.to_vec());
        assert_eq!(layers.to_string(), "stage1,head");
        assert_eq!("head, stage1".parse::<FeatureLayers>().ok(), Some(layers));
        assert!("stage9".parse::<FeatureLayers>().is_err());
    }
}
