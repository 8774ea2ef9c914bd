//! The perceptual metrics of an evaluation (`EvalConfig::perceptual`): the deep-feature
//! distance of every row and KID per codec and rate point, both from
//! [`ocular::perceptual`] (EfficientNet-Lite1; the math is in that module's documentation).

use image::RgbImage;
use ocular_models::imaging::rgb_to_tensor;
use ocular_models::perceptual::{
    kid, DeepFeatures, FeatureSet, Kid, KidConfig, PerceptualNet, FEATURE_DIM,
};
use serde::{Deserialize, Serialize};

use super::{EvalError, EvalRow};

/// KID of one codec at one rate point: the patches of its reconstructions of every image
/// against the patches of the originals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalKid {
    /// As [`EvalRow::codec`].
    pub codec: String,
    /// As [`EvalRow::target`].
    pub target: String,
    /// Patches in each set (originals, reconstructions).
    pub patches: usize,
    /// The estimate (mean and standard deviation over the subsets, the subset size used).
    pub kid: Kid,
}

/// What an evaluation gathers for the perceptual metrics while it runs.
pub(super) struct PerceptualRun<'a> {
    net: &'a PerceptualNet,
    /// The deep features of the image being evaluated.
    current: Option<DeepFeatures>,
    /// Patch features of every original.
    originals: FeatureSet,
    /// Patch features of the reconstructions, per codec and target, in order of appearance.
    groups: Vec<(String, String, FeatureSet)>,
}

fn failed(image: &str) -> impl Fn(ocular::perceptual::PerceptualError) -> EvalError + '_ {
    move |source| EvalError::Perceptual {
        image: Some(image.to_string()),
        source,
    }
}

impl<'a> PerceptualRun<'a> {
    pub(super) fn new(net: &'a PerceptualNet) -> Self {
        Self {
            net,
            current: None,
            originals: FeatureSet::new(FEATURE_DIM),
            groups: Vec::new(),
        }
    }

    /// Takes the next original: its deep features and its patches.
    pub(super) fn start_image(&mut self, rgb: &RgbImage, name: &str) -> Result<(), EvalError> {
        let pixels = rgb_to_tensor(rgb);
        self.current = Some(self.net.deep_features(&pixels).map_err(failed(name))?);
        let patches = self.net.patch_features(&pixels).map_err(failed(name))?;
        self.originals.extend(&patches).map_err(failed(name))
    }

    /// Measures `decoded`, the reconstruction of the current image that `row` reports: sets
    /// its deep-feature distance and keeps its patches for KID.
    pub(super) fn measure(
        &mut self,
        row: &mut EvalRow,
        decoded: &RgbImage,
    ) -> Result<(), EvalError> {
        let reference = self.current.as_ref().ok_or_else(|| EvalError::Perceptual {
            image: Some(row.image.clone()),
            source: ocular::perceptual::PerceptualError::Shape("no original to compare".into()),
        })?;
        let pixels = rgb_to_tensor(decoded);
        let distance = self
            .net
            .deep_distance_to(reference, &pixels)
            .map_err(failed(&row.image))?;
        row.deep_distance = distance.first().copied();
        let patches = self
            .net
            .patch_features(&pixels)
            .map_err(failed(&row.image))?;
        let group = self
            .groups
            .iter_mut()
            .find(|(codec, target, _)| *codec == row.codec && *target == row.target);
        match group {
            Some((_, _, set)) => set.extend(&patches).map_err(failed(&row.image))?,
            None => self
                .groups
                .push((row.codec.clone(), row.target.clone(), patches)),
        }
        Ok(())
    }

    /// KID of every codec and target ([`KidConfig::default`], the subset size lowered to the
    /// number of patches when there are fewer).
    ///
    /// # Errors
    /// [`EvalError::Perceptual`] when the images give fewer than 2 patches (sides below 256).
    pub(super) fn finish(self) -> Result<Vec<EvalKid>, EvalError> {
        self.groups
            .into_iter()
            .map(|(codec, target, set)| {
                let patches = set.len().min(self.originals.len());
                let config = KidConfig::default().fitting(patches);
                let kid = kid(&self.originals, &set, &config).map_err(|source| {
                    EvalError::Perceptual {
                        image: None,
                        source,
                    }
                })?;
                Ok(EvalKid {
                    codec,
                    target,
                    patches,
                    kid,
                })
            })
            .collect()
    }
}
