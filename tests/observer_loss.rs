//! The observer-dependent training loss (`ocular_models::losses`):
//! `D = (1 - alpha) * w_ms * (1 - MS-SSIM) + alpha * w_f * L_features`.
//!
//! Tests that need the converted classifier weights (`make setup`) fail with a message saying
//! so when they are absent. Two ignored measurements:
//!
//! * `calibrate_feature_weight`: the magnitudes of `1 - MS-SSIM` and `L_f` on training crops
//!   reconstructed by a human-oriented model (`OBSERVER_CALIBRATION_MODEL`: a model file or a
//!   training checkpoint of the default network) and by JPEG, which set
//!   `DEFAULT_FEATURE_WEIGHT`;
//! * `observer_step_timing`: seconds per training step (batch 8, 192x192, N=64, M=96) for
//!   alpha = 0, 0.5, 1 and the `mse` and `ms-ssim` distortions.
//!
//! `cargo test -p ocular-models --test observer_loss -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ocular_models::losses::{
    feature_distance, observer_feature_distance, observer_input, Distortion, DistortionMeasure,
    FeatureLayers, ObserverDistortion, DEFAULT_FEATURE_WEIGHT, DEFAULT_MS_SSIM_WEIGHT,
};
use ocular_models::model_file::ModelInfo;
use ocular_models::observer::{
    default_weights_path, Classifier, FeatureLayer, TorchScriptObserver,
};
use ocular_models::train::{train, TrainConfig, TrainOutcome};
use ocular_models::{CodecModel, HyperpriorConfig, MeanScaleHyperprior, ModelError};
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

/// The converted Lite0 weights, which `make setup` installs.
///
/// # Panics
/// If they are absent (run `make setup`): a green run must mean the test ran.
fn classifier() -> Classifier {
    let path = default_weights_path();
    assert!(
        path.exists(),
        "observer weights {} not found: run `make setup` (scripts/setup-observer.sh)",
        path.display()
    );
    Classifier::load(&path).expect("the converted weights load")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ocular-observer-loss-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Smooth colour patterns with some texture, in [0, 1]: (n, 3, h, w).
fn images(n: i64, h: i64, w: i64) -> Tensor {
    let f = (Kind::Float, Device::Cpu);
    let b = Tensor::arange(n, f).view([n, 1, 1, 1]);
    let c = Tensor::arange(3, f).view([1, 3, 1, 1]);
    let y = Tensor::arange(h, f).view([1, 1, h, 1]);
    let x = Tensor::arange(w, f).view([1, 1, 1, w]);
    let low = ((&c + 1.0) * 0.05 * &x + &y * 0.03 + &b * 0.7).sin() * 0.35;
    let high = ((&x * 0.9 + &b).sin() * (&y * 0.7 - &c).cos()) * 0.1;
    (low + high + 0.5).clamp(0.0, 1.0)
}

/// `x` degraded: blurred and with a fixed pseudo-random perturbation.
fn degraded(x: &Tensor) -> Tensor {
    let blurred = x.avg_pool2d([3, 3], [1, 1], [1, 1], false, true, None::<i64>);
    tch::manual_seed(7);
    blurred + x.randn_like() * 0.03
}

fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn distortion_serialisation_round_trips_and_old_strings_parse() {
    for (text, d) in [
        ("\"mse\"", Distortion::Mse),
        ("\"ms-ssim\"", Distortion::MsSsim),
    ] {
        assert_eq!(serde_json::from_str::<Distortion>(text).ok(), Some(d));
        assert_eq!(serde_json::to_string(&d).ok().as_deref(), Some(text));
    }
    let custom = Distortion::Observer(ObserverDistortion {
        alpha: 0.25,
        ms_ssim_weight: 2.0,
        feature_weight: 0.125,
        layers: FeatureLayers::new(&[FeatureLayer::Head, FeatureLayer::Stem]).expect("layers"),
        crop_and_resize: true,
    });
    for d in [Distortion::observer(0.5), Distortion::observer(1.0), custom] {
        let json = serde_json::to_string(&d).expect("serialise");
        assert_eq!(
            serde_json::from_str::<Distortion>(&json).ok(),
            Some(d),
            "{json}"
        );
    }
    assert_eq!(
        serde_json::to_string(&custom).ok().as_deref(),
        Some(concat!(
            r#"{"observer":{"alpha":0.25,"ms_ssim_weight":2.0,"feature_weight":0.125,"#,
            r#""layers":["stem","head"],"crop_and_resize":true}}"#
        ))
    );
    // Only alpha is required; the rest takes the defaults.
    let minimal: Distortion =
        serde_json::from_str(r#"{"observer":{"alpha":0.5}}"#).expect("minimal observer");
    assert_eq!(minimal, Distortion::observer(0.5));
    let Distortion::Observer(o) = minimal else {
        panic!("not an observer distortion")
    };
    assert_eq!(o.ms_ssim_weight, DEFAULT_MS_SSIM_WEIGHT);
    assert_eq!(o.feature_weight, DEFAULT_FEATURE_WEIGHT);
    assert_eq!(
        o.layers.to_vec(),
        ocular_models::observer::DEFAULT_FEATURE_LAYERS.to_vec()
    );
    for bad in [
        r#"{"observer":{"alpha":0.5,"layers":["stage9"]}}"#,
        r#"{"observer":{"ms_ssim_weight":1.0}}"#,
        r#""observer""#,
        r#""psnr""#,
    ] {
        assert!(serde_json::from_str::<Distortion>(bad).is_err(), "{bad}");
    }
    // Family names.
    assert_eq!(Distortion::observer(0.5).to_string(), "observer-0.5");
    assert_eq!(
        "observer-0.25".parse::<Distortion>().ok(),
        Some(Distortion::observer(0.25))
    );

    // A model description as older builds wrote it still parses.
    let old = r#"{"format_version":1,"name":"mse-q3","quality":3,"network":{"n":64,"m":96},
        "distortion":"ms-ssim","lambda":8.0,"training":{"steps":1,"seconds":1.0,"batch_size":8,
        "crop_size":192,"learning_rate":0.0005,"dataset":"d","initialised_from":null}}"#;
    let info: ModelInfo = serde_json::from_str(old).expect("old model info");
    assert_eq!(info.distortion, Distortion::MsSsim);
}

#[test]
fn invalid_parameters_and_missing_weights_are_errors() {
    let missing = Path::new("/nonexistent/observer.safetensors");
    // alpha = 0 never needs the classifier, so missing weights do not matter.
    let pure = DistortionMeasure::new(Distortion::observer(0.0), missing).expect("alpha 0");
    assert!(pure.observer().is_none());
    match DistortionMeasure::new(Distortion::observer(0.5), missing) {
        Err(ModelError::InvalidModel(m)) => assert!(m.contains("setup-observer"), "{m}"),
        other => panic!("expected a missing-weights error, got {other:?}"),
    }
    for bad in [
        ObserverDistortion::new(1.5),
        ObserverDistortion::new(-0.1),
        ObserverDistortion {
            feature_weight: f64::NAN,
            ..ObserverDistortion::new(0.5)
        },
        ObserverDistortion {
            ms_ssim_weight: -1.0,
            ..ObserverDistortion::new(0.5)
        },
        ObserverDistortion {
            layers: FeatureLayers::new(&[]).expect("empty set"),
            ..ObserverDistortion::new(0.5)
        },
    ] {
        assert!(
            matches!(
                DistortionMeasure::with_classifier(Distortion::Observer(bad), None),
                Err(ModelError::InvalidModel(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        DistortionMeasure::with_classifier(Distortion::observer(0.5), None),
        Err(ModelError::InvalidModel(_))
    ));

    // Crops too small for MS-SSIM are refused before anything is loaded or written.
    let dir = temp_dir("small-crop");
    let mut config = TrainConfig::new(dir.join("data"), dir.join("m.safetensors"), dir.join("r"));
    config.distortion = Distortion::observer(0.5);
    config.crop_size = 128;
    match train(&config) {
        Err(ModelError::Shape(m)) => assert!(m.contains("--crop-size >= 192"), "{m}"),
        other => panic!("expected a crop-size error, got {other:?}"),
    }
    assert!(!dir.join("r").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn alpha_zero_is_ms_ssim_and_alpha_one_is_the_feature_term() {
    let c = classifier();
    let x = images(2, 192, 192);
    let x_hat = degraded(&x);
    let ms = DistortionMeasure::with_classifier(Distortion::MsSsim, None).expect("ms-ssim");
    let ms_term = scalar(&ms.compute(&x, &x_hat).expect("ms-ssim").total);
    assert!(ms_term > 0.0);

    let zero = DistortionMeasure::with_classifier(Distortion::observer(0.0), None)
        .expect("alpha 0")
        .compute(&x, &x_hat)
        .expect("alpha 0");
    assert_eq!(scalar(&zero.total), ms_term);
    assert!(zero.features.is_none());

    let one =
        DistortionMeasure::with_classifier(Distortion::observer(1.0), Some(c)).expect("alpha 1");
    let features = scalar(
        &observer_feature_distance(one.observer().expect("observer"), &x, &x_hat, false)
            .expect("features"),
    );
    assert!(features > 0.0);
    let terms = one.compute(&x, &x_hat).expect("alpha 1");
    assert!(terms.ms_ssim.is_none());
    assert!(close(
        scalar(&terms.total),
        DEFAULT_FEATURE_WEIGHT * features,
        1e-6
    ));

    // alpha = 0.5 mixes the two terms.
    let c = classifier();
    let half = DistortionMeasure::with_classifier(Distortion::observer(0.5), Some(c))
        .expect("alpha 0.5")
        .compute(&x, &x_hat)
        .expect("alpha 0.5");
    let expected = 0.5 * DEFAULT_MS_SSIM_WEIGHT * ms_term + 0.5 * DEFAULT_FEATURE_WEIGHT * features;
    assert!(close(scalar(&half.total), expected, 1e-5));
    assert!(close(
        scalar(half.ms_ssim.as_ref().expect("ms term")),
        ms_term,
        1e-6
    ));
    assert!(close(
        scalar(half.features.as_ref().expect("feature term")),
        features,
        1e-6
    ));
}

#[test]
fn identical_images_have_no_feature_distance() {
    let c = classifier();
    let x = images(2, 192, 192);
    for crop_and_resize in [false, true] {
        let all = FeatureLayer::all();
        let d = feature_distance(&c, &all, &x, &x.copy(), crop_and_resize).expect("distance");
        assert_eq!(scalar(&d), 0.0);
    }
    let x_hat = degraded(&x);
    for layer in ocular_models::observer::DEFAULT_FEATURE_LAYERS {
        let d = scalar(&feature_distance(&c, &[layer], &x, &x_hat, false).expect("distance"));
        println!("{layer}: {d}");
        assert!(d > 1e-4 && d.is_finite(), "{layer}: {d}");
    }
    // The classifier sees the reconstruction clamped: overshoot beyond [0, 1] of an
    // image already at the bounds changes nothing.
    let saturated = x.ge(0.5).to_kind(Kind::Float);
    let overshoot = &saturated * 1.2 - 0.1;
    let d = feature_distance(&c, &[FeatureLayer::Stem], &saturated, &overshoot, false)
        .expect("distance");
    assert!(scalar(&d) < 1e-9, "{}", scalar(&d));
    assert!(observer_input(&x, true).expect("preprocess").size() == [2, 3, 224, 224]);
    assert!(observer_input(&x, false).expect("normalize").size() == [2, 3, 192, 192]);
}

#[test]
fn gradients_reach_the_codec_not_the_classifier() {
    let c = classifier();
    let measure =
        DistortionMeasure::with_classifier(Distortion::observer(1.0), Some(c)).expect("measure");
    tch::manual_seed(1);
    let variables = nn::VarStore::new(Device::Cpu);
    let network = MeanScaleHyperprior::new(&variables.root(), HyperpriorConfig { n: 8, m: 12 });
    let x = images(2, 192, 192);
    let output = network.forward(&x, true);
    // alpha = 1: the only distortion gradient is the feature term's.
    let terms = measure.compute(&x, &output.x_hat).expect("distortion");
    assert!(terms.total.requires_grad());
    terms.total.backward();
    let g_s: Vec<(String, Tensor)> = variables
        .variables()
        .into_iter()
        .filter(|(name, _)| name.starts_with("g_s.") && name.ends_with("weight"))
        .collect();
    assert!(!g_s.is_empty());
    for (name, v) in &g_s {
        let g = v.grad();
        assert!(g.defined(), "{name} has no gradient");
        assert!(
            scalar(&g.abs().sum(Kind::Float)) > 0.0,
            "{name} has a zero gradient"
        );
    }
    assert!(measure.observer().is_some());
    let classifier = self::classifier();
    assert!(classifier.is_frozen());
    // The original's features carry no graph, the reconstruction's do.
    let features = classifier
        .features(
            &observer_input(&x, false).expect("input"),
            &[FeatureLayer::Head],
        )
        .expect("features");
    assert!(!features[0].requires_grad());
}

/// Two steps of observer training (`alpha`) of a tiny network on one-image batches.
fn two_step_config(
    data: PathBuf,
    output: PathBuf,
    run_dir: PathBuf,
    alpha: f64,
    crop_size: i64,
) -> TrainConfig {
    let mut config = TrainConfig::new(data, output, run_dir);
    config.distortion = Distortion::observer(alpha);
    config.lambda = 8.0;
    config.network = HyperpriorConfig { n: 8, m: 12 };
    config.steps = 2;
    config.batch_size = 1;
    config.crop_size = crop_size;
    config.validate_every = 0;
    config.progress = false;
    config
}

fn write_png(path: &Path, seed: u32) {
    let image = image::RgbImage::from_fn(256, 256, |x, y| {
        let v = |c: u32| {
            let t = (x * (c + 1) + y * 2 + seed * 37) as f32 * 0.05;
            (127.0 + 100.0 * t.sin() + 20.0 * ((x ^ y) % 7) as f32) as u8
        };
        image::Rgb([v(0), v(1), v(2)])
    });
    image.save(path).expect("write png");
}

#[test]
fn observer_training_writes_a_model_file() {
    let weights = default_weights_path();
    assert!(
        weights.exists(),
        "observer weights {} not found: run `make setup` (scripts/setup-observer.sh)",
        weights.display()
    );
    let dir = temp_dir("train");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    write_png(&data.join("a.png"), 1);
    write_png(&data.join("b.png"), 2);
    let output = dir.join("observer.safetensors");
    let mut config = two_step_config(data, output.clone(), dir.join("run"), 0.5, 192);
    config.observer_weights = Some(weights);
    config.name = "observer-tiny".into();
    let outcome = train(&config).expect("training runs");
    assert_eq!(
        outcome,
        TrainOutcome::Finished {
            steps: 2,
            validation: None
        }
    );
    let model = CodecModel::load(&output).expect("the model file loads");
    assert_eq!(model.info().distortion, Distortion::observer(0.5));
    assert_eq!(model.info().distortion.to_string(), "observer-0.5");
    let config_json =
        std::fs::read_to_string(dir.join("run").join("config.json")).expect("config.json");
    let saved: TrainConfig = serde_json::from_str(&config_json).expect("config parses");
    assert_eq!(saved.distortion, Distortion::observer(0.5));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One network for every observer mix: it trains from a plain model file (its conditioning
/// starting at identity), is validated at both mixes with real coding, and its file says what
/// it is and loads with the conditioning's variables.
#[test]
fn a_network_for_every_observer_mix_trains_from_a_plain_one() {
    let weights = default_weights_path();
    assert!(
        weights.exists(),
        "observer weights {} not found: run `make setup` (scripts/setup-observer.sh)",
        weights.display()
    );
    let dir = temp_dir("mix");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    write_png(&data.join("a.png"), 4);
    let network = HyperpriorConfig { n: 8, m: 12 };
    let plain = dir.join("plain.safetensors");
    let bytes = ocular_models::model_file::untrained_model_bytes(network, "plain", 9)
        .expect("untrained model");
    std::fs::write(&plain, bytes).expect("write the plain model");
    let output = dir.join("mix.safetensors");
    let mut config = two_step_config(data.clone(), output.clone(), dir.join("run"), 0.5, 192);
    config.observer_weights = Some(weights);
    config.network = network;
    config.observer_mix = true;
    config.init_from = Some(plain);
    config.validation = Some(data);
    train(&config).expect("training for every mix");

    let model = CodecModel::load(&output).expect("the model file loads");
    assert!(model.info().observer_mix);
    assert!(model.network().has_observer_mix());
    let validation =
        std::fs::read_to_string(dir.join("run").join("validation.csv")).expect("validation.csv");
    let mut lines = validation.lines();
    assert!(lines.next().expect("header").ends_with(",alpha"));
    let alphas: Vec<&str> = lines.map(|l| l.rsplit(',').next().unwrap_or("")).collect();
    assert_eq!(alphas, ["0", "0.5"], "{validation}");

    // The measure of a mix is the observer distortion at that alpha.
    let measure = DistortionMeasure::new(Distortion::observer(0.5), &default_weights_path())
        .expect("measure");
    let x = images(1, 192, 192);
    let x_hat = (&x * 0.95 + 0.02).clamp(0.0, 1.0);
    for alpha in [0.0, 0.3, 1.0] {
        let at = DistortionMeasure::new(Distortion::observer(alpha), &default_weights_path())
            .expect("measure");
        let expected = scalar(&at.compute(&x, &x_hat).expect("distortion").total);
        let mixed = scalar(
            &measure
                .compute_mixed(&x, &x_hat, alpha)
                .expect("mixed")
                .total,
        );
        assert!(
            close(mixed, expected, 1e-6),
            "alpha {alpha}: {mixed} against {expected}"
        );
    }
    assert!(measure.compute_mixed(&x, &x_hat, 1.5).is_err());

    // Only the observer distortion mixes.
    let mut mse = two_step_config(
        dir.clone(),
        dir.join("x.safetensors"),
        dir.join("r"),
        0.5,
        192,
    );
    mse.distortion = Distortion::Mse;
    mse.observer_mix = true;
    assert!(matches!(train(&mse), Err(ModelError::InvalidModel(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A user's TorchScript observer that returns logits only (what tracing from Rust can make):
/// the feature term then compares the logits, and a model trains with it, without the
/// built-in classifier's weights.
#[test]
fn torchscript_observer_trains_a_model() {
    let dir = temp_dir("torchscript");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    write_png(&data.join("a.png"), 3);
    let module_path = dir.join("pooled.pt");
    // "Logits": the 4x4 average-pooled image, 48 values per image.
    let example = Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    let module = tch::CModule::create_by_tracing("Pooled", "forward", &[example], &mut |x| {
        vec![x[0].adaptive_avg_pool2d([4, 4]).flatten(1, -1)]
    })
    .expect("trace");
    module.save(&module_path).expect("save");

    let observer = TorchScriptObserver::load(&module_path).expect("load");
    let measure =
        DistortionMeasure::with_observer(Distortion::observer(1.0), Some(Box::new(observer)))
            .expect("measure");
    let x = images(2, 64, 64);
    let leaf = (&x * 0.9).set_requires_grad(true);
    let terms = measure.compute(&x, &leaf).expect("distortion");
    let f = terms.features.expect("feature term");
    assert!(scalar(&f) > 0.0);
    terms.total.backward();
    assert!(scalar(&leaf.grad().abs().sum(Kind::Float)) > 0.0);
    let same = measure.compute(&x, &x.copy()).expect("distortion");
    assert!(scalar(&same.total) < 1e-9);

    let output = dir.join("ts.safetensors");
    let mut config = two_step_config(data, output.clone(), dir.join("run"), 1.0, 128);
    config.observer_torchscript = Some(module_path.clone());
    config.observer_weights = Some(dir.join("absent.safetensors"));
    train(&config).expect("training with a TorchScript observer");
    let model = CodecModel::load(&output).expect("the model file loads");
    let observer = model
        .info()
        .training
        .observer
        .clone()
        .expect("observer recorded");
    assert!(observer.starts_with("torchscript:"), "{observer}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- measurements (ignored)

/// Random `side` crops of the training images (deterministic), in batches of `batch`.
///
/// # Panics
/// If `../shared/data/train` holds no images.
fn training_crops(count: usize, side: u32, batch: usize) -> Vec<Tensor> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/train");
    let files = ocular_models::train::image_files(&root).unwrap_or_default();
    assert!(
        !files.is_empty(),
        "no training images in {}: the measurement needs ../shared/data/train",
        root.display()
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    let mut crops = Vec::new();
    while crops.len() < count {
        let file = &files[next(files.len() as u64) as usize];
        let Ok(image) = image::open(file) else {
            continue;
        };
        let image = image.to_rgb8();
        if image.width() < side || image.height() < side {
            continue;
        }
        let left = next(u64::from(image.width() - side + 1)) as u32;
        let top = next(u64::from(image.height() - side + 1)) as u32;
        let crop = image::imageops::crop_imm(&image, left, top, side, side).to_image();
        crops.push(crop);
    }
    crops
        .chunks(batch)
        .map(|chunk| {
            let tensors: Vec<Tensor> = chunk
                .iter()
                .map(|c| {
                    Tensor::from_slice(c.as_raw())
                        .view([i64::from(side), i64::from(side), 3])
                        .permute([2, 0, 1])
                        .to_kind(Kind::Float)
                        / 255.0
                })
                .collect();
            Tensor::stack(&tensors, 0)
        })
        .collect()
}

/// JPEG (4:2:0) round trip of every image of a batch, and the mean bits per pixel.
fn jpeg(batch: &Tensor, quality: u8) -> (Tensor, f64) {
    let size = batch.size();
    let (h, w) = (size[2], size[3]);
    let mut bytes_total = 0usize;
    let decoded: Vec<Tensor> = (0..size[0])
        .map(|i| {
            let bytes = Vec::<u8>::try_from(
                (batch.get(i) * 255.0)
                    .round()
                    .clamp(0.0, 255.0)
                    .to_kind(Kind::Uint8)
                    .permute([1, 2, 0])
                    .contiguous()
                    .flatten(0, -1),
            )
            .expect("bytes");
            let mut encoded = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, quality)
                .encode(&bytes, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .expect("jpeg");
            bytes_total += encoded.len();
            let back = image::load_from_memory(&encoded).expect("decode").to_rgb8();
            Tensor::from_slice(back.as_raw())
                .view([h, w, 3])
                .permute([2, 0, 1])
                .to_kind(Kind::Float)
                / 255.0
        })
        .collect();
    let bpp = bytes_total as f64 * 8.0 / (size[0] * h * w) as f64;
    (Tensor::stack(&decoded, 0), bpp)
}

fn load_human_model(path: &Path) -> (nn::VarStore, MeanScaleHyperprior) {
    let mut variables = nn::VarStore::new(Device::Cpu);
    let network = MeanScaleHyperprior::new(&variables.root(), HyperpriorConfig::default());
    match CodecModel::load(path) {
        Ok(model) => model.copy_weights_to(&mut variables).expect("same shape"),
        Err(_) => variables
            .load(path)
            .expect("a model file or a training checkpoint"),
    }
    (variables, network)
}

/// Prints, per reconstruction source, the means of `1 - MS-SSIM`, `L_f` and its per-layer
/// parts over 48 random 192x192 training crops, and their ratio (the `w_f` that equalises the
/// two terms).
#[test]
#[ignore = "measurement: needs the observer weights and ../shared/data/train"]
fn calibrate_feature_weight() {
    let c = classifier();
    let batches = training_crops(48, 192, 8);
    let layers = ocular_models::observer::DEFAULT_FEATURE_LAYERS;
    let ms = DistortionMeasure::with_classifier(Distortion::MsSsim, None).expect("ms-ssim");
    let model = std::env::var_os("OBSERVER_CALIBRATION_MODEL").map(PathBuf::from);
    let human = model.as_deref().map(load_human_model);
    type Reconstruct<'a> = Box<dyn Fn(&Tensor) -> (Tensor, f64) + 'a>;
    let mut sources: Vec<(String, Reconstruct)> = Vec::new();
    if let Some((_, network)) = &human {
        sources.push((
            format!(
                "model {}",
                model.as_deref().unwrap_or(Path::new("")).display()
            ),
            Box::new(move |x: &Tensor| {
                let out = network.forward(x, false);
                let bpp = scalar(&out.bits_per_pixel(192 * 192));
                (out.x_hat.clamp(0.0, 1.0), bpp)
            }),
        ));
    } else {
        eprintln!("OBSERVER_CALIBRATION_MODEL not set: JPEG only");
    }
    for quality in [20u8, 40, 60, 80] {
        sources.push((
            format!("JPEG q{quality}"),
            Box::new(move |x: &Tensor| jpeg(x, quality)),
        ));
    }
    // The normalisers themselves: how stable is the per-batch feature energy?
    for layer in layers {
        let energies: Vec<f64> = batches
            .iter()
            .map(|x| {
                let f = tch::no_grad(|| {
                    c.features(&observer_input(x, false).expect("input"), &[layer])
                        .expect("features")
                });
                scalar(&f[0].square().mean(Kind::Float))
            })
            .collect();
        let mean = energies.iter().sum::<f64>() / energies.len() as f64;
        let sd = (energies.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / energies.len() as f64)
            .sqrt();
        println!("{layer}: mean squared feature {mean:.4} (batch-to-batch sd {sd:.4})");
    }
    println!(
        "source | bpp | PSNR | 1-MS-SSIM | L_f | stage1 | head | ratio (1-MS-SSIM)/L_f \
         | gradient-norm ratio |d(1-MS-SSIM)/dx_hat| / |dL_f/dx_hat|"
    );
    for (name, reconstruct) in &sources {
        let (mut m, mut f, mut per_layer) = (0.0, 0.0, [0.0; 2]);
        let (mut bpp, mut psnr, mut gradient_ratio) = (0.0, 0.0, 0.0);
        for x in &batches {
            let (x_hat, rate) = tch::no_grad(|| reconstruct(x));
            let leaf = x_hat.detach().set_requires_grad(true);
            let norm = |term: Tensor| {
                let g = Tensor::run_backward(&[term], &[&leaf], false, false);
                scalar(&g[0].square().sum(Kind::Float).sqrt())
            };
            let ms_gradient = norm(ms.compute(x, &leaf).expect("ms").total);
            let f_gradient = norm(feature_distance(&c, &layers, x, &leaf, false).expect("f"));
            gradient_ratio += ms_gradient / f_gradient;
            bpp += rate;
            psnr += ocular_models::losses::psnr(scalar(&(x - &x_hat).square().mean(Kind::Float)));
            tch::no_grad(|| {
                m += scalar(&ms.compute(x, &x_hat).expect("ms").total);
                f += scalar(&feature_distance(&c, &layers, x, &x_hat, false).expect("f"));
                for (k, layer) in layers.iter().enumerate() {
                    per_layer[k] +=
                        scalar(&feature_distance(&c, &[*layer], x, &x_hat, false).expect("f"));
                }
            });
        }
        let n = batches.len() as f64;
        println!(
            "{name} | {:.3} | {:.2} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3}",
            bpp / n,
            psnr / n,
            m / n,
            f / n,
            per_layer[0] / n,
            per_layer[1] / n,
            m / f,
            gradient_ratio / n
        );
    }
}

/// Seconds per training step (the loop of `train()`: forward, loss, backward, clipping, Adam)
/// at batch 8, 192x192 crops, N=64, M=96. The distortions take turns, step by step, so a
/// varying load from other processes affects them alike; prints the median and the range.
#[test]
#[ignore = "measurement: needs the observer weights and ../shared/data/train"]
fn observer_step_timing() {
    let _ = classifier();
    let batches = training_crops(8 * 4, 192, 8);
    let steps: usize = std::env::var("OBSERVER_TIMING_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("threads: {}", tch::get_num_threads());
    let distortions = [
        Distortion::Mse,
        Distortion::MsSsim,
        Distortion::observer(0.0),
        Distortion::observer(0.5),
        Distortion::observer(1.0),
        Distortion::Observer(ObserverDistortion {
            crop_and_resize: true,
            ..ObserverDistortion::new(0.5)
        }),
    ];
    struct Run {
        label: String,
        measure: DistortionMeasure,
        _variables: nn::VarStore,
        network: MeanScaleHyperprior,
        optimizer: nn::Optimizer,
        times: Vec<f64>,
    }
    let mut runs: Vec<Run> = distortions
        .iter()
        .map(|&distortion| {
            tch::manual_seed(0);
            let variables = nn::VarStore::new(Device::Cpu);
            let network = MeanScaleHyperprior::new(&variables.root(), HyperpriorConfig::default());
            let optimizer = nn::Adam::default()
                .build(&variables, 1e-4)
                .expect("optimizer");
            let label = match distortion {
                Distortion::Observer(o) if o.crop_and_resize => {
                    format!("{distortion} (crop+resize)")
                }
                _ => distortion.to_string(),
            };
            Run {
                label,
                measure: DistortionMeasure::new(distortion, &default_weights_path())
                    .expect("measure"),
                _variables: variables,
                network,
                optimizer,
                times: Vec::new(),
            }
        })
        .collect();
    // Round 0 warms up allocations and kernels and is not counted.
    for step in 0..=steps {
        let x = &batches[step % batches.len()];
        for run in runs.iter_mut() {
            let start = Instant::now();
            let output = run.network.forward(x, true);
            let bpp = output.bits_per_pixel(192 * 192);
            let terms = run.measure.compute(x, &output.x_hat).expect("distortion");
            let loss = &bpp + &terms.total * 8.0;
            let aux = run.network.aux_loss();
            run.optimizer.zero_grad();
            (&loss + &aux).backward();
            run.optimizer.clip_grad_norm(1.0);
            run.optimizer.step();
            let _ = scalar(&loss);
            if step > 0 {
                run.times.push(start.elapsed().as_secs_f64());
            }
        }
    }
    for run in &mut runs {
        run.times.sort_by(f64::total_cmp);
        let t = &run.times;
        println!(
            "{}: median {:.2} s/step, range {:.2}..{:.2} over {} steps",
            run.label,
            t[t.len() / 2],
            t[0],
            t[t.len() - 1],
            t.len()
        );
    }
}
