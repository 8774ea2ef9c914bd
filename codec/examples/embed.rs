//! Embedding ocular: encodes an image with the default built-in model and decodes it again, in
//! pure Rust (the crate's default features: no libtorch).
//!
//! ```text
//! cargo run -p ocular --example embed -- IN.png OUT.png
//! ```
//! prints the file's bits per pixel and the PSNR of the decoded image.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ocular::{Decoder, Encoder, Limits, Model};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: embed IN.png OUT.png");
        return ExitCode::from(2);
    };
    match round_trip(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn round_trip(input: &Path, output: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::builtin_default()?;
    let image = ocular::open_image(input, &Limits::default())?;
    let file = Encoder::new(&model).encode(&image)?;
    let decoded = Decoder::new(&model).decode(&file)?;
    decoded.save(output)?;
    let pixels = f64::from(image.width()) * f64::from(image.height());
    let quality = ocular::metrics::measure(&image.to_rgb8(), &decoded.to_rgb8());
    println!(
        "{}: {} bytes, {:.4} bpp, PSNR {:.2} dB (model {})",
        input.display(),
        file.len(),
        file.len() as f64 * 8.0 / pixels,
        quality.psnr,
        model.name()
    );
    Ok(())
}
