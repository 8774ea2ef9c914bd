//! The `ocular` command as a user without libtorch gets it (`cargo install --path cli`, default
//! features): encode, decode, info and roundtrip with the built-in default model, in pure Rust.
//! `make test` runs this file against that build as well as against the full one.

use std::path::Path;
use std::process::{Command, Output};

fn ocular(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A 128x96 crop of the README's sample image, written into `dir`.
fn sample(dir: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = image::open(root.join("assets/ladybird.png")).expect("the sample image opens");
    let path = dir.join("crop.png");
    image
        .crop_imm(64, 64, 128, 96)
        .save(&path)
        .expect("the crop is written");
    path.display().to_string()
}

#[test]
fn encode_info_decode_round_trip_through_files() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let input = sample(dir.path());
    let file = dir.path().join("crop.ocu").display().to_string();
    let output = dir.path().join("decoded.png").display().to_string();

    let encoded = ocular(&["encode", &input, "-o", &file]);
    assert!(encoded.status.success(), "encode: {}", text(&encoded));
    let info = ocular(&["info", &file]);
    assert!(info.status.success(), "info: {}", text(&info));
    assert!(text(&info).contains("128x96"), "info: {}", text(&info));
    let decoded = ocular(&["decode", &file, "-o", &output]);
    assert!(decoded.status.success(), "decode: {}", text(&decoded));
    let image = image::open(&output).expect("the decoded PNG opens");
    assert_eq!((image.width(), image.height()), (128, 96));
}

#[test]
fn roundtrip_prints_rate_and_quality() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let input = sample(dir.path());
    let out = ocular(&["roundtrip", &input]);
    let all = text(&out);
    assert!(out.status.success(), "roundtrip: {all}");
    assert!(
        all.contains("bpp") && all.contains("PSNR"),
        "roundtrip: {all}"
    );
}

#[test]
fn a_corrupt_file_fails_cleanly() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("bad.ocu");
    std::fs::write(&file, b"OCU\x01 not really a file").expect("written");
    let out = ocular(&["decode", &file.display().to_string(), "-o", "unused.png"]);
    let all = text(&out);
    assert!(!out.status.success(), "should fail: {all}");
    assert!(!all.contains("panicked"), "panicked: {all}");
}

#[test]
fn the_default_model_takes_any_quality_in_its_range() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let input = sample(dir.path());
    let size = |quality: &str| {
        let file = dir.path().join(format!("q{quality}.ocu"));
        let out = ocular(&[
            "encode",
            &input,
            "-o",
            &file.display().to_string(),
            "-q",
            quality,
        ]);
        assert!(out.status.success(), "--quality {quality}: {}", text(&out));
        std::fs::metadata(&file).expect("written").len()
    };
    // A continuous scale, negative values included: more quality, more bytes.
    assert!(size("-1.5") < size("3.5"));
    assert!(size("3.5") < size("9"));
    let out = ocular(&["encode", &input, "-o", "unused.ocu", "-q", "13"]);
    let all = text(&out);
    assert!(!out.status.success(), "should fail: {all}");
    assert!(all.contains("outside"), "{all}");
    assert!(!all.contains("panicked"), "panicked: {all}");
}

#[test]
fn the_command_calls_itself_ocular() {
    let out = ocular(&["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("ocular {}", env!("CARGO_PKG_VERSION"))
    );
}
