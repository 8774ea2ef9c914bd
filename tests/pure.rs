//! The pure-Rust coder (`ocular_models::pure`) against the libtorch one on the same model files:
//! every file either makes decodes with the other, to nearly the same pixels, and both encoders
//! choose (nearly) the same integers.
//!
//! Tolerances: `g_a` differs from libtorch's by float rounding (about 1e-6 of its magnitude,
//! tests/infer.rs), so a `y` element within that distance of a rounding boundary may become
//! another integer: a handful of symbols in the thousands. The tables come from the same
//! fixed-order hyper-synthesis on both sides, so every file decodes with either decoder, and
//! the decoders' pixels differ only where `g_s`'s rounding crosses a level: at most one level
//! here (the brief allows two, see `MAX_LEVELS`).

use std::path::PathBuf;

use image::RgbImage;
use ocular_entropy::QuantizationStep;
use ocular_models::hyperprior::Y_DOWNSAMPLING;
use ocular_models::imaging::{pad_to_multiple, rgb_to_tensor, tensor_to_rgb};
use ocular_models::model_file::{
    untrained_observer_mix_model_bytes, untrained_variable_rate_model_bytes,
};
use ocular_models::rate::QualityRange;
use ocular_models::{CodecModel, CompressedLatents, HyperpriorConfig, PureModel};

/// The largest difference of decoded 8-bit values allowed between the two decoders.
const MAX_LEVELS: u8 = 1;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A 200x136 crop of the sample image (not a multiple of 16: the padding is exercised).
fn sample() -> RgbImage {
    let path = repository().join("assets/ladybird.png");
    let image = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    image::imageops::crop_imm(&image, 40, 24, 200, 136).to_image()
}

fn largest_difference(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0)
}

fn differing(a: &[i32], b: &[i32]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Codes `image` with both encoders and decodes both files with both decoders.
fn compare(bytes: &[u8], image: &RgbImage, step: QuantizationStep) {
    compare_mixed(bytes, image, step, 0.0);
}

/// [`compare`] at the observer mix `alpha`.
fn compare_mixed(bytes: &[u8], image: &RgbImage, step: QuantizationStep, alpha: f32) {
    let torch = CodecModel::from_bytes(bytes).expect("libtorch model");
    let model = PureModel::from_bytes(bytes).expect("pure model");
    let pure = model.at_observer_mix(alpha).expect("the model at the mix");
    assert_eq!(torch.fingerprint(), pure.fingerprint());
    let (width, height) = image.dimensions();
    let x = pad_to_multiple(&rgb_to_tensor(image), Y_DOWNSAMPLING);
    let from_torch = torch
        .network()
        .compress_mixed(&x, torch.tables(), step, f64::from(alpha))
        .expect("libtorch encodes");
    let from_pure = pure.compress_at(image, step).expect("pure encodes");
    assert_eq!(from_torch.y_shape, from_pure.y_shape);
    assert_eq!(from_torch.z_shape, from_pure.z_shape);

    let (z_torch, y_torch) = pure.decode_symbols(&from_torch).expect("libtorch file");
    let (z_pure, y_pure) = pure.decode_symbols(&from_pure).expect("pure file");
    let (dz, dy) = (differing(&z_torch, &z_pure), differing(&y_torch, &y_pure));
    eprintln!(
        "differing symbols: z {dz} of {}, y {dy} of {}",
        z_pure.len(),
        y_pure.len()
    );
    assert!(dz * 500 <= z_pure.len(), "z: {dz} of {}", z_pure.len());
    assert!(dy * 500 <= y_pure.len(), "y: {dy} of {}", y_pure.len());

    let torch_decode = |latents: &CompressedLatents| {
        let x_hat = torch
            .network()
            .decompress_mixed(latents, torch.tables(), f64::from(alpha))
            .expect("libtorch decodes");
        tensor_to_rgb(&x_hat, width, height)
    };
    let pure_decode = |latents: &CompressedLatents| {
        pure.decompress_to_rgb(latents, width, height)
            .expect("pure decodes")
    };
    for (name, latents) in [("libtorch", &from_torch), ("pure", &from_pure)] {
        let difference = largest_difference(&torch_decode(latents), &pure_decode(latents));
        eprintln!("{name} file: decoders differ by at most {difference} levels");
        assert!(difference <= MAX_LEVELS, "{name} file: {difference} levels");
    }
}

#[test]
fn shipped_model_files_are_interchangeable() {
    let bytes = std::fs::read(repository().join("models/trained/mse-q3.safetensors"))
        .expect("the shipped mse-q3 model");
    compare(&bytes, &sample(), QuantizationStep::ONE);
}

#[test]
fn variable_rate_files_are_interchangeable() {
    let network = HyperpriorConfig { n: 8, m: 12 };
    let range = QualityRange::DEFAULT;
    let bytes = untrained_variable_rate_model_bytes(network, "tiny-vr", 5, range).expect("model");
    let step = range.step(7.3).expect("inside the range");
    compare(&bytes, &sample(), step);
}

/// A network for every observer mix, at a mix whose conditioning (random, not the identity)
/// changes both transforms: the pure coder applies it as libtorch does. At another mix the
/// same file decodes to another image; a plain network has no mix but 0.
#[test]
fn observer_mix_files_are_interchangeable() {
    let network = HyperpriorConfig { n: 8, m: 12 };
    let range = QualityRange::DEFAULT;
    let bytes = untrained_observer_mix_model_bytes(network, "tiny-mix", 6, range).expect("model");
    let step = range.step(6.0).expect("inside the range");
    compare_mixed(&bytes, &sample(), step, 0.6);

    let model = PureModel::from_bytes(&bytes).expect("pure model");
    let image = sample();
    let latents = model
        .at_observer_mix(0.6)
        .expect("mix")
        .compress_at(&image, step)
        .expect("encodes");
    let (width, height) = image.dimensions();
    let decode = |alpha: f32| {
        model
            .at_observer_mix(alpha)
            .expect("mix")
            .decompress_to_rgb(&latents, width, height)
            .expect("decodes")
    };
    assert!(largest_difference(&decode(0.6), &decode(0.0)) > 2);
    assert!(model.at_observer_mix(1.5).is_err());

    let plain = untrained_variable_rate_model_bytes(network, "tiny-vr", 5, range).expect("model");
    let plain = PureModel::from_bytes(&plain).expect("pure model");
    assert!(plain.at_observer_mix(0.0).is_ok());
    assert!(plain.at_observer_mix(0.5).is_err());
}
