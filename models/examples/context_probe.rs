//! How many bits would a checkerboard context model save on a trained network's `y`?
//!
//! ```text
//! cargo run --release -p ocular-models --features torch --example context_probe -- \
//!     MODEL TRAIN_DIR KODAK_DIR STEPS
//! ```
//!
//! The network stays frozen, so the symbols `k = round((y - μ) / Δ)` it codes, their scales
//! `s = σ / Δ` and the distortion stay what they are. A checkerboard splits the positions of `y`
//! into anchors (`(i + j)` even), coded as today, and the others, whose Gaussian gets a mean
//! offset `m` and a scale `s'` from a small network `f` that sees the anchors' symbols (one 5x5
//! convolution over `k ⊙ A`) and `log s` (after He et al. 2021, "Checkerboard context model"):
//!
//! ```text
//! p(k) = Φ((k + ½ - m) / s') - Φ((k - ½ - m) / s'),    [m, log s' - log s] = f(ctx(k ⊙ A), log s)
//! ```
//!
//! `f`'s last layer starts at zero, so the probe starts at today's rate. It trains on random
//! 256-pixel crops of TRAIN_DIR at qualities drawn from -2..12 (the rate grid of the network),
//! then prints, on the images of KODAK_DIR at qualities 1, 3, 5, 7 and 9, the estimated bpp of
//! `y` and `z` with and without the context and the share saved. The transforms do not move,
//! so this is what a context would save on today's latents, not what training the whole
//! network with one would reach.

use std::path::{Path, PathBuf};

use ocular_models::entropy_models::{gaussian_likelihood, SCALE_BOUND};
use ocular_models::imaging::rgb_to_tensor;
use ocular_models::rate::QualityRange;
use ocular_models::CodecModel;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const CROP: u32 = 256;
const BATCH: usize = 8;

/// The context of the non-anchor positions and the network `f` of the module doc.
struct Context {
    ctx: nn::Conv2D,
    f1: nn::Conv2D,
    f2: nn::Conv2D,
    out: nn::Conv2D,
}

impl Context {
    fn new(p: &nn::Path, m: i64) -> Self {
        let same = |k: i64| nn::ConvConfig {
            padding: k / 2,
            ..Default::default()
        };
        let zero = nn::ConvConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Self {
            ctx: nn::conv2d(p / "ctx", m, 2 * m, 5, same(5)),
            f1: nn::conv2d(p / "f1", 3 * m, 2 * m, 1, same(1)),
            f2: nn::conv2d(p / "f2", 2 * m, 2 * m, 1, same(1)),
            out: nn::conv2d(p / "out", 2 * m, 2 * m, 1, zero),
        }
    }

    /// Bits of the non-anchor symbols with the context and without it (hyperprior alone).
    fn bits(&self, k: &Tensor, s: &Tensor) -> (Tensor, Tensor) {
        let (_, _, h, w) = k.size4().expect("4-d symbols");
        let anchors = checkerboard(h, w);
        let others = 1.0 - &anchors;
        let s = s.clamp_min(SCALE_BOUND);
        let log_s = s.log();
        let context = self.ctx.forward(&(k * &anchors));
        let hidden = self.f1.forward(&Tensor::cat(&[context, log_s], 1)).relu();
        let hidden = self.f2.forward(&hidden).relu();
        let parts = self.out.forward(&hidden).chunk(2, 1);
        let scale = &s * parts[1].exp();
        let bits = |likelihood: Tensor| -(likelihood.log2() * &others).sum(Kind::Float);
        (
            bits(gaussian_likelihood(&(k - &parts[0]), &scale)),
            bits(gaussian_likelihood(k, &s)),
        )
    }
}

/// 1 at the anchors (`(i + j)` even), 0 elsewhere, shaped (1, 1, h, w).
fn checkerboard(h: i64, w: i64) -> Tensor {
    let i = Tensor::arange(h, (Kind::Int64, Device::Cpu)).view([h, 1]);
    let j = Tensor::arange(w, (Kind::Int64, Device::Cpu)).view([1, w]);
    (i + j)
        .remainder(2)
        .eq(0)
        .to_kind(Kind::Float)
        .view([1, 1, h, w])
}

fn images_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("png" | "jpg" | "jpeg")
            ) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Estimated bpp on the images of `kodak` at `quality`: (y and z without the context, with it).
fn evaluate(
    model: &CodecModel,
    context: &Context,
    kodak: &[PathBuf],
    quality: f32,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let step = QualityRange::new(-2.0, 12.0)?.step(quality)?;
    let (mut plain, mut with_context, mut pixels) = (0.0, 0.0, 0.0);
    for path in kodak {
        let x = rgb_to_tensor(&image::open(path)?.to_rgb8());
        let (k, s) = tch::no_grad(|| model.network().symbols_at(&x, step));
        let z_bits = tch::no_grad(|| {
            let z = model.network().forward_at(&x, step, false).z_likelihoods;
            -z.log2().sum(Kind::Float).double_value(&[])
        });
        let all_y = -gaussian_likelihood(&k, &s)
            .log2()
            .sum(Kind::Float)
            .double_value(&[]);
        let (ctx_bits, plain_bits) = tch::no_grad(|| context.bits(&k, &s));
        plain += all_y + z_bits;
        with_context += all_y - plain_bits.double_value(&[]) + ctx_bits.double_value(&[]) + z_bits;
        pixels += (x.size()[2] * x.size()[3]) as f64;
    }
    Ok((plain / pixels, with_context / pixels))
}

fn random_batch(images: &[image::RgbImage], rng: &mut StdRng) -> Tensor {
    let crops: Vec<Tensor> = (0..BATCH)
        .map(|_| {
            let image = &images[rng.gen_range(0..images.len())];
            let x = rng.gen_range(0..=image.width() - CROP);
            let y = rng.gen_range(0..=image.height() - CROP);
            rgb_to_tensor(&image::imageops::crop_imm(image, x, y, CROP, CROP).to_image())
        })
        .collect();
    Tensor::cat(&crops, 0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, train, kodak, steps] = &args[..] else {
        return Err("usage: context_probe MODEL TRAIN_DIR KODAK_DIR STEPS".into());
    };
    let steps: usize = steps.parse()?;
    tch::set_num_threads(1);
    let model = CodecModel::from_bytes(&std::fs::read(model)?)?;
    let m = model.info().network.m;
    let kodak = images_under(Path::new(kodak));
    let images: Vec<image::RgbImage> = images_under(Path::new(train))
        .iter()
        .filter_map(|p| image::open(p).ok().map(|i| i.to_rgb8()))
        .filter(|i| i.width() >= CROP && i.height() >= CROP)
        .collect();
    println!(
        "{} training images, {} test images",
        images.len(),
        kodak.len()
    );
    let variables = nn::VarStore::new(Device::Cpu);
    let context = Context::new(&variables.root(), m);
    let mut optimizer = nn::Adam::default().build(&variables, 5e-4)?;
    let mut rng = StdRng::seed_from_u64(0);
    let range = QualityRange::new(-2.0, 12.0)?;
    let (mut saved, mut total) = (0.0, 0.0);
    for step in 1..=steps {
        let x = random_batch(&images, &mut rng);
        let quality_step = range.step(rng.gen_range(-2.0..=12.0))?;
        let (k, s) = tch::no_grad(|| model.network().symbols_at(&x, quality_step));
        let (ctx_bits, plain_bits) = context.bits(&k, &s);
        let pixels = (BATCH as u32 * CROP * CROP) as f64;
        optimizer.backward_step(&(&ctx_bits / pixels));
        saved += plain_bits.double_value(&[]) - ctx_bits.double_value(&[]);
        total += plain_bits.double_value(&[]);
        if step % 100 == 0 {
            println!(
                "step {step}: the context saves {:.2} % of the non-anchor bits",
                100.0 * saved / total
            );
            (saved, total) = (0.0, 0.0);
        }
    }
    println!("quality, bpp without, bpp with the context, saved %");
    for quality in [1.0, 3.0, 5.0, 7.0, 9.0] {
        let (plain, with_context) = evaluate(&model, &context, &kodak, quality)?;
        println!(
            "{quality}, {plain:.4}, {with_context:.4}, {:.2}",
            100.0 * (1.0 - with_context / plain)
        );
    }
    Ok(())
}
