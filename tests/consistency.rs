//! The shipped default model against itself: what `compress` + `decompress` produce is exactly what
//! the train-time `forward` (in evaluation mode) computes, and the coded size is what the
//! likelihoods predict — on the unit grid and on the coarser and finer grids of a variable-rate
//! model's quantisation steps.

use std::path::Path;

use ocular_entropy::QuantizationStep;
use ocular_models::hyperprior::Y_DOWNSAMPLING;
use ocular_models::imaging::{pad_to_multiple, rgb_to_tensor};
use ocular_models::CodecModel;
use tch::Kind;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn compress_decompress_match_forward_and_predicted_rate() {
    for step in [1.0, 0.5, 2.5] {
        check_at(QuantizationStep::new(step).expect("step"));
    }
}

fn check_at(step: QuantizationStep) {
    let model =
        CodecModel::load(&repo("models/trained/mse-q3.safetensors")).expect("shipped model");
    let image = image::open(repo("assets/ladybird.png"))
        .expect("sample image")
        .to_rgb8();
    let x = pad_to_multiple(&rgb_to_tensor(&image), Y_DOWNSAMPLING);
    let pixels = i64::from(image.width() * image.height());
    let network = model.network();

    let latents = network
        .compress_at(&x, model.tables(), step)
        .expect("compress");
    assert_eq!(latents.step, step);
    let decoded = network
        .decompress(&latents, model.tables())
        .expect("decompress");
    let forward = tch::no_grad(|| network.forward_at(&x, step, false));
    let difference = (decoded - forward.x_hat.clamp(0.0, 1.0))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        difference < 1e-4,
        "step {step:?}: decoder output differs from forward by {difference}"
    );

    let predicted_bits = forward
        .bits_per_pixel(pixels)
        .to_kind(Kind::Double)
        .double_value(&[])
        * pixels as f64;
    let coded_bits = 8.0 * (latents.y_stream.len() + latents.z_stream.len()) as f64;
    let bits = |likelihoods: &tch::Tensor| -likelihoods.log2().sum(Kind::Double).double_value(&[]);
    println!(
        "step {step:?}: coded {coded_bits} bits, likelihoods predict {predicted_bits:.0} ({:+.3}%); z: coded {}, predicted {:.0}; y: coded {}, predicted {:.0}",
        100.0 * (coded_bits / predicted_bits - 1.0),
        8 * latents.z_stream.len(),
        bits(&forward.z_likelihoods),
        8 * latents.y_stream.len(),
        bits(&forward.y_likelihoods),
    );
    // Each stream is padded to whole 32-bit words: up to 8 bytes beyond the information content.
    let slack = 8.0 * 8.0;
    assert!(
        coded_bits <= predicted_bits * 1.01 + slack && coded_bits >= predicted_bits * 0.99 - slack,
        "step {step:?}: coded {coded_bits} bits, likelihoods predict {predicted_bits:.0}"
    );
}
