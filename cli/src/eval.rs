//! Rate–distortion evaluation of ocular models against JPEG and WebP at matched bit rates (the
//! library behind `ocular eval`).
//!
//! Protocol, for every image and every ocular model:
//!
//! 1. The image is read and converted to 8-bit RGB; it is encoded with [`Encoder`] and decoded
//!    with [`Decoder`]; PSNR (RGB) and MS-SSIM are measured with [`metrics::measure`] against the
//!    RGB source, and the encode and decode times are recorded.
//! 2. For every [`Baseline`], its quality (1..=100) is binary-searched for the largest setting
//!    whose file is no larger than the ocular file of that model on that image (the same pixel
//!    count, so the same bpp bound); the file is decoded and measured the same way. If even
//!    quality 1 is larger, quality 1 is used and the row is marked
//!    [`over_target`](EvalRow::over_target).
//!
//! 3. With [`EvalConfig::perceptual`] (opt-in), every decoded image also gets its deep-feature
//!    distance to the source ([`EvalRow::deep_distance`]), and KID compares the 256x256
//!    patches (aligned grid and grid shifted by 128 px) of all sources with those of all
//!    reconstructions of one codec at one rate point ([`EvalKid`], one per codec and rate): both
//!    measured with EfficientNet-Lite1, which training never uses ([`ocular::perceptual`]).
//!
//! bpp is always `file bytes * 8 / (width * height)`, whole files: the `.ocu` header, JPEG's JFIF
//! markers and tables, WebP's RIFF container. JPEG is baseline sequential with 4:2:0 chroma
//! sampling, the standard Huffman tables and one interleaved scan (`jpeg-encoder`, like libjpeg's
//! `cjpeg` defaults); WebP is lossy VP8 with libwebp's default settings (method 4). Every
//! baseline file is checked to be what it claims (a 4:2:0 SOF0 frame in one interleaved scan, a
//! lossy VP8 bitstream) before it is reported.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ocular_cli::eval::{evaluate, EvalConfig, EvalModel};
//! let images = ocular::train::image_files("kodak".as_ref())?;
//! let model = EvalModel::new(ocular::Model::load("mse-q3.safetensors".as_ref())?);
//! let report = evaluate(&EvalConfig::new(images, vec![model]))?;
//! println!("{}", report.table());
//! report.plot_svg("rd.svg".as_ref())?;
//! # Ok(()) }
//! ```

mod baseline;
mod html;
mod perceptual;
pub(crate) mod plot;
mod report;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{DynamicImage, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};

pub use baseline::Baseline;
pub use html::html_page;
pub use perceptual::EvalKid;
pub(crate) use report::csv_field;
pub use report::{EvalMean, EvalReport, EvalRow};

/// Published results drawn as dashed reference curves beside measured ones (they are not
/// measured here: the plot labels them "published").
#[derive(Clone, Copy, Debug)]
pub struct PublishedCurve {
    /// Legend text.
    pub label: &'static str,
    /// (bpp, PSNR dB) points.
    pub psnr: &'static [(f64, f64)],
    /// (bpp, MS-SSIM dB) points.
    pub ms_ssim_db: &'static [(f64, f64)],
}

/// Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale
/// hyperprior" (ICLR 2018) on Kodak, as collected in the project's DESIGN.md: the
/// MSE-trained and the MS-SSIM-trained hyperprior models (GPU, ~1M+ steps).
pub const PUBLISHED_KODAK: [PublishedCurve; 2] = [
    PublishedCurve {
        label: "Ballé 2018, MSE (published)",
        psnr: &[(0.25, 29.9), (0.5, 33.1), (1.0, 37.1)],
        ms_ssim_db: &[(0.25, 13.0), (0.5, 16.2)],
    },
    PublishedCurve {
        label: "Ballé 2018, MS-SSIM (published)",
        psnr: &[(0.25, 27.1), (0.5, 29.2), (1.0, 32.4)],
        ms_ssim_db: &[(0.25, 15.4), (0.5, 19.0)],
    },
];

use ocular::metrics::{self, Quality};
use ocular::{Decoder, Encoder, Limits, Model};

/// Everything that can stop an evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The configuration cannot be evaluated (no images, no models, duplicate labels).
    #[error("invalid evaluation: {0}")]
    Config(String),
    /// A baseline name other than `jpeg` or `webp`.
    #[error("unknown baseline codec '{0}' (known: jpeg, webp)")]
    UnknownBaseline(String),
    /// An input image cannot be read (the message names the file).
    #[error("cannot read an image to evaluate")]
    Image(#[source] ocular::Error),
    /// An ocular model failed to encode or decode an image.
    #[error("{codec} failed on {image}")]
    Ocular {
        /// The codec label, e.g. `ocular:mse-q3`.
        codec: String,
        /// The image.
        image: String,
        /// What went wrong.
        #[source]
        source: ocular::Error,
    },
    /// JPEG or WebP failed to encode or decode an image, or made a file of the wrong kind.
    #[error("{codec} failed{}: {message}", .image.as_deref().map(|i| format!(" on {i}")).unwrap_or_default())]
    Baseline {
        /// Which baseline.
        codec: Baseline,
        /// The image, when known.
        image: Option<String>,
        /// What went wrong.
        message: String,
    },
    /// The plot cannot be drawn (e.g. the report is empty).
    #[error("cannot draw the plot: {0}")]
    Plot(String),
    /// The visual HTML report cannot be written.
    #[error("cannot write the HTML report")]
    Html(#[from] crate::html::HtmlError),
    /// The perceptual metrics failed (e.g. on images too small for a KID patch).
    #[error("perceptual metrics{}", .image.as_deref().map(|i| format!(" on {i}")).unwrap_or_default())]
    Perceptual {
        /// The image, when the failure concerns one.
        image: Option<String>,
        /// What went wrong.
        #[source]
        source: ocular::perceptual::PerceptualError,
    },
    /// A file cannot be written.
    #[error("cannot write {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// An ocular model to evaluate, with the names it is reported under.
#[derive(Debug)]
pub struct EvalModel {
    /// Row label: rows are reported as codec `ocular:<label>`, and baselines matched to this
    /// model have it as their [`target`](EvalRow::target). Default: the model's name.
    pub label: String,
    /// The curve the model belongs to in plots. Default: `ocular (<distortion>)`, e.g.
    /// `ocular (mse)`, so MSE- and MS-SSIM-trained models form separate curves.
    pub family: String,
    /// The model.
    pub model: Model,
    /// The rate it codes every image at.
    pub rate: EvalRate,
    /// The realism knob its files are decoded with ([`Decoder::with_realism`]; 0, the
    /// default, is the plain decoder). Rows with a knob above 0 are matched to no baseline:
    /// their files are those of the plain rows.
    pub realism: f32,
}

/// The rate an [`EvalModel`] codes at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EvalRate {
    /// The model's own (a variable-rate model's reference quality).
    Model,
    /// A quality of a variable-rate model ([`Encoder::with_quality`]).
    Quality(f32),
    /// Every image at the quality whose file is within `[0.97 T, T]` bpp
    /// ([`ocular::encode_to_bpp`]; variable-rate models).
    TargetBpp(f64),
}

impl EvalModel {
    /// Labels `model` with its name and family `ocular (<distortion>)`.
    pub fn new(model: Model) -> Self {
        Self {
            label: model.name().to_string(),
            family: format!("ocular ({})", model.distortion()),
            model,
            rate: EvalRate::Model,
            realism: 0.0,
        }
    }

    /// Decodes with the realism knob at `r`, labelled `<label>@R<r>`, in the family
    /// `<family> R=<r>` (one curve per setting).
    pub fn with_realism(mut self, r: f32) -> Self {
        self.label = format!("{}@R{r}", self.label);
        self.family = format!("{} R={r}", self.family);
        self.realism = r;
        self
    }

    /// Codes at `rate`, labelled `<name>@q<quality>` or `<name>@<T>bpp`.
    pub fn at(mut self, rate: EvalRate) -> Self {
        match rate {
            EvalRate::Model => {}
            EvalRate::Quality(q) => self.label = format!("{}@q{q}", self.label),
            EvalRate::TargetBpp(t) => self.label = format!("{}@{t}bpp", self.label),
        }
        self.rate = rate;
        self
    }

    /// Uses `label` instead of the model's name.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// What to evaluate.
#[derive(Debug)]
pub struct EvalConfig {
    /// Image files (any format [`ocular::open_image`] reads); each is converted to 8-bit RGB.
    pub images: Vec<PathBuf>,
    /// The ocular models, each one rate point.
    pub models: Vec<EvalModel>,
    /// Codecs matched to every model's bpp on every image (duplicates are ignored).
    pub baselines: Vec<Baseline>,
    /// Shows a progress bar over the images on standard error.
    pub progress: bool,
    /// Refinement steps for the ocular models ([`ocular::Encoder::with_refinement`]; 0 = off).
    pub refine_steps: usize,
    /// Also measures the perceptual metrics with this network ([`ocular::perceptual`]): the
    /// deep-feature distance of every row and KID per codec and rate point. `None` (the
    /// default) skips them.
    pub perceptual: Option<ocular::perceptual::PerceptualNet>,
    /// Keep the source and every decoded picture of the first this many images
    /// ([`Evaluation::pictures`], for [`EvalReport::write_html`]); 0 (the default) keeps none.
    pub keep_pictures: usize,
}

/// The pictures [`evaluate_keeping`] kept of one image.
#[derive(Clone, Debug)]
pub struct KeptPictures {
    /// The image's name, as in [`EvalRow::image`].
    pub image: String,
    /// The source as 8-bit RGB.
    pub original: RgbImage,
    /// Every decoded picture of the image, one per row of the report for it.
    pub decoded: Vec<DecodedPicture>,
}

/// A decoded picture and the row it belongs to (by [`EvalRow::codec`] and [`EvalRow::target`]).
#[derive(Clone, Debug)]
pub struct DecodedPicture {
    /// As [`EvalRow::codec`].
    pub codec: String,
    /// As [`EvalRow::target`].
    pub target: String,
    /// The pixels.
    pub image: RgbImage,
}

/// What [`evaluate_keeping`] returns: the report and the pictures kept.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// The rows.
    pub report: EvalReport,
    /// The first [`EvalConfig::keep_pictures`] images' pictures, in the order of the images.
    pub pictures: Vec<KeptPictures>,
}

impl EvalConfig {
    /// `models` on `images` against JPEG and WebP, without a progress bar.
    pub fn new(images: Vec<PathBuf>, models: Vec<EvalModel>) -> Self {
        Self {
            images,
            models,
            baselines: Baseline::ALL.to_vec(),
            progress: false,
            refine_steps: 0,
            keep_pictures: 0,
            perceptual: None,
        }
    }
}

/// Runs the evaluation described in the [module documentation](self): one row per image and
/// model, plus one per image, model and baseline. Images are read one at a time; libtorch uses
/// as many threads as [`ocular::train::set_threads`] allows, which the ocular times depend on.
///
/// # Errors
/// [`EvalError::Config`] if there are no images or no models, or two models share a label;
/// [`EvalError::Image`] if an image cannot be read; [`EvalError::Ocular`] or
/// [`EvalError::Baseline`] if a codec fails on an image (e.g. WebP refuses images wider or taller
/// than 16383 pixels, JPEG than 65535); [`EvalError::Perceptual`] if the perceptual metrics were
/// asked for and fail (the images give fewer than 2 KID patches: sides below 256).
pub fn evaluate(config: &EvalConfig) -> Result<EvalReport, EvalError> {
    evaluate_keeping(config).map(|evaluation| evaluation.report)
}

/// [`evaluate`], also keeping the source and decoded pictures of the first
/// [`EvalConfig::keep_pictures`] images (for [`EvalReport::write_html`]).
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_keeping(config: &EvalConfig) -> Result<Evaluation, EvalError> {
    let baselines = checked_baselines(config)?;
    let names = image_names(&config.images);
    let mut bar = progress_bar(config.progress, "evaluating", config.images.len());
    let mut rows = Vec::new();
    let mut perceptual = config
        .perceptual
        .as_ref()
        .map(perceptual::PerceptualRun::new);
    let mut pictures = Vec::new();
    for (index, (path, name)) in config.images.iter().zip(&names).enumerate() {
        bar.set_message(name.clone());
        let keep = index < config.keep_pictures;
        let image = ImageToEvaluate { path, name, keep };
        let (image_rows, kept) = evaluate_image(config, &baselines, &mut perceptual, image)?;
        rows.extend(image_rows);
        pictures.extend(kept);
        bar.inc();
    }
    bar.finish();
    let kid = perceptual
        .map(perceptual::PerceptualRun::finish)
        .transpose()?;
    Ok(Evaluation {
        report: EvalReport { rows, kid },
        pictures,
    })
}

/// The baselines of `config`, each once, after checking that it has images and models, with
/// labels unique and not empty.
fn checked_baselines(config: &EvalConfig) -> Result<Vec<Baseline>, EvalError> {
    if config.images.is_empty() {
        return Err(EvalError::Config("no images".into()));
    }
    if config.models.is_empty() {
        return Err(EvalError::Config("no ocular models".into()));
    }
    let mut labels = HashSet::new();
    for model in &config.models {
        if model.label.is_empty() || !labels.insert(model.label.as_str()) {
            return Err(EvalError::Config(format!(
                "model labels must be unique and not empty ('{}')",
                model.label
            )));
        }
    }
    let mut baselines: Vec<Baseline> = Vec::new();
    for &baseline in &config.baselines {
        if !baselines.contains(&baseline) {
            baselines.push(baseline);
        }
    }
    Ok(baselines)
}

/// One image of an evaluation: its file, its name in the report, whether its pictures are kept.
struct ImageToEvaluate<'a> {
    path: &'a Path,
    name: &'a str,
    keep: bool,
}

/// The rows of one image: every model (at each of its rates), each followed by the `baselines`
/// matched to its file's size (for plain decoding only, realism 0); and its pictures if kept.
fn evaluate_image(
    config: &EvalConfig,
    baselines: &[Baseline],
    perceptual: &mut Option<perceptual::PerceptualRun<'_>>,
    ImageToEvaluate { path, name, keep }: ImageToEvaluate<'_>,
) -> Result<(Vec<EvalRow>, Option<KeptPictures>), EvalError> {
    let rgb = ocular::open_image(path, &Limits::default())
        .map_err(EvalError::Image)?
        .to_rgb8();
    if let Some(run) = perceptual.as_mut() {
        run.start_image(&rgb, name)?;
    }
    // The encoder takes a `DynamicImage`; a copy costs little next to the networks.
    let source = DynamicImage::ImageRgb8(rgb.clone());
    let mut rows = Vec::new();
    let mut decoded = Vec::new();
    let mut files = EncodedFiles::default();
    for model in &config.models {
        let ocular = evaluate_ocular(model, &source, &rgb, name, config.refine_steps, &mut files)?;
        let matched = match model.realism {
            0.0 => baselines
                .iter()
                .map(|&baseline| evaluate_baseline(baseline, &rgb, name, &ocular.0))
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        for (mut row, picture) in std::iter::once(ocular).chain(matched) {
            if let Some(run) = perceptual.as_mut() {
                run.measure(&mut row, &picture)?;
            }
            if keep {
                decoded.push(DecodedPicture {
                    codec: row.codec.clone(),
                    target: row.target.clone(),
                    image: picture,
                });
            }
            rows.push(row);
        }
    }
    let kept = keep.then(|| KeptPictures {
        image: name.to_string(),
        original: rgb,
        decoded,
    });
    Ok((rows, kept))
}

/// Names images by file name, or by full path where file names repeat.
fn image_names(paths: &[PathBuf]) -> Vec<String> {
    let file_name = |p: &PathBuf| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let mut seen = HashSet::new();
    let unique = paths.iter().all(|p| seen.insert(file_name(p)));
    paths
        .iter()
        .map(|p| {
            if unique {
                file_name(p)
            } else {
                p.display().to_string()
            }
        })
        .collect()
}

/// Progress over `images` images labelled `verb` (nothing unless `shown`): a bar on a terminal;
/// elsewhere (a log under `nohup`) a plain line every 5% with the time elapsed and left.
pub(crate) fn progress_bar(shown: bool, verb: &str, images: usize) -> Progress {
    if !shown {
        return Progress::Hidden;
    }
    if !std::io::stderr().is_terminal() {
        return Progress::Lines {
            verb: verb.to_string(),
            total: images,
            done: 0,
            every: (images / 20).max(1),
            start: Instant::now(),
        };
    }
    let bar = ProgressBar::new(images as u64);
    let template = format!(
        "{verb} [{{bar:30}}] {{pos}}/{{len}} images, {{elapsed}} elapsed, eta {{eta}} {{wide_msg}}"
    );
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Progress::Bar(bar)
}

/// See [`progress_bar`].
pub(crate) enum Progress {
    Hidden,
    Bar(ProgressBar),
    Lines {
        verb: String,
        total: usize,
        done: usize,
        every: usize,
        start: Instant,
    },
}

impl Progress {
    /// Shows which image is being worked on (on the bar only).
    pub(crate) fn set_message(&self, message: String) {
        if let Progress::Bar(bar) = self {
            bar.set_message(message);
        }
    }

    /// One more image done.
    pub(crate) fn inc(&mut self) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(bar) => bar.inc(1),
            Progress::Lines {
                verb,
                total,
                done,
                every,
                start,
            } => {
                *done += 1;
                if *done % *every == 0 || *done == *total {
                    let elapsed = start.elapsed().as_secs_f64();
                    let left = elapsed / *done as f64 * (*total - *done) as f64;
                    eprintln!(
                        "{verb}: {done}/{total} images, {elapsed:.0} s elapsed, ~{left:.0} s left"
                    );
                }
            }
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn bits_per_pixel(bytes: usize, image: &RgbImage) -> f64 {
    bytes as f64 * 8.0 / (f64::from(image.width()) * f64::from(image.height()))
}

/// Measures `decoded` against `source`, refusing (rather than panicking on) a size mismatch.
pub(crate) fn measure(source: &RgbImage, decoded: &RgbImage) -> Result<Quality, String> {
    if source.dimensions() != decoded.dimensions() {
        return Err(format!(
            "decoded a {}x{} image from a {}x{} source",
            decoded.width(),
            decoded.height(),
            source.width(),
            source.height()
        ));
    }
    Ok(metrics::measure(source, decoded))
}

#[allow(clippy::too_many_arguments)]
fn row(
    codec: String,
    family: String,
    setting: String,
    target: String,
    image: &str,
    source: &RgbImage,
    bytes: usize,
    quality: Quality,
    seconds: (f64, f64),
    over_target: bool,
) -> EvalRow {
    EvalRow {
        codec,
        family,
        setting,
        target,
        image: image.to_string(),
        width: source.width(),
        height: source.height(),
        bytes,
        bpp: bits_per_pixel(bytes, source),
        psnr: quality.psnr,
        ms_ssim: quality.ms_ssim,
        ms_ssim_db: quality.ms_ssim_db(),
        encode_seconds: seconds.0,
        decode_seconds: seconds.1,
        over_target,
        deep_distance: None,
        realism: 0.0,
    }
}

/// The files already encoded of the image being evaluated. The settings of the realism knob
/// decode the same file (the knob changes the decoder, not the encoder, nor the fingerprint),
/// so each model and rate is encoded once: plain encoding is deterministic. Refined files are
/// never reused (a model's refinement objective is not part of its fingerprint).
#[derive(Default)]
struct EncodedFiles {
    /// Model, rate, the file and the seconds its encoding took.
    files: Vec<(ocular::ModelFingerprint, EvalRate, Vec<u8>, f64)>,
}

impl EncodedFiles {
    /// The file of `model` at `rate` and its encoding time: `encode`'s, or an earlier one's.
    fn get_or_encode(
        &mut self,
        model: &EvalModel,
        reusable: bool,
        encode: impl FnOnce() -> Result<Vec<u8>, ocular::Error>,
    ) -> Result<(Vec<u8>, f64), ocular::Error> {
        let key = (model.model.fingerprint(), model.rate);
        let earlier = self.files.iter().find(|(f, r, ..)| (*f, *r) == key);
        if let (true, Some((.., bytes, seconds))) = (reusable, earlier) {
            return Ok((bytes.clone(), *seconds));
        }
        let start = Instant::now();
        let bytes = encode()?;
        let seconds = start.elapsed().as_secs_f64();
        if reusable {
            self.files.push((key.0, key.1, bytes.clone(), seconds));
        }
        Ok((bytes, seconds))
    }
}

/// `source` is `rgb` as a `DynamicImage`.
fn evaluate_ocular(
    model: &EvalModel,
    source: &DynamicImage,
    rgb: &RgbImage,
    name: &str,
    refine_steps: usize,
    files: &mut EncodedFiles,
) -> Result<(EvalRow, RgbImage), EvalError> {
    // Refined files are other codecs' rows and curves, beside any unrefined evaluation.
    let label = refined_label(&model.label, refine_steps);
    let family = match refine_steps {
        0 => model.family.clone(),
        _ => format!("{} refined", model.family),
    };
    let codec = format!("ocular:{label}");
    let fail = |source: ocular::Error| EvalError::Ocular {
        codec: codec.clone(),
        image: name.to_string(),
        source,
    };
    let encoder = Encoder::new(&model.model).with_refinement(refine_steps);
    let (bytes, encode_seconds) = files
        .get_or_encode(model, refine_steps == 0, || match model.rate {
            EvalRate::Model => encoder.encode(source),
            EvalRate::Quality(q) => encoder.with_quality(q).encode(source),
            EvalRate::TargetBpp(t) => {
                ocular::encode_to_bpp(&model.model, source, t).map(|f| f.bytes)
            }
        })
        .map_err(fail)?;
    let start = Instant::now();
    let decoded = Decoder::new(&model.model)
        .with_realism(model.realism)
        .decode(&bytes)
        .map_err(fail)?
        .to_rgb8();
    let decode_seconds = start.elapsed().as_secs_f64();
    let quality =
        measure(rgb, &decoded).map_err(|message| fail(ocular::Error::Internal(message)))?;
    let mut row = row(
        codec,
        family,
        label.clone(),
        label,
        name,
        rgb,
        bytes.len(),
        quality,
        (encode_seconds, decode_seconds),
        false,
    );
    row.realism = model.realism;
    Ok((row, decoded))
}

/// How reports name a codec or model whose latents were refined with `steps` steps
/// (`mse-q3+refine20`; unchanged for 0), so refined and plain reports merge side by side.
pub(crate) fn refined_label(label: &str, steps: usize) -> String {
    match steps {
        0 => label.to_string(),
        _ => format!("{label}+refine{steps}"),
    }
}

/// One baseline file: its quality setting, bytes and encode time.
pub(crate) struct Encoded {
    pub(crate) quality: u8,
    pub(crate) bytes: Vec<u8>,
    pub(crate) seconds: f64,
}

fn encode_timed(baseline: Baseline, image: &RgbImage, quality: u8) -> Result<Encoded, EvalError> {
    let start = Instant::now();
    let bytes = baseline.encode(image, quality)?;
    Ok(Encoded {
        quality,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The largest quality whose file has at most `max_bytes` bytes (binary search, 8 encodes), or
/// quality 1 and `true` if even that is larger.
pub(crate) fn match_rate(
    baseline: Baseline,
    image: &RgbImage,
    max_bytes: usize,
) -> Result<(Encoded, bool), EvalError> {
    let lowest = encode_timed(baseline, image, 1)?;
    if lowest.bytes.len() > max_bytes {
        return Ok((lowest, true));
    }
    // Invariant: `best` (quality `low`) fits; `high` is the lowest quality known not to fit, or
    // 101. Quality need not be monotonic in size, but the result always fits.
    let (mut best, mut low, mut high) = (lowest, 1u8, 101u8);
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        let candidate = encode_timed(baseline, image, mid)?;
        if candidate.bytes.len() <= max_bytes {
            best = candidate;
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok((best, false))
}

fn evaluate_baseline(
    baseline: Baseline,
    rgb: &RgbImage,
    name: &str,
    target: &EvalRow,
) -> Result<(EvalRow, RgbImage), EvalError> {
    let in_image = |error: EvalError| match error {
        EvalError::Baseline { codec, message, .. } => EvalError::Baseline {
            codec,
            image: Some(name.to_string()),
            message,
        },
        other => other,
    };
    let (encoded, over_target) = match_rate(baseline, rgb, target.bytes).map_err(in_image)?;
    baseline.verify(&encoded.bytes).map_err(in_image)?;
    let start = Instant::now();
    let decoded = baseline.decode(&encoded.bytes).map_err(in_image)?;
    let decode_seconds = start.elapsed().as_secs_f64();
    let quality = measure(rgb, &decoded).map_err(|message| EvalError::Baseline {
        codec: baseline,
        image: Some(name.to_string()),
        message,
    })?;
    let row = row(
        baseline.name().to_string(),
        baseline.name().to_string(),
        encoded.quality.to_string(),
        target.setting.clone(),
        name,
        rgb,
        encoded.bytes.len(),
        quality,
        (encoded.seconds, decode_seconds),
        over_target,
    );
    Ok((row, decoded))
}
