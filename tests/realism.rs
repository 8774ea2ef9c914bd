//! The realism knob at decode time (`Decoder::with_realism`): a companion file's `g_s'` mixed
//! with the model's `g_s` as `(1 - R) g_s(y) + R g_s'(y)`. The companion here is the shipped
//! `mse-q3`'s own `g_s` with the last layer's bias raised by `DELTA`, so `g_s'(y) = g_s(y) +
//! DELTA` up to float rounding and every R has a known answer: `R = 0` is the plain decoder to
//! the bit, `R` brightens by `R · DELTA` (before clamping and rounding).

use image::{DynamicImage, Rgb, RgbImage};
use ocular::{Decoder, Encoder, Error, Model};
use ocular_models::model_file::tensor_f32;
use ocular_models::realism::{fingerprint_hex, realism_file_bytes, RealismInfo};
use safetensors::SafeTensors;

const MODEL: &[u8] = include_bytes!("../models/trained/mse-q3.safetensors");
/// The raise of `g_s'`'s last bias (in [0, 1] pixel units; 0.125 is exact in fp16).
const DELTA: f32 = 0.125;

/// A companion file for `mse-q3` whose `g_s'` is its `g_s` brightened by `delta`.
fn companion(delta: f32, fingerprint: [u8; 8]) -> Vec<u8> {
    let file = SafeTensors::deserialize(MODEL).expect("model file");
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        if !name.starts_with("g_s.") {
            continue;
        }
        let mut values = tensor_f32(&view).expect("a float tensor");
        if name == "g_s.6.bias" {
            values.iter_mut().for_each(|v| *v += delta);
        }
        tensors.push((name, view.shape().to_vec(), values));
    }
    let info = RealismInfo {
        model_name: "mse-q3".into(),
        model_fingerprint: fingerprint_hex(fingerprint),
        adversarial_weight: 0.0,
        steps: 0,
        cpu_seconds: 0.0,
    };
    realism_file_bytes(&info, &tensors).expect("companion file")
}

fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| (60 + ((x * (2 + k) + y * (3 + k)) % 96)) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

fn mse_q3() -> Model {
    Model::from_bytes(MODEL).expect("mse-q3")
}

#[test]
fn the_knob_mixes_the_two_syntheses() {
    let plain_model = mse_q3();
    let fingerprint = plain_model.fingerprint().0;
    let model = mse_q3()
        .with_realism_decoder(&companion(DELTA, fingerprint))
        .expect("the companion fits");
    assert!(model.has_realism_decoder());
    let image = DynamicImage::ImageRgb8(photo_like(48, 40));
    let file = Encoder::new(&model).encode(&image).expect("encodes");
    let plain = Decoder::new(&plain_model).decode(&file).expect("decodes");
    let at = |r: f32| {
        Decoder::new(&model)
            .with_realism(r)
            .with_strip_rows(16)
            .decode(&file)
            .expect("decodes with realism")
            .to_rgb8()
    };
    assert!(
        at(0.0).as_raw() == plain.as_bytes(),
        "R = 0 is the plain decoder"
    );
    for r in [0.5f32, 1.0] {
        let shifted = at(r);
        let mut compared = 0;
        for (&p, &q) in plain.as_bytes().iter().zip(shifted.as_raw()) {
            let expected = f32::from(p) + 255.0 * r * DELTA;
            if expected < 254.0 {
                compared += 1;
                assert!(
                    (f32::from(q) - expected).abs() <= 1.5,
                    "R = {r}: {q} where {expected:.1} was expected"
                );
            }
        }
        assert!(compared > 1000, "R = {r}: only {compared} values compared");
    }
}

#[test]
fn the_knob_is_checked() {
    let plain = mse_q3();
    let image = DynamicImage::ImageRgb8(photo_like(32, 32));
    let file = Encoder::new(&plain).encode(&image).expect("encodes");
    let result = Decoder::new(&plain).with_realism(0.5).decode(&file);
    assert!(
        matches!(result, Err(Error::NoRealismDecoder { .. })),
        "{result:?}"
    );

    let fingerprint = plain.fingerprint().0;
    let model = mse_q3()
        .with_realism_decoder(&companion(DELTA, fingerprint))
        .expect("the companion fits");
    for r in [-0.1f32, 1.5, f32::NAN] {
        let result = Decoder::new(&model).with_realism(r).decode(&file);
        assert!(
            matches!(result, Err(Error::RealismOutOfRange(_))),
            "{r}: {result:?}"
        );
    }
    let other = mse_q3().with_realism_decoder(&companion(DELTA, [7; 8]));
    assert!(matches!(other, Err(Error::InvalidModel(_))));
    let garbage = mse_q3().with_realism_decoder(b"not a companion");
    assert!(matches!(garbage, Err(Error::InvalidModel(_))));
}

/// `Model::load` attaches the companion file beside a model file.
#[test]
fn a_companion_beside_the_model_file_is_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mine.safetensors");
    std::fs::write(&path, MODEL).expect("write model");
    assert!(!Model::load(&path).expect("loads").has_realism_decoder());
    let fingerprint = mse_q3().fingerprint().0;
    std::fs::write(
        dir.path().join("mine.realism.safetensors"),
        companion(DELTA, fingerprint),
    )
    .expect("write companion");
    assert!(Model::load(&path).expect("loads").has_realism_decoder());
}
