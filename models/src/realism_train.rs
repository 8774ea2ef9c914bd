//! Training the realism decoder `g_s'` of a model ([`crate::realism`]): a second synthesis
//! network for the same latents, fine-tuned with an adversarial loss while the encoder, the
//! hyperprior and the entropy model stay frozen (HiFiC's design, scaled down for a CPU).
//!
//! # Objective
//!
//! For a batch of crops `x`, a quality `q` drawn from the model's range (a fixed-rate model:
//! its own step) and the latents the decoder sees, `y_hat = Q_Δ(q)(g_a(x))`:
//!
//! ```text
//! x' = g_s'(y_hat)
//! L_D = softplus(-D(x, y_hat)) + softplus(D(sg(x'), y_hat))          (discriminator)
//! L_G = w_d(q) · 255² · MSE(x, x') / 100  +  w_f · L_f(x, x')  +  W · softplus(-D(x', y_hat))
//! ```
//!
//! `w_d(q)` is 1, or with [`RealismConfig::distortion_by_rate`] `(1 / Δ(q)) / E_q[1 / Δ(q)]`:
//! the distortion weighted across the rates as the network itself was trained, whose loss
//! `Δ(q) · (R + lambda(q) · D)` puts `Δ(q) · lambda(q) = lambda_ref / Δ(q)` on the distortion
//! ([`crate::rate`]), normalised to a mean of 1 over the qualities a run draws (uniform on the
//! model's range `[a, b]`; with `1 / Δ(q) = 2^((q - 5) / 2)`):
//!
//! ```text
//! E_q[1 / Δ(q)] = (2 / ln 2) · (2^((b - 5) / 2) - 2^((a - 5) / 2)) / (b - a)
//! ```
//!
//! so that `W` weighs against the distortion as it does unweighted, on average. At the lowest
//! rates, where `g_s'` has most to invent, the distortion then holds it about 11 times less
//! (q = -2) than at the reference quality, and more at high rates. (Unnormalised, over -2..12
//! the mean weight was 2.31: the distortion held `g_s'` more than twice as hard as `W` was
//! chosen for, and the realism run of the shipped `mse-vr` moved KID by only 8-25 %,
//! docs/results.md.)
//!
//! `softplus(-t) = -log σ(t)`: the non-saturating GAN loss (Goodfellow et al. 2014). The
//! distortion term is 1 at 28.1 dB PSNR; `L_f` is the observer classifier's relative feature
//! distance ([`crate::losses::feature_distance`], the SRGAN/LPIPS-style perceptual term; `w_f =
//! 0` skips the classifier); `W` ([`RealismConfig::adversarial_weight`]) trades distortion for
//! realism. `g_s'` starts as the model's `g_s`, so `W = 0` would keep it where it is.
//!
//! `D` is a PatchGAN conditioned on the latents: `y_hat / 10` through a 3x3 convolution to 12
//! channels and a leaky ReLU, upsampled (nearest) to the image's size and stacked with the image
//! centred to `2 x - 1`, then
//! four 4x4 convolutions (stride 2, 2, 2, 1; 32, 64, 128, 128 channels, leaky ReLU 0.2) and a
//! 1x1 convolution to one logit per patch. Every convolution of `D` is spectrally normalised
//! (Miyato et al. 2018): `W / σ(W)`, with `σ` estimated by one power iteration per forward pass
//! in training.
//!
//! Both networks use Adam; `D`'s rate is its own ([`RealismConfig::critic_learning_rate`], ten
//! times `g_s'`'s by default: the two time-scale update rule of Heusel et al. 2017), and the
//! first [`RealismConfig::critic_warmup_steps`] steps train `D` alone. `g_s'` starts as a good
//! decoder, so the differences `D` must find are small (0.037 RMS over the qualities a run draws):
//! measured on the shipped `mse-vr` (docs/results.md), a `D` that saw `y_hat` and `x` unscaled
//! stayed at chance for hundreds of steps while its random gradient pulled `g_s'` away from the
//! data, and one that sees the scaled inputs above at the higher rate starts to separate them after
//! about 300 steps of its own.
//!
//! Every 10 steps the run appends the means of the loss terms and `D`'s accuracy (the share of
//! real and of decoded patches it classifies correctly, logit > 0 meaning real) to `train.csv`
//! in the run folder: a discriminator stuck at a loss of `2 ln 2` and accuracies near 0.5 has
//! learnt nothing.
//!
//! # Invariant
//!
//! Only `g_s.*` of the model's variables ever receive gradients; the companion file holds
//! exactly those tensors, so every file the model made decodes with `g_s'`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ocular_entropy::QuantizationStep;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::distortion::DEFAULT_FEATURE_LAYERS;
use crate::hyperprior::{MeanScaleHyperprior, Y_DOWNSAMPLING};
use crate::imaging::{mse, pad_to_multiple};
use crate::layers::{ComputePrecision, Conv};
use crate::losses::{feature_distance, psnr};
use crate::model_file::{load_tensors, CodecModel};
use crate::observer::{default_weights_path, Classifier};
use crate::rate::{QualityRange, REFERENCE_QUALITY};
use crate::realism::{fingerprint_hex, realism_file_bytes, RealismInfo};
use crate::train::{
    interrupt_flag, load_validation, save_variables, CsvLog, Dataset, Reporter, RunState,
    RunningMeans, SessionClock,
};

use crate::ModelError;

/// How to train a realism decoder (module docs).
#[derive(Clone, Debug)]
pub struct RealismConfig {
    /// The model file whose latents `g_s'` decodes (frozen but for `g_s`).
    pub model: PathBuf,
    /// Folder of training images.
    pub data: PathBuf,
    /// Folder of validation images (PSNR of `g_s` and `g_s'` at the end), if any.
    pub validation: Option<PathBuf>,
    /// The companion file to write.
    pub output: PathBuf,
    /// Checkpoints and state, for resuming.
    pub run_dir: PathBuf,
    /// `W`, the weight of the adversarial term.
    pub adversarial_weight: f64,
    /// `w_f`, the weight of the classifier's feature distance (0: no classifier).
    pub feature_weight: f64,
    /// Weight the distortion term by `1 / Δ(q)` (module docs) rather than 1.
    pub distortion_by_rate: bool,
    /// The classifier's converted weights (default: the built-in Lite0).
    pub observer_weights: Option<PathBuf>,
    /// Steps in all (a resumed run continues towards it).
    pub steps: u64,
    /// Wall-clock budget over all sessions of the run, in seconds.
    pub time_budget_seconds: Option<f64>,
    /// Crops per batch.
    pub batch_size: i64,
    /// Side of the square crops (a multiple of 64).
    pub crop_size: i64,
    /// Adam's learning rate for `g_s'`.
    pub learning_rate: f64,
    /// Adam's learning rate for the discriminator `D`.
    pub critic_learning_rate: f64,
    /// Steps at the start of the run that train `D` alone (`g_s'` unchanged).
    pub critic_warmup_steps: u64,
    /// Seed of the crops, qualities and `D`'s initialisation.
    pub seed: u64,
    /// Seconds between checkpoints.
    pub checkpoint_seconds: u64,
    /// Continue from the checkpoint in `run_dir`.
    pub resume: bool,
    /// Progress on stderr.
    pub progress: bool,
}

impl RealismConfig {
    /// Defaults for the rest: `W` 0.1, `w_f` 1, 2,000 steps of 8 crops of 128 (the first 500
    /// for `D` alone), Adam 1e-4 for `g_s'` and 1e-3 for `D`.
    pub fn new(model: PathBuf, data: PathBuf, output: PathBuf, run_dir: PathBuf) -> Self {
        Self {
            model,
            data,
            validation: None,
            output,
            run_dir,
            adversarial_weight: 0.1,
            feature_weight: 1.0,
            distortion_by_rate: false,
            observer_weights: None,
            steps: 2000,
            time_budget_seconds: None,
            batch_size: 8,
            crop_size: 128,
            learning_rate: 1e-4,
            critic_learning_rate: 1e-3,
            critic_warmup_steps: 500,
            seed: 0,
            checkpoint_seconds: 300,
            resume: false,
            progress: true,
        }
    }
}

/// How a realism run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RealismOutcome {
    /// Steps done in all.
    pub steps: u64,
    /// CPU seconds of the run in all.
    pub cpu_seconds: f64,
    /// Whether it stopped before `steps` (interrupted or out of time); the companion file is
    /// written either way.
    pub stopped_early: bool,
    /// Mean PSNR of `g_s` and of `g_s'` on the validation images, if any.
    pub validation: Option<(f64, f64)>,
}

/// Trains (or resumes training) the realism decoder of `config.model` and writes its companion
/// file.
///
/// # Errors
/// [`ModelError::Io`] for unreadable inputs or unwritable outputs, [`ModelError::InvalidModel`]
/// for a model file that is not one or missing classifier weights, [`ModelError::Shape`] for a
/// crop size that is not a positive multiple of 64, [`ModelError::NoImages`] for a data folder
/// without usable images.
pub fn train_realism(config: &RealismConfig) -> Result<RealismOutcome, ModelError> {
    if config.crop_size <= 0 || config.crop_size % 64 != 0 || config.batch_size <= 0 {
        return Err(ModelError::Shape(format!(
            "realism training needs crops of a positive multiple of 64 and a positive batch, got {} x {}",
            config.crop_size, config.batch_size
        )));
    }
    let bytes = fs::read(&config.model)
        .map_err(|e| ModelError::Io(config.model.display().to_string(), e))?;
    let frozen = CodecModel::from_bytes(&bytes)?;
    let mut run = Run::new(config, &frozen)?;
    let dataset = Dataset::load(&config.data, config.crop_size, config.progress)?;
    let outcome = run.train(config, &dataset, &frozen)?;
    let info = RealismInfo {
        model_name: frozen.info().name.clone(),
        model_fingerprint: fingerprint_hex(frozen.fingerprint()),
        adversarial_weight: config.adversarial_weight,
        steps: outcome.steps,
        cpu_seconds: outcome.cpu_seconds,
    };
    let companion = realism_file_bytes(&info, &run.synthesis_tensors())?;
    fs::write(&config.output, companion)
        .map_err(|e| ModelError::Io(config.output.display().to_string(), e))?;
    let validation = match &config.validation {
        Some(dir) => Some(run.validate(&frozen, &load_validation(dir)?)?),
        None => None,
    };
    Ok(RealismOutcome {
        validation,
        ..outcome
    })
}

/// A run: the model with `g_s'` trainable, the discriminator, their optimisers.
struct Run {
    variables: nn::VarStore,
    network: MeanScaleHyperprior,
    critic_variables: nn::VarStore,
    critic: Discriminator,
    classifier: Option<Classifier>,
    state: RunState,
}

impl Run {
    fn new(config: &RealismConfig, frozen: &CodecModel) -> Result<Self, ModelError> {
        tch::manual_seed(config.seed as i64);
        let mut variables = nn::VarStore::new(Device::Cpu);
        let network = MeanScaleHyperprior::new(&variables.root(), frozen.info().network);
        frozen.copy_weights_to(&mut variables)?;
        variables.freeze();
        for (name, tensor) in variables.variables() {
            if name.starts_with("g_s.") {
                let _ = tensor.shallow_clone().set_requires_grad(true);
            }
        }
        let critic_variables = nn::VarStore::new(Device::Cpu);
        let critic = Discriminator::new(&critic_variables.root(), frozen.info().network.m);
        let classifier = if config.feature_weight > 0.0 {
            let path = config
                .observer_weights
                .clone()
                .unwrap_or_else(default_weights_path);
            Some(Classifier::load(&path)?)
        } else {
            None
        };
        let mut run = Self {
            variables,
            network,
            critic_variables,
            critic,
            classifier,
            state: RunState::default(),
        };
        if config.resume {
            run.load_checkpoint(&config.run_dir)?;
        }
        Ok(run)
    }

    /// The training loop (module docs), checkpointing as it goes.
    fn train(
        &mut self,
        config: &RealismConfig,
        dataset: &Dataset,
        frozen: &CodecModel,
    ) -> Result<RealismOutcome, ModelError> {
        fs::create_dir_all(&config.run_dir)
            .map_err(|e| ModelError::Io(config.run_dir.display().to_string(), e))?;
        let mut generator = nn::Adam::default().build(&self.variables, config.learning_rate)?;
        let mut critic =
            nn::Adam::default().build(&self.critic_variables, config.critic_learning_rate)?;
        let mut log = CsvLog::open(&config.run_dir.join("train.csv"), Terms::CSV_HEADER)?;
        let mut window = RunningMeans::<6>::default();
        let mut rng = StdRng::seed_from_u64(config.seed ^ self.state.step);
        let range = frozen.info().variable_rate;
        let reporter = Reporter::new(config.progress, config.steps, self.state.step);
        let clock = SessionClock::start(&self.state);
        let mut last_checkpoint = Instant::now();
        let interrupted = interrupt_flag();
        while self.state.step < config.steps {
            let out_of_time = config
                .time_budget_seconds
                .is_some_and(|budget| self.state.seconds >= budget);
            if out_of_time || interrupted.load(Ordering::SeqCst) {
                break;
            }
            let step = match range {
                Some(range) => range.step(rng.gen_range(range.min..=range.max))?,
                None => QuantizationStep::ONE,
            };
            let x = dataset.batch(config.batch_size, config.crop_size, &mut rng);
            let generator =
                (self.state.step >= config.critic_warmup_steps).then_some(&mut generator);
            let weight = distortion_weight(config.distortion_by_rate, step, range);
            let terms = self.step(config, &x, (step, weight), generator, &mut critic)?;
            self.state.step += 1;
            clock.update(&mut self.state);
            window.add(terms.values());
            if self.state.step.is_multiple_of(10) {
                log.row(&Terms::csv_row(&self.state, window.take()))?;
            }
            reporter.step(self.state.step, config.steps, &terms.message());
            if last_checkpoint.elapsed().as_secs() >= config.checkpoint_seconds {
                self.save_checkpoint(&config.run_dir)?;
                last_checkpoint = Instant::now();
            }
        }
        self.save_checkpoint(&config.run_dir)?;
        let stopped_early = self.state.step < config.steps;
        reporter.finish(&format!(
            "realism decoder: step {}, {:.2} CPU-hours",
            self.state.step,
            self.state.cpu_seconds / 3600.0
        ));
        Ok(RealismOutcome {
            steps: self.state.step,
            cpu_seconds: self.state.cpu_seconds,
            stopped_early,
            validation: None,
        })
    }

    /// One discriminator step and, given its optimiser, one step of `g_s'`, at the drawn
    /// quality's step with its distortion weight `w_d(q)`.
    fn step(
        &self,
        config: &RealismConfig,
        x: &Tensor,
        (step, distortion_weight): (QuantizationStep, f64),
        generator: Option<&mut nn::Optimizer>,
        critic: &mut nn::Optimizer,
    ) -> Result<Terms, ModelError> {
        let y_hat = tch::no_grad(|| self.network.quantized_latents_at(x, step));
        let x_hat = match generator {
            Some(_) => self.network.synthesis(&y_hat),
            None => tch::no_grad(|| self.network.synthesis(&y_hat)),
        };
        let real = self.critic.forward(x, &y_hat, true);
        let fake = self.critic.forward(&x_hat.detach(), &y_hat, true);
        let critic_loss = (-&real).softplus().mean(Kind::Float) + fake.softplus().mean(Kind::Float);
        let accuracy = |logits: &Tensor, real: bool| {
            let right = if real { logits.gt(0.0) } else { logits.le(0.0) };
            right
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        };
        let (real_accuracy, fake_accuracy) = (accuracy(&real, true), accuracy(&fake, false));
        critic.zero_grad();
        critic_loss.backward();
        critic.step();
        // With gradient when `g_s'` trains, without while `D` trains alone (as `x_hat`). The log
        // shows it unweighted, so runs with and without `distortion_by_rate` compare.
        let distortion = (&x_hat - x).square().mean(Kind::Float) * (255.0 * 255.0 / 100.0);
        let Some(generator) = generator else {
            return Ok(Terms {
                critic: critic_loss.double_value(&[]),
                distortion: distortion.double_value(&[]),
                features: f64::NAN,
                adversarial: fake.neg().softplus().mean(Kind::Float).double_value(&[]),
                real_accuracy,
                fake_accuracy,
            });
        };

        let adversarial = (-self.critic.forward(&x_hat, &y_hat, false))
            .softplus()
            .mean(Kind::Float);
        let features = match &self.classifier {
            Some(classifier) => {
                feature_distance(classifier, &DEFAULT_FEATURE_LAYERS, x, &x_hat, true)?
                    * config.feature_weight
            }
            None => Tensor::zeros([], (Kind::Float, Device::Cpu)),
        };
        let loss =
            &distortion * distortion_weight + &features + &adversarial * config.adversarial_weight;
        generator.zero_grad();
        loss.backward();
        generator.step();
        Ok(Terms {
            critic: critic_loss.double_value(&[]),
            distortion: distortion.double_value(&[]),
            features: features.double_value(&[]),
            adversarial: adversarial.double_value(&[]),
            real_accuracy,
            fake_accuracy,
        })
    }

    /// `g_s'`'s tensors, as the companion file stores them.
    fn synthesis_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut tensors: Vec<_> = self
            .variables
            .variables()
            .into_iter()
            .filter(|(name, _)| name.starts_with("g_s."))
            .map(|(name, tensor)| {
                let shape = tensor.size().iter().map(|&d| d as usize).collect();
                let values =
                    Vec::<f32>::try_from(tensor.detach().flatten(0, -1)).unwrap_or_default();
                (name, shape, values)
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    }

    /// Mean PSNR of the model's `g_s` and of `g_s'` on `images`, at the reference quality (a
    /// fixed-rate model: its own step).
    fn validate(&self, frozen: &CodecModel, images: &[Tensor]) -> Result<(f64, f64), ModelError> {
        let step = match frozen.info().variable_rate {
            Some(range) => range.step(REFERENCE_QUALITY)?,
            None => QuantizationStep::ONE,
        };
        let (mut plain, mut realistic) = (0.0, 0.0);
        for image in images {
            let x = pad_to_multiple(image, 4 * Y_DOWNSAMPLING);
            let (_, _, height, width) = image.size4()?;
            let crop = |t: Tensor| t.narrow(2, 0, height).narrow(3, 0, width).clamp(0.0, 1.0);
            tch::no_grad(|| {
                let y_hat = frozen.network().quantized_latents_at(&x, step);
                plain += psnr(mse(image, &crop(frozen.network().synthesis(&y_hat))));
                realistic += psnr(mse(image, &crop(self.network.synthesis(&y_hat))));
            });
        }
        let count = images.len().max(1) as f64;
        Ok((plain / count, realistic / count))
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<(), ModelError> {
        save_variables(&self.variables, &dir.join("model.safetensors"))?;
        save_variables(
            &self.critic_variables,
            &dir.join("discriminator.safetensors"),
        )?;
        self.state.write(&dir.join("state.json"))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<(), ModelError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read(&path).map_err(|e| ModelError::Io(path.display().to_string(), e))
        };
        load_tensors(&read("model.safetensors")?, &self.variables)?;
        load_tensors(&read("discriminator.safetensors")?, &self.critic_variables)?;
        self.state = RunState::read(&dir.join("state.json"))?;
        Ok(())
    }
}

/// The loss terms of a step and `D`'s accuracy on its two batches, for the log.
struct Terms {
    critic: f64,
    distortion: f64,
    features: f64,
    adversarial: f64,
    real_accuracy: f64,
    fake_accuracy: f64,
}

impl Terms {
    /// A `train.csv` row of `means` (of [`Self::values`]) at `state`; a term not computed in
    /// those steps (the features while `D` warms up, NaN) is an empty cell.
    fn csv_row(state: &RunState, means: [f64; 6]) -> String {
        let cells = means.map(|v| {
            if v.is_nan() {
                String::new()
            } else {
                format!("{v:.5}")
            }
        });
        format!(
            "{},{:.1},{:.1},{}",
            state.step,
            state.seconds,
            state.cpu_seconds,
            cells.join(",")
        )
    }

    const CSV_HEADER: &'static str =
        "step,seconds,cpu_seconds,critic,distortion,features,adversarial,real_accuracy,fake_accuracy";

    fn values(&self) -> [f64; 6] {
        [
            self.critic,
            self.distortion,
            self.features,
            self.adversarial,
            self.real_accuracy,
            self.fake_accuracy,
        ]
    }

    fn message(&self) -> String {
        let generator = if self.features.is_nan() {
            "(D alone)".to_string()
        } else {
            format!(
                "| G: distortion {:.3} features {:.3} adversarial {:.3}",
                self.distortion, self.features, self.adversarial
            )
        };
        format!(
            "D {:.3} (right on {:.0}% real, {:.0}% decoded) {generator}",
            self.critic,
            100.0 * self.real_accuracy,
            100.0 * self.fake_accuracy,
        )
    }
}

/// The latent-conditioned PatchGAN discriminator (module docs).
#[derive(Debug)]
struct Discriminator {
    latent: Conv,
    layers: Vec<SpectralConv>,
}

impl Discriminator {
    const LATENT_CHANNELS: i64 = 12;

    fn new(root: &nn::Path, m: i64) -> Self {
        let latent = Conv::new(root / "latent", m, Self::LATENT_CHANNELS, 3, 1);
        let channels = [3 + Self::LATENT_CHANNELS, 32, 64, 128, 128];
        let mut layers: Vec<SpectralConv> = channels
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                let stride = if i < 3 { 2 } else { 1 };
                SpectralConv::new(&(root / format!("conv{i}")), pair[0], pair[1], 4, stride)
            })
            .collect();
        layers.push(SpectralConv::new(&(root / "logits"), 128, 1, 1, 1));
        Self { latent, layers }
    }

    /// One logit per patch of `x` (N, 1, h, w), given the latents `y_hat` it was decoded from.
    fn forward(&self, x: &Tensor, y_hat: &Tensor, training: bool) -> Tensor {
        let (_, _, height, width) = x.size4().expect("images are 4-d");
        let latent = leaky(&self.latent.forward(&(y_hat * 0.1), ComputePrecision::F32));
        let upsampled = latent.upsample_nearest2d([height, width], None, None);
        let mut h = Tensor::cat(&[&(x * 2.0 - 1.0), &upsampled], 1);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, training);
            if i < last {
                h = leaky(&h);
            }
        }
        h
    }
}

/// Leaky ReLU of slope 0.2.
fn leaky(x: &Tensor) -> Tensor {
    x.maximum(&(x * 0.2))
}

/// A convolution with spectral normalisation: the weight divided by its largest singular value,
/// estimated by power iteration on a persistent vector `u`. Stride 2 halves the size; stride 1
/// keeps it (an even kernel is padded one more on the right and bottom).
#[derive(Debug)]
struct SpectralConv {
    weight: Tensor,
    bias: Tensor,
    u: Tensor,
    kernel: i64,
    stride: i64,
}

impl SpectralConv {
    fn new(path: &nn::Path, in_channels: i64, out_channels: i64, kernel: i64, stride: i64) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let weight = path.var("weight", &[out_channels, in_channels, kernel, kernel], init);
        let bias = path.zeros("bias", &[out_channels]);
        let mut u = path.zeros_no_train("u", &[out_channels]);
        tch::no_grad(|| {
            let start = Tensor::randn([out_channels], (Kind::Float, Device::Cpu));
            u.copy_(&normalized(&start));
        });
        Self {
            weight,
            bias,
            u,
            kernel,
            stride,
        }
    }

    fn forward(&self, x: &Tensor, training: bool) -> Tensor {
        let out = self.weight.size()[0];
        let matrix = self.weight.view([out, -1]);
        let (u, v) = tch::no_grad(|| {
            let mut u = self.u.shallow_clone();
            let v = normalized(&matrix.tr().mv(&u));
            if training {
                u.copy_(&normalized(&matrix.mv(&v)));
            }
            (u.copy(), v)
        });
        let sigma = u.dot(&matrix.mv(&v));
        let weight = &self.weight / sigma;
        let (k, s) = (self.kernel, self.stride);
        if s == 1 && k % 2 == 0 {
            let padded = x.constant_pad_nd([k / 2 - 1, k / 2, k / 2 - 1, k / 2]);
            return padded.conv2d(&weight, Some(&self.bias), [1], [0], [1], 1);
        }
        x.conv2d(&weight, Some(&self.bias), [s], [(k - 1) / 2], [1], 1)
    }
}

/// `w_d(q)` of the objective (module docs): by rate, `1 / Δ(q)` over its mean on `range`
/// (the qualities drawn); else, or for a fixed-rate model (no range), 1.
fn distortion_weight(by_rate: bool, step: QuantizationStep, range: Option<QualityRange>) -> f64 {
    match range {
        Some(range) if by_rate => {
            let (a, b) = (f64::from(range.min), f64::from(range.max));
            let inverse_step = |q: f64| 2f64.powf((q - f64::from(REFERENCE_QUALITY)) / 2.0);
            let mean = 2.0 / std::f64::consts::LN_2 * (inverse_step(b) - inverse_step(a)) / (b - a);
            1.0 / f64::from(step.get()) / mean
        }
        _ => 1.0,
    }
}

fn normalized(t: &Tensor) -> Tensor {
    t / (t.norm() + 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::step_value;

    /// By rate, the distortion's weights keep the ratios the network's own loss gave them,
    /// `Δ(q) · lambda(q) / lambda_ref = 2^((q - 5) / 2)`, and average 1 over the qualities a
    /// run draws (a midpoint sum over the range, not the closed form the code uses).
    #[test]
    fn the_distortion_weight_follows_the_networks_own_trade_off() {
        let at = |q: f32| QuantizationStep::new(step_value(q)).expect("step");
        let range = QualityRange::new(-2.0, 12.0).expect("range");
        let weight = |q: f32| distortion_weight(true, at(q), Some(range));
        for (q, ratio) in [
            (-2.0, 2f64.powf(-3.5)),
            (1.0, 0.25),
            (9.0, 4.0),
            (12.0, 2f64.powf(3.5)),
        ] {
            let measured = weight(q) / weight(5.0);
            assert!(
                (measured / ratio - 1.0).abs() < 1e-6,
                "q {q}: {measured} against {ratio}"
            );
            assert_eq!(distortion_weight(false, at(q), Some(range)), 1.0);
        }
        let points = 14_000;
        let mean = (0..points)
            .map(|i| weight(-2.0 + 14.0 * (i as f32 + 0.5) / points as f32))
            .sum::<f64>()
            / f64::from(points);
        assert!((mean - 1.0).abs() < 1e-4, "mean weight {mean}");
        // Unnormalised, the reference quality's weight would be 1; over -2..12 it is 1 / 2.31.
        assert!((weight(5.0) - 1.0 / 2.3135).abs() < 1e-3, "{}", weight(5.0));
        // A fixed-rate model has one step: nothing to weigh.
        assert_eq!(distortion_weight(true, QuantizationStep::ONE, None), 1.0);
    }

    /// The discriminator, spectral normalisation and all, learns to tell two different kinds of
    /// image apart within a few dozen steps (its loss falls well below chance, 2 ln 2).
    #[test]
    fn the_discriminator_learns_to_separate_real_from_fake() {
        tch::manual_seed(7);
        let variables = nn::VarStore::new(Device::Cpu);
        let critic = Discriminator::new(&variables.root(), 12);
        let mut optimiser = nn::Adam::default().build(&variables, 1e-3).expect("adam");
        let options = (Kind::Float, Device::Cpu);
        let y_hat = Tensor::randn([4, 12, 4, 4], options);
        let ramp = Tensor::arange(64, options).view([1, 1, 1, 64]) / 64.0;
        let real = ramp.expand([4, 3, 64, 64], true).contiguous();
        let mut loss = f64::INFINITY;
        for _ in 0..40 {
            let fake = Tensor::rand([4, 3, 64, 64], options);
            let total = (-critic.forward(&real, &y_hat, true))
                .softplus()
                .mean(Kind::Float)
                + critic
                    .forward(&fake, &y_hat, true)
                    .softplus()
                    .mean(Kind::Float);
            optimiser.zero_grad();
            total.backward();
            optimiser.step();
            loss = total.double_value(&[]);
        }
        assert!(
            loss < 1.0,
            "discriminator loss {loss} after 40 steps (chance: 1.386)"
        );
    }
}
