//! Perceptual metrics for people, measured with a network the codec is never trained with
//! (EfficientNet-Lite1, [`Variant::Lite1`]): a deep-feature distance per image (after
//! Zhang et al. 2018, "LPIPS") and KID, a set-level realism measure (Bińkowski et al. 2018).
//! One implementation, used by `eval`, `bench` and the perception–distortion work.
//!
//! # Deep-feature distance
//!
//! For an image `x` and its reconstruction `x̂` (both RGB in [0, 1], the same size),
//!
//! ```text
//! d(x, x̂) = 1/|L| Σ_{l ∈ L} 1/(H_l W_l) Σ_{h,w} ‖ f̂_l(x)_{hw} − f̂_l(x̂)_{hw} ‖²
//!
//! f̂_l(x)_{hw} = f_l(x)_{hw} / (‖ f_l(x)_{hw} ‖ + ε)        (unit length over the channels)
//! ```
//!
//! `f_l` is Lite1's feature map after layer `l` ((C_l, H_l, W_l)); `ε` = [`NORM_EPSILON`].
//! `L` = [`DEEP_LAYERS`]: the output of the last block group at each of Lite1's five
//! resolutions — stages 0 (16 channels, stride 2), 1 (24, stride 4), 2 (40, stride 8),
//! 4 (112, stride 16) and 6 (320, stride 32) — as LPIPS takes the last convolution of each of
//! VGG's five blocks. Each term lies in [0, 4] (two unit vectors), so `d` does too; 0 means
//! equal features.
//!
//! **Uncalibrated.** LPIPS weighs every channel with a linear layer learnt from human
//! judgements (BAPPS); no such weights are obtainable here for this network, so every channel
//! weighs 1 (LPIPS's "baseline" variant). The figure ranks distortions of one image sensibly
//! (`tests/perceptual.rs`: JPEG qualities, blur, a one-pixel shift against noise of equal MSE)
//! but its scale is this network's, not comparable to published LPIPS values.
//!
//! **Input.** Lite1's own normalisation ([`observer::normalize`]: `(255 x − 127) / 128`), the
//! image at its native size (no crop, no resize): the network is convolutional up to its
//! pooling, and resizing to its 240-pixel training input would low-pass (or magnify) exactly
//! the codec artifacts the distance is meant to see. Reconstructions are compared as decoded
//! (8-bit).
//!
//! # KID
//!
//! Kernel Inception Distance (Bińkowski, Sutherland, Arbel, Gretton, ICLR 2018) between two
//! sets of feature vectors `X` (originals) and `Y` (reconstructions) of dimension `d`: the
//! unbiased estimate of the squared maximum mean discrepancy with the polynomial kernel
//! `k(a, b) = (aᵀb / d + 1)³`, on `s` random subsets of `m` vectors from each set,
//!
//! ```text
//! MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/m² Σ_{i,j} k(x_i, y_j)
//! KID    = mean over the s subsets of MMD²_u,  reported with its standard deviation over them
//! ```
//!
//! (the estimator of `torch-fidelity` and `clean-fid`; population standard deviation). The
//! subsets are drawn without replacement, independently from `X` and from `Y`, by a
//! SplitMix64 generator seeded with [`KidConfig::seed`]: the same features and settings give
//! the same figure. Defaults ([`KidConfig::default`]): `m` = 100, `s` = 100, seed 0; with
//! fewer than `m` vectors in a set, [`KidConfig::fitting`] lowers `m` to the smaller set's size
//! (`eval` does; it reports `m`). Unlike the estimate of FID, this one is unbiased, so it is
//! valid with the ~200 vectors of a Kodak evaluation, where FID with 1280-dimensional
//! features (a 1280x1280 covariance from 200 samples) is not. The estimate can be slightly
//! negative when the sets are alike.
//!
//! **Patches and features** (the FID/256 protocol of HiFiC, Mentzer et al. 2020, and MS-ILLM,
//! Muckley et al. 2023): every image is cut into [`PATCH_SIZE`]² patches on the aligned grid
//! (origins `(256 i, 256 j)`) and on the grid shifted by [`PATCH_SHIFT`] = 128 pixels in both
//! directions (origins `(128 + 256 i, 128 + 256 j)`), patches that do not fit whole are
//! dropped ([`patch_origins`]; a 768x512 Kodak image gives 6 + 2 = 8). Each patch, normalised
//! as above at its native 256x256 size, goes through Lite1 up to its head; the head's
//! 1280-channel map averaged over space (the global pooling before the classifier) is the
//! patch's feature vector ([`FEATURE_DIM`]). KID compares the patches of the originals with
//! those of the reconstructions at one codec and rate point: one figure per codec and rate.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::observer::{self, Classifier, FeatureLayer, ObserverError, Variant};

/// The layers of the deep-feature distance: the last block group at each resolution of Lite1.
pub const DEEP_LAYERS: [FeatureLayer; 5] = [
    FeatureLayer::Stage(0),
    FeatureLayer::Stage(1),
    FeatureLayer::Stage(2),
    FeatureLayer::Stage(4),
    FeatureLayer::Stage(6),
];

/// `ε` of the channel normalisation (LPIPS's `1e-10`): keeps an all-zero feature vector at 0.
pub const NORM_EPSILON: f64 = 1e-10;

/// Side of the square patches whose features KID compares.
pub const PATCH_SIZE: i64 = 256;

/// Offset of the second patch grid in both directions.
pub const PATCH_SHIFT: i64 = 128;

/// Dimension of a patch's feature vector (Lite1's pooled head).
pub const FEATURE_DIM: usize = 1280;

/// Patches run through the network together (bounds the memory of the head's activations).
const PATCH_BATCH: i64 = 8;

/// Errors of the perceptual metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerceptualError {
    /// The EfficientNet-Lite1 weights are not installed.
    #[error(
        "the perceptual metrics need the EfficientNet-Lite1 weights, not found at {} \
         (install them with scripts/setup-observer.sh, or `make setup`)",
        .0.display()
    )]
    WeightsMissing(PathBuf),
    /// The weights or an input were refused by the network.
    #[error("EfficientNet-Lite1 refused its weights or input")]
    Network(#[source] ObserverError),
    /// A set has fewer feature vectors than one subset takes.
    #[error("KID with subsets of {subset_size} needs at least {subset_size} feature vectors in each set, got {samples} (too few patches: images below 256x256 give none)")]
    TooFewSamples {
        /// The subset size asked for.
        subset_size: usize,
        /// The size of the smaller set.
        samples: usize,
    },
    /// KID settings that cannot be used (a subset of fewer than 2, no subsets).
    #[error("invalid KID settings: {0}")]
    Config(String),
    /// Inputs of the wrong shape or dimension.
    #[error("perceptual metric input: {0}")]
    Shape(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl From<ObserverError> for PerceptualError {
    fn from(e: ObserverError) -> Self {
        match e {
            ObserverError::WeightsMissing(path) => PerceptualError::WeightsMissing(path),
            ObserverError::Torch(t) => PerceptualError::Torch(t),
            other => PerceptualError::Network(other),
        }
    }
}

/// Feature vectors of one dimension, row after row (e.g. the pooled patch features of a set
/// of images).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSet {
    dim: usize,
    values: Vec<f32>,
}

impl FeatureSet {
    /// An empty set of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            values: Vec::new(),
        }
    }

    /// `values.len() / dim` vectors from their concatenation.
    ///
    /// # Errors
    /// [`PerceptualError::Shape`] if `dim` is 0 or does not divide `values.len()`.
    pub fn from_values(dim: usize, values: Vec<f32>) -> Result<Self, PerceptualError> {
        if dim == 0 || !values.len().is_multiple_of(dim) {
            return Err(PerceptualError::Shape(format!(
                "{} values are no whole number of {dim}-dimensional vectors",
                values.len()
            )));
        }
        Ok(Self { dim, values })
    }

    /// The dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of vectors.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether the set has no vector.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The vectors, concatenated.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Appends the vectors of `other`.
    ///
    /// # Errors
    /// [`PerceptualError::Shape`] if the dimensions differ.
    pub fn extend(&mut self, other: &FeatureSet) -> Result<(), PerceptualError> {
        if other.dim != self.dim {
            return Err(PerceptualError::Shape(format!(
                "cannot join {}- and {}-dimensional features",
                self.dim, other.dim
            )));
        }
        self.values.extend_from_slice(&other.values);
        Ok(())
    }

    fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.values)
            .view([self.len() as i64, self.dim as i64])
            .to_kind(Kind::Double)
    }
}

/// The origins `(top, left)` of the [`PATCH_SIZE`]² patches of an image of `height` x `width`:
/// the aligned grid `(256 i, 256 j)`, then the grid shifted by [`PATCH_SHIFT`] in both
/// directions, `(128 + 256 i, 128 + 256 j)`, each row by row, keeping the patches that fit
/// whole. 768x512 (width x height) gives 3 x 2 + 2 x 1 = 8; below 256 in a side, none.
pub fn patch_origins(height: i64, width: i64) -> Vec<(i64, i64)> {
    let mut origins = Vec::new();
    for offset in [0, PATCH_SHIFT] {
        let count = |side: i64| ((side - offset).max(0) / PATCH_SIZE).max(0);
        for i in 0..count(height) {
            for j in 0..count(width) {
                origins.push((offset + i * PATCH_SIZE, offset + j * PATCH_SIZE));
            }
        }
    }
    origins
}

/// EfficientNet-Lite1, frozen, measuring the deep-feature distance and the patch features of
/// KID (module documentation).
#[derive(Debug)]
pub struct PerceptualNet {
    classifier: Classifier,
}

/// The unit-normalised feature maps of [`DEEP_LAYERS`] of a batch: computed once for an
/// original, compared with those of each of its reconstructions.
#[derive(Debug)]
pub struct DeepFeatures {
    maps: Vec<Tensor>,
    size: Vec<i64>,
}

impl PerceptualNet {
    /// Loads the EfficientNet-Lite1 weights at `path` on the CPU.
    ///
    /// # Errors
    /// [`PerceptualError::WeightsMissing`] if the file does not exist (the message says how to
    /// install it), [`PerceptualError::Network`] if it is not Lite1's weights.
    pub fn load(path: &Path) -> Result<Self, PerceptualError> {
        let classifier = Classifier::load_variant(path, Variant::Lite1)?;
        Ok(Self { classifier })
    }

    /// Loads the weights where `scripts/setup-observer.sh` installs them
    /// ([`observer::weights_path`]`(Variant::Lite1)`).
    ///
    /// # Errors
    /// As [`PerceptualNet::load`].
    pub fn load_default() -> Result<Self, PerceptualError> {
        Self::load(&observer::weights_path(Variant::Lite1))
    }

    /// The unit-normalised maps `f̂_l` of [`DEEP_LAYERS`] of `images` (N, 3, H, W) in [0, 1],
    /// at their native size; no gradient.
    ///
    /// # Errors
    /// [`PerceptualError::Network`] for a batch that is not (N, 3, H, W) floating point.
    pub fn deep_features(&self, images: &Tensor) -> Result<DeepFeatures, PerceptualError> {
        let maps = tch::no_grad(|| -> Result<Vec<Tensor>, PerceptualError> {
            let input = observer::normalize(images);
            let maps = self.classifier.features(&input, &DEEP_LAYERS)?;
            Ok(maps
                .iter()
                .map(|f| {
                    let norm = f.square().sum_dim_intlist(1, true, Kind::Float).sqrt();
                    f / (norm + NORM_EPSILON)
                })
                .collect())
        })?;
        Ok(DeepFeatures {
            maps,
            size: images.size(),
        })
    }

    /// `d(x, x̂)` for every image of the batch `images` (N, 3, H, W) against the `reference`
    /// features of the originals ([`Self::deep_features`] of a batch of the same shape, or of
    /// one image, then compared with every image of the batch).
    ///
    /// # Errors
    /// [`PerceptualError::Shape`] if the image sizes differ, or the batch sizes differ and the
    /// reference is not of one image; as [`Self::deep_features`].
    pub fn deep_distance_to(
        &self,
        reference: &DeepFeatures,
        images: &Tensor,
    ) -> Result<Vec<f64>, PerceptualError> {
        let size = images.size();
        let fits = size.len() == 4
            && reference.size.len() == 4
            && size[1..] == reference.size[1..]
            && (reference.size[0] == 1 || reference.size[0] == size[0]);
        if !fits {
            return Err(PerceptualError::Shape(format!(
                "deep-feature distance of a {:?} batch to features of a {:?} batch",
                images.size(),
                reference.size
            )));
        }
        let observed = self.deep_features(images)?;
        let per_layer = reference
            .maps
            .iter()
            .zip(&observed.maps)
            .map(|(r, o)| {
                (r - o)
                    .square()
                    .sum_dim_intlist(1, false, Kind::Float)
                    .mean_dim([1i64, 2].as_slice(), false, Kind::Float)
            })
            .collect::<Vec<_>>();
        let d = Tensor::stack(&per_layer, 0).mean_dim(0, false, Kind::Double);
        Ok(Vec::<f64>::try_from(d)?)
    }

    /// `d(x, x̂)` for every pair of images of the batches `x` and `x_hat` (N, 3, H, W) in
    /// [0, 1].
    ///
    /// # Errors
    /// As [`Self::deep_distance_to`].
    pub fn deep_distance(&self, x: &Tensor, x_hat: &Tensor) -> Result<Vec<f64>, PerceptualError> {
        self.deep_distance_to(&self.deep_features(x)?, x_hat)
    }

    /// The pooled head features ([`FEATURE_DIM`]) of the patches ([`patch_origins`]) of every
    /// image of `images` (N, 3, H, W) in [0, 1], image after image; empty for images below
    /// 256 pixels in a side.
    ///
    /// # Errors
    /// [`PerceptualError::Network`] for a batch that is not (N, 3, H, W) floating point.
    pub fn patch_features(&self, images: &Tensor) -> Result<FeatureSet, PerceptualError> {
        let size = images.size();
        if size.len() != 4 || size[1] != 3 {
            return Err(PerceptualError::Shape(format!(
                "expected an RGB batch (N, 3, H, W), got {size:?}"
            )));
        }
        let origins = patch_origins(size[2], size[3]);
        let mut patches = Vec::with_capacity(origins.len() * size[0] as usize);
        for n in 0..size[0] {
            let image = images.narrow(0, n, 1);
            for &(top, left) in &origins {
                patches.push(image.narrow(2, top, PATCH_SIZE).narrow(3, left, PATCH_SIZE));
            }
        }
        let mut features = FeatureSet::new(FEATURE_DIM);
        for chunk in patches.chunks(PATCH_BATCH as usize) {
            let pooled = tch::no_grad(|| -> Result<Tensor, PerceptualError> {
                let batch = observer::normalize(&Tensor::cat(chunk, 0));
                let head = self.classifier.features(&batch, &[FeatureLayer::Head])?;
                let head = head.first().ok_or_else(|| {
                    PerceptualError::Shape("the network returned no head features".into())
                })?;
                Ok(head.mean_dim([2i64, 3].as_slice(), false, Kind::Float))
            })?;
            let values = Vec::<f32>::try_from(pooled.contiguous().flatten(0, -1))?;
            features.extend(&FeatureSet::from_values(FEATURE_DIM, values)?)?;
        }
        Ok(features)
    }
}

/// How KID draws its subsets (module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidConfig {
    /// Vectors drawn from each set per subset (`m`, at least 2).
    pub subset_size: usize,
    /// Number of subsets (`s`, at least 1).
    pub subsets: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidConfig {
    /// `m` = 100, `s` = 100, seed 0.
    fn default() -> Self {
        Self {
            subset_size: 100,
            subsets: 100,
            seed: 0,
        }
    }
}

impl KidConfig {
    /// These settings with the subset size lowered to `samples` (the size of the smaller set)
    /// if that is fewer, but not below 2 (the least [`kid`] takes).
    pub fn fitting(self, samples: usize) -> Self {
        Self {
            subset_size: self.subset_size.min(samples).max(2),
            ..self
        }
    }
}

/// A KID estimate: the mean and standard deviation of `MMD²_u` over the subsets.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kid {
    /// Mean of `MMD²_u` over the subsets.
    pub mean: f64,
    /// Its (population) standard deviation over the subsets.
    pub std: f64,
    /// Vectors per set in each subset (`m`).
    pub subset_size: usize,
    /// Number of subsets (`s`).
    pub subsets: usize,
}

/// SplitMix64 (Steele, Lea, Flood 2014): a small generator whose sequence is fixed by its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is below `n / 2^64`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `m` distinct indices of `0..n` (partial Fisher–Yates), `m <= n`.
    fn subset(&mut self, n: usize, m: usize) -> Vec<usize> {
        let mut indices: Vec<usize> = (0..n).collect();
        for i in 0..m {
            let j = i + self.below(n - i);
            indices.swap(i, j);
        }
        indices.truncate(m);
        indices
    }
}

/// The polynomial kernel matrix `(a bᵀ / d + 1)³` of two sets, row-major, in f64.
fn kernel_matrix(a: &FeatureSet, b: &FeatureSet) -> Result<Vec<f64>, PerceptualError> {
    let d = a.dim() as f64;
    let k = (a.to_tensor().matmul(&b.to_tensor().tr()) / d + 1.0).pow_tensor_scalar(3);
    Ok(Vec::<f64>::try_from(k.contiguous().flatten(0, -1))?)
}

/// KID between the feature sets `x` and `y` (module documentation).
///
/// # Errors
/// [`PerceptualError::Config`] for a subset size below 2 or no subsets,
/// [`PerceptualError::Shape`] for sets of different dimensions,
/// [`PerceptualError::TooFewSamples`] if a set has fewer vectors than a subset takes.
pub fn kid(x: &FeatureSet, y: &FeatureSet, config: &KidConfig) -> Result<Kid, PerceptualError> {
    let m = config.subset_size;
    if m < 2 || config.subsets == 0 {
        return Err(PerceptualError::Config(format!(
            "subsets of {m} vectors (at least 2), {} subsets (at least 1)",
            config.subsets
        )));
    }
    if x.dim() != y.dim() {
        return Err(PerceptualError::Shape(format!(
            "KID between {}- and {}-dimensional features",
            x.dim(),
            y.dim()
        )));
    }
    let (nx, ny) = (x.len(), y.len());
    if nx.min(ny) < m {
        return Err(PerceptualError::TooFewSamples {
            subset_size: m,
            samples: nx.min(ny),
        });
    }
    let (kxx, kyy, kxy) = (
        kernel_matrix(x, x)?,
        kernel_matrix(y, y)?,
        kernel_matrix(x, y)?,
    );
    let mut rng = SplitMix64(config.seed);
    let estimates: Vec<f64> = (0..config.subsets)
        .map(|_| {
            let (sx, sy) = (rng.subset(nx, m), rng.subset(ny, m));
            mmd2_unbiased(&kxx, nx, &sx, &kyy, ny, &sy, &kxy)
        })
        .collect();
    let count = estimates.len() as f64;
    let mean = estimates.iter().sum::<f64>() / count;
    let variance = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / count;
    Ok(Kid {
        mean,
        std: variance.sqrt(),
        subset_size: m,
        subsets: config.subsets,
    })
}

/// `MMD²_u` of the subsets `sx` of `X` and `sy` of `Y`, from the full kernel matrices
/// `kxx` (nx x nx), `kyy` (ny x ny) and `kxy` (nx x ny).
fn mmd2_unbiased(
    kxx: &[f64],
    nx: usize,
    sx: &[usize],
    kyy: &[f64],
    ny: usize,
    sy: &[usize],
    kxy: &[f64],
) -> f64 {
    let m = sx.len() as f64;
    let off_diagonal = |k: &[f64], n: usize, s: &[usize]| {
        let mut sum = 0.0;
        for (a, &i) in s.iter().enumerate() {
            for (b, &j) in s.iter().enumerate() {
                if a != b {
                    sum += k[i * n + j];
                }
            }
        }
        sum / (m * (m - 1.0))
    };
    let cross: f64 = sx
        .iter()
        .flat_map(|&i| sy.iter().map(move |&j| kxy[i * ny + j]))
        .sum();
    off_diagonal(kxx, nx, sx) + off_diagonal(kyy, ny, sy) - 2.0 * cross / (m * m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_grids() {
        assert_eq!(patch_origins(512, 768).len(), 8);
        assert_eq!(patch_origins(768, 512).len(), 8);
        assert_eq!(
            patch_origins(512, 768)[6..],
            [(128, 128), (128, 384)],
            "the shifted grid"
        );
        assert_eq!(patch_origins(256, 256), [(0, 0)]);
        assert!(patch_origins(255, 4000).is_empty());
        assert_eq!(patch_origins(384, 384), [(0, 0), (128, 128)]);
    }

    #[test]
    fn subsets_are_distinct_and_seeded() {
        let draw = |seed| SplitMix64(seed).subset(10, 6);
        let s = draw(3);
        let mut sorted = s.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        assert!(s.iter().all(|&i| i < 10));
        assert_eq!(s, draw(3));
        assert_ne!(s, draw(4));
    }
}
