//! Training: `loss = bpp + lambda * distortion` on random crops of a folder of images, with
//! checkpoints, resumption, periodic validation by actual coding, and a CSV log.
//!
//! The distortion is computed by a [`DistortionMeasure`] built once per run; for the observer
//! distortion it loads the frozen classifier once: a user's TorchScript module
//! ([`TrainConfig::observer_torchscript`]), else the built-in classifier from
//! [`TrainConfig::observer_weights`] or [`observer::default_weights_path`].

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::hyperprior::{
    is_mix_variable, HyperpriorConfig, MeanScaleHyperprior, MIX_GROUP, Y_DOWNSAMPLING,
};
use crate::imaging::{mse, pad_to_multiple, rgb_to_tensor};
use crate::layers::ComputePrecision;
use crate::losses::{psnr, Distortion, DistortionMeasure, ObserverDistortion};
use crate::model_file::{
    serialize_model, CodecModel, ModelInfo, TrainingSummary, MODEL_FORMAT_VERSION,
};
use crate::msssim::{ms_ssim, MIN_SIDE};
use crate::observer;
use crate::rate::{lambda_at, QualityRange, REFERENCE_QUALITY};
use crate::ModelError;
use ocular_entropy::QuantizationStep;

/// Everything a training run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Folder of training images (searched recursively).
    pub data: PathBuf,
    /// Folder of validation images (e.g. Kodak), coded for real every `validate_every` steps.
    pub validation: Option<PathBuf>,
    /// Where the finished model file goes.
    pub output: PathBuf,
    /// Folder for the checkpoint, its state and the CSV logs.
    pub run_dir: PathBuf,
    /// Model name written into the model file (e.g. `mse-q3`).
    pub name: String,
    /// Rate point within the model's family.
    pub quality: u8,
    /// Network shape.
    pub network: HyperpriorConfig,
    /// Distortion term.
    pub distortion: Distortion,
    /// Weights of the observer classifier (safetensors, as `scripts/setup-observer.sh` writes
    /// them), loaded once when the distortion needs the classifier. `None`:
    /// [`observer::default_weights_path`].
    #[serde(default)]
    pub observer_weights: Option<PathBuf>,
    /// A user's TorchScript observer (contract: [`observer::TorchScriptObserver`]) used instead
    /// of the built-in classifier; its feature maps (or, without any, its logits) are compared.
    #[serde(default)]
    pub observer_torchscript: Option<PathBuf>,
    /// Rate-distortion trade-off.
    pub lambda: f64,
    /// Total optimiser steps.
    pub steps: u64,
    /// Optional wall-clock budget in seconds over all sessions of this run; the learning-rate
    /// schedule follows whichever of steps and time is further along.
    pub time_budget_seconds: Option<f64>,
    /// Images per step.
    pub batch_size: i64,
    /// Side of the square random crops.
    pub crop_size: i64,
    /// Peak learning rate (Adam).
    pub learning_rate: f64,
    /// Learning rate of the entropy bottleneck's quantiles (auxiliary loss).
    pub aux_learning_rate: f64,
    /// Gradient-norm clipping threshold.
    pub clip_norm: f64,
    /// Convolution precision while training.
    pub precision: ComputePrecision,
    /// Seconds between checkpoints.
    pub checkpoint_seconds: u64,
    /// Steps between validations (0: only at the end).
    pub validate_every: u64,
    /// Model file or run checkpoint to initialise from (same network shape), e.g. a
    /// neighbouring rate point, or a long run's checkpoint to decay.
    pub init_from: Option<PathBuf>,
    /// Random seed.
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
    /// Continue from the checkpoint in `run_dir`. Without it, a `run_dir` that holds a checkpoint
    /// is refused, so a run is never continued (or overwritten) by accident.
    pub resume: bool,
    /// Train one network for this range of qualities ([`crate::rate`]): every step draws a
    /// quality, codes `y` on its step and weighs the distortion by its lambda (`lambda` is the
    /// reference at quality 5). `None`: a fixed-rate model at `lambda`.
    #[serde(default)]
    pub variable_rate: Option<QualityRange>,
    /// Qualities a variable-rate model is validated at (each a full pass over the validation
    /// folder).
    #[serde(default)]
    pub validation_qualities: Vec<f32>,
    /// Warmup-stable-decay schedule: the learning rate holds until the last `decay_steps`
    /// steps of `steps` and decays (cosine, to 2%) over them, so a long run holds a constant
    /// rate and any checkpoint can be given a short decay of its own (`--init` it with
    /// `steps = decay_steps`). `None`: hold for 60% of the run (steps or time), then decay.
    #[serde(default)]
    pub decay_steps: Option<u64>,
    /// Steps over which the learning rate ramps up linearly at the start of every session
    /// (Adam's moments are not checkpointed, so a resumed run re-warms them).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Variable rate only: divides each step's loss by a running mean of the loss at its
    /// quality ([`LossBalance`]), so every quality moves the shared weights by a gradient of
    /// the same size whatever its loss's scale.
    #[serde(default)]
    pub balance_qualities: bool,
    /// Observer distortion only: one network for every observer mix. The network is
    /// conditioned on `alpha` ([`MeanScaleHyperprior::with_observer_mix`]) and every step
    /// draws `alpha` uniformly from [0, 1]; the distortion's own `alpha` is ignored, its weights
    /// and layers apply. Validated at `alpha` 0 and 0.5.
    #[serde(default)]
    pub observer_mix: bool,
    /// The conditioning's learning rate as a multiple of `learning_rate` (observer mix only).
    /// Its 13 vectors start at zero beside a trained network: at the network's own rate they
    /// hardly moved (at most 0.02 after 1,600 steps at 5e-5, the mixes 0 and 0.5 coding alike;
    /// docs/results.md).
    #[serde(default = "default_mix_learning_rate_factor")]
    pub mix_learning_rate_factor: f64,
}

fn default_mix_learning_rate_factor() -> f64 {
    DEFAULT_MIX_LEARNING_RATE_FACTOR
}

/// [`TrainConfig::mix_learning_rate_factor`] by default.
pub const DEFAULT_MIX_LEARNING_RATE_FACTOR: f64 = 40.0;

impl TrainConfig {
    /// A configuration with the defaults measured to work on this CPU budget.
    pub fn new(data: PathBuf, output: PathBuf, run_dir: PathBuf) -> Self {
        Self {
            data,
            validation: None,
            output,
            run_dir,
            name: "custom".into(),
            quality: 1,
            network: HyperpriorConfig::default(),
            distortion: Distortion::Mse,
            observer_weights: None,
            observer_torchscript: None,
            lambda: 0.0067,
            steps: 10_000,
            time_budget_seconds: None,
            batch_size: 8,
            crop_size: 128,
            learning_rate: 5e-4,
            aux_learning_rate: 1e-3,
            clip_norm: 1.0,
            precision: ComputePrecision::F32,
            checkpoint_seconds: 300,
            validate_every: 2000,
            init_from: None,
            seed: 0,
            progress: true,
            resume: false,
            variable_rate: None,
            validation_qualities: Vec::new(),
            decay_steps: None,
            warmup_steps: 200,
            balance_qualities: false,
            observer_mix: false,
            mix_learning_rate_factor: DEFAULT_MIX_LEARNING_RATE_FACTOR,
        }
    }
}

/// Progress of a run, saved next to its checkpoint as `state.json`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RunState {
    pub(crate) step: u64,
    /// Wall-clock seconds over all sessions.
    pub(crate) seconds: f64,
    /// CPU time of the training processes (user + system, all threads), over all sessions.
    #[serde(default)]
    pub(crate) cpu_seconds: f64,
}

impl RunState {
    pub(crate) fn read(path: &Path) -> Result<Self, ModelError> {
        let text = fs::read_to_string(path).map_err(io_error(path))?;
        serde_json::from_str(&text)
            .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", path.display())))
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), ModelError> {
        let json = serde_json::to_string(self).unwrap_or_default();
        fs::write(path, json).map_err(io_error(path))
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainOutcome {
    /// All steps (or the time budget) done; the model file is written.
    Finished {
        /// Steps taken in total.
        steps: u64,
        /// Validation at the end, if a validation folder was given.
        validation: Option<Validation>,
    },
    /// Stopped by Ctrl-C; the checkpoint is saved and `--resume` continues.
    Interrupted {
        /// Steps taken so far.
        steps: u64,
    },
}

/// Mean figures over a validation folder, from actual coding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// Bits per pixel of the coded streams.
    pub bpp: f64,
    /// RGB PSNR in dB.
    pub psnr: f64,
    /// MS-SSIM (NaN if the images are too small).
    pub ms_ssim: f64,
    /// Bits per pixel the model's likelihoods predict for the same latents. Coding should land
    /// within ~1% above it; more means the integer tables miss mass (e.g. unfitted quantiles).
    pub estimated_bpp: f64,
}

impl Validation {
    const CSV_HEADER: &'static str =
        "step,seconds,cpu_seconds,quality,bpp,estimated_bpp,psnr,ms_ssim";
    /// A run for every observer mix adds the mix validated at.
    const CSV_HEADER_MIXED: &'static str =
        "step,seconds,cpu_seconds,quality,bpp,estimated_bpp,psnr,ms_ssim,alpha";

    fn csv_row(&self, state: &RunState, quality: f32, alpha: Option<f64>) -> String {
        let row = format!(
            "{},{:.1},{:.1},{quality},{:.5},{:.5},{:.4},{:.6}",
            state.step,
            state.seconds,
            state.cpu_seconds,
            self.bpp,
            self.estimated_bpp,
            self.psnr,
            self.ms_ssim
        );
        match alpha {
            Some(alpha) => format!("{row},{alpha}"),
            None => row,
        }
    }

    /// One line for people: bpp (coded and predicted), PSNR, MS-SSIM.
    pub fn summary(&self) -> String {
        format!(
            "{:.4} bpp (likelihoods predict {:.4}), {:.2} dB PSNR, MS-SSIM {:.4}",
            self.bpp, self.estimated_bpp, self.psnr, self.ms_ssim
        )
    }
}

pub(crate) fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        // If the embedding program already handles Ctrl-C this fails; training then just can't
        // be interrupted cleanly, which is not worth failing for.
        let _ = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

/// Runs (or resumes) training as configured. Resumes automatically when `run_dir` holds a
/// checkpoint of the same run.
///
/// # Errors
/// [`ModelError::Io`] for unreadable data or unwritable outputs, [`ModelError::NoImages`] if the
/// data folder has no usable image, [`ModelError::Shape`] for crops too small for MS-SSIM (the
/// `ms-ssim` distortion and the observer distortion with `alpha < 1` need at least 192),
/// [`ModelError::InvalidModel`] for invalid observer parameters or missing or unreadable
/// observer weights.
pub fn train(config: &TrainConfig) -> Result<TrainOutcome, ModelError> {
    check_observer_mix(config)?;
    check_crop_size(config)?;
    // Before anything is written or loaded: bad parameters and missing weights fail fast.
    let measure = distortion_measure(config)?;
    let mut run = Run::open(config)?;
    let dataset = Dataset::load(&config.data, config.crop_size, config.progress)?;
    let validation_images = match &config.validation {
        Some(dir) => load_validation(dir)?,
        None => Vec::new(),
    };
    let header = if config.observer_mix {
        Validation::CSV_HEADER_MIXED
    } else {
        Validation::CSV_HEADER
    };
    let mut validation_log = CsvLog::open(&config.run_dir.join("validation.csv"), header)?;
    let finished = run.optimise(config, &measure, &dataset, |run, reporter| {
        run.validate(config, &validation_images, &mut validation_log, |line| {
            reporter.line(&format!("step {} {line}", run.state.step))
        })
        .map(|_| ())
    })?;
    if !finished {
        return Ok(TrainOutcome::Interrupted {
            steps: run.state.step,
        });
    }
    run.write_model(config)?;
    let validation = run.validate(config, &validation_images, &mut validation_log, |line| {
        log(config, &format!("final validation {line}"))
    })?;
    Ok(TrainOutcome::Finished {
        steps: run.state.step,
        validation,
    })
}

/// Crops must hold whole latents, and MS-SSIM's five scales.
fn check_crop_size(config: &TrainConfig) -> Result<(), ModelError> {
    if measured_distortion(config).needs_ms_ssim() && config.crop_size < MIN_SIDE {
        return Err(ModelError::Shape(format!(
            "{} training needs --crop-size >= {} (MS-SSIM needs both sides >= {MIN_SIDE})",
            config.distortion,
            (MIN_SIDE + Z_MULTIPLE - 1) / Z_MULTIPLE * Z_MULTIPLE
        )));
    }
    if config.crop_size < Z_MULTIPLE || config.crop_size % Z_MULTIPLE != 0 {
        return Err(ModelError::Shape(format!(
            "--crop-size must be a multiple of {Z_MULTIPLE}"
        )));
    }
    Ok(())
}

/// The observer mixes a run for every mix is validated at: the person's end, and the mix of
/// the separate `observer-0.5` networks it is measured against.
const MIX_VALIDATION_ALPHAS: [f64; 2] = [0.0, 0.5];

/// A run for every observer mix needs the observer distortion.
fn check_observer_mix(config: &TrainConfig) -> Result<(), ModelError> {
    if config.observer_mix && !matches!(config.distortion, Distortion::Observer(_)) {
        return Err(ModelError::InvalidModel(format!(
            "a network for every observer mix trains with the observer distortion, not {}",
            config.distortion
        )));
    }
    Ok(())
}

/// The distortion the run measures: its own, or for a run over every observer mix that
/// distortion at `alpha = 0.5`, which needs both MS-SSIM and the classifier, as the mixes
/// drawn do (its `alpha` is replaced at each step).
fn measured_distortion(config: &TrainConfig) -> Distortion {
    match config.distortion {
        Distortion::Observer(observer) if config.observer_mix => {
            Distortion::Observer(ObserverDistortion {
                alpha: 0.5,
                ..observer
            })
        }
        other => other,
    }
}

/// The run's distortion, its classifier (a user's TorchScript module or the built-in one)
/// loaded once when it needs one.
fn distortion_measure(config: &TrainConfig) -> Result<DistortionMeasure, ModelError> {
    let distortion = measured_distortion(config);
    match &config.observer_torchscript {
        Some(path) if distortion.needs_classifier() => DistortionMeasure::with_observer(
            distortion,
            Some(Box::new(observer::TorchScriptObserver::load(path)?)),
        ),
        _ => DistortionMeasure::new(
            distortion,
            &config
                .observer_weights
                .clone()
                .unwrap_or_else(observer::default_weights_path),
        ),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.display().to_string();
    move |e| ModelError::Io(path, e)
}

/// A training run: the network, its variables and how far it has come, with the paths of its
/// checkpoint.
struct Run {
    variables: nn::VarStore,
    network: MeanScaleHyperprior,
    state: RunState,
    checkpoint_path: PathBuf,
    state_path: PathBuf,
    /// Per-quality loss means of this session (`balance_qualities`).
    balance: LossBalance,
}

impl Run {
    /// Creates the run folder and the network: resumed from the folder's checkpoint, else
    /// initialised from `init_from`, else fresh. Records the configuration as `config.json`.
    fn open(config: &TrainConfig) -> Result<Self, ModelError> {
        fs::create_dir_all(&config.run_dir).map_err(io_error(&config.run_dir))?;
        let variables = nn::VarStore::new(Device::Cpu);
        let mut network = if config.observer_mix {
            MeanScaleHyperprior::with_observer_mix(&variables.root(), config.network)
        } else {
            MeanScaleHyperprior::new(&variables.root(), config.network)
        };
        network.set_precision(config.precision);
        let mut run = Self {
            variables,
            network,
            state: RunState::default(),
            checkpoint_path: config.run_dir.join("checkpoint.safetensors"),
            state_path: config.run_dir.join("state.json"),
            balance: LossBalance::default(),
        };
        let has_checkpoint = run.checkpoint_path.exists() && run.state_path.exists();
        if has_checkpoint && !config.resume {
            return Err(ModelError::RunExists(config.run_dir.display().to_string()));
        }
        if has_checkpoint {
            run.variables.load(&run.checkpoint_path)?;
            run.state = RunState::read(&run.state_path)?;
            let (step, seconds) = (run.state.step, run.state.seconds);
            log(
                config,
                &format!(
                    "resuming {} at step {step} ({seconds:.0} s trained)",
                    config.name
                ),
            );
        } else if let Some(init) = &config.init_from {
            initialise(&mut run.variables, init, config.network)?;
            log(config, &format!("initialised from {}", init.display()));
        }
        fs::write(
            config.run_dir.join("config.json"),
            serde_json::to_string_pretty(config).unwrap_or_default(),
        )
        .map_err(io_error(&config.run_dir))?;
        Ok(run)
    }

    fn save_checkpoint(&self) -> Result<(), ModelError> {
        save_variables(&self.variables, &self.checkpoint_path)?;
        self.state.write(&self.state_path)
    }

    /// Optimises until the run's steps or time budget are done (`true`) or Ctrl-C (`false`),
    /// checkpointing every `checkpoint_seconds`, logging `train.csv` every 10 steps and calling
    /// `validate` every `validate_every` steps.
    fn optimise(
        &mut self,
        config: &TrainConfig,
        measure: &DistortionMeasure,
        dataset: &Dataset,
        mut validate: impl FnMut(&Self, &Reporter) -> Result<(), ModelError>,
    ) -> Result<bool, ModelError> {
        let mut optimizer = nn::Adam::default().build(&self.variables, config.learning_rate)?;
        let mut rng = StdRng::seed_from_u64(
            config.seed ^ self.state.step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        tch::manual_seed((config.seed ^ self.state.step) as i64);
        let interrupted = interrupt_flag();
        let mut log = StepLog::open(config)?;
        let reporter = Reporter::new(config.progress, config.steps, self.state.step);
        let clock = SessionClock::start(&self.state);
        let mut last_checkpoint = Instant::now();
        while !finished(config, &self.state) {
            if interrupted.load(Ordering::SeqCst) {
                self.save_checkpoint()?;
                reporter
                    .finish("interrupted: checkpoint saved, run the same command again to resume");
                return Ok(false);
            }
            let lr = learning_rate(config, &self.state, clock.first_step);
            optimizer.set_lr_group(0, lr);
            optimizer.set_lr_group(1, config.aux_learning_rate);
            if config.observer_mix {
                optimizer.set_lr_group(MIX_GROUP, lr * config.mix_learning_rate_factor);
            }
            let values = self.step(config, measure, dataset, &mut optimizer, &mut rng)?;
            clock.update(&mut self.state);
            log.add(values);
            if self.state.step.is_multiple_of(10) {
                let message = log.write(&self.state, lr)?;
                reporter.step(self.state.step, config.steps, &message);
            }
            if last_checkpoint.elapsed().as_secs() >= config.checkpoint_seconds {
                self.save_checkpoint()?;
                last_checkpoint = Instant::now();
            }
            let due =
                config.validate_every > 0 && self.state.step.is_multiple_of(config.validate_every);
            if due && !finished(config, &self.state) {
                validate(self, &reporter)?;
            }
        }
        self.save_checkpoint()?;
        reporter.finish("training done");
        Ok(true)
    }

    /// One optimiser step on a random batch at a random rate point (a variable-rate model) or
    /// the model's own; returns the figures `train.csv` logs ([`StepLog`]).
    fn step(
        &mut self,
        config: &TrainConfig,
        measure: &DistortionMeasure,
        dataset: &Dataset,
        optimizer: &mut nn::Optimizer,
        rng: &mut StdRng,
    ) -> Result<[f64; 7], ModelError> {
        let batch = dataset.batch(config.batch_size, config.crop_size, rng);
        let (quality, step, lambda) = rate_point(config, rng)?;
        let alpha = if config.observer_mix {
            rng.gen_range(0.0..=1.0)
        } else {
            0.0
        };
        let output = self.network.forward_mixed(&batch, step, alpha, true);
        let bpp = output.bits_per_pixel(config.crop_size * config.crop_size);
        let terms = if config.observer_mix {
            measure.compute_mixed(&batch, &output.x_hat, alpha)?
        } else {
            measure.compute(&batch, &output.x_hat)?
        };
        // Δ = 1 for a fixed-rate model; for a variable-rate one it evens out the loss's size
        // across qualities (crate::rate).
        let loss = (&bpp + &terms.total * lambda) * f64::from(step.get());
        let weight = match config.variable_rate {
            Some(range) if config.balance_qualities => {
                self.balance
                    .weight(quality, range.min, loss.double_value(&[]))
            }
            _ => 1.0,
        };
        let aux = self.network.aux_loss();
        optimizer.zero_grad();
        // The auxiliary loss only reaches the quantiles (group 1), the main loss everything else.
        (&loss * weight + &aux).backward();
        optimizer.clip_grad_norm(config.clip_norm);
        optimizer.step();
        self.state.step += 1;
        let batch_mse = tch::no_grad(|| mse(&output.x_hat.clamp(0.0, 1.0), &batch));
        let value = |t: &Option<Tensor>| t.as_ref().map_or(f64::NAN, |t| t.double_value(&[]));
        Ok([
            loss.double_value(&[]),
            bpp.double_value(&[]),
            terms.total.double_value(&[]),
            psnr(batch_mse),
            aux.double_value(&[]),
            value(&terms.ms_ssim),
            value(&terms.features),
        ])
    }

    /// Codes the validation images for real at every validation point, appends the rows to
    /// `log` and hands `report` a line per point; returns the first point's figures.
    fn validate(
        &self,
        config: &TrainConfig,
        images: &[Tensor],
        log: &mut CsvLog,
        mut report: impl FnMut(&str),
    ) -> Result<Option<Validation>, ModelError> {
        let mut first = None;
        if images.is_empty() {
            return Ok(first);
        }
        let alphas: &[f64] = if config.observer_mix {
            &MIX_VALIDATION_ALPHAS
        } else {
            &[0.0]
        };
        for &alpha in alphas {
            for (quality, step) in validation_points(config)? {
                let v = validate_mixed(&self.network, images, step, alpha)?;
                let mix = config.observer_mix.then_some(alpha);
                log.row(&v.csv_row(&self.state, quality, mix))?;
                let at = match mix {
                    Some(alpha) => format!("(quality {quality}, alpha {alpha})"),
                    None => format!("(quality {quality})"),
                };
                report(&format!("{at}: {}", v.summary()));
                first.get_or_insert(v);
            }
        }
        Ok(first)
    }

    /// Writes the model file (fp16 weights and coding tables); the network computes in f32
    /// from here on, on the rounded weights, so a validation after this measures the shipped
    /// model.
    fn write_model(&mut self, config: &TrainConfig) -> Result<(), ModelError> {
        self.network.set_precision(ComputePrecision::F32);
        let bytes = serialize_model(
            &model_info(config, &self.state),
            &self.variables,
            &self.network,
        )?;
        if let Some(parent) = config.output.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        fs::write(&config.output, &bytes).map_err(io_error(&config.output))?;
        log(
            config,
            &format!("wrote {} ({} bytes)", config.output.display(), bytes.len()),
        );
        Ok(())
    }
}

/// Whether the run has had all its steps or its time budget.
fn finished(config: &TrainConfig, state: &RunState) -> bool {
    state.step >= config.steps
        || config
            .time_budget_seconds
            .is_some_and(|budget| state.seconds >= budget)
}

/// The learning rate of the next step: the session's warm-up times the schedule, either
/// warmup-stable-decay over `decay_steps` or a hold-then-cosine over steps or time, whichever
/// is further along.
fn learning_rate(config: &TrainConfig, state: &RunState, session_first_step: u64) -> f64 {
    let warmup = warmup_factor(config.warmup_steps, state.step - session_first_step);
    let peak = config.learning_rate * warmup;
    if let Some(decay) = config.decay_steps {
        return wsd_learning_rate(peak, state.step, config.steps, decay);
    }
    let by_steps = state.step as f64 / config.steps.max(1) as f64;
    let by_time = config
        .time_budget_seconds
        .map_or(0.0, |budget| state.seconds / budget);
    learning_rate_at(peak, by_steps.max(by_time))
}

/// What the model file records about the network and its training.
fn model_info(config: &TrainConfig, state: &RunState) -> ModelInfo {
    ModelInfo {
        format_version: MODEL_FORMAT_VERSION,
        name: config.name.clone(),
        quality: config.quality,
        network: config.network,
        distortion: config.distortion,
        lambda: config.lambda,
        variable_rate: config.variable_rate,
        observer_mix: config.observer_mix,
        training: TrainingSummary {
            steps: state.step,
            seconds: state.seconds,
            batch_size: config.batch_size,
            crop_size: config.crop_size,
            learning_rate: config.learning_rate,
            dataset: config.data.display().to_string(),
            initialised_from: config.init_from.as_ref().map(|p| p.display().to_string()),
            observer: config
                .observer_torchscript
                .as_ref()
                .filter(|_| config.distortion.needs_classifier())
                .map(|p| format!("torchscript:{}", p.display())),
        },
    }
}

/// Wall-clock and CPU time of this session, added to what the run had before it.
pub(crate) struct SessionClock {
    started: Instant,
    cpu_started: f64,
    seconds_before: f64,
    cpu_before: f64,
    /// The run's step when the session began (each session re-warms the learning rate).
    pub(crate) first_step: u64,
}

impl SessionClock {
    pub(crate) fn start(state: &RunState) -> Self {
        Self {
            started: Instant::now(),
            cpu_started: process_cpu_seconds(),
            seconds_before: state.seconds,
            cpu_before: state.cpu_seconds,
            first_step: state.step,
        }
    }

    /// Brings `state`'s seconds and CPU seconds up to now.
    pub(crate) fn update(&self, state: &mut RunState) {
        state.seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
        state.cpu_seconds = self.cpu_before + process_cpu_seconds() - self.cpu_started;
    }
}

/// `train.csv`: the means of the last 10 steps' loss terms, and the progress line.
struct StepLog {
    csv: CsvLog,
    window: RunningMeans<7>,
    /// The observer distortion also logs its two unweighted terms (empty when not computed:
    /// alpha = 0 never runs the classifier, alpha = 1 never computes MS-SSIM).
    observer_terms: bool,
}

impl StepLog {
    fn open(config: &TrainConfig) -> Result<Self, ModelError> {
        let observer_terms = matches!(config.distortion, Distortion::Observer(_));
        let header = if observer_terms {
            "step,seconds,cpu_seconds,lr,loss,bpp,distortion,psnr,aux,one_minus_ms_ssim,features"
        } else {
            "step,seconds,cpu_seconds,lr,loss,bpp,distortion,psnr,aux"
        };
        Ok(Self {
            csv: CsvLog::open(&config.run_dir.join("train.csv"), header)?,
            window: RunningMeans::default(),
            observer_terms,
        })
    }

    fn add(&mut self, values: [f64; 7]) {
        self.window.add(values);
    }

    /// Writes the window's means as a row; returns the progress line.
    fn write(&mut self, state: &RunState, lr: f64) -> Result<String, ModelError> {
        let [loss, bpp, distortion, psnr, aux, ms_term, feature_term] = self.window.take();
        let mut row = format!(
            "{},{:.1},{:.1},{lr:.3e},{loss:.5},{bpp:.5},{distortion:.5},{psnr:.3},{aux:.3}",
            state.step, state.seconds, state.cpu_seconds
        );
        let mut message = format!("loss {loss:.4} bpp {bpp:.3} PSNR {psnr:.2} dB");
        if self.observer_terms {
            let cell = |v: f64| {
                if v.is_nan() {
                    String::new()
                } else {
                    format!("{v:.6}")
                }
            };
            row.push_str(&format!(",{},{}", cell(ms_term), cell(feature_term)));
            if !ms_term.is_nan() {
                message.push_str(&format!(" 1-MS-SSIM {ms_term:.4}"));
            }
            if !feature_term.is_nan() {
                message.push_str(&format!(" L_f {feature_term:.4}"));
            }
        }
        self.csv.row(&row)?;
        Ok(format!("{message} lr {lr:.2e}"))
    }
}

/// Copies the weights of `init` into `variables`: a model file (fp16 weights) or a run's
/// checkpoint (`checkpoint.safetensors`, f32, as the campaign commits them), e.g. to give a
/// checkpoint a decay branch of its own. A network with no more hidden channels (`N`) and no
/// more channels of `y` (`M`) than `network` is widened to it ([`crate::widen`]): the run starts
/// from what it computes.
///
/// # Errors
/// [`ModelError::Io`] if it cannot be read, [`ModelError::Shape`] for a network wider than this
/// one in `N` or `M`, [`ModelError::InvalidModel`] for anything else that does not fit.
fn initialise(
    variables: &mut nn::VarStore,
    init: &Path,
    network: HyperpriorConfig,
) -> Result<(), ModelError> {
    let bytes = fs::read(init).map_err(|e| ModelError::Io(init.display().to_string(), e))?;
    let source = init_network(&bytes, init)?;
    if source == network {
        return load_init(&bytes, init, variables);
    }
    if source.n > network.n || source.m > network.m {
        return Err(ModelError::Shape(format!(
            "the initial network {} has shape {source:?}, this run {network:?} (a network can \
             only be widened: more hidden channels or more channels of y)",
            init.display()
        )));
    }
    let has_mix = variables
        .variables()
        .keys()
        .any(|name| is_mix_variable(name));
    let mut narrow = nn::VarStore::new(variables.device());
    // Creating the narrow network registers its variables in `narrow`, for the copy below.
    let _narrow_network = if has_mix {
        MeanScaleHyperprior::with_observer_mix(&narrow.root(), source)
    } else {
        MeanScaleHyperprior::new(&narrow.root(), source)
    };
    load_init(&bytes, init, &mut narrow)?;
    crate::widen::widen_into(&narrow, variables)
}

/// The network shape of the model file or checkpoint `bytes`: a model file's description, or
/// the shapes of a checkpoint's first and last analysis layers.
fn init_network(bytes: &[u8], init: &Path) -> Result<HyperpriorConfig, ModelError> {
    if let Ok(info) = crate::model_file::read_info(bytes) {
        return Ok(info.network);
    }
    let invalid = |what: String| not_an_init(init, what);
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    let channels = |name: &str| -> Result<i64, ModelError> {
        let view = file
            .tensor(name)
            .map_err(|_| invalid(format!("no tensor {name}")))?;
        let channels = view.shape().first().copied().unwrap_or(0);
        i64::try_from(channels).map_err(|_| invalid(format!("tensor {name} too large")))
    };
    Ok(HyperpriorConfig {
        n: channels("g_a.0.bias")?,
        m: channels("g_a.6.bias")?,
    })
}

/// Copies the model file or checkpoint `bytes` into `variables`, a network of its shape.
fn load_init(bytes: &[u8], init: &Path, variables: &mut nn::VarStore) -> Result<(), ModelError> {
    if crate::model_file::read_info(bytes).is_err() {
        // No model description: a checkpoint, which names and shapes every variable (but the
        // observer-mix conditioning, when this network has it and the checkpoint's had not).
        return crate::model_file::load_tensors_but(bytes, variables, is_mix_variable)
            .map_err(|e| not_an_init(init, e.to_string()));
    }
    CodecModel::from_bytes(bytes)?.copy_weights_to(variables)
}

/// The error for an `--init` file that is neither a model file nor a checkpoint, and why.
fn not_an_init(init: &Path, why: String) -> ModelError {
    ModelError::InvalidModel(format!(
        "{}: neither a model file nor a training checkpoint ({why})",
        init.display()
    ))
}

/// Crops of the training set are multiples of this so every latent is whole.
const Z_MULTIPLE: i64 = 64;

/// The quality, quantisation step and lambda of one training step: the model's own for a
/// fixed-rate model, those of a quality drawn uniformly from the range of a variable-rate one.
fn rate_point(
    config: &TrainConfig,
    rng: &mut StdRng,
) -> Result<(f32, QuantizationStep, f64), ModelError> {
    match config.variable_rate {
        None => Ok((
            f32::from(config.quality),
            QuantizationStep::ONE,
            config.lambda,
        )),
        Some(range) => {
            let quality = rng.gen_range(range.min..=range.max);
            Ok((
                quality,
                range.step(quality)?,
                lambda_at(config.lambda, quality),
            ))
        }
    }
}

/// Evens out what each quality of a variable-rate run contributes to the shared weights.
///
/// The loss of a step at quality `q` is `L(q) = Δ(q) (R + λ(q) D)`; its size still varies
/// across the range, and Adam's moments, averaged over all the qualities drawn, then take
/// large steps for the qualities of small loss and small ones for the others. The balance
/// divides `L(q)` by `m(b)`, an exponential moving average (rate [`LossBalance::DECAY`]) of
/// the loss values of `q`'s bin `b` (bins one quality wide), held constant in the gradient:
/// `∇(L / m) = ∇L / m`, so every bin's gradient has about the same size. The balanced loss
/// has the minimisers of each quality's own objective; only their relative weight changes.
#[derive(Clone, Debug, Default)]
struct LossBalance {
    /// `m(b)` per bin, `None` until the bin's first step (which then weighs 1).
    means: Vec<Option<f64>>,
}

impl LossBalance {
    const DECAY: f64 = 0.99;

    /// The factor `1 / m(b)` for a step at `quality` whose loss is `loss`, after folding
    /// `loss` into `m(b)`; bins count from `min`, the range's lowest quality.
    fn weight(&mut self, quality: f32, min: f32, loss: f64) -> f64 {
        let bin = (quality - min).max(0.0).floor() as usize;
        if self.means.len() <= bin {
            self.means.resize(bin + 1, None);
        }
        let mean = match self.means[bin] {
            Some(mean) => Self::DECAY * mean + (1.0 - Self::DECAY) * loss,
            None => loss,
        };
        self.means[bin] = Some(mean);
        if mean > 0.0 && mean.is_finite() {
            1.0 / mean
        } else {
            1.0
        }
    }
}

/// The (quality, step) pairs a run is validated at: the model's quality and the unit step for
/// a fixed-rate model; `validation_qualities` (or the reference quality) for a variable-rate
/// one.
fn validation_points(config: &TrainConfig) -> Result<Vec<(f32, QuantizationStep)>, ModelError> {
    let Some(range) = config.variable_rate else {
        return Ok(vec![(f32::from(config.quality), QuantizationStep::ONE)]);
    };
    let qualities = if config.validation_qualities.is_empty() {
        vec![REFERENCE_QUALITY]
    } else {
        config.validation_qualities.clone()
    };
    qualities
        .into_iter()
        .map(|q| Ok((q, range.step(q)?)))
        .collect()
}

/// CPU time of this process so far (user + system, all threads), in seconds; 0 where the
/// platform cannot tell.
pub(crate) fn process_cpu_seconds() -> f64 {
    cpu_time::ProcessTime::try_now().map_or(0.0, |t| t.as_duration().as_secs_f64())
}

/// Linear ramp from `1 / warmup` to 1 over the first `warmup` steps of a session.
fn warmup_factor(warmup: u64, session_step: u64) -> f64 {
    if warmup == 0 {
        1.0
    } else {
        ((session_step + 1) as f64 / warmup as f64).min(1.0)
    }
}

/// Warmup-stable-decay: `peak` until the last `decay` of `total` steps, then a cosine decay to
/// 2% of it over them.
fn wsd_learning_rate(peak: f64, step: u64, total: u64, decay: u64) -> f64 {
    let start = total.saturating_sub(decay);
    if step < start || decay == 0 {
        return peak;
    }
    let t = ((step - start) as f64 / decay as f64).min(1.0);
    let floor = 0.02;
    peak * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Peak rate for the first 60% of training, then a cosine decay to 2% of it.
fn learning_rate_at(peak: f64, progress: f64) -> f64 {
    let progress = progress.clamp(0.0, 1.0);
    const HOLD: f64 = 0.6;
    if progress < HOLD {
        return peak;
    }
    let t = (progress - HOLD) / (1.0 - HOLD);
    let floor = 0.02;
    peak * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

fn log(config: &TrainConfig, message: &str) {
    if config.progress {
        eprintln!("{message}");
    }
}

/// Progress on a terminal as a bar; in a log file (e.g. under `nohup`) as a plain line every
/// [`Reporter::LOG_EVERY`] steps.
pub(crate) struct Reporter {
    bar: ProgressBar,
    plain: bool,
    started: Instant,
}

impl Reporter {
    const LOG_EVERY: u64 = 250;

    /// A reporter of a run of `steps` steps, at `position`; silent without `progress`.
    pub(crate) fn new(progress: bool, steps: u64, position: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if progress && terminal {
            let bar = ProgressBar::new(steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_position(position);
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            plain: progress && !terminal,
            started: Instant::now(),
        }
    }

    pub(crate) fn step(&self, step: u64, total: u64, message: &str) {
        self.bar.set_position(step);
        if self.plain && step.is_multiple_of(Self::LOG_EVERY) {
            let elapsed = self.started.elapsed().as_secs();
            eprintln!("step {step}/{total} ({elapsed} s this session): {message}");
        } else {
            self.bar.set_message(message.to_string());
        }
    }

    pub(crate) fn line(&self, message: &str) {
        if self.plain {
            eprintln!("{message}");
        } else {
            self.bar.println(message);
        }
    }

    pub(crate) fn finish(&self, message: &str) {
        self.bar.finish_with_message(message.to_string());
        if self.plain {
            eprintln!("{message}");
        }
    }
}

/// Saves `variables` to `path` (safetensors) by write-then-rename, so an interrupted save never
/// leaves a half checkpoint behind. tch picks the format by extension, so the partial file ends
/// in `.safetensors` too.
pub(crate) fn save_variables(variables: &nn::VarStore, path: &Path) -> Result<(), ModelError> {
    let partial = path.with_extension("partial.safetensors");
    variables.save(&partial)?;
    fs::rename(&partial, path).map_err(io_error(path))
}

/// Codes every validation image for real and measures it.
///
/// # Errors
/// As [`MeanScaleHyperprior::compress`].
pub fn validate(
    network: &MeanScaleHyperprior,
    images: &[Tensor],
) -> Result<Validation, ModelError> {
    validate_at(network, images, QuantizationStep::ONE)
}

/// [`validate`] with `y` coded on the grid of `step` (a variable-rate model's rate).
///
/// # Errors
/// As [`MeanScaleHyperprior::compress`].
pub fn validate_at(
    network: &MeanScaleHyperprior,
    images: &[Tensor],
    step: QuantizationStep,
) -> Result<Validation, ModelError> {
    validate_mixed(network, images, step, 0.0)
}

/// [`validate_at`] at the observer mix `alpha` (ignored by a network not conditioned on it).
///
/// # Errors
/// As [`validate_at`].
pub fn validate_mixed(
    network: &MeanScaleHyperprior,
    images: &[Tensor],
    step: QuantizationStep,
    alpha: f64,
) -> Result<Validation, ModelError> {
    let tables = network.build_tables()?;
    let (mut bpp, mut psnr_sum, mut ssim_sum, mut estimated) = (0.0, 0.0, 0.0, 0.0);
    for image in images {
        let size = image.size();
        let (height, width) = (size[2], size[3]);
        let padded = pad_to_multiple(image, Y_DOWNSAMPLING);
        let predicted = tch::no_grad(|| {
            network
                .forward_mixed(&padded, step, alpha, false)
                .bits_per_pixel(height * width)
        });
        estimated += predicted.double_value(&[]);
        let latents = network.compress_mixed(&padded, &tables, step, alpha)?;
        let decoded = network
            .decompress_mixed(&latents, &tables, alpha)?
            .narrow(2, 0, height)
            .narrow(3, 0, width);
        let decoded = (decoded * 255.0).round() / 255.0;
        let bytes = latents.y_stream.len() + latents.z_stream.len();
        bpp += bytes as f64 * 8.0 / (height * width) as f64;
        psnr_sum += psnr(mse(&decoded, image));
        ssim_sum += tch::no_grad(|| ms_ssim(image, &decoded, 1.0))
            .map(|t| t.double_value(&[0]))
            .unwrap_or(f64::NAN);
    }
    let n = images.len() as f64;
    Ok(Validation {
        bpp: bpp / n,
        psnr: psnr_sum / n,
        ms_ssim: ssim_sum / n,
        estimated_bpp: estimated / n,
    })
}

pub(crate) fn load_validation(dir: &Path) -> Result<Vec<Tensor>, ModelError> {
    let files = image_files(dir)?;
    let mut images = Vec::with_capacity(files.len());
    for file in files {
        let image =
            image::open(&file).map_err(|e| ModelError::Image(file.display().to_string(), e))?;
        images.push(rgb_to_tensor(&image.to_rgb8()));
    }
    Ok(images)
}

/// Image files under `dir`, recursively, sorted.
///
/// # Errors
/// [`ModelError::Io`] if a folder cannot be read.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    const EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "ppm"];
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries =
            fs::read_dir(&folder).map_err(|e| ModelError::Io(folder.display().to_string(), e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| ModelError::Io(folder.display().to_string(), e))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Training images held in memory as RGB bytes.
pub(crate) struct Dataset {
    images: Vec<image::RgbImage>,
}

impl Dataset {
    pub(crate) fn load(dir: &Path, crop: i64, progress: bool) -> Result<Self, ModelError> {
        let files = image_files(dir)?;
        let bar = if progress {
            ProgressBar::new(files.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("loading images [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut images = Vec::with_capacity(files.len());
        let mut skipped = 0;
        for file in &files {
            bar.inc(1);
            match image::open(file) {
                Ok(image) if i64::from(image.width().min(image.height())) >= crop => {
                    images.push(image.to_rgb8())
                }
                _ => skipped += 1,
            }
        }
        bar.finish_and_clear();
        if images.is_empty() {
            return Err(ModelError::NoImages(dir.display().to_string(), crop));
        }
        if progress && skipped > 0 {
            eprintln!("skipped {skipped} unreadable images or images smaller than {crop} px");
        }
        Ok(Self { images })
    }

    /// A batch of random crops (N, 3, crop, crop): a random image, half of the time downscaled
    /// by a random factor up to 2 (area averaging) first, then a random crop and a random
    /// horizontal flip.
    pub(crate) fn batch(&self, batch_size: i64, crop: i64, rng: &mut StdRng) -> Tensor {
        let crops: Vec<Tensor> = (0..batch_size)
            .map(|_| {
                let image = &self.images[rng.gen_range(0..self.images.len())];
                let (width, height) = (i64::from(image.width()), i64::from(image.height()));
                let max_region = width.min(height).min(2 * crop);
                let region = if rng.gen_bool(0.5) {
                    rng.gen_range(crop..=max_region)
                } else {
                    crop
                };
                let left = rng.gen_range(0..=width - region);
                let top = rng.gen_range(0..=height - region);
                let mut bytes = Vec::with_capacity((region * region * 3) as usize);
                for row in top..top + region {
                    let start = ((row * width + left) * 3) as usize;
                    bytes.extend_from_slice(&image.as_raw()[start..start + (region * 3) as usize]);
                }
                let mut t = Tensor::from_slice(&bytes)
                    .view([region, region, 3])
                    .permute([2, 0, 1])
                    .to_kind(Kind::Float)
                    / 255.0;
                if region != crop {
                    t = t
                        .unsqueeze(0)
                        .adaptive_avg_pool2d([crop, crop])
                        .squeeze_dim(0);
                }
                if rng.gen_bool(0.5) {
                    t = t.flip([2]);
                }
                t
            })
            .collect();
        Tensor::stack(&crops, 0)
    }
}

/// Means over the last few steps for the log and the progress bar.
pub(crate) struct RunningMeans<const N: usize> {
    sums: [f64; N],
    count: u32,
}

impl<const N: usize> Default for RunningMeans<N> {
    fn default() -> Self {
        Self {
            sums: [0.0; N],
            count: 0,
        }
    }
}

impl<const N: usize> RunningMeans<N> {
    pub(crate) fn add(&mut self, values: [f64; N]) {
        for (sum, value) in self.sums.iter_mut().zip(values) {
            *sum += value;
        }
        self.count += 1;
    }

    pub(crate) fn take(&mut self) -> [f64; N] {
        let n = f64::from(self.count.max(1));
        let means = self.sums.map(|s| s / n);
        *self = Self::default();
        means
    }
}

/// A CSV file a run appends to across sessions (the header only when it is new).
pub(crate) struct CsvLog {
    file: fs::File,
    path: PathBuf,
}

impl CsvLog {
    pub(crate) fn open(path: &Path, header: &str) -> Result<Self, ModelError> {
        let fresh = !path.exists();
        let io = |e| ModelError::Io(path.display().to_string(), e);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if fresh {
            writeln!(file, "{header}").map_err(io)?;
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn row(&mut self, row: &str) -> Result<(), ModelError> {
        writeln!(self.file, "{row}").map_err(|e| ModelError::Io(self.path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::{learning_rate_at, warmup_factor, wsd_learning_rate, LossBalance};

    #[test]
    fn loss_balance_evens_out_the_scale_of_each_quality() {
        let mut balance = LossBalance::default();
        // Quality -1.5 (bin 0 of a range from -2) has losses 100x those of quality 9.2 (bin 11).
        for _ in 0..500 {
            let low = balance.weight(-1.5, -2.0, 40.0) * 40.0;
            let high = balance.weight(9.2, -2.0, 0.4) * 0.4;
            assert!((low - 1.0).abs() < 1e-9 && (high - 1.0).abs() < 1e-9);
        }
        // A bin's mean follows its losses: after a jump, the weighted loss exceeds 1 at first
        // and returns towards 1 as the mean catches up.
        let first = balance.weight(-1.2, -2.0, 80.0) * 80.0;
        assert!(first > 1.0 && first < 2.0, "{first}");
        let mut later = first;
        for _ in 0..1000 {
            later = balance.weight(-1.2, -2.0, 80.0) * 80.0;
        }
        assert!((later - 1.0).abs() < 1e-3, "{later}");
        // Bins are one quality wide and independent.
        assert_eq!(balance.weight(3.0, -2.0, 5.0), 0.2);
        // A zero or non-finite mean weighs 1 rather than dividing by it.
        assert_eq!(LossBalance::default().weight(0.0, 0.0, 0.0), 1.0);
    }

    #[test]
    fn wsd_holds_until_the_decay_window() {
        assert_eq!(wsd_learning_rate(1.0, 0, 1000, 100), 1.0);
        assert_eq!(wsd_learning_rate(1.0, 899, 1000, 100), 1.0);
        assert!(wsd_learning_rate(1.0, 950, 1000, 100) < 1.0);
        assert!((wsd_learning_rate(1.0, 1000, 1000, 100) - 0.02).abs() < 1e-12);
        // A decay branch of its own: steps = decay decays from the first step.
        assert!(wsd_learning_rate(1.0, 1, 100, 100) < 1.0);
        assert_eq!(wsd_learning_rate(1.0, 5, 10, 0), 1.0);
    }

    #[test]
    fn warmup_ramps_to_one() {
        assert_eq!(warmup_factor(0, 0), 1.0);
        assert!((warmup_factor(100, 0) - 0.01).abs() < 1e-12);
        assert_eq!(warmup_factor(100, 99), 1.0);
        assert_eq!(warmup_factor(100, 5000), 1.0);
    }

    #[test]
    fn schedule_holds_then_decays_to_two_percent() {
        assert_eq!(learning_rate_at(1.0, 0.0), 1.0);
        assert_eq!(learning_rate_at(1.0, 0.59), 1.0);
        assert!((learning_rate_at(1.0, 1.0) - 0.02).abs() < 1e-12);
        assert!(learning_rate_at(1.0, 0.8) < 1.0 && learning_rate_at(1.0, 0.8) > 0.02);
        assert!((learning_rate_at(1.0, 7.0) - 0.02).abs() < 1e-12);
    }
}
