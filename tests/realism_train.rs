//! `ocular train --adversarial`'s library: training the realism decoder `g_s'` of a model
//! (`ocular::train::train_realism`) on a tiny untrained network for a few steps, so it takes
//! seconds: the run resumes from its checkpoint, writes a companion file that the model accepts
//! and decodes with, and never changes the model's own weights.

use std::path::Path;

use image::{DynamicImage, Rgb, RgbImage};
use ocular::train::{train_realism, untrained_model_bytes, HyperpriorConfig, RealismConfig};
use ocular::{Decoder, Encoder, Model};

fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).expect("data dir");
    for seed in 0..2u32 {
        let image = RgbImage::from_fn(96, 80, |x, y| {
            let v = |c: u32| ((x * (c + 2) + y * 3 + seed * 41) % 200 + 20) as u8;
            Rgb([v(0), v(1), v(2)])
        });
        image
            .save(dir.join(format!("{seed}.png")))
            .expect("write png");
    }
}

#[test]
fn a_realism_run_resumes_and_its_decoder_decodes_the_models_files() {
    std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    write_images(&data);
    let model_bytes =
        untrained_model_bytes(HyperpriorConfig { n: 8, m: 12 }, "tiny", 3).expect("model");
    let model_path = dir.path().join("tiny.safetensors");
    std::fs::write(&model_path, &model_bytes).expect("write model");
    let companion = dir.path().join("tiny.realism.safetensors");
    let mut config = RealismConfig::new(
        model_path.clone(),
        data,
        companion.clone(),
        dir.path().join("run"),
    );
    config.steps = 2;
    config.batch_size = 2;
    config.crop_size = 64;
    config.feature_weight = 0.0;
    config.critic_warmup_steps = 1; // step 0 trains the discriminator alone, then both
    config.progress = false;
    let first = train_realism(&config).expect("two steps");
    assert_eq!((first.steps, first.stopped_early), (2, false));
    assert!(dir.path().join("run/discriminator.safetensors").is_file());

    config.steps = 3;
    config.resume = true;
    config.feature_weight = 1.0; // the classifier's features too (weights from `make setup`)
    let resumed = train_realism(&config).expect("resumed");
    assert_eq!(resumed.steps, 3, "the run continued from step 2");
    assert!(resumed.cpu_seconds >= first.cpu_seconds);

    // The model file is untouched, and finds its companion beside it.
    assert_eq!(std::fs::read(&model_path).expect("model"), model_bytes);
    let model = Model::load(&model_path).expect("model with companion");
    assert!(model.has_realism_decoder());
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 24, |x, y| {
        Rgb([(x * 5) as u8, (y * 9) as u8, 128])
    }));
    let file = Encoder::new(&model).encode(&image).expect("encodes");
    let plain = Decoder::new(&model).decode(&file).expect("plain");
    let realistic = Decoder::new(&model)
        .with_realism(1.0)
        .decode(&file)
        .expect("realism decoder");
    assert_eq!(
        (realistic.width(), realistic.height()),
        (plain.width(), plain.height())
    );
    assert!(
        plain.as_bytes() != realistic.as_bytes(),
        "three steps changed g_s'"
    );
}
