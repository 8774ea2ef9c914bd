//! Encoder-side refinement (`ocular_models::refine`) with a shipped model: it lowers the model's
//! own objective as measured independently on the decoded file, keeps to a rate budget, and is
//! repeatable.

use std::path::Path;

use ocular_models::hyperprior::Y_DOWNSAMPLING;
use ocular_models::imaging::{pad_to_multiple, rgb_to_tensor};
use ocular_models::losses::DistortionMeasure;
use ocular_models::refine::{Refinement, DEFAULT_REFINE_LEARNING_RATE};
use ocular_models::{CodecModel, CompressedLatents, Distortion};
use tch::{Kind, Tensor};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A 96x64 corner of the sample image (small: the tests run in debug builds).
fn sample() -> (Tensor, (i64, i64)) {
    let image = image::open(repo("assets/ladybird.png"))
        .expect("sample image")
        .crop_imm(40, 30, 96, 64)
        .to_rgb8();
    let visible = (i64::from(image.height()), i64::from(image.width()));
    (
        pad_to_multiple(&rgb_to_tensor(&image), Y_DOWNSAMPLING),
        visible,
    )
}

/// `bits / pixels + lambda * 255^2 * MSE` of what the decoder makes of `latents`: the `mse`
/// objective measured on the real file, independently of the refiner's own estimate.
fn coded_objective(model: &CodecModel, latents: &CompressedLatents, x: &Tensor) -> f64 {
    let decoded = model
        .network()
        .decompress(latents, model.tables())
        .expect("decompress");
    let (height, width) = (x.size()[2], x.size()[3]);
    let mse = (decoded - x).square().mean(Kind::Double).double_value(&[]);
    let bits = 8.0 * (latents.y_stream.len() + latents.z_stream.len()) as f64;
    bits / (height * width) as f64 + model.info().lambda * 255.0 * 255.0 * mse
}

#[test]
fn refinement_lowers_the_coded_objective_within_budget_and_repeatably() {
    let model = CodecModel::load(&repo("models/trained/mse-q3.safetensors")).expect("model");
    assert_eq!(model.info().distortion, Distortion::Mse);
    let measure = DistortionMeasure::new(Distortion::Mse, Path::new("unused")).expect("mse");
    let (x, visible) = sample();
    // The sample is a multiple of 16 already: the visible area is the whole tensor, so the
    // independent objective below sees exactly what the refiner saw.
    assert_eq!(visible, (x.size()[2], x.size()[3]));
    let network = model.network();
    let unrefined = network.compress(&x, model.tables()).expect("compress");

    let refine = |steps, max_y_bytes| {
        let refinement = Refinement {
            distortion: &measure,
            lambda: model.info().lambda,
            steps,
            learning_rate: DEFAULT_REFINE_LEARNING_RATE,
            max_y_bytes,
            step: ocular_entropy::QuantizationStep::ONE,
            views: 0,
            view_seed: 0,
        };
        network
            .compress_refined(&x, visible, model.tables(), &refinement)
            .expect("refine")
    };

    // Zero steps code the analysis transform's latent: the plain encoder's file.
    let (same, report) = refine(0, None);
    assert_eq!(same, unrefined);
    assert_eq!(report.best_step, 0);

    let (refined, report) = refine(8, None);
    assert!(report.best_step > 0, "{report:?}");
    assert!(
        report.final_objective < report.initial_objective,
        "{report:?}"
    );
    let before = coded_objective(&model, &unrefined, &x);
    let after = coded_objective(&model, &refined, &x);
    println!("coded objective {before:.4} -> {after:.4}; refiner's estimate {report:?}");
    assert!(after < before, "coded objective {before} -> {after}");

    // Same input, same thread count: the same file.
    assert_eq!(refine(8, None).0, refined);

    // A budget below the unrefined y stream: refinement must save bits, not spend them.
    let budget = unrefined.y_stream.len() * 9 / 10;
    let (thrifty, report) = refine(8, Some(budget));
    println!(
        "y stream {} bytes, budget {budget}, refined within it: {} bytes ({report:?})",
        unrefined.y_stream.len(),
        thrifty.y_stream.len()
    );
    assert!(
        report.best_step > 0,
        "no latent fitted the budget: {report:?}"
    );
    assert!(
        thrifty.y_stream.len() <= budget + 4,
        "{}",
        thrifty.y_stream.len()
    );
}

/// Refinement over views (expectation over transformation): a fixed seed gives the same file,
/// the seed picks the views, the objective still falls, and images too small for views are
/// refused with an error rather than cropped to nothing.
#[test]
fn refinement_over_views_is_deterministic_for_a_seed() {
    let model = CodecModel::load(&repo("models/trained/mse-q3.safetensors")).expect("model");
    let measure = DistortionMeasure::new(Distortion::Mse, Path::new("unused")).expect("mse");
    let (x, visible) = sample();
    let refine = |x: &Tensor, visible, views, view_seed| {
        let refinement = Refinement {
            distortion: &measure,
            lambda: model.info().lambda,
            steps: 6,
            learning_rate: DEFAULT_REFINE_LEARNING_RATE,
            max_y_bytes: None,
            step: ocular_entropy::QuantizationStep::ONE,
            views,
            view_seed,
        };
        model
            .network()
            .compress_refined(x, visible, model.tables(), &refinement)
    };
    let (first, report) = refine(&x, visible, 3, 11).expect("refines");
    assert!(
        report.final_objective <= report.initial_objective,
        "{report:?}"
    );
    assert_eq!(
        refine(&x, visible, 3, 11).expect("again").0,
        first,
        "same seed, same file"
    );
    let (plain, _) = refine(&x, visible, 0, 11).expect("plain");
    assert_ne!(plain, first, "the views change what is optimised");

    let small = x.narrow(2, 0, 16).narrow(3, 0, 32);
    let error = refine(&small, (16, 32), 3, 11).expect_err("too small for views");
    assert!(error.to_string().contains("at least"), "{error}");
}
