//! Decodes an `.ocu` file with the libtorch networks (`ocular_models::CodecModel`), as `ocular
//! decode` did before decoding moved to pure Rust: for comparing the two paths' time and memory
//! (docs/results.md). Needs the `torch` feature.
//!
//! ```text
//! cargo run --release -p ocular --features torch --example decode_torch -- IN.ocu MODEL.safetensors OUT.png
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ocular::{Bitstream, LatentShape, Limits, QuantizationStep, Shrinkage};
use ocular_models::imaging::tensor_to_rgb;
use ocular_models::{CodecModel, CompressedLatents};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, model, output] = args.as_slice() else {
        eprintln!("usage: decode_torch IN.ocu MODEL.safetensors OUT.png");
        return ExitCode::from(2);
    };
    match decode(input, model, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode_torch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn decode(input: &Path, model: &Path, output: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bitstream = Bitstream::parse(&std::fs::read(input)?, &Limits::default())?;
    let model = CodecModel::load(model)?;
    if model.fingerprint() != bitstream.header.model_fingerprint.0 {
        return Err("the file was made by another model".into());
    }
    let header = &bitstream.header;
    let shape = |s: LatentShape| [s.channels, s.height, s.width].map(i64::from);
    let latents = CompressedLatents {
        y_shape: shape(header.y_shape),
        z_shape: shape(header.z_shape),
        step: header.quantization_step.unwrap_or(QuantizationStep::ONE),
        shrinkage: header.shrinkage.unwrap_or(Shrinkage::NONE),
        z_stream: bitstream.z_stream.clone(),
        y_stream: bitstream.y_stream.clone(),
    };
    let x_hat = model.network().decompress(&latents, model.tables())?;
    tensor_to_rgb(&x_hat, header.width, header.height).save(output)?;
    Ok(())
}
