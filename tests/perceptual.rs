//! `ocular::perceptual`: the deep-feature distance's sanity on Kodak crops (it ranks JPEG
//! qualities, prefers the original to blur, and calls a one-pixel shift closer than Gaussian
//! noise of the same MSE), KID on tiny inputs, and `eval` with the perceptual metrics.
//!
//! The distance's tests need the EfficientNet-Lite1 weights (`make setup`) and the Kodak set in
//! `../shared/data/kodak`: they fail, saying so, when either is missing.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use ocular::perceptual::{kid, FeatureSet, KidConfig, PerceptualError, PerceptualNet};
use ocular::train::{untrained_model_bytes, HyperpriorConfig};
use ocular::Model;
use ocular_cli::eval::{evaluate, Baseline, EvalConfig, EvalError, EvalModel, EvalReport};
use rand::{Rng, SeedableRng};

fn net() -> PerceptualNet {
    PerceptualNet::load_default().unwrap_or_else(|e| {
        panic!("{e}: these tests need the EfficientNet-Lite1 weights (run `make setup`)")
    })
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A Kodak image.
fn kodak(name: &str) -> RgbImage {
    let path = repo("../shared/data/kodak").join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{} (the Kodak set in ../shared/data): {e}", path.display()))
        .to_rgb8()
}

/// A `width` x `height` crop at (`left`, `top`) of a Kodak image.
fn kodak_crop(name: &str, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
    image::imageops::crop_imm(&kodak(name), left, top, width, height).to_image()
}

fn tensor(image: &RgbImage) -> tch::Tensor {
    let (w, h) = image.dimensions();
    tch::Tensor::from_slice(image.as_raw())
        .view([i64::from(h), i64::from(w), 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(tch::Kind::Float)
        / 255.0
}

fn distance(net: &PerceptualNet, x: &RgbImage, x_hat: &RgbImage) -> f64 {
    net.deep_distance(&tensor(x), &tensor(x_hat))
        .expect("distance")[0]
}

fn mse(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum();
    sum / a.as_raw().len() as f64
}

fn jpeg(image: &RgbImage, quality: u8) -> RgbImage {
    let bytes = Baseline::Jpeg.encode(image, quality).expect("JPEG encodes");
    Baseline::Jpeg.decode(&bytes).expect("JPEG decodes")
}

/// The image moved one pixel to the right (the first column repeated).
fn shifted(image: &RgbImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        *image.get_pixel(x.saturating_sub(1), y)
    })
}

/// The image plus Gaussian noise of standard deviation `sigma` (levels), rounded and clamped.
fn noisy(image: &RgbImage, sigma: f64, seed: u64) -> RgbImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut gaussian = move || {
        // Box–Muller.
        let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut out = image.clone();
    for p in out.iter_mut() {
        *p = (f64::from(*p) + sigma * gaussian())
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    out
}

/// 384x256 crops of two Kodak images with detail (parrots; a face and hat).
fn crops() -> [(&'static str, RgbImage); 2] {
    [
        ("kodim23", kodak_crop("kodim23.png", 192, 128, 384, 256)),
        ("kodim04", kodak_crop("kodim04.png", 64, 256, 384, 256)),
    ]
}

#[test]
fn deep_distance_ranks_jpeg_qualities() {
    let net = net();
    for (name, image) in crops() {
        let d: Vec<f64> = [10, 30, 60, 90]
            .iter()
            .map(|&q| distance(&net, &image, &jpeg(&image, q)))
            .collect();
        eprintln!("{name}: JPEG 10/30/60/90 {d:.4?}");
        assert!(
            d.windows(2).all(|w| w[0] > w[1]) && d[3] > 0.0,
            "{name}: distances at JPEG 10/30/60/90 {d:?} should fall"
        );
    }
}

#[test]
fn deep_distance_prefers_the_original_to_blur_and_noise() {
    let net = net();
    for (name, image) in crops() {
        assert_eq!(distance(&net, &image, &image), 0.0, "{name}: itself");
        let blurred = image::imageops::blur(&image, 1.5);
        let blur = distance(&net, &image, &blurred);
        assert!(blur > 0.01, "{name}: blur at {blur}");
        let noise = distance(&net, &image, &noisy(&image, 8.0, 1));
        eprintln!("{name}: blur (sigma 1.5) {blur:.4}, noise (sigma 8) {noise:.4}");
        assert!(noise > 0.01, "{name}: noise at {noise}");
    }
}

#[test]
fn deep_distance_calls_a_shift_closer_than_noise_of_the_same_mse() {
    let net = net();
    for (name, image) in crops() {
        let shift = shifted(&image);
        let shift_mse = mse(&image, &shift);
        let noise = noisy(&image, shift_mse.sqrt(), 2);
        let noise_mse = mse(&image, &noise);
        assert!(
            (noise_mse / shift_mse - 1.0).abs() < 0.1,
            "{name}: MSE {shift_mse} (shift) and {noise_mse} (noise) should match"
        );
        let (d_shift, d_noise) = (
            distance(&net, &image, &shift),
            distance(&net, &image, &noise),
        );
        eprintln!("{name}: MSE {shift_mse:.1}: shift {d_shift:.4}, noise {d_noise:.4}");
        assert!(
            d_shift < d_noise,
            "{name}: shift {d_shift} should be closer than noise {d_noise} (MSE {shift_mse:.1})"
        );
    }
}

#[test]
fn deep_distance_batches_and_broadcasts_and_refuses_other_sizes() {
    let net = net();
    let [(_, image), _] = crops();
    let x = tensor(&image);
    let blurred = tensor(&image::imageops::blur(&image, 1.5));
    let batch = tch::Tensor::cat(&[&x, &blurred], 0);
    let reference = net.deep_features(&x).expect("features");
    let d = net.deep_distance_to(&reference, &batch).expect("broadcast");
    assert_eq!(d.len(), 2);
    // Not exactly 0: libtorch may sum a batch of 2 in another order than one image (on an
    // AVX2-only EPYC the image against itself gave 4e-14).
    assert!(d[0].abs() < 1e-9, "the image against itself: {}", d[0]);
    let alone = net.deep_distance(&x, &blurred).expect("distance")[0];
    assert!(
        (d[1] - alone).abs() < 1e-6 * alone.max(1.0),
        "{d:?} vs {alone}"
    );
    let smaller = x.narrow(3, 0, 128);
    let err = net
        .deep_distance_to(&reference, &smaller)
        .expect_err("sizes differ");
    assert!(matches!(err, PerceptualError::Shape(_)), "{err}");
}

#[test]
fn patch_features_follow_the_two_grids() {
    let net = net();
    let image = tensor(&kodak_crop("kodim23.png", 0, 0, 512, 384));
    let features = net.patch_features(&image).expect("patches");
    // Aligned 2 x 1, shifted 1 x 1.
    assert_eq!((features.len(), features.dim()), (3, 1280));
    assert!(features.values().iter().all(|v| v.is_finite()));
    let small = tensor(&kodak_crop("kodim23.png", 0, 0, 255, 300));
    assert!(net.patch_features(&small).expect("no patch").is_empty());
}

/// `n` vectors of dimension `dim`, standard normal plus `offset` in every coordinate.
fn gaussian_set(n: usize, dim: usize, offset: f32, seed: u64) -> FeatureSet {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values = (0..n * dim)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos() + offset
        })
        .collect();
    FeatureSet::from_values(dim, values).expect("whole vectors")
}

#[test]
fn kid_on_tiny_inputs() {
    let config = KidConfig {
        subset_size: 50,
        subsets: 50,
        seed: 7,
    };
    let x = gaussian_set(200, 64, 0.0, 1);
    // Two samples of one distribution: about 0, either sign.
    let same = kid(&x, &gaussian_set(200, 64, 0.0, 2), &config).expect("kid");
    let other = kid(&x, &gaussian_set(200, 64, 0.5, 3), &config).expect("kid");
    assert!(
        same.mean.abs() < 0.02 * other.mean,
        "one distribution: {same:?}, shifted: {other:?}"
    );
    assert!(
        other.mean > 0.1 && other.mean > 10.0 * other.std / (other.subsets as f64).sqrt(),
        "separated sets: {other:?}"
    );
    assert!(other.std > 0.0 && same.std > 0.0);
    assert_eq!((other.subset_size, other.subsets), (50, 50));
    // The very same set: subsets drawn from both share vectors, whose large k(x, x) enters the
    // cross term only, so the unbiased estimate is below 0 (still far below separated sets).
    let itself = kid(&x, &x, &config).expect("kid");
    assert!(
        itself.mean < 0.0 && itself.mean.abs() < 0.1 * other.mean,
        "{itself:?}"
    );
    // Deterministic for a seed; another seed draws other subsets.
    assert_eq!(kid(&x, &x, &config).expect("kid"), itself);
    let reseeded = KidConfig { seed: 8, ..config };
    assert_ne!(kid(&x, &x, &reseeded).expect("kid").mean, itself.mean);
}

#[test]
fn kid_refuses_too_few_vectors_and_bad_settings() {
    let x = gaussian_set(10, 4, 0.0, 1);
    let config = KidConfig {
        subset_size: 11,
        subsets: 5,
        seed: 0,
    };
    match kid(&x, &x, &config) {
        Err(PerceptualError::TooFewSamples {
            subset_size: 11,
            samples: 10,
        }) => {}
        other => panic!("expected too few samples, got {other:?}"),
    }
    assert_eq!(config.fitting(10).subset_size, 10);
    assert!(kid(&x, &x, &config.fitting(10)).is_ok());
    for bad in [
        KidConfig {
            subset_size: 1,
            ..config
        },
        KidConfig {
            subsets: 0,
            subset_size: 5,
            ..config
        },
    ] {
        assert!(matches!(kid(&x, &x, &bad), Err(PerceptualError::Config(_))));
    }
    let y = gaussian_set(10, 5, 0.0, 1);
    assert!(matches!(
        kid(&x, &y, &config.fitting(10)),
        Err(PerceptualError::Shape(_))
    ));
    assert!(FeatureSet::from_values(3, vec![0.0; 7]).is_err());
}

fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (3 + k) + y * (5 + 2 * k) + (x * y) % (7 + k)) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

fn tiny_model() -> EvalModel {
    let config = HyperpriorConfig { n: 8, m: 12 };
    let bytes = untrained_model_bytes(config, "tiny", 3).expect("untrained model");
    EvalModel::new(Model::from_bytes(&bytes).expect("model")).with_label("tiny")
}

#[test]
fn eval_reports_deep_distances_and_kid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wide.png");
    photo_like(512, 256).save(&path).expect("write");
    let mut config = EvalConfig::new(vec![path.clone()], vec![tiny_model()]);
    config.baselines = vec![Baseline::Jpeg];
    config.perceptual = Some(PerceptualNet::load_default().expect("Lite1 weights (make setup)"));
    let report = evaluate(&config).expect("evaluation");
    assert_eq!(report.rows.len(), 2);
    assert!(report.rows.iter().all(|r| r.deep_distance.is_some()));
    let kid = report.kid.as_ref().expect("KID");
    // Two patches (the aligned grid) per image, so subsets of two.
    assert_eq!(kid.len(), 2);
    assert!(kid.iter().all(|k| k.patches == 2 && k.kid.subset_size == 2));
    let means = report.means();
    assert!(means
        .iter()
        .all(|m| m.kid.is_some() && m.deep_distance.is_some()));
    assert!(report.table().contains("KID x1e3"));
    assert!(report
        .to_csv()
        .lines()
        .next()
        .unwrap_or("")
        .ends_with(",deep_distance"));
    let back: EvalReport = serde_json::from_str(&report.to_json()).expect("JSON reads back");
    let distances = |r: &EvalReport| -> Vec<f64> {
        r.rows.iter().filter_map(|row| row.deep_distance).collect()
    };
    let kids = |r: &EvalReport| -> Vec<(String, usize, f64)> {
        let kid = r.kid.iter().flatten();
        kid.map(|k| (k.codec.clone(), k.patches, k.kid.mean))
            .collect()
    };
    // JSON keeps every value to its last digit or so.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
    assert!(distances(&back)
        .iter()
        .zip(distances(&report))
        .all(|(&a, b)| close(a, b)));
    assert_eq!(kids(&back).len(), 2);
    for (a, b) in kids(&back).into_iter().zip(kids(&report)) {
        assert!(a.0 == b.0 && a.1 == b.1 && close(a.2, b.2), "{a:?} {b:?}");
    }
    let svg = dir.path().join("perceptual.svg");
    report.plot_perceptual_svg(&svg).expect("plot");

    // Without the flag nothing changes: no columns, no KID, the JSON of before.
    config.perceptual = None;
    let plain = evaluate(&config).expect("evaluation");
    assert!(plain.kid.is_none() && !plain.has_perceptual());
    assert!(!plain.table().contains("KID") && !plain.to_json().contains("deep_distance"));
    assert!(plain.plot_perceptual_svg(&svg).is_err());

    // Images below 256 pixels give no patch: KID cannot be measured.
    let small = dir.path().join("small.png");
    photo_like(300, 200).save(&small).expect("write");
    let mut config = EvalConfig::new(vec![small], vec![tiny_model()]);
    config.baselines = Vec::new();
    config.perceptual = Some(PerceptualNet::load_default().expect("Lite1 weights"));
    match evaluate(&config) {
        Err(EvalError::Perceptual {
            source: PerceptualError::Config(_) | PerceptualError::TooFewSamples { .. },
            ..
        }) => {}
        other => panic!("expected a KID error, got {other:?}"),
    }
}

#[test]
fn bench_reports_deep_distances_per_crop() {
    use ocular_cli::bench::{
        run, scan_folder, BenchCodec, BenchConfig, BenchReport, Judge, JudgeSpec,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("n01440764");
    std::fs::create_dir_all(&folder).expect("mkdir");
    kodak_crop("kodim23.png", 192, 128, 300, 256)
        .save(folder.join("parrots.png"))
        .expect("write");
    let synsets = ocular::observer::Synsets::parse("n01440764\ttench\n").expect("synsets");
    let images = scan_folder(dir.path(), &synsets).expect("scan");
    let codecs = vec![BenchCodec::Baseline(Baseline::Jpeg)];
    let mut config = BenchConfig::new(images, codecs, vec![0.25, 1.5]);
    config.perceptual = Some(net());
    let specs = JudgeSpec::parse_list("lite1").expect("judge spec");
    let judges = [Judge::load(&specs[0], None).expect("Lite1 judge (make setup)")];
    let report = run(&config, &judges).expect("benchmark");
    let distances: Vec<Option<f64>> = report.rows.iter().map(|r| r.deep_distance).collect();
    match distances[..] {
        [None, Some(low), Some(high)] => assert!(low > high && high > 0.0, "{distances:?}"),
        _ => panic!("expected no distance for the uncompressed crop, then two: {distances:?}"),
    }
    let summaries = report.summaries();
    assert!(summaries[0].deep_distance.is_none() && summaries[1].deep_distance.is_some());
    assert!(report.table().contains("deep dist"));
    let back = BenchReport::from_csv(&report.to_csv()).expect("CSV reads back");
    assert_eq!(back, report);
}

/// 4:2:0-like chroma: each 2x2 block keeps its pixels' luma (BT.601) and takes the block's mean
/// colour difference.
fn chroma_420(image: &RgbImage) -> RgbImage {
    let luma =
        |p: &Rgb<u8>| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
    let (w, h) = image.dimensions();
    let mut out = image.clone();
    for (bx, by) in (0..h)
        .step_by(2)
        .flat_map(|y| (0..w).step_by(2).map(move |x| (x, y)))
    {
        let block: Vec<(u32, u32)> = (by..(by + 2).min(h))
            .flat_map(|y| (bx..(bx + 2).min(w)).map(move |x| (x, y)))
            .collect();
        let mut mean = [0.0f64; 3];
        for &(x, y) in &block {
            let p = image.get_pixel(x, y);
            for (c, m) in mean.iter_mut().enumerate() {
                *m += (f64::from(p[c]) - luma(p)) / block.len() as f64;
            }
        }
        for &(x, y) in &block {
            let l = luma(image.get_pixel(x, y));
            for (c, m) in mean.iter().enumerate() {
                out.get_pixel_mut(x, y)[c] = (l + m).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// KID of reconstructions that are nearly the originals, on all of Kodak: where the estimate
/// sits when nothing visible changed (docs/results.md).
#[test]
#[ignore = "runs Lite1 on 1,152 patches of Kodak (~2 min); run by hand with --nocapture"]
fn kid_of_near_lossless_variants_of_kodak() {
    tch::set_num_threads(1);
    let net = net();
    let names = [
        "noise sigma 2",
        "chroma 4:2:0",
        "JPEG q95",
        "blur sigma 0.5",
        "shift 1 px",
    ];
    let mut originals = FeatureSet::new(1280);
    let mut sets = vec![FeatureSet::new(1280); names.len()];
    for i in 1..=24u32 {
        let image = kodak(&format!("kodim{i:02}.png"));
        let patches = |image: &RgbImage| net.patch_features(&tensor(image)).expect("patches");
        originals.extend(&patches(&image)).expect("same dimension");
        let variants = [
            noisy(&image, 2.0, u64::from(i)),
            chroma_420(&image),
            jpeg(&image, 95),
            image::imageops::blur(&image, 0.5),
            shifted(&image),
        ];
        for (set, variant) in sets.iter_mut().zip(&variants) {
            set.extend(&patches(variant)).expect("same dimension");
        }
    }
    for (name, set) in names.iter().zip(&sets) {
        let k = kid(&originals, set, &KidConfig::default()).expect("kid");
        eprintln!("{name}: KID x1e3 {:.2} ± {:.2}", k.mean * 1e3, k.std * 1e3);
        assert!(k.mean.abs() < 0.01, "{name}: {k:?}");
    }
}
