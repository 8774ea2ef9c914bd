//! Decodes an `.ocu` file with the built-in model that made it, in pure Rust (default features:
//! no libtorch): what `ocular decode` does, in a program that links nothing else.
//!
//! ```text
//! cargo run --release -p ocular --example decode -- IN.ocu OUT.png
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ocular::{Bitstream, Decoder, Limits, Model};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: decode IN.ocu OUT.png");
        return ExitCode::from(2);
    };
    match decode(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode: {e}");
            ExitCode::FAILURE
        }
    }
}

fn decode(input: &Path, output: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(input)?;
    let limits = Limits::default();
    let bitstream = Bitstream::parse(&bytes, &limits)?;
    let header = &bitstream.header;
    let model = Model::builtin_for(&header.model_name, header.model_fingerprint)?;
    // Row by row into the PNG: the decoded image is never held whole.
    let file = std::io::BufWriter::new(std::fs::File::create(output)?);
    Decoder::new(&model)
        .with_limits(limits)
        .decode_png(&bytes, file)?;
    Ok(())
}
