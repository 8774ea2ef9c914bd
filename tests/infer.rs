//! The pure-Rust networks (`ocular_models::infer`) against the libtorch ones on the same model
//! file: random weights, the shipped `mse-q3` and a Kodak image, sizes that are multiples of 16
//! and sizes that are not.
//!
//! Tolerance: both sides accumulate in `f32`, in different orders. A sum of `K` products carries
//! a rounding error of order `sqrt(K) * 2^-24` of the magnitude of its terms (`K` is at most
//! 1600 here: about 2.4e-6); four layers with GDN in between compound that to a few 1e-6 of the
//! output's magnitude (measured: below 2e-6 on every test here). The tests allow `1e-4` of the
//! largest output magnitude, far above rounding, far below any error of indexing or weights
//! (those are of the order of the values themselves). Decoded 8-bit pixels may then differ by
//! at most one level, where a value sits on a rounding boundary.

use std::path::{Path, PathBuf};

use ocular_models::hyperprior::HyperpriorConfig;
use ocular_models::infer::{Networks, Planes};
use ocular_models::model_file::untrained_model_bytes;
use ocular_models::CodecModel;
use tch::Tensor;

const TOLERANCE: f64 = 1e-4;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn to_tensor(planes: &Planes) -> Tensor {
    let shape = [1, planes.channels, planes.height, planes.width].map(|v| v as i64);
    Tensor::from_slice(&planes.data).view(shape)
}

fn to_planes(tensor: &Tensor) -> Planes {
    let size: Vec<usize> = tensor.size().iter().map(|&v| v as usize).collect();
    let data = Vec::<f32>::try_from(tensor.flatten(0, -1)).expect("f32 tensor");
    Planes::new(size[1], size[2], size[3], data).expect("planes")
}

/// The largest difference, relative to the largest magnitude of the libtorch output (at least 1).
fn relative_difference(ours: &Planes, theirs: &Tensor) -> f64 {
    let theirs = to_planes(theirs);
    assert_eq!(
        (ours.channels, ours.height, ours.width),
        (theirs.channels, theirs.height, theirs.width)
    );
    let scale = theirs
        .data
        .iter()
        .fold(1.0f64, |m, v| m.max(f64::from(v.abs())));
    let worst = ours
        .data
        .iter()
        .zip(&theirs.data)
        .fold(0.0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
    worst / scale
}

/// Runs all three networks both ways on `image` and checks they agree; returns the largest
/// difference of decoded 8-bit pixels.
fn compare(bytes: &[u8], image: &Planes, what: &str) -> u8 {
    let torch = CodecModel::from_bytes(bytes).expect("libtorch model");
    let ours = Networks::from_safetensors(bytes).expect("pure model");
    let network = torch.network();
    let x = to_tensor(image);

    let torch_y = tch::no_grad(|| network.analysis(&x));
    let y = ours.analysis(image).expect("g_a");
    let d = relative_difference(&y, &torch_y);
    println!("{what}: g_a relative difference {d:.2e}");
    assert!(d <= TOLERANCE, "{what}: g_a differs by {d:e}");

    let torch_z = tch::no_grad(|| network.hyper_analysis(&torch_y));
    let z = ours.hyper_analysis(&to_planes(&torch_y)).expect("h_a");
    let d = relative_difference(&z, &torch_z);
    println!("{what}: h_a relative difference {d:.2e}");
    assert!(d <= TOLERANCE, "{what}: h_a differs by {d:e}");

    let y_hat = torch_y.round();
    let torch_x_hat = tch::no_grad(|| network.synthesis(&y_hat));
    let x_hat = ours.synthesis(&to_planes(&y_hat)).expect("g_s");
    let d = relative_difference(&x_hat, &torch_x_hat);
    println!("{what}: g_s relative difference {d:.2e}");
    assert!(d <= TOLERANCE, "{what}: g_s differs by {d:e}");

    let level = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as i32;
    let theirs = to_planes(&torch_x_hat);
    let differences: Vec<u8> = x_hat
        .data
        .iter()
        .zip(&theirs.data)
        .map(|(&a, &b)| (level(a) - level(b)).unsigned_abs() as u8)
        .collect();
    let differing = differences.iter().filter(|&&d| d > 0).count();
    println!(
        "{what}: {differing} of {} 8-bit values differ",
        differences.len()
    );
    differences.into_iter().max().unwrap_or(0)
}

fn pseudo_image(height: usize, width: usize) -> Planes {
    let data = (0..3 * height * width)
        .map(|i| ((i * 7919 + i / 13) % 256) as f32 / 255.0)
        .collect();
    Planes::new(3, height, width, data).expect("image")
}

fn kodak_crop(name: &str, height: usize, width: usize) -> Planes {
    let path = repo("../shared/data/kodak").join(name);
    let image = image::open(&path)
        .unwrap_or_else(|e| panic!("{} (the Kodak set in ../shared/data): {e}", path.display()))
        .to_rgb8();
    let mut data = vec![0.0f32; 3 * height * width];
    for y in 0..height {
        for x in 0..width {
            let pixel = image.get_pixel(x as u32, y as u32);
            for c in 0..3 {
                data[(c * height + y) * width + x] = f32::from(pixel[c]) / 255.0;
            }
        }
    }
    Planes::new(3, height, width, data).expect("crop")
}

#[test]
fn agrees_with_libtorch_on_random_weights() {
    let bytes = untrained_model_bytes(HyperpriorConfig::default(), "random", 11).expect("model");
    for (height, width) in [(64, 48), (50, 37), (16, 16), (7, 29)] {
        let image = pseudo_image(height, width);
        compare(&bytes, &image, &format!("random {height}x{width}"));
    }
}

#[test]
fn agrees_with_libtorch_on_the_shipped_model_and_kodak() {
    let bytes = std::fs::read(repo("models/trained/mse-q3.safetensors")).expect("shipped model");
    for (height, width) in [(128, 192), (83, 141), (16, 16)] {
        let image = kodak_crop("kodim23.png", height, width);
        let pixels = compare(&bytes, &image, &format!("mse-q3 {height}x{width}"));
        assert!(pixels <= 1, "decoded pixels differ by {pixels} levels");
    }
}

/// A whole Kodak image (a few seconds in a debug build: the products run optimised).
#[test]
fn agrees_with_libtorch_on_a_whole_kodak_image() {
    let bytes = std::fs::read(repo("models/trained/mse-q3.safetensors")).expect("shipped model");
    let image = kodak_crop("kodim23.png", 512, 768);
    let pixels = compare(&bytes, &image, "mse-q3 kodim23");
    assert!(pixels <= 1, "decoded pixels differ by {pixels} levels");
}
