//! The `ocular` command-line tool: parses arguments, calls the `ocular` library, prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
#[cfg(feature = "torch")]
use clap::ValueEnum;
use clap::{Args, Parser, Subcommand};

#[cfg(feature = "torch")]
use ocular::train::{
    self, ComputePrecision, Distortion, HyperpriorConfig, ObserverDistortion, TrainConfig,
    TrainOutcome,
};
use ocular::{Bitstream, Decoder, Encoder, Limits, Model, ObserverMix};

/// `println!` that returns the write error instead of panicking: a closed pipe (`ocular models |
/// head`) ends the command quietly in `main`, anything else is reported.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

/// ocular: a learned lossy image codec (mean-scale hyperprior autoencoder + range coder).
#[derive(Parser)]
#[command(name = "ocular", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress an image (PNG, JPEG, WebP, ... any format the `image` crate reads) into an .ocu file.
    Encode(EncodeArgs),
    /// Decompress an .ocu file into an image (PNG, or any format the output extension names).
    ///
    /// The model that made the file is found among the built-in models by the fingerprint the
    /// file carries; a file made by another model needs --model.
    Decode(DecodeArgs),
    /// Show what an .ocu file holds (model, size, streams, bpp) without decoding it.
    Info(InfoArgs),
    /// Encode and decode an image in one go and report bpp, PSNR, MS-SSIM and times.
    Roundtrip(RoundtripArgs),
    /// List the built-in models (or describe a model file).
    Models(ModelsArgs),
    /// Benchmarks: `bench imagenet` (rate against classifier accuracy), `bench merge` (shards).
    #[command(subcommand)]
    #[cfg(feature = "torch")]
    Bench(BenchCommand),
    /// Classify images with the observer classifier (EfficientNet-Lite0, ImageNet): top-k labels.
    #[cfg(feature = "torch")]
    Classify(ClassifyArgs),
    /// Rate-distortion evaluation on a folder of images (e.g. Kodak) against JPEG and WebP.
    ///
    /// Every image is coded with each model; each baseline is coded per image at the highest
    /// quality whose file is not larger than ocular's, so codecs are compared at matched bpp.
    /// Prints a table of means; writes per-image CSV / JSON, an SVG plot and a visual HTML page
    /// (--html: pictures side by side) on request.
    #[cfg(feature = "torch")]
    Eval(EvalArgs),
    /// Train a model: loss = bpp + lambda * distortion on random crops of a folder of images.
    ///
    /// Checkpoints go to --run-dir every few minutes and on Ctrl-C; the same command with --resume
    /// continues from there. The finished model is written to --output. Logs: train.csv and
    /// validation.csv (real coding of the --validation images) in --run-dir.
    #[cfg(feature = "torch")]
    Train(TrainArgs),
}

#[derive(Args)]
struct ModelChoice {
    /// Quality of a variable-rate model, any value in its range: for the default model
    /// (mse-vr) -2..12, about 0.089 / 0.23 / 0.47 / 0.75 / 1.09 bpp at 1 / 3 / 5 / 7 / 9 on Kodak
    /// (default 5)
    #[arg(short, long, allow_negative_numbers = true)]
    quality: Option<f32>,
    /// Use this model instead of the default (mse-vr): a built-in model by name (e.g.
    /// msssim-q2; see `ocular models`) or a model file (.safetensors from `ocular train`)
    #[arg(long)]
    model: Option<PathBuf>,
}

impl ModelChoice {
    /// The model, and the quality its encoder takes (variable-rate models only).
    fn load(&self) -> Result<(Model, Option<f32>)> {
        let model = match &self.model {
            Some(spec) => model_file_or_builtin(spec)?,
            None => Model::builtin_default()?,
        };
        if self.quality.is_some() && model.quality_range().is_none() {
            bail!(
                "--quality: model '{}' is a fixed-rate model; drop --quality, or choose its rate point by model",
                model.name()
            );
        }
        Ok((model, self.quality))
    }
}

/// An encoder of `model`, at `quality` when there is one.
fn encoder_at(model: &Model, quality: Option<f32>) -> Encoder<'_> {
    match quality {
        Some(q) => Encoder::new(model).with_quality(q),
        None => Encoder::new(model),
    }
}

/// `encoder` refining with `steps` steps (`--refine`).
#[cfg(feature = "torch")]
fn refining(encoder: Encoder<'_>, steps: usize) -> Result<Encoder<'_>> {
    Ok(encoder.with_refinement(steps))
}

/// `encoder`, since `--refine` is 0: refinement runs the libtorch networks, absent from this build.
#[cfg(not(feature = "torch"))]
fn refining(encoder: Encoder<'_>, steps: usize) -> Result<Encoder<'_>> {
    if steps > 0 {
        bail!("--refine needs an ocular built with the `torch` feature (libtorch)");
    }
    Ok(encoder)
}

/// The file of the best rate point of `family` within `target` bpp, refined with `steps` steps.
#[cfg(feature = "torch")]
fn within_bpp(
    family: &[Model],
    image: &image::DynamicImage,
    target: f64,
    steps: usize,
) -> Result<ocular::RateControlled> {
    Ok(ocular::encode_within_bpp_refined(
        family, image, target, steps,
    )?)
}

/// The file of the best rate point of `family` within `target` bpp (`steps` must be 0).
#[cfg(not(feature = "torch"))]
fn within_bpp(
    family: &[Model],
    image: &image::DynamicImage,
    target: f64,
    steps: usize,
) -> Result<ocular::RateControlled> {
    if steps > 0 {
        bail!("--refine needs an ocular built with the `torch` feature (libtorch)");
    }
    Ok(ocular::encode_within_bpp(family, image, target)?)
}

/// The model a `--model` argument names: a file if one is there, else a built-in model.
fn model_file_or_builtin(spec: &Path) -> Result<Model> {
    if spec.exists() {
        return Ok(Model::load(spec)?);
    }
    let name = spec.to_string_lossy();
    if !Model::builtin_names().any(|builtin| builtin == name) {
        bail!(
            "--model {name}: no such file, nor a built-in model (built in: {})",
            Model::builtin_names().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(Model::builtin(&name)?)
}

#[derive(Args)]
struct EncodeArgs {
    /// Image to compress
    input: PathBuf,
    /// Output .ocu file
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    model: ModelChoice,
    /// Target bits per pixel instead of a quality (reports the bpp reached). Without --observer:
    /// the quality of the variable-rate PSNR network (built-in mse-vr, or a variable-rate
    /// --model) whose file is within [0.97 T, T]. With --observer (or --refine): the built-in
    /// model of that family whose file comes closest to the target without exceeding it (a
    /// target above what its highest rate point makes of the image is an error)
    #[arg(long, conflicts_with = "quality")]
    bpp: Option<f64>,
    /// Who looks at the image: human (MS-SSIM), machine (classifiers: the mix alpha = 0.5 of
    /// MS-SSIM and an ImageNet classifier's features, which keeps more top-1 than the classifier
    /// alone under classifiers never seen in training; docs/observer.md) or an alpha in 0..=1
    /// mixing them (1: the training classifier alone). With a --model that is one network for
    /// every observer mix (`train --observer-mix`): that mix, at --quality or --bpp (the file
    /// carries it). Without --model, with --bpp: the built-in family of that observer (listed
    /// by `ocular models`). Without it, the default model (mse-vr)
    #[arg(long)]
    observer: Option<String>,
    #[command(flatten)]
    refine: Refine,
    #[command(flatten)]
    size: MaxPixels,
}

/// `--max-pixels N`, the same for every command that reads an image or an .ocu file.
#[derive(Args)]
struct MaxPixels {
    /// Largest image accepted, in pixels (width x height). Larger images and .ocu files are
    /// refused before anything is allocated for them. Raise it to code very large photos (e.g.
    /// 192000000 for 16000x12000): memory grows by about 5 bytes a pixel to encode (the image
    /// and the latents) and about 2 to decode to PNG
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

impl MaxPixels {
    fn limits(&self) -> Limits {
        Limits {
            max_pixels: self.max_pixels,
            ..Limits::default()
        }
    }
}

/// `--refine N`, the same for every command that encodes.
#[derive(Args)]
struct Refine {
    /// Refine each ocular latent with N steps of gradient descent on its model's own objective
    /// (rate + lambda x the distortion of the observer it was trained for) before coding it:
    /// slower encoding, the same decoder; observer models need the classifier of `make setup`.
    /// 0 = off
    #[arg(long = "refine", value_name = "N", default_value_t = 0)]
    steps: usize,
    /// With --refine: average the objective over K small changes of view besides the
    /// picture itself (shifts of up to 4 px, mirroring, rescaling by up to 10 %; drawn once
    /// per image from a fixed seed), so what refinement keeps for a classifier survives
    /// another view of the picture. Each view costs one more pass per step. 0 = off
    #[arg(
        long = "refine-views",
        value_name = "K",
        default_value_t = 0,
        requires = "steps"
    )]
    views: usize,
    /// With --refine: observe with these classifiers at once instead of the model's own
    /// observer (their feature terms averaged), so what refinement keeps is what several
    /// classifiers agree on: a comma-separated list of lite0 (the observer of training), lite1,
    /// lite2 (EfficientNet-Lite1/-Lite2; `make setup` installs them). Lite1 is the benchmark's
    /// judge of transfer: refining against it makes its figures say nothing. Observer models
    /// only (alpha > 0)
    #[cfg(feature = "torch")]
    #[arg(
        long = "refine-observers",
        value_name = "LIST",
        value_parser = parse_observers,
        requires = "steps"
    )]
    observers: Option<Observers>,
}

/// The classifiers of `--refine-observers`, in order, none twice.
#[cfg(feature = "torch")]
#[derive(Clone, Debug)]
struct Observers(Vec<ocular::observer::Variant>);

/// `lite0,lite2` (any case).
#[cfg(feature = "torch")]
fn parse_observers(text: &str) -> Result<Observers, String> {
    use ocular::observer::Variant;
    let mut observers = Vec::new();
    for name in text.split(',').map(str::trim) {
        let variant = Variant::from_short_name(name)
            .ok_or_else(|| format!("unknown classifier '{name}' (known: lite0, lite1, lite2)"))?;
        if observers.contains(&variant) {
            return Err(format!("{name} is given twice"));
        }
        observers.push(variant);
    }
    Ok(Observers(observers))
}

impl Refine {
    /// `model`, refining over [`Self::views`] views and with [`Self::observers`].
    #[cfg(feature = "torch")]
    fn model(&self, model: Model) -> Result<Model> {
        let observers = self.observers.clone().map(|o| o.0).unwrap_or_default();
        Ok(model
            .with_refinement_views(self.views)
            .with_refinement_observers(observers))
    }

    /// `model`, since views need refinement, which needs libtorch.
    #[cfg(not(feature = "torch"))]
    fn model(&self, model: Model) -> Result<Model> {
        if self.views > 0 {
            bail!("--refine-views needs an ocular built with the `torch` feature (libtorch)");
        }
        Ok(model)
    }

    /// A report label with the views and observers, when there are any
    /// (`mse-q3+views4`, `machine+by-lite0+lite2`).
    #[cfg(feature = "torch")]
    fn label(&self, label: &str) -> String {
        let mut label = label.to_string();
        if let Some(Observers(observers)) = &self.observers {
            let names: Vec<&str> = observers.iter().map(|v| v.short_name()).collect();
            label = format!("{label}+by-{}", names.join("+"));
        }
        match self.views {
            0 => label,
            views => format!("{label}+views{views}"),
        }
    }
}

#[derive(Args)]
struct DecodeArgs {
    /// .ocu file to decompress
    input: PathBuf,
    /// Output image (format from the extension; PNG recommended)
    #[arg(short, long)]
    output: PathBuf,
    /// Model file that made the input, if it is not a built-in model (a companion file
    /// NAME.realism.safetensors beside it is loaded too)
    #[arg(long)]
    model: Option<PathBuf>,
    /// The perception–distortion knob, 0..=1: mixes the model's decoder (0, the default: the
    /// least distortion) with its realism decoder (1: natural-looking detail, at some PSNR) as
    /// (1 - R) g_s + R g_s'. Needs a model with a realism decoder (see --realism-decoder)
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    realism: f32,
    /// The realism decoder's companion file (NAME.realism.safetensors, made by `ocular train
    /// --adversarial`) for the model that made the input
    #[arg(long, value_name = "FILE")]
    realism_decoder: Option<PathBuf>,
    #[command(flatten)]
    size: MaxPixels,
}

#[derive(Args)]
struct InfoArgs {
    /// .ocu file to describe
    input: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RoundtripArgs {
    /// Image to compress and decompress
    input: PathBuf,
    /// Also write the decoded image here
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    model: ModelChoice,
    #[command(flatten)]
    refine: Refine,
    #[command(flatten)]
    size: MaxPixels,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct EvalArgs {
    /// Folder of images (searched recursively)
    #[arg(long, default_value = "../shared/data/kodak")]
    data: PathBuf,
    /// Only the first N images (sorted by path)
    #[arg(long)]
    limit: Option<usize>,
    /// Built-in models by quality, e.g. 1,2,3 (default: every built-in model)
    #[arg(short, long, value_delimiter = ',')]
    quality: Vec<u8>,
    /// Models to evaluate as well: built-in names (e.g. msssim-q2) or model files (repeatable)
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Qualities each variable-rate --model is evaluated at (default, without --at-bpp:
    /// 1,3,5,7,9)
    #[arg(long, value_delimiter = ',')]
    at_quality: Vec<f32>,
    /// Target bpp each variable-rate --model is evaluated at: every image coded within
    /// [0.97 T, T] by exact rate control
    #[arg(long, value_delimiter = ',')]
    at_bpp: Vec<f64>,
    /// Baselines coded at matched bpp
    #[arg(long, value_delimiter = ',', default_value = "jpeg,webp")]
    against: Vec<ocular_cli::eval::Baseline>,
    /// Evaluate nothing: read a report saved with --json and print / write it again (e.g. to
    /// draw its plot with --published-kodak)
    #[arg(long, conflicts_with_all = ["quality", "model", "limit", "steps", "html", "perceptual"])]
    from_json: Option<PathBuf>,
    /// Also draw the published Kodak results of Ballé et al. 2018 (MSE- and MS-SSIM-trained
    /// hyperprior) as dashed reference curves in the --plot (for a Kodak evaluation)
    #[arg(long)]
    published_kodak: bool,
    #[command(flatten)]
    refine: Refine,
    /// Also measure perceptual metrics with EfficientNet-Lite1 (never used in training): the
    /// deep-feature distance per image (LPIPS-style, uncalibrated) and KID per codec and rate
    /// point over 256x256 patches; with --plot, also writes <plot>-perceptual.svg (and with
    /// --realism, <plot>-tradeoff.svg: KID and distance against PSNR through the realism
    /// settings). Needs the Lite1 weights (`make setup`)
    #[arg(long)]
    perceptual: bool,
    /// Also decode every --model file with these settings of the realism knob (0..=1, e.g.
    /// 0,0.25,0.5,0.75,1), each its own curve: the perception–distortion trade-off. The model
    /// needs a realism decoder (NAME.realism.safetensors beside it; `train --adversarial`)
    #[arg(long, value_delimiter = ',', value_name = "R,...", requires = "model")]
    realism: Vec<f32>,
    /// libtorch threads (default: all cores)
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    outputs: ReportOutputs,
    #[command(flatten)]
    html: HtmlArgs,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct HtmlArgs {
    /// Write a visual report: a self-contained page (inline CSS and JavaScript, no network
    /// needed) showing, for the first --html-images images, the original beside every codec's
    /// decoded picture at matched bpp, a zoomed crop (click a picture to move it), a slider over
    /// the rate points (eval: of each model family, e.g. --at-quality 1,3,5; bench: the --bpp
    /// targets) and bpp, PSNR and MS-SSIM under each picture (bench: also the first judge's top-5
    /// classes). The pictures go, as lossless WebP, into a folder beside PATH named after it
    /// (report.html -> report_files/)
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Images shown in the --html report (the first ones, sorted by path)
    #[arg(long, value_name = "N", default_value_t = 4, requires = "html")]
    html_images: usize,
    /// Largest size of the --html page and its pictures together, in MB: images that would go
    /// over are left out (the page says so)
    #[arg(long, value_name = "MB", default_value_t = 20, requires = "html")]
    html_max_mb: u64,
}

#[cfg(feature = "torch")]
#[derive(Subcommand)]
enum BenchCommand {
    /// Rate against classifier accuracy on an ImageNet-style folder (<root>/<wnid>/<image>).
    ///
    /// Every image's 224x224 classifier crop is compressed by each codec at each target bpp (JPEG
    /// and WebP by per-image quality search, ocular by rate control over a model family, all within
    /// the target), decoded and classified by every judge (--judges); the table reports top-1 /
    /// top-5 per judge, bpp reached, PSNR and MS-SSIM against the uncompressed crop's accuracy.
    /// Split big sets with --shard (K/N, or auto under a Slurm job array or a Kubernetes Indexed
    /// Job; see docs/benchmarks.md) and merge the CSVs with `ocular bench merge`.
    Imagenet(Box<BenchImagenetArgs>),
    /// Merge the CSVs of `bench imagenet --shard K/N` runs into one report.
    Merge(BenchMergeArgs),
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct ReportOutputs {
    /// Write the per-image rows as CSV
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the rows and the means as JSON
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the plots as SVG (eval: PSNR and MS-SSIM against bpp; bench: top-1 against bpp and
    /// MS-SSIM against top-1 at 0.25 bpp)
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[cfg(feature = "torch")]
impl ReportOutputs {
    /// Prints the table and writes the files asked for.
    fn write(
        &self,
        table: String,
        csv: impl FnOnce() -> String,
        json: impl FnOnce() -> String,
        plot: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        out!("{table}");
        let write = |path: &PathBuf, text: String| {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        if let Some(path) = &self.csv {
            write(path, csv())?;
        }
        if let Some(path) = &self.json {
            write(path, json())?;
        }
        if let Some(path) = &self.plot {
            plot(path)?;
        }
        Ok(())
    }
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct BenchImagenetArgs {
    /// ImageNet-style folder: <root>/<wnid>/<image> (the ILSVRC-2012 validation set arranged so works)
    #[arg(long, default_value = "../shared/data/imagenet-dev")]
    data: PathBuf,
    /// Synset list: wnid <TAB> name per line, sorted; class index = line number
    #[arg(long, default_value = "../shared/data/imagenet/synsets.txt")]
    synsets: PathBuf,
    /// Target bits per pixel (of the 224x224 crop)
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5")]
    bpp: Vec<f64>,
    /// Codecs: ocular:<family> (human, machine, an alpha such as 0.5, mse, ms-ssim, or a --family name), jpeg, webp.
    /// A --family of one variable-rate model is coded at exact rates (within [0.97 T, T]);
    /// ocular:<family>@<alpha> codes one network for every observer mix at that mix
    #[arg(long, value_delimiter = ',', default_value = "ocular:human,jpeg,webp")]
    codecs: Vec<String>,
    /// A model family from files, by increasing rate: NAME=FILE[,FILE...] (repeatable); use as ocular:NAME
    #[arg(long)]
    family: Vec<String>,
    /// Only the first N images (sorted by path)
    #[arg(long)]
    limit: Option<usize>,
    /// Only shard K of N (0-based): image i belongs to shard i % N; `auto`: the shard of this
    /// task of a Slurm job array (SLURM_ARRAY_TASK_*) or Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX, with OCULAR_SHARD_COUNT = the Job's completions)
    #[arg(long, value_parser = parse_shard)]
    shard: Option<ShardArg>,
    /// Classifiers judging every crop: lite0 (EfficientNet-Lite0, the observer the codec is
    /// trained for), lite1 (EfficientNet-Lite1, 240 px, never used in training), lite2
    /// (EfficientNet-Lite2, 260 px, never used in training), torchscript:FILE (a user's classifier given the normalised 224x224 crops; see
    /// docs/observer.md)
    #[arg(long, default_value = ocular_cli::bench::DEFAULT_JUDGES, value_parser = parse_judges)]
    judges: std::vec::Vec<ocular_cli::bench::JudgeSpec>,
    /// Weights of the lite0 judge (default: where `make setup` converts them)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Judge only with a user's TorchScript classifier: the same as --judges torchscript:FILE
    #[arg(long, conflicts_with_all = ["weights", "judges"])]
    observer_torchscript: Option<PathBuf>,
    /// Also measure the deep-feature distance of every decoded crop to the uncompressed crop
    /// with EfficientNet-Lite1 (LPIPS-style, uncalibrated). Needs the Lite1 weights (`make setup`)
    #[arg(long)]
    perceptual: bool,
    /// With --refine: refine against this objective instead of each model's own training
    /// distortion: mse, ms-ssim or observer-ALPHA, for the observer optionally with the
    /// classifier layers after `@` (e.g. observer-1@stage2,stage4). The cheap screen of
    /// objectives (layers, alpha) before training one; rows are named ocular:FAMILY/OBJECTIVE
    #[arg(long, value_name = "OBJECTIVE", value_parser = parse_objective)]
    refine_objective: Option<ocular::train::Distortion>,
    #[command(flatten)]
    refine: Refine,
    /// libtorch threads (default: all cores)
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    outputs: ReportOutputs,
    #[command(flatten)]
    html: HtmlArgs,
}

#[cfg(feature = "torch")]
/// `--shard`: a fixed shard or the scheduler's.
#[derive(Clone, Copy)]
enum ShardArg {
    Fixed(ocular_cli::bench::Shard),
    Auto,
}

#[cfg(feature = "torch")]
fn parse_shard(text: &str) -> Result<ShardArg, ocular_cli::bench::BenchError> {
    if text.trim() == "auto" {
        Ok(ShardArg::Auto)
    } else {
        text.parse().map(ShardArg::Fixed)
    }
}

#[cfg(feature = "torch")]
fn parse_judges(
    text: &str,
) -> Result<Vec<ocular_cli::bench::JudgeSpec>, ocular_cli::bench::BenchError> {
    ocular_cli::bench::JudgeSpec::parse_list(text)
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct BenchMergeArgs {
    /// CSV files of the shards
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    outputs: ReportOutputs,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct ClassifyArgs {
    /// Images to classify
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to print per image
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Synset list (wnid <TAB> name per line, sorted; class index = line number)
    #[arg(long, default_value = "../shared/data/imagenet/synsets.txt")]
    synsets: PathBuf,
    /// Classifier weights (default: where `make setup` converts them)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Classify with a user's TorchScript classifier instead (see docs/observer.md)
    #[arg(long, conflicts_with = "weights")]
    observer_torchscript: Option<PathBuf>,
}

#[derive(Args)]
struct ModelsArgs {
    /// Describe this model instead (a built-in name or a model file): its full stored
    /// description, as JSON
    #[arg(long)]
    model: Option<PathBuf>,
}

#[cfg(feature = "torch")]
#[derive(Clone, Copy, ValueEnum)]
enum DistortionArg {
    /// 255^2 * mean squared error (PSNR-oriented)
    Mse,
    /// 1 - MS-SSIM (needs --crop-size >= 192)
    MsSsim,
    /// (1 - alpha) w_ms (1 - MS-SSIM) + alpha w_f L_features: a person (alpha 0), the ImageNet
    /// classifier (alpha 1) or a mix looks at the images (needs --alpha; --crop-size >= 192 unless alpha is 1)
    Observer,
}

#[cfg(feature = "torch")]
#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    /// f32 convolutions
    F32,
    /// bf16 convolutions, cast inside each layer
    Bf16,
    /// Convolutions under libtorch's CPU autocast to bf16
    Autocast,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct TrainArgs {
    /// Folder of training images (searched recursively)
    #[arg(long, default_value = "../shared/data/train")]
    data: PathBuf,
    /// Folder of validation images coded for real every --validate-every steps (e.g. Kodak)
    #[arg(long)]
    validation: Option<PathBuf>,
    /// Where to write the finished model file (.safetensors)
    #[arg(short, long)]
    output: PathBuf,
    /// Folder for checkpoints and CSV logs; a run there is resumed
    #[arg(long)]
    run_dir: PathBuf,
    /// Name stored in the model and in every file it codes
    #[arg(long, default_value = "custom")]
    name: String,
    /// Rate point of the model within its family (1 = fewest bits)
    #[arg(long, default_value_t = 1)]
    quality: u8,
    /// Distortion term of the loss
    #[arg(long, value_enum, default_value_t = DistortionArg::Mse)]
    distortion: DistortionArg,
    /// Rate-distortion trade-off (MSE: 0.0018..0.18; MS-SSIM and observer: 2.4..220)
    #[arg(long, default_value_t = 0.0067)]
    lambda: f64,
    /// Observer mix for --distortion observer (needed unless --observer-mix): 0 = human
    /// (MS-SSIM), 1 = classifier features
    #[arg(long, conflicts_with = "observer_mix")]
    alpha: Option<f64>,
    /// Weight w_f of the classifier-feature term (observer distortion: default 0.08; with
    /// --adversarial: default 1, 0 leaves the classifier out)
    #[arg(long)]
    feature_weight: Option<f64>,
    /// With --adversarial and a variable-rate model: weight the distortion term by 1 / step of
    /// the quality drawn, as the network itself was trained (about 11 times less at quality -2
    /// than at 5), so g_s' may move further from g_s at low rates
    #[arg(long, requires = "adversarial")]
    distortion_by_rate: bool,
    /// Classifier layers whose features are compared, e.g. stage1,head (observer distortion)
    #[arg(long, default_value = "stage1,head")]
    feature_layers: ocular::train::FeatureLayers,
    /// Observer classifier weights (default: where `make setup` converts them)
    #[arg(long)]
    observer_weights: Option<PathBuf>,
    /// Observe with a user's TorchScript classifier instead of the built-in EfficientNet-Lite0:
    /// it takes the normalised (N, 3, H, W) batch and returns (logits, [feature maps]); the
    /// feature maps it returns are compared (its logits if it returns none). See
    /// docs/observer.md
    #[arg(long, conflicts_with_all = ["observer_weights", "feature_layers"])]
    observer_torchscript: Option<PathBuf>,
    /// Channels of the hidden layers and of z
    #[arg(long, default_value_t = HyperpriorConfig::default().n)]
    n: i64,
    /// Channels of y
    #[arg(long, default_value_t = HyperpriorConfig::default().m)]
    m: i64,
    /// Total optimiser steps
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    /// Wall-clock budget in minutes over all sessions of this run (stops early when spent)
    #[arg(long)]
    minutes: Option<f64>,
    /// Images per step
    #[arg(long, default_value_t = 8)]
    batch_size: i64,
    /// Side of the square random crops (multiple of 64)
    #[arg(long, default_value_t = 128)]
    crop_size: i64,
    /// Peak learning rate (default 5e-4, held for 60% of the run, then cosine decay to 2%; see
    /// --decay-steps). With --adversarial: Adam's rate for g_s' and the discriminator (default
    /// 1e-4)
    #[arg(long)]
    learning_rate: Option<f64>,
    /// With --adversarial: Adam's rate for the discriminator (default 1e-3, ten times g_s')
    #[arg(long, requires = "adversarial")]
    critic_learning_rate: Option<f64>,
    /// With --adversarial: steps at the start of the run that train the discriminator alone
    #[arg(long, requires = "adversarial", default_value_t = 500)]
    critic_warmup_steps: u64,
    /// Warmup-stable-decay schedule: hold the learning rate until the last N of --steps, then
    /// decay it over them. A long run with a huge --steps holds it; decay any checkpoint with
    /// its own short run (--init CHECKPOINT --steps N --decay-steps N)
    #[arg(long)]
    decay_steps: Option<u64>,
    /// Steps of linear learning-rate warmup at the start of every session (Adam's moments
    /// restart on --resume and --init)
    #[arg(long, default_value_t = 200)]
    warmup_steps: u64,
    /// Train one variable-rate network for qualities MIN..MAX (e.g. 0..10; a negative MIN
    /// needs `=`: --variable-rate=-2..12). --lambda is the lambda of quality 5; each step draws
    /// a quality and codes y on its quantisation step
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_quality_range)]
    variable_rate: Option<ocular::train::QualityRange>,
    /// Qualities a variable-rate run is validated at (default: 5)
    #[arg(long, value_delimiter = ',', requires = "variable_rate")]
    validation_qualities: Vec<f32>,
    /// Variable rate: divide each step's loss by a running mean of the loss at its quality, so
    /// every quality's gradient has the same size (Adam then serves the whole range evenly)
    #[arg(long, requires = "variable_rate")]
    balance_qualities: bool,
    /// With --distortion observer: one network for every observer mix. The network is
    /// conditioned on alpha (a per-channel affine map after each GDN, a per-channel gain on y,
    /// all linear or log-linear in alpha and the identity at alpha 0, so --init may be a plain
    /// network) and each step draws alpha uniformly from [0, 1]; --alpha is then ignored,
    /// --feature-weight and --feature-layers apply. Validated at alpha 0 and 0.5
    #[arg(long)]
    observer_mix: bool,
    /// With --observer-mix: the conditioning's learning rate as a multiple of --learning-rate
    /// (it starts at zero beside a trained network, and at the network's own rate hardly moves)
    #[arg(long, requires = "observer_mix", default_value_t = ocular::train::DEFAULT_MIX_LEARNING_RATE_FACTOR)]
    mix_learning_rate_factor: f64,
    /// Convolution precision
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Seconds between checkpoints
    #[arg(long, default_value_t = 300)]
    checkpoint_seconds: u64,
    /// Steps between validations (0: only at the end)
    #[arg(long, default_value_t = 2000)]
    validate_every: u64,
    /// Start from this model file or run checkpoint (N and M the same or smaller), e.g. a
    /// neighbouring rate point, or a long run's checkpoint.safetensors to give it a decay
    /// branch. A smaller N or M is widened to --n / --m: the new channels start unused, so the
    /// run begins as the trained network
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue the run whose checkpoint is in --run-dir (Ctrl-C or a time budget left it there)
    #[arg(long)]
    resume: bool,
    /// Train the realism decoder of the --init model instead, with this weight W of the
    /// adversarial loss: a second synthesis g_s' (the encoder, hyperprior and entropy model
    /// frozen) for `decode --realism`, written to --output as a companion file (name it
    /// NAME.realism.safetensors beside NAME.safetensors so the model finds it). Loss:
    /// 255^2 MSE / 100 + w_f classifier features + W x non-saturating GAN loss of a latent-
    /// conditioned PatchGAN. Uses --data, --validation, --run-dir, --steps, --minutes,
    /// --batch-size, --crop-size, --learning-rate, --critic-learning-rate,
    /// --critic-warmup-steps, --feature-weight, --distortion-by-rate, --observer-weights, --seed,
    /// --checkpoint-seconds, --resume
    #[arg(
        long,
        value_name = "W",
        requires = "init",
        conflicts_with_all = [
            "name", "quality", "distortion", "lambda", "alpha", "feature_layers",
            "observer_torchscript", "n", "m", "decay_steps", "warmup_steps", "variable_rate",
            "validation_qualities", "balance_qualities", "precision", "validate_every",
            "observer_mix", "mix_learning_rate_factor",
        ]
    )]
    adversarial: Option<f64>,
    /// Random seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// libtorch threads (default: all cores)
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
}

/// `train --adversarial W`: the realism decoder of the --init model.
#[cfg(feature = "torch")]
fn run_realism_training(args: TrainArgs, weight: f64) -> Result<()> {
    use ocular::train::{train_realism, RealismConfig};
    let model = args.init.context("--adversarial needs --init MODEL")?;
    if !(weight.is_finite() && weight >= 0.0) {
        bail!("--adversarial must be a weight >= 0, got {weight}");
    }
    let mut config = RealismConfig::new(model, args.data, args.output, args.run_dir);
    config.validation = args.validation;
    config.adversarial_weight = weight;
    config.feature_weight = args.feature_weight.unwrap_or(config.feature_weight);
    config.distortion_by_rate = args.distortion_by_rate;
    config.observer_weights = args.observer_weights;
    config.steps = args.steps;
    config.time_budget_seconds = args.minutes.map(|m| m * 60.0);
    config.batch_size = args.batch_size;
    config.crop_size = args.crop_size;
    config.learning_rate = args.learning_rate.unwrap_or(config.learning_rate);
    config.critic_learning_rate = args
        .critic_learning_rate
        .unwrap_or(config.critic_learning_rate);
    config.critic_warmup_steps = args.critic_warmup_steps;
    for (flag, rate) in [
        ("--learning-rate", config.learning_rate),
        ("--critic-learning-rate", config.critic_learning_rate),
    ] {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("{flag} must be a positive rate, got {rate}");
        }
    }
    config.seed = args.seed;
    config.checkpoint_seconds = args.checkpoint_seconds;
    config.resume = args.resume;
    config.progress = !args.quiet;
    let outcome = train_realism(&config).context("realism training failed")?;
    out!(
        "realism decoder: {} steps ({:.2} CPU-hours){}; written to {}",
        outcome.steps,
        outcome.cpu_seconds / 3600.0,
        if outcome.stopped_early {
            ", stopped early (run again with --resume to continue)"
        } else {
            ""
        },
        config.output.display()
    );
    if let Some((plain, realistic)) = outcome.validation {
        out!("validation PSNR: g_s {plain:.2} dB, g_s' {realistic:.2} dB");
    }
    Ok(())
}

#[cfg(feature = "torch")]
fn run_train(args: TrainArgs) -> Result<()> {
    if let Some(threads) = args.threads {
        train::set_threads(threads);
    }
    if let Some(weight) = args.adversarial {
        return run_realism_training(args, weight);
    }
    let config = train_config(args)?;
    match train::train(&config).context("training failed")? {
        TrainOutcome::Finished { steps, validation } => {
            out!(
                "trained {steps} steps; model written to {}",
                config.output.display()
            );
            if let Some(v) = validation {
                out!("validation: {}", v.summary());
            }
        }
        TrainOutcome::Interrupted { steps } => {
            out!("interrupted at step {steps}; run the same command with --resume to continue");
        }
    }
    Ok(())
}

#[cfg(feature = "torch")]
/// The training run `train`'s options describe.
fn train_config(args: TrainArgs) -> Result<TrainConfig> {
    let mut config = TrainConfig::new(args.data, args.output, args.run_dir);
    config.validation = args.validation;
    config.name = args.name;
    config.quality = args.quality;
    config.distortion = match args.distortion {
        DistortionArg::Mse => Distortion::Mse,
        DistortionArg::MsSsim => Distortion::MsSsim,
        DistortionArg::Observer => {
            let alpha = match (args.alpha, args.observer_mix) {
                (Some(alpha), _) => alpha,
                // Replaced by the mix each step draws.
                (None, true) => 0.5,
                (None, false) => bail!("--distortion observer needs --alpha (or --observer-mix)"),
            };
            let mut observer = ObserverDistortion::new(alpha);
            observer.feature_weight = args
                .feature_weight
                .unwrap_or(ocular::train::DEFAULT_FEATURE_WEIGHT);
            observer.layers = args.feature_layers;
            Distortion::Observer(observer)
        }
    };
    config.observer_weights = args.observer_weights;
    config.observer_torchscript = args.observer_torchscript;
    config.lambda = args.lambda;
    config.network = HyperpriorConfig {
        n: args.n,
        m: args.m,
    };
    config.steps = args.steps;
    config.time_budget_seconds = args.minutes.map(|m| m * 60.0);
    config.batch_size = args.batch_size;
    config.crop_size = args.crop_size;
    config.learning_rate = args.learning_rate.unwrap_or(5e-4);
    config.precision = match args.precision {
        PrecisionArg::F32 => ComputePrecision::F32,
        PrecisionArg::Bf16 => ComputePrecision::Bf16,
        PrecisionArg::Autocast => ComputePrecision::Autocast,
    };
    config.checkpoint_seconds = args.checkpoint_seconds;
    config.validate_every = args.validate_every;
    config.decay_steps = args.decay_steps;
    config.warmup_steps = args.warmup_steps;
    config.variable_rate = args.variable_rate;
    config.validation_qualities = args.validation_qualities;
    config.balance_qualities = args.balance_qualities;
    config.observer_mix = args.observer_mix;
    config.mix_learning_rate_factor = args.mix_learning_rate_factor;
    config.init_from = args.init;
    config.resume = args.resume;
    config.seed = args.seed;
    config.progress = !args.quiet;
    Ok(config)
}

#[cfg(feature = "torch")]
/// The rates a variable-rate model is evaluated at: the qualities and target bpp asked for,
/// else qualities 1, 3, 5, 7 and 9.
fn variable_rates(qualities: &[f32], targets: &[f64]) -> Vec<ocular_cli::eval::EvalRate> {
    use ocular_cli::eval::EvalRate;
    let mut rates: Vec<EvalRate> = qualities.iter().map(|&q| EvalRate::Quality(q)).collect();
    rates.extend(targets.iter().map(|&t| EvalRate::TargetBpp(t)));
    if rates.is_empty() {
        rates = [1.0, 3.0, 5.0, 7.0, 9.0].map(EvalRate::Quality).to_vec();
    }
    rates
}

/// `DISTORTION[@LAYERS]`, e.g. `observer-1@stage2,stage4` (`--refine-objective`).
#[cfg(feature = "torch")]
fn parse_objective(text: &str) -> Result<ocular::train::Distortion, String> {
    use ocular::train::Distortion;
    let (name, layers) = match text.split_once('@') {
        Some((name, layers)) => (name, Some(layers)),
        None => (text, None),
    };
    let mut distortion: Distortion = name.parse().map_err(|e| format!("{e}"))?;
    match (&mut distortion, layers) {
        (Distortion::Observer(observer), Some(layers)) => {
            observer.layers = layers.parse().map_err(|e| format!("{e}"))?;
        }
        (_, Some(_)) => return Err(format!("{name} compares no classifier layers")),
        (_, None) => {}
    }
    Ok(distortion)
}

/// An ocular family of `codec` refining against `objective`, named `ocular:FAMILY/OBJECTIVE`;
/// baselines as they are.
#[cfg(feature = "torch")]
fn refining_against(
    codec: ocular_cli::bench::BenchCodec,
    objective: &ocular::train::Distortion,
) -> ocular_cli::bench::BenchCodec {
    use ocular_cli::bench::BenchCodec;
    // A label is a CSV cell without commas: the layers are joined by `+` (stage2+stage4).
    let name = match objective {
        ocular::train::Distortion::Observer(observer) => {
            format!(
                "{objective}@{}",
                observer.layers.to_string().replace(',', "+")
            )
        }
        other => other.to_string(),
    };
    match codec {
        BenchCodec::Ocular {
            label,
            models,
            observer_mix,
        } => BenchCodec::Ocular {
            label: format!("{label}/{name}"),
            models: models
                .into_iter()
                .map(|m| m.with_refinement_objective(*objective))
                .collect(),
            observer_mix,
        },
        other => other,
    }
}

/// `codec` refining over `refine`'s views and observers, labelled as [`Refine::label`]
/// (unchanged without either).
#[cfg(feature = "torch")]
fn refining_over_views(
    codec: ocular_cli::bench::BenchCodec,
    refine: &Refine,
) -> Result<ocular_cli::bench::BenchCodec> {
    use ocular_cli::bench::BenchCodec;
    Ok(match codec {
        BenchCodec::Ocular {
            label,
            models,
            observer_mix,
        } if refine.views > 0 || refine.observers.is_some() => BenchCodec::Ocular {
            label: refine.label(&label),
            models: models
                .into_iter()
                .map(|m| refine.model(m))
                .collect::<Result<Vec<_>>>()?,
            observer_mix,
        },
        other => other,
    })
}

#[cfg(feature = "torch")]
/// `MIN..MAX` of qualities, e.g. `0..10`.
fn parse_quality_range(text: &str) -> Result<ocular::train::QualityRange, String> {
    let (min, max) = text
        .split_once("..")
        .ok_or_else(|| format!("expected MIN..MAX, got {text:?}"))?;
    let number = |t: &str| t.trim().parse::<f32>().map_err(|e| format!("{t:?}: {e}"));
    ocular::train::QualityRange::new(number(min)?, number(max)?).map_err(|e| e.to_string())
}

fn bits_per_pixel(bytes: usize, width: u32, height: u32) -> f64 {
    bytes as f64 * 8.0 / (f64::from(width) * f64::from(height))
}

fn run_encode(args: EncodeArgs) -> Result<()> {
    let limits = args.size.limits();
    let image = ocular::open_image(&args.input, &limits)?;
    let start = Instant::now();
    let (model, bytes) = match (args.bpp, &args.observer, &args.model.model) {
        (_, Some(observer), Some(_)) => encode_mixed(&args, &image, observer)?,
        (Some(target), _, _) => encode_to_target(&args, &image, target)?,
        (None, Some(_), None) => {
            bail!("--observer picks a built-in family's rate point by --bpp, or the mix of a --model for every observer mix")
        }
        (None, None, _) => {
            let (model, quality) = args.model.load()?;
            let model = args.refine.model(model)?;
            let encoder = encoder_at(&model, quality).with_limits(limits);
            let bytes = refining(encoder, args.refine.steps)?.encode(&image)?;
            (model, bytes)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let (width, height) = (image.width(), image.height());
    out!(
        "{} -> {}: {width}x{height}, {} bytes, {:.4} bpp, model {}, {seconds:.2} s",
        args.input.display(),
        args.output.display(),
        bytes.len(),
        bits_per_pixel(bytes.len(), width, height),
        model.name()
    );
    if image.color().has_alpha() {
        eprintln!("note: the alpha channel is not coded; the decoded image is opaque");
    }
    Ok(())
}

/// `encode --model FILE --observer WHO`: a network for every observer mix at WHO's mix, at
/// --quality or (exactly) at --bpp.
fn encode_mixed(
    args: &EncodeArgs,
    image: &image::DynamicImage,
    observer: &str,
) -> Result<(Model, Vec<u8>)> {
    let alpha = ObserverMix::from_name(observer)
        .with_context(|| format!("--observer {observer}: human, machine, or a number in 0..=1"))?
        .get();
    let (model, quality) = args.model.load()?;
    if !model.has_observer_mix() {
        bail!(
            "--observer with --model needs one network for every observer mix (`ocular train --observer-mix`); {} is not one",
            model.name()
        );
    }
    if args.refine.steps > 0 {
        bail!("--refine codes a network for every observer mix at alpha 0 only; drop --observer or --refine");
    }
    let encoder = encoder_at(&model, quality)
        .with_limits(args.size.limits())
        .with_observer_mix(alpha);
    let bytes = match args.bpp {
        Some(target) => {
            let found = encoder.encode_to_bpp(image, target)?;
            out!(
                "target {target} bpp: reached {:.4} bpp at quality {:.3} ({} encodes)",
                found.bpp,
                found.quality,
                found.encodes
            );
            found.bytes
        }
        None => encoder.encode(image)?,
    };
    Ok((model, bytes))
}

/// `encode --bpp TARGET`: exact rate control on a variable-rate model (the one given, else the
/// built-in PSNR network), or the best rate point of a fixed-rate family (an --observer's, or
/// the PSNR family when refining).
fn encode_to_target(
    args: &EncodeArgs,
    image: &image::DynamicImage,
    target: f64,
) -> Result<(Model, Vec<u8>)> {
    if !(target.is_finite() && target > 0.0) {
        bail!("--bpp must be a positive number, got {target}");
    }
    let variable_rate = match (&args.model.model, &args.observer) {
        (Some(_), _) => Some(args.model.load()?.0),
        (None, None) if args.refine.steps == 0 => Some(Model::builtin_variable_rate("mse")?),
        _ => None,
    };
    if let Some(model) = variable_rate {
        if args.refine.steps > 0 {
            bail!("--refine with --bpp needs a built-in family (drop --model)");
        }
        let found = Encoder::new(&model)
            .with_limits(args.size.limits())
            .encode_to_bpp(image, target)?;
        out!(
            "target {target} bpp: reached {:.4} bpp at quality {:.3} ({} encodes)",
            found.bpp,
            found.quality,
            found.encodes
        );
        return Ok((model, found.bytes));
    }
    let mut family = match &args.observer {
        Some(observer) => Model::builtin_observer_family(observer)?,
        None => Model::builtin_family("mse")?,
    }
    .into_iter()
    .map(|model| args.refine.model(model))
    .collect::<Result<Vec<_>>>()?;
    let found = within_bpp(&family, image, target, args.refine.steps)?;
    let top = family.len() - 1;
    if found.model_index == top && found.bpp < ocular::EXACT_RATE_TOLERANCE * target {
        // The family's highest rate point fits with room to spare: the target is above what
        // it can reach on this image, which is an error, not a smaller file in silence.
        bail!(
            "--bpp {target}: the {} family reaches at most {:.4} bpp on this image ({}, its highest rate point); ask for at most that, or drop --observer for the variable-rate PSNR network",
            args.observer.as_deref().unwrap_or("mse"),
            found.bpp,
            family[top].name()
        );
    }
    out!("target {target} bpp: reached {:.4} bpp", found.bpp);
    Ok((family.swap_remove(found.model_index), found.bytes))
}

fn read_ocu(path: &Path, limits: &Limits) -> Result<(Vec<u8>, Bitstream)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bitstream = Bitstream::parse(&bytes, limits)
        .with_context(|| format!("{} is not a valid .ocu file", path.display()))?;
    Ok((bytes, bitstream))
}

fn model_for(bitstream: &Bitstream, path: Option<&Path>) -> Result<Model> {
    Ok(match path {
        Some(path) => Model::load(path)?,
        None => Model::builtin_for(
            &bitstream.header.model_name,
            bitstream.header.model_fingerprint,
        )?,
    })
}

fn run_decode(args: DecodeArgs) -> Result<()> {
    let limits = args.size.limits();
    let (bytes, bitstream) = read_ocu(&args.input, &limits)?;
    let mut model = model_for(&bitstream, args.model.as_deref())?;
    if let Some(path) = &args.realism_decoder {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        model = model.with_realism_decoder(&bytes)?;
    }
    let (width, height) = (bitstream.header.width, bitstream.header.height);
    let decoder = Decoder::new(&model)
        .with_limits(limits)
        .with_realism(args.realism);
    let start = Instant::now();
    let cannot_write = || format!("cannot write {}", args.output.display());
    if is_png(&args.output) {
        // Row by row: the decoded image is never held whole.
        let file = std::fs::File::create(&args.output).with_context(cannot_write)?;
        if let Err(error) = decoder.decode_png(&bytes, std::io::BufWriter::new(file)) {
            // No partial PNG is left behind; only a failed write is the output's fault.
            let _ = std::fs::remove_file(&args.output);
            return Err(match error {
                ocular::Error::Output(_) => anyhow::Error::new(error).context(cannot_write()),
                other => other.into(),
            });
        }
    } else {
        let image = decoder.decode_bitstream(bitstream)?;
        image.save(&args.output).with_context(cannot_write)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    out!(
        "{} -> {}: {width}x{height}, {:.4} bpp, model {}, {seconds:.2} s",
        args.input.display(),
        args.output.display(),
        bits_per_pixel(bytes.len(), width, height),
        model.name()
    );
    Ok(())
}

/// Whether `path` names a PNG file (by its extension).
fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("png"))
}

fn run_info(args: InfoArgs) -> Result<()> {
    let (bytes, bitstream) = read_ocu(&args.input, &Limits::default())?;
    let header = &bitstream.header;
    let bpp = bits_per_pixel(bytes.len(), header.width, header.height);
    if args.json {
        let value = serde_json::json!({
            "file": args.input.display().to_string(),
            "bytes": bytes.len(),
            "bpp": bpp,
            "header": header,
            "z_stream_bytes": bitstream.z_stream.len(),
            "y_stream_bytes": bitstream.y_stream.len(),
            "overhead_bytes": bitstream.overhead_bytes(),
        });
        out!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    out!(
        "file:      {} ({} bytes, {bpp:.4} bpp)",
        args.input.display(),
        bytes.len()
    );
    print_header(&bitstream)
}

/// `ocular info`'s text: the header of `bitstream`, one line per field or record, then the
/// latents' sizes.
fn print_header(bitstream: &Bitstream) -> Result<()> {
    let header = &bitstream.header;
    out!(
        "image:     {}x{}, {} source channel(s)",
        header.width,
        header.height,
        header.channels
    );
    out!(
        "model:     {} (quality {}, fingerprint {})",
        header.model_name,
        header.quality,
        header.model_fingerprint
    );
    if let Some(step) = header.quantization_step {
        out!(
            "rate:      quantisation step {} (quality {:.3})",
            step.get(),
            ocular::quality_of_step(step)
        );
    }
    if let Some(alpha) = header.observer_mix {
        out!(
            "observer:  mix {} (0: human, {}: machine, 1: the classifier alone)",
            alpha.get(),
            ObserverMix::MACHINE.get()
        );
    }
    if let Some(w) = header.shrinkage {
        out!(
            "decoder:   shrinkage {:.3} (latents moved that far toward their prior's means)",
            w.get()
        );
    }
    let (y, z) = (header.y_shape, header.z_shape);
    out!(
        "latent y:  {}x{}x{}, {} bytes",
        y.channels,
        y.height,
        y.width,
        bitstream.y_stream.len()
    );
    out!(
        "latent z:  {}x{}x{}, {} bytes",
        z.channels,
        z.height,
        z.width,
        bitstream.z_stream.len()
    );
    out!(
        "overhead:  {} bytes (header, lengths, CRC)",
        bitstream.overhead_bytes()
    );
    Ok(())
}

fn run_roundtrip(args: RoundtripArgs) -> Result<()> {
    let (model, rate) = args.model.load()?;
    let model = args.refine.model(model)?;
    let limits = args.size.limits();
    let image = ocular::open_image(&args.input, &limits)?;
    let (width, height) = (image.width(), image.height());
    let start = Instant::now();
    let encoder = encoder_at(&model, rate).with_limits(limits.clone());
    let bytes = refining(encoder, args.refine.steps)?.encode(&image)?;
    let encode_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let decoded = Decoder::new(&model).with_limits(limits).decode(&bytes)?;
    let decode_seconds = start.elapsed().as_secs_f64();
    let quality = ocular::metrics::measure(&image.to_rgb8(), &decoded.to_rgb8());
    out!("image:    {} ({width}x{height})", args.input.display());
    out!(
        "model:    {} ({}-trained, quality {})",
        model.name(),
        model.distortion(),
        rate.map_or(model.quality().to_string(), |q| q.to_string())
    );
    out!(
        "size:     {} bytes, {:.4} bpp",
        bytes.len(),
        bits_per_pixel(bytes.len(), width, height)
    );
    out!("PSNR:     {:.2} dB (RGB)", quality.psnr);
    match (quality.ms_ssim, quality.ms_ssim_db()) {
        (Some(ms_ssim), Some(db)) => out!("MS-SSIM:  {ms_ssim:.4} ({db:.2} dB)"),
        _ => out!("MS-SSIM:  n/a (image side below 161 px, or ocular built without `torch`)"),
    }
    out!("time:     encode {encode_seconds:.2} s, decode {decode_seconds:.2} s");
    if let Some(output) = &args.output {
        decoded
            .save(output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        out!("decoded:  {}", output.display());
    }
    Ok(())
}

#[cfg(feature = "torch")]
fn run_eval(args: EvalArgs) -> Result<()> {
    use ocular_cli::eval::{evaluate_keeping, EvalConfig};
    if let Some(threads) = args.threads {
        train::set_threads(threads);
    }
    if let Some(path) = &args.from_json {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: ocular_cli::eval::EvalReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an `ocular eval --json` report", path.display()))?;
        return write_eval_outputs(&report, &args);
    }
    // Before any work, so missing weights fail at once.
    let perceptual = args.perceptual.then(perceptual_net).transpose()?;
    let mut images = train::image_files(&args.data)?;
    if let Some(limit) = args.limit {
        images.truncate(limit);
    }
    if images.is_empty() {
        bail!("no images found in {}", args.data.display());
    }
    let models = eval_models(&args)?;
    let mut config = EvalConfig::new(images, models);
    config.baselines = args.against.clone();
    config.progress = !args.quiet;
    config.refine_steps = args.refine.steps;
    config.perceptual = perceptual;
    if args.html.html.is_some() {
        config.keep_pictures = args.html.html_images;
    }
    let evaluation = evaluate_keeping(&config)?;
    write_eval_outputs(&evaluation.report, &args)?;
    if let Some(path) = &args.html.html {
        let options = args.html.options();
        let summary = evaluation
            .report
            .write_html(&evaluation.pictures, path, &options)?;
        html_written("eval", path, &summary);
    }
    Ok(())
}

/// The models `eval` codes with: built-in rate points (`--quality`), each `--model` at each of
/// its rates and realism settings, else every built-in model; refining over views if asked.
#[cfg(feature = "torch")]
fn eval_models(args: &EvalArgs) -> Result<Vec<ocular_cli::eval::EvalModel>> {
    use ocular_cli::eval::EvalModel;
    let mut models = Vec::new();
    for &quality in &args.quality {
        models.push(EvalModel::new(Model::builtin_quality(quality)?));
    }
    for spec in &args.model {
        let model = model_file_or_builtin(spec)?;
        let rates = match model.quality_range() {
            None => vec![ocular_cli::eval::EvalRate::Model],
            Some(_) => variable_rates(&args.at_quality, &args.at_bpp),
        };
        if let Some(r) = args.realism.iter().find(|r| !(0.0..=1.0).contains(*r)) {
            bail!("--realism {r} is outside 0..=1");
        }
        if args.realism.iter().any(|&r| r > 0.0) && !model.has_realism_decoder() {
            bail!(
                "--realism: model '{}' has no realism decoder (its companion file NAME.realism.safetensors beside the model file)",
                model.name()
            );
        }
        for rate in rates {
            models.push(EvalModel::new(model_file_or_builtin(spec)?).at(rate));
            for &r in args.realism.iter().filter(|&&r| r > 0.0) {
                let variant = EvalModel::new(model_file_or_builtin(spec)?).at(rate);
                models.push(variant.with_realism(r));
            }
        }
    }
    if args.quality.is_empty() && args.model.is_empty() {
        for name in Model::builtin_names() {
            models.push(EvalModel::new(Model::builtin(name)?));
        }
    }
    if models.is_empty() {
        bail!("no model to evaluate: this build has no built-in models; pass --model FILE");
    }
    models
        .into_iter()
        .map(|m| {
            Ok(EvalModel {
                label: args.refine.label(&m.label),
                model: args.refine.model(m.model)?,
                ..m
            })
        })
        .collect()
}

#[cfg(feature = "torch")]
impl HtmlArgs {
    /// The size options of the page.
    fn options(&self) -> ocular_cli::html::HtmlOptions {
        ocular_cli::html::HtmlOptions {
            max_bytes: self.html_max_mb.saturating_mul(1_000_000),
            ..Default::default()
        }
    }
}

#[cfg(feature = "torch")]
/// Says on standard error what `--html` wrote.
fn html_written(command: &str, path: &Path, summary: &ocular_cli::html::PageSummary) {
    eprintln!(
        "{command}: wrote {} ({} comparison(s), {} left out for size; {} pictures in {}; {:.1} MB)",
        path.display(),
        summary.sections,
        summary.omitted,
        summary.pictures,
        summary.files_dir.display(),
        summary.bytes as f64 / 1e6
    );
}

#[cfg(feature = "torch")]
/// The network of `--perceptual`, or an error saying how to install its weights.
fn perceptual_net() -> Result<ocular::perceptual::PerceptualNet> {
    ocular::perceptual::PerceptualNet::load_default()
        .context("--perceptual needs EfficientNet-Lite1")
}

#[cfg(feature = "torch")]
fn write_eval_outputs(report: &ocular_cli::eval::EvalReport, args: &EvalArgs) -> Result<()> {
    args.outputs.write(
        report.table(),
        || report.to_csv(),
        || report.to_json(),
        |path| {
            let published: &[ocular_cli::eval::PublishedCurve] = if args.published_kodak {
                &ocular_cli::eval::PUBLISHED_KODAK
            } else {
                &[]
            };
            report.plot_svg_with(path, published)?;
            if report.has_perceptual() {
                let mut name = path.file_stem().unwrap_or_default().to_os_string();
                name.push("-perceptual.svg");
                report.plot_perceptual_svg(&path.with_file_name(name))?;
            }
            if report.has_perceptual() && report.has_realism() {
                let mut name = path.file_stem().unwrap_or_default().to_os_string();
                name.push("-tradeoff.svg");
                report.plot_tradeoff_svg(&path.with_file_name(name))?;
            }
            Ok(())
        },
    )
}

#[cfg(feature = "torch")]
fn write_bench_outputs(
    report: &ocular_cli::bench::BenchReport,
    outputs: &ReportOutputs,
) -> Result<()> {
    outputs.write(
        report.table(),
        || report.to_csv(),
        || report.to_json(),
        |path| Ok(report.plot_svg(path)?),
    )
}

#[cfg(feature = "torch")]
fn run_bench(command: BenchCommand) -> Result<()> {
    use ocular_cli::bench::{self, BenchReport};
    match command {
        BenchCommand::Merge(args) => {
            let reports = args
                .inputs
                .iter()
                .map(|path| BenchReport::read_csv(path))
                .collect::<Result<Vec<_>, _>>()?;
            write_bench_outputs(&bench::merge(reports)?, &args.outputs)
        }
        BenchCommand::Imagenet(args) => run_bench_imagenet(&args),
    }
}

#[cfg(feature = "torch")]
fn run_bench_imagenet(args: &BenchImagenetArgs) -> Result<()> {
    use ocular::observer::Synsets;
    use ocular_cli::bench::{self, BenchConfig};
    let shard = bench_shard(args)?;
    if let Some(threads) = args.threads {
        train::set_threads(threads);
    }
    let codecs = bench_codecs(args)?;
    let synsets = Synsets::load(&args.synsets)?;
    let images = bench::scan_folder(&args.data, &synsets)?;
    let judges = bench_judges(args)?;
    let mut config = BenchConfig::new(images, codecs, args.bpp.clone());
    config.limit = args.limit;
    config.shard = shard;
    config.progress = !args.quiet;
    config.refine_steps = args.refine.steps;
    if args.perceptual {
        config.perceptual = Some(perceptual_net()?);
    }
    if args.html.html.is_some() {
        config.keep_pictures = args.html.html_images;
    }
    let run = bench::run_keeping(&config, &judges)?;
    write_bench_outputs(&run.report, &args.outputs)?;
    if let Some(path) = &args.html.html {
        let summary =
            run.report
                .write_html(&run.pictures, Some(&synsets), path, &args.html.options())?;
        html_written("bench", path, &summary);
    }
    Ok(())
}

/// The shard of the images this run benches: `--shard I/N`, or the scheduler's with `auto`.
#[cfg(feature = "torch")]
fn bench_shard(args: &BenchImagenetArgs) -> Result<Option<ocular_cli::bench::Shard>> {
    Ok(match args.shard {
        Some(ShardArg::Fixed(shard)) => Some(shard),
        Some(ShardArg::Auto) => {
            let environment = std::env::vars().collect();
            let shard = ocular_cli::bench::Shard::from_scheduler(&environment)?;
            eprintln!("bench: shard {shard} (from the scheduler's environment)");
            Some(shard)
        }
        None => None,
    })
}

/// The codecs of `bench imagenet`: `--codecs`, ocular families from `--family` files or built
/// in, refining against `--refine-objective` and over `--refine-views` views if asked.
#[cfg(feature = "torch")]
fn bench_codecs(args: &BenchImagenetArgs) -> Result<Vec<ocular_cli::bench::BenchCodec>> {
    use ocular_cli::bench::{self, BenchCodec};
    let mut families = std::collections::HashMap::new();
    for spec in &args.family {
        let (name, files) = spec
            .split_once('=')
            .with_context(|| format!("--family {spec}: expected NAME=FILE[,FILE...]"))?;
        families.insert(
            name.to_string(),
            files.split(',').map(PathBuf::from).collect::<Vec<_>>(),
        );
    }
    let mut resolve = |family: &str| -> Result<Vec<Model>, ocular::Error> {
        match families.get(family) {
            Some(files) => files.iter().map(|path| Model::load(path)).collect(),
            None => bench::builtin_family(family),
        }
    };
    let mut codecs = args
        .codecs
        .iter()
        .map(|spec| BenchCodec::parse(spec, &mut resolve))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(objective) = &args.refine_objective {
        if args.refine.steps == 0 {
            bail!("--refine-objective needs --refine N (N > 0)");
        }
        codecs = codecs
            .into_iter()
            .map(|codec| refining_against(codec, objective))
            .collect();
    }
    codecs
        .into_iter()
        .map(|codec| refining_over_views(codec, &args.refine))
        .collect()
}

#[cfg(feature = "torch")]
/// The judges of `bench imagenet`: `--observer-torchscript FILE` alone, else `--judges`.
fn bench_judges(args: &BenchImagenetArgs) -> Result<Vec<ocular_cli::bench::Judge>> {
    use ocular_cli::bench::{Judge, JudgeSpec};
    let specs = match &args.observer_torchscript {
        Some(path) => vec![JudgeSpec::TorchScript(path.clone())],
        None => args.judges.clone(),
    };
    specs
        .iter()
        .map(|spec| Ok(Judge::load(spec, args.weights.as_deref())?))
        .collect()
}

#[cfg(feature = "torch")]
fn run_classify(args: ClassifyArgs) -> Result<()> {
    use ocular::observer::{load_image, load_observer, preprocess, top_k, Synsets};
    let classifier = load_observer(
        args.observer_torchscript.as_deref(),
        args.weights.as_deref(),
    )?;
    let synsets = match Synsets::load(&args.synsets) {
        Ok(synsets) => Some(synsets),
        Err(error) => {
            eprintln!("note: no class names ({error}); printing class indices");
            None
        }
    };
    for path in &args.images {
        let image = load_image(path)?;
        let logits = classifier.observe_logits(&preprocess(&image)?)?;
        out!("{}:", path.display());
        for (rank, (class, probability)) in
            top_k(&logits, args.top)?.remove(0).into_iter().enumerate()
        {
            let label = synsets
                .as_ref()
                .map(|s| {
                    format!(
                        "{} {}",
                        s.wnid(class).unwrap_or("?"),
                        s.name(class).unwrap_or("?")
                    )
                })
                .unwrap_or_default();
            out!(
                "  {}. {:>6.2}%  {class:>4}  {label}",
                rank + 1,
                probability * 100.0
            );
        }
    }
    Ok(())
}

fn run_models(args: ModelsArgs) -> Result<()> {
    if let Some(spec) = args.model {
        let model = model_file_or_builtin(&spec)?;
        out!("fingerprint: {}", model.fingerprint());
        out!("{}", model.description_json());
        return Ok(());
    }
    let names: Vec<&str> = Model::builtin_names().collect();
    if names.is_empty() {
        out!("no built-in models in this build; use --model FILE (train one with `ocular train`)");
    }
    out!(
        "{:<12} {:>7} {:<12} {:>9} {:>8} {:>16}  notes",
        "name",
        "quality",
        "trained",
        "lambda",
        "steps",
        "fingerprint"
    );
    // The families `--observer human` and `--observer machine` select (with --bpp).
    let chosen_by: Vec<(&str, &str)> = ["human", "machine"]
        .into_iter()
        .flat_map(|observer| {
            let family = Model::builtin_observer_family_names(observer).unwrap_or_default();
            family.into_iter().map(move |name| (name, observer))
        })
        .collect();
    for name in names {
        let model = Model::builtin(name)?;
        let quality = match model.quality_range() {
            Some((min, max)) => format!("{min}..{max}"),
            None => model.quality().to_string(),
        };
        let mut notes = Vec::new();
        if name == ocular::DEFAULT_MODEL {
            notes.push("the default");
        }
        if model.has_realism_decoder() {
            notes.push("realism decoder (decode --realism)");
        }
        let distortion = model.distortion();
        let observer = match chosen_by.iter().find(|(member, _)| *member == name) {
            Some((_, observer)) => Some(*observer),
            None => distortion.strip_prefix("observer-"),
        };
        let observer_note = observer.map(|observer| format!("--observer {observer} (with --bpp)"));
        notes.extend(observer_note.as_deref());
        out!(
            "{:<12} {:>7} {:<12} {:>9} {:>8} {:>16}  {}",
            model.name(),
            quality,
            distortion,
            model.lambda(),
            model.training_steps(),
            model.fingerprint().to_string(),
            notes.join(", ")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Encode(args) => run_encode(args),
        Command::Decode(args) => run_decode(args),
        Command::Info(args) => run_info(args),
        Command::Roundtrip(args) => run_roundtrip(args),
        Command::Models(args) => run_models(args),
        #[cfg(feature = "torch")]
        Command::Eval(args) => run_eval(args),
        #[cfg(feature = "torch")]
        Command::Classify(args) => run_classify(args),
        #[cfg(feature = "torch")]
        Command::Bench(command) => run_bench(command),
        #[cfg(feature = "torch")]
        Command::Train(args) => run_train(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (e.g. `| head`): nothing left to say.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
