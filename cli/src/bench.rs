//! The ImageNet rate–accuracy benchmark (the library behind `ocular bench imagenet`): how well
//! an ImageNet classifier still recognises images after each codec has compressed them to a
//! target bit rate, next to the MS-SSIM / PSNR a person would see.
//!
//! Protocol, for every image of an ImageNet-style folder ([`scan_folder`]) and its class:
//!
//! 1. The image is read, converted to 8-bit RGB and cut to the classifier's input
//!    ([`classifier_crop`]): the center square of 224/256 of the short side, resized to 224x224
//!    with antialiased bicubic — the observer's preprocessing contract (`docs/observer.md`), i.e.
//!    "resize the short side to 256, center-crop 224" done in one resampling — then rounded to 8
//!    bits. This *uncompressed crop* is what every codec compresses and what every result is
//!    measured against.
//! 2. For every codec and every target bpp the crop is compressed so that the whole file spends
//!    at most `target * 224 * 224 / 8` bytes (rounded down): JPEG and WebP by a search for the
//!    highest quality that fits ([`Baseline`], the evaluation's quality search); ocular by
//!    [`ocular::encode_within_bpp`] over a family of models ordered by increasing rate, or, for
//!    one variable-rate model (unrefined), by exact rate control ([`ocular::encode_to_bpp`]:
//!    within `[0.97 T, T]`), at its observer mix if it is one network for every mix. When nothing
//!    fits (JPEG quality 1, or the family's lowest rate point, is still larger), that smallest
//!    file is used and the row is marked [`over_target`](BenchRow::over_target).
//! 3. Each file is decoded; PSNR (RGB) and MS-SSIM of the decoded crop against the uncompressed
//!    crop are measured ([`ocular::metrics`]).
//! 4. The uncompressed crop and all decoded crops of the image are classified in one batch by
//!    every [`Judge`]: each gets the same 224x224 crops, resized (antialiased bicubic) to its
//!    own input size — 224 for EfficientNet-Lite0, the observer the codec is trained for; 240
//!    for EfficientNet-Lite1, which the codec never saw — and normalised. A row records, per
//!    judge, the top-1 prediction and whether the true class is the top-1 / among the top-5
//!    ([`Verdict`]).
//!
//! 5. With [`BenchConfig::perceptual`] (opt-in), the deep-feature distance of every decoded
//!    crop to the uncompressed crop is measured with EfficientNet-Lite1 at the crops' 224x224
//!    ([`ocular::perceptual`]; [`BenchRow::deep_distance`]). KID is not: a 224x224 crop has no
//!    256x256 patch of its protocol.
//!
//! [`BenchReport`] holds one row per image for the uncompressed crop (codec
//! [`REFERENCE_CODEC`]) and one per image, codec and target; it summarises them per codec and
//! target (top-1 / top-5 accuracy per judge, mean bpp, PSNR, MS-SSIM, images over target),
//! writes CSV, JSON, a text table and an SVG plot, and reads its CSV back. A large set can be
//! split into [`Shard`]s run separately (by hand, or [`Shard::from_scheduler`] for a Slurm job
//! array or a Kubernetes Indexed Job); [`merge`] of their reports equals the report of one run.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ocular_cli::bench::{run, scan_folder, BenchCodec, BenchConfig, Judge, JudgeSpec, DEFAULT_JUDGES};
//! use ocular::observer::Synsets;
//! let synsets = Synsets::load("synsets.txt".as_ref())?;
//! let images = scan_folder("imagenet/val".as_ref(), &synsets)?;
//! let codecs = ["ocular:human", "jpeg", "webp"]
//!     .iter()
//!     .map(|spec| BenchCodec::parse(spec, &mut ocular_cli::bench::builtin_family))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut config = BenchConfig::new(images, codecs, vec![0.1, 0.25, 0.5]);
//! config.limit = Some(1000);
//! let judges = JudgeSpec::parse_list(DEFAULT_JUDGES)? // lite0, lite1
//!     .iter()
//!     .map(|spec| Judge::load(spec, None))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let report = run(&config, &judges)?;
//! println!("{}", report.table());
//! report.plot_svg("accuracy.svg".as_ref())?;
//! # Ok(()) }
//! ```

mod csv;
mod dataset;
mod html;
mod judge;
mod plot;
mod report;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use image::{DynamicImage, RgbImage};
use ocular_models::imaging::{rgb_to_tensor, tensor_to_rgb};
use ocular_models::observer::{center_crop_resize, ObserverError};
use tch::Tensor;

pub use crate::eval::Baseline;
pub use dataset::{scan_folder, LabeledImage, Shard, SHARD_COUNT_VARIABLE};
pub use html::html_page;
pub use judge::{Judge, JudgeSpec, DEFAULT_JUDGES};
pub use report::{
    merge, BenchReport, BenchRow, BenchSummary, JudgeSummary, Verdict, REFERENCE_CODEC,
};

use crate::eval::EvalError;
use ocular::refine_within;
use ocular::{encode_within_bpp_refined, Decoder, Encoder, Limits, Model};

/// Side of the classifier's input and of the crops every codec compresses.
pub const CROP_SIZE: u32 = 224;

/// How many classes count for the top-5 accuracy.
const TOP_K: usize = 5;

/// Everything that can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The configuration cannot be run (no codecs, no targets, a bad target, repeated labels...).
    #[error("invalid benchmark: {0}")]
    Config(String),
    /// A codec name that is neither `jpeg`, `webp` nor `ocular:<family>`.
    #[error("unknown codec '{0}' (known: ocular:<family>, jpeg, webp)")]
    UnknownCodec(String),
    /// The models of an `ocular:<family>` codec cannot be found or loaded.
    #[error("cannot resolve the ocular family '{family}'")]
    Family {
        /// The family name (after `ocular:`).
        family: String,
        /// What went wrong.
        #[source]
        source: ocular::Error,
    },
    /// A shard other than `K/N` with `K < N`.
    #[error("invalid shard '{0}' (expected K/N with 0 <= K < N, e.g. 0/4)")]
    Shard(String),
    /// The environment names no shard of a scheduler this benchmark can map (see
    /// [`Shard::from_scheduler`]).
    #[error("cannot take the shard from the scheduler: {0}")]
    Scheduler(String),
    /// A judge that is neither `lite0`, `lite1` nor `torchscript:FILE`.
    #[error("unknown judge '{0}' (known: lite0, lite1, lite2, torchscript:FILE)")]
    UnknownJudge(String),
    /// A judge's classifier cannot be loaded.
    #[error("cannot load the judge {judge}")]
    Judge {
        /// The judge as named, e.g. `lite1`.
        judge: String,
        /// What went wrong.
        #[source]
        source: Box<ObserverError>,
    },
    /// The image folder has no images (in a class folder).
    #[error("no images found in {} (expected <root>/<wnid>/<image>)", .0.display())]
    NoImages(PathBuf),
    /// A class folder whose name is not in the synset list.
    #[error("{}: folder '{wnid}' is not a wnid of the synset list", .path.display())]
    UnknownWnid {
        /// The folder name.
        wnid: String,
        /// The folder.
        path: PathBuf,
    },
    /// A folder or file cannot be read or written.
    #[error("cannot access {}", .path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// An input image cannot be read or is too small to crop (the message names the file).
    #[error("cannot read an image to benchmark")]
    Image(#[source] ocular::Error),
    /// An ocular family failed to encode or decode an image.
    #[error("{codec} failed on {image}")]
    Ocular {
        /// The codec, e.g. `ocular:human`.
        codec: String,
        /// The image.
        image: String,
        /// What went wrong.
        #[source]
        source: ocular::Error,
    },
    /// JPEG or WebP failed on an image.
    #[error("{codec} failed on {image}")]
    Baseline {
        /// Which baseline.
        codec: Baseline,
        /// The image.
        image: String,
        /// What went wrong.
        #[source]
        source: Box<EvalError>,
    },
    /// A judge's classifier failed.
    #[error("the judge {judge} failed on {image}")]
    Classifier {
        /// The judge.
        judge: String,
        /// The image.
        image: String,
        /// What went wrong.
        #[source]
        source: Box<ObserverError>,
    },
    /// The deep-feature distance failed on an image.
    #[error("the deep-feature distance failed on {image}")]
    Perceptual {
        /// The image.
        image: String,
        /// What went wrong.
        #[source]
        source: ocular::perceptual::PerceptualError,
    },
    /// A benchmark CSV cannot be read back.
    #[error("benchmark CSV, line {line}: {message}")]
    Csv {
        /// 1-based line number of the record (0: the whole text).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reports cannot be merged (the same row in two of them).
    #[error("cannot merge the reports: {0}")]
    Merge(String),
    /// The plot cannot be drawn (e.g. the report is empty).
    #[error("cannot draw the plot: {0}")]
    Plot(String),
    /// The visual HTML report cannot be written.
    #[error("cannot write the HTML report")]
    Html(#[from] crate::html::HtmlError),
}

/// A codec to benchmark.
#[derive(Debug)]
pub enum BenchCodec {
    /// A family of ocular models, reported as `ocular:<label>`; each image goes through
    /// [`ocular::encode_within_bpp`], so `models` must be ordered by increasing rate.
    Ocular {
        /// The family name, e.g. `human`.
        label: String,
        /// The rate points, by increasing rate.
        models: Vec<Model>,
        /// The observer mix a network for every mix codes at (`ocular:NAME@ALPHA`).
        observer_mix: Option<f32>,
    },
    /// JPEG or WebP with the per-image quality search.
    Baseline(Baseline),
}

impl BenchCodec {
    /// An ocular family: `models` by increasing rate, reported as `ocular:<label>`.
    pub fn ocular(label: impl Into<String>, models: Vec<Model>) -> Self {
        BenchCodec::Ocular {
            label: label.into(),
            models,
            observer_mix: None,
        }
    }

    /// Parses `jpeg` / `jpg`, `webp` (any case), `ocular:<family>` or `ocular:<family>@<alpha>`;
    /// the family's models come from `resolve(family)` (e.g. [`builtin_family`], or a lookup of
    /// the caller's model files), which must return them by increasing rate. With `@<alpha>`
    /// the family must be one network for every observer mix, coded at mix `alpha` in [0, 1].
    ///
    /// # Errors
    /// [`BenchError::UnknownCodec`] for another name, an empty family or a mix that is not a
    /// number in [0, 1], [`BenchError::Family`] when `resolve` fails, [`BenchError::Config`]
    /// for a mix of a family that is not one network for every mix.
    pub fn parse(
        spec: &str,
        resolve: &mut dyn FnMut(&str) -> Result<Vec<Model>, ocular::Error>,
    ) -> Result<Self, BenchError> {
        let spec = spec.trim();
        if let Some(label) = spec.strip_prefix("ocular:") {
            let label = label.trim();
            let (family, observer_mix) = match label.split_once('@') {
                Some((family, alpha)) => {
                    let alpha = alpha.trim().parse::<f32>().ok();
                    match alpha.filter(|a| (0.0..=1.0).contains(a)) {
                        Some(alpha) => (family.trim(), Some(alpha)),
                        None => return Err(BenchError::UnknownCodec(spec.to_string())),
                    }
                }
                None => (label, None),
            };
            if family.is_empty() {
                return Err(BenchError::UnknownCodec(spec.to_string()));
            }
            let models = resolve(family).map_err(|source| BenchError::Family {
                family: family.to_string(),
                source,
            })?;
            if observer_mix.is_some() && !matches!(&models[..], [model] if model.has_observer_mix())
            {
                return Err(BenchError::Config(format!(
                    "{spec}: a mix needs one network for every observer mix (`train --observer-mix`)"
                )));
            }
            return Ok(BenchCodec::Ocular {
                label: label.to_string(),
                models,
                observer_mix,
            });
        }
        spec.parse::<Baseline>()
            .map(BenchCodec::Baseline)
            .map_err(|_| BenchError::UnknownCodec(spec.to_string()))
    }

    /// The name in reports: `ocular:<label>`, `jpeg` or `webp`.
    pub fn name(&self) -> String {
        match self {
            BenchCodec::Ocular { label, .. } => format!("ocular:{label}"),
            BenchCodec::Baseline(baseline) => baseline.name().to_string(),
        }
    }

    /// The name in the rows of a run refining with `refine_steps`: ocular codecs refined are
    /// other codecs than unrefined ones (`ocular:machine+refine20`), so the reports of both
    /// can be merged and plotted together.
    fn row_name(&self, refine_steps: usize) -> String {
        match self {
            BenchCodec::Ocular { .. } => crate::eval::refined_label(&self.name(), refine_steps),
            BenchCodec::Baseline(_) => self.name(),
        }
    }
}

impl fmt::Display for BenchCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The built-in models of a family, by increasing quality: an observer name as
/// [`Model::builtin_observer_family`] takes (`human`, `machine`, an alpha such as `0.5`) or a family
/// name as [`Model::distortion`] prints it (`mse`, `ms-ssim`, `observer-0.25`). Meant as the
/// resolver of [`BenchCodec::parse`].
///
/// # Errors
/// [`ocular::Error::NoSuchModel`] if no built-in model belongs to the family.
pub fn builtin_family(family: &str) -> Result<Vec<Model>, ocular::Error> {
    Model::builtin_observer_family(family).or_else(|_| Model::builtin_family(family))
}

/// What to benchmark.
#[derive(Debug)]
pub struct BenchConfig {
    /// The labelled images ([`scan_folder`]), in the order rows are reported (sorted by
    /// name, as [`scan_folder`] returns them, for [`Shard`]s to merge into the report of one
    /// run).
    pub images: Vec<LabeledImage>,
    /// The codecs, in the order of the rows of each image.
    pub codecs: Vec<BenchCodec>,
    /// Target bits per pixel (whole file over the 224x224 crop), e.g. `[0.1, 0.25, 0.5]`.
    pub targets: Vec<f64>,
    /// Only the first `limit` images (applied before sharding).
    pub limit: Option<usize>,
    /// Only the images of this shard (of the first `limit`).
    pub shard: Option<Shard>,
    /// Shows a progress bar over the images on standard error.
    pub progress: bool,
    /// Refinement steps for the ocular codecs ([`ocular::Encoder::with_refinement`]; 0 = off).
    pub refine_steps: usize,
    /// Also measures the deep-feature distance of every decoded crop to the uncompressed crop
    /// with this network ([`ocular::perceptual`]; [`BenchRow::deep_distance`]). `None` (the
    /// default) skips it.
    pub perceptual: Option<ocular::perceptual::PerceptualNet>,
    /// Keep the crops, decoded crops and the first judge's top-5 of the first this many
    /// selected images ([`BenchRun::pictures`], for [`BenchReport::write_html`]); 0 (the
    /// default) keeps none.
    pub keep_pictures: usize,
}

/// The pictures [`run_keeping`] kept of one image.
#[derive(Clone, Debug)]
pub struct BenchPictures {
    /// As [`BenchRow::image`].
    pub image: String,
    /// One per row of the image, in the rows' order: the uncompressed crop first.
    pub crops: Vec<BenchPicture>,
}

/// One crop of a [`BenchPictures`] and what the first judge saw in it.
#[derive(Clone, Debug)]
pub struct BenchPicture {
    /// As [`BenchRow::codec`].
    pub codec: String,
    /// As [`BenchRow::target_bpp`].
    pub target_bpp: Option<f64>,
    /// The 224x224 pixels.
    pub image: RgbImage,
    /// The first judge's 5 most probable classes (class index, probability), most probable
    /// first; empty without judges.
    pub top5: Vec<(usize, f32)>,
}

/// What [`run_keeping`] returns.
#[derive(Clone, Debug, Default)]
pub struct BenchRun {
    /// The rows.
    pub report: BenchReport,
    /// The pictures of the first [`BenchConfig::keep_pictures`] images, in their order.
    pub pictures: Vec<BenchPictures>,
}

impl BenchConfig {
    /// Every image, no shard, no progress bar.
    pub fn new(images: Vec<LabeledImage>, codecs: Vec<BenchCodec>, targets: Vec<f64>) -> Self {
        Self {
            images,
            codecs,
            targets,
            limit: None,
            shard: None,
            progress: false,
            refine_steps: 0,
            keep_pictures: 0,
            perceptual: None,
        }
    }

    /// The images this configuration runs: the first [`limit`](Self::limit), then those of
    /// the [`shard`](Self::shard).
    pub fn selected_images(&self) -> Vec<&LabeledImage> {
        let limit = self.limit.unwrap_or(usize::MAX);
        self.images
            .iter()
            .take(limit)
            .enumerate()
            .filter(|(i, _)| self.shard.is_none_or(|shard| shard.contains(*i)))
            .map(|(_, image)| image)
            .collect()
    }

    /// Checks what [`run`] checks before it starts.
    ///
    /// # Errors
    /// [`BenchError::Config`] for no images, codecs or targets, a target that is not a
    /// positive number or is given twice, a codec given twice, an ocular family without models
    /// or with an empty label (or one holding `,`, `"` or a line break), a limit of 0.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fail = |message: String| Err(BenchError::Config(message));
        if self.images.is_empty() {
            return fail("no images".into());
        }
        if self.limit == Some(0) {
            return fail("a limit of 0 images".into());
        }
        if self.codecs.is_empty() {
            return fail("no codecs".into());
        }
        if self.targets.is_empty() {
            return fail("no target bpp".into());
        }
        for (i, &target) in self.targets.iter().enumerate() {
            if !(target.is_finite() && target > 0.0) {
                return fail(format!("target bpp {target} is not a positive number"));
            }
            if self.targets[..i].contains(&target) {
                return fail(format!("target bpp {target} is given twice"));
            }
        }
        let mut names = HashSet::new();
        for codec in &self.codecs {
            if let BenchCodec::Ocular { label, models, .. } = codec {
                if label.is_empty() || label.contains([',', '\n', '\r', '"']) {
                    return fail(format!(
                        "ocular family label '{label}' is empty or has , \" or a line break"
                    ));
                }
                if models.is_empty() {
                    return fail(format!("{codec} has no models"));
                }
            }
            if !names.insert(codec.name()) {
                return fail(format!("codec {codec} is given twice"));
            }
        }
        Ok(())
    }
}

/// Runs the benchmark described in the [module documentation](self) on the images the
/// configuration selects ([`BenchConfig::selected_images`]): for each image a row for the
/// uncompressed crop, then one per codec and target (codecs in the configured order, targets
/// within each codec), each with the verdicts of `judges` in their order. libtorch uses as
/// many threads as [`ocular::train::set_threads`] allows.
///
/// A shard with no images gives an empty report.
///
/// # Errors
/// [`BenchError::Config`] for an invalid configuration (no images, codecs or targets, a target
/// that is not a positive number, a codec twice, an ocular family without models, a limit of
/// 0, no judges, a judge name twice or unfit for a CSV column);
/// [`BenchError::Image`] if an image cannot be read or is too small to crop;
/// [`BenchError::Ocular`], [`BenchError::Baseline`] or [`BenchError::Classifier`] if a codec or
/// a judge fails on an image.
pub fn run(config: &BenchConfig, judges: &[Judge]) -> Result<BenchReport, BenchError> {
    run_keeping(config, judges).map(|run| run.report)
}

/// [`run`], also keeping the pictures of the first [`BenchConfig::keep_pictures`] selected
/// images and the first judge's top-5 classes of each (for [`BenchReport::write_html`]).
///
/// # Errors
/// As [`run`].
pub fn run_keeping(config: &BenchConfig, judges: &[Judge]) -> Result<BenchRun, BenchError> {
    config.validate()?;
    judge::check_judges(judges)?;
    let images = config.selected_images();
    let mut bar = crate::eval::progress_bar(config.progress, "benchmarking", images.len());
    let mut rows = Vec::new();
    let mut pictures = Vec::new();
    for (index, image) in images.into_iter().enumerate() {
        bar.set_message(image.name.clone());
        let keep = index < config.keep_pictures;
        let (image_rows, kept) = bench_image(config, judges, image, keep)?;
        rows.extend(image_rows);
        pictures.extend(kept);
        bar.inc();
    }
    bar.finish();
    Ok(BenchRun {
        report: BenchReport { rows },
        pictures,
    })
}

/// The classifier's input for `image` as 8-bit RGB, 224x224: the center square of side
/// `floor(short side * 224 / 256)` (`ocular_models::observer::crop_window`) resized to 224 with
/// antialiased bicubic (the observer's `center_crop_resize`), rounded to 8 bits. For a 300x500
/// (width x height) image the square is 262 pixels at left 19, top 119.
///
/// # Errors
/// [`ocular::Error::Image`] if the short side is below 2 pixels (nothing left to crop).
pub fn classifier_crop(image: &DynamicImage) -> Result<RgbImage, ocular::Error> {
    let pixels = rgb_to_tensor(&image.to_rgb8());
    let crop = tch::no_grad(|| center_crop_resize(&pixels))
        .map_err(|e| ocular::Error::Image(e.to_string()))?;
    Ok(tensor_to_rgb(&crop, CROP_SIZE, CROP_SIZE))
}

/// A decoded crop and what it cost.
struct Compressed {
    bytes: usize,
    setting: String,
    over_target: bool,
    decoded: RgbImage,
}

fn budget_bytes(target_bpp: f64, image: &RgbImage) -> f64 {
    (target_bpp * f64::from(image.width()) * f64::from(image.height()) / 8.0).floor()
}

/// The file of a variable-rate `model` (at `observer_mix`) within `[0.97 T, T]` for `T =
/// target_bpp`, its quality as the row's setting; when the model cannot make one, its file at the
/// nearest end of its range: the lowest quality, over the target (`true`), or the highest,
/// under it.
fn exact_rate(
    model: &Model,
    observer_mix: Option<f32>,
    source: &DynamicImage,
    target_bpp: f64,
) -> Result<(Vec<u8>, String, bool), ocular::Error> {
    let encoder = match observer_mix {
        Some(alpha) => Encoder::new(model).with_observer_mix(alpha),
        None => Encoder::new(model),
    };
    match encoder.encode_to_bpp(source, target_bpp) {
        Ok(found) => Ok((found.bytes, format!("q{:.3}", found.quality), false)),
        Err(ocular::Error::BppOutOfReach { min_bpp, .. }) => {
            let (min, max) = model.quality_range().unwrap_or_default();
            let (quality, over_target) = if min_bpp > target_bpp {
                (min, true)
            } else {
                (max, false)
            };
            let bytes = encoder.with_quality(quality).encode(source)?;
            Ok((bytes, format!("q{quality:.3}"), over_target))
        }
        Err(other) => Err(other),
    }
}

/// One crop coded by `codec` at `target_bpp` (`refine_steps` of refinement for ocular), and
/// decoded.
fn compress(
    codec: &BenchCodec,
    crop: &RgbImage,
    source: &DynamicImage,
    target_bpp: f64,
    refine_steps: usize,
    image: &str,
) -> Result<Compressed, BenchError> {
    match codec {
        BenchCodec::Ocular {
            models,
            observer_mix,
            ..
        } => {
            let fail = |source: ocular::Error| BenchError::Ocular {
                codec: codec.row_name(refine_steps),
                image: image.to_string(),
                source,
            };
            if observer_mix.is_some() && refine_steps > 0 {
                return Err(BenchError::Config(format!(
                    "{codec}: refinement codes a network for every observer mix at mix 0 only"
                )));
            }
            let (bytes, model, setting, over_target) = match (&models[..], refine_steps) {
                ([model], 0) if model.quality_range().is_some() => {
                    let (bytes, setting, over_target) =
                        exact_rate(model, *observer_mix, source, target_bpp).map_err(fail)?;
                    (bytes, model, setting, over_target)
                }
                _ => {
                    if models.is_empty() {
                        return Err(BenchError::Config(format!("{codec} has no models")));
                    }
                    let (bytes, model, over_target) =
                        family_within_bpp(models, source, target_bpp, refine_steps)
                            .map_err(fail)?;
                    (bytes, model, model.name().to_string(), over_target)
                }
            };
            let decoded = Decoder::new(model).decode(&bytes).map_err(fail)?.to_rgb8();
            Ok(Compressed {
                bytes: bytes.len(),
                setting,
                over_target,
                decoded,
            })
        }
        &BenchCodec::Baseline(baseline) => compress_baseline(baseline, crop, target_bpp, image),
    }
}

/// The file of the family `models` (by increasing rate) at the largest rate point within
/// `target_bpp`, refined; when even the lowest is over the target, its file (refined without
/// spending more bytes), marked over the target (`true`). Returns the file and its model.
fn family_within_bpp<'m>(
    models: &'m [Model],
    source: &DynamicImage,
    target_bpp: f64,
    refine_steps: usize,
) -> Result<(Vec<u8>, &'m Model, bool), ocular::Error> {
    let missing = || ocular::Error::Internal("rate control chose no model".into());
    let (bytes, model_index, over_target) =
        match encode_within_bpp_refined(models, source, target_bpp, refine_steps) {
            Ok(done) => (done.bytes, done.model_index, false),
            Err(ocular::Error::RateTargetUnreachable { .. }) => {
                let lowest = models.first().ok_or_else(missing)?;
                let unrefined = Encoder::new(lowest).encode(source)?;
                let bytes = if refine_steps > 0 {
                    // Over the target already: refine without spending more.
                    let encoder = Encoder::new(lowest).with_refinement(refine_steps);
                    let budget = unrefined.len() as f64;
                    refine_within(&encoder, source, unrefined, budget)?
                } else {
                    unrefined
                };
                (bytes, 0, true)
            }
            Err(other) => return Err(other),
        };
    let model = models.get(model_index).ok_or_else(missing)?;
    Ok((bytes, model, over_target))
}

/// The crop coded by a baseline at the largest quality whose file is within `target_bpp` (its
/// lowest, over the target, where none is), verified and decoded.
fn compress_baseline(
    baseline: Baseline,
    crop: &RgbImage,
    target_bpp: f64,
    image: &str,
) -> Result<Compressed, BenchError> {
    let fail = |source: EvalError| BenchError::Baseline {
        codec: baseline,
        image: image.to_string(),
        source: Box::new(source),
    };
    // `budget_bytes` is a non-negative whole number of bytes far below usize::MAX.
    let budget = budget_bytes(target_bpp, crop) as usize;
    let (encoded, over_target) = crate::eval::match_rate(baseline, crop, budget).map_err(fail)?;
    baseline.verify(&encoded.bytes).map_err(fail)?;
    let decoded = baseline.decode(&encoded.bytes).map_err(fail)?;
    Ok(Compressed {
        bytes: encoded.bytes.len(),
        setting: encoded.quality.to_string(),
        over_target,
        decoded,
    })
}

/// The rows of one image: the uncompressed crop, then every codec at every target; and, if
/// `keep`, its pictures.
fn bench_image(
    config: &BenchConfig,
    judges: &[Judge],
    image: &LabeledImage,
    keep: bool,
) -> Result<(Vec<BenchRow>, Option<BenchPictures>), BenchError> {
    let opened = ocular::open_image(&image.path, &Limits::default()).map_err(BenchError::Image)?;
    let crop = classifier_crop(&opened).map_err(|e| {
        BenchError::Image(ocular::Error::Image(format!(
            "{}: {e}",
            image.path.display()
        )))
    })?;
    let source = DynamicImage::ImageRgb8(crop.clone());
    let mut rows = vec![row(image, REFERENCE_CODEC.to_string(), &crop)];
    let mut batch = vec![rgb_to_tensor(&crop)];
    let mut kept = if keep { vec![crop.clone()] } else { Vec::new() };
    for codec in &config.codecs {
        for &target_bpp in &config.targets {
            let (row, decoded) = codec_row(config, codec, image, (&crop, &source), target_bpp)?;
            batch.push(rgb_to_tensor(&decoded));
            if keep {
                kept.push(decoded);
            }
            rows.push(row);
        }
    }

    if let Some(net) = &config.perceptual {
        deep_distances(net, &batch, &mut rows, image)?;
    }
    let mut first_top5 = Vec::new();
    for (j, judge) in judges.iter().enumerate() {
        let top5 = judge_rows(judge, &batch, &mut rows, image)?;
        if j == 0 {
            first_top5 = top5;
        }
    }
    let pictures = keep.then(|| BenchPictures {
        image: image.name.clone(),
        crops: rows
            .iter()
            .zip(kept)
            .enumerate()
            .map(|(i, (row, picture))| BenchPicture {
                codec: row.codec.clone(),
                target_bpp: row.target_bpp,
                image: picture,
                top5: first_top5.get(i).cloned().unwrap_or_default(),
            })
            .collect(),
    });
    Ok((rows, pictures))
}

/// The row of `image`'s uncompressed `crop` under the name `codec`: 24 bpp, nothing measured
/// yet. [`codec_row`] fills in a coded one.
fn row(image: &LabeledImage, codec: String, crop: &RgbImage) -> BenchRow {
    BenchRow {
        image: image.name.clone(),
        wnid: image.wnid.clone(),
        label: image.label,
        codec,
        target_bpp: None,
        bpp: 24.0,
        over_target: false,
        verdicts: Vec::new(),
        psnr: None,
        ms_ssim: None,
        setting: String::new(),
        bytes: crop.as_raw().len(),
        deep_distance: None,
    }
}

/// The row of `crop` (and `source`, the same pixels) coded by `codec` at `target_bpp` (rate,
/// PSNR, MS-SSIM; the judges' verdicts come later), and the decoded crop.
fn codec_row(
    config: &BenchConfig,
    codec: &BenchCodec,
    image: &LabeledImage,
    (crop, source): (&RgbImage, &DynamicImage),
    target_bpp: f64,
) -> Result<(BenchRow, RgbImage), BenchError> {
    let steps = config.refine_steps;
    let compressed = compress(codec, crop, source, target_bpp, steps, &image.name)?;
    let codec_name = codec.row_name(steps);
    let quality =
        crate::eval::measure(crop, &compressed.decoded).map_err(|message| BenchError::Ocular {
            codec: codec_name.clone(),
            image: image.name.clone(),
            source: ocular::Error::Internal(message),
        })?;
    let pixels = f64::from(crop.width()) * f64::from(crop.height());
    let row = BenchRow {
        target_bpp: Some(target_bpp),
        bpp: compressed.bytes as f64 * 8.0 / pixels,
        over_target: compressed.over_target,
        psnr: Some(quality.psnr),
        ms_ssim: quality.ms_ssim,
        setting: compressed.setting,
        bytes: compressed.bytes,
        ..row(image, codec_name, crop)
    };
    Ok((row, compressed.decoded))
}

/// Sets the deep-feature distance of every decoded crop (`batch[1..]`) to the uncompressed crop
/// (`batch[0]`) in the rows of the decoded crops.
fn deep_distances(
    net: &ocular::perceptual::PerceptualNet,
    batch: &[Tensor],
    rows: &mut [BenchRow],
    image: &LabeledImage,
) -> Result<(), BenchError> {
    let (Some(original), Some(decoded)) = (batch.first(), batch.get(1..)) else {
        return Ok(());
    };
    if decoded.is_empty() {
        return Ok(());
    }
    let failed = |source| BenchError::Perceptual {
        image: image.name.clone(),
        source,
    };
    let reference = net.deep_features(original).map_err(failed)?;
    let distances = net
        .deep_distance_to(&reference, &Tensor::cat(decoded, 0))
        .map_err(failed)?;
    for (row, distance) in rows.iter_mut().skip(1).zip(distances) {
        row.deep_distance = Some(distance);
    }
    Ok(())
}

/// Adds `judge`'s verdict on each crop of `batch` to the row of that crop; returns its top-5
/// classes of each crop.
fn judge_rows(
    judge: &Judge,
    batch: &[Tensor],
    rows: &mut [BenchRow],
    image: &LabeledImage,
) -> Result<Vec<Vec<(usize, f32)>>, BenchError> {
    let failed = |source: ObserverError| BenchError::Classifier {
        judge: judge.name().to_string(),
        image: image.name.clone(),
        source: Box::new(source),
    };
    let predictions = judge.classify(batch, TOP_K).map_err(failed)?;
    if predictions.len() != rows.len() {
        return Err(failed(ObserverError::Input(format!(
            "{} predictions for {} crops",
            predictions.len(),
            rows.len()
        ))));
    }
    for (row, top) in rows.iter_mut().zip(&predictions) {
        let predicted = top.first().map_or(usize::MAX, |&(class, _)| class);
        row.verdicts.push(Verdict {
            judge: judge.name().to_string(),
            predicted,
            top1_correct: predicted == image.label,
            top5_correct: top.iter().any(|&(class, _)| class == image.label),
        });
    }
    Ok(predictions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refined_ocular_rows_are_named_apart() {
        let ocular = BenchCodec::ocular("machine", Vec::new());
        let webp = BenchCodec::Baseline(Baseline::Webp);
        assert_eq!(ocular.row_name(0), "ocular:machine");
        assert_eq!(ocular.row_name(20), "ocular:machine+refine20");
        assert_eq!(webp.row_name(20), "webp");
    }
}
