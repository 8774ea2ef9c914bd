//! The `ocular` command line: round trips through files, and clean failures (non-zero exit, a
//! message, no panic) for wrong models, corrupt files and bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ocular::train::{untrained_model_bytes, HyperpriorConfig};

fn ocular(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(args)
        .env("OMP_WAIT_POLICY", "PASSIVE")
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

fn assert_clean_failure(output: &Output, expected: &str) {
    let all = text(output);
    assert!(!output.status.success(), "should fail: {all}");
    assert!(!all.contains("panicked"), "panicked: {all}");
    assert!(all.contains(expected), "expected '{expected}' in: {all}");
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for (name, seed) in [("a", 1), ("b", 2)] {
            let bytes =
                untrained_model_bytes(HyperpriorConfig { n: 8, m: 12 }, name, seed).expect("model");
            std::fs::write(fixture.path(&format!("{name}.safetensors")), bytes)
                .expect("write model");
        }
        let image = image::RgbImage::from_fn(45, 30, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
        });
        image.save(fixture.path("in.png")).expect("write image");
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        path_str(&self.path(name))
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_string()
}

#[test]
fn encode_info_decode_round_trip() {
    let f = Fixture::new();
    let out = ocular(&[
        "encode",
        &f.arg("in.png"),
        "-o",
        &f.arg("x.ocu"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("bpp"));

    let out = ocular(&["info", &f.arg("x.ocu")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("45x30"), "{}", text(&out));
    let out = ocular(&["info", "--json", &f.arg("x.ocu")]);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("info --json prints JSON");
    assert_eq!(json["header"]["model_name"], "a");

    let out = ocular(&[
        "decode",
        &f.arg("x.ocu"),
        "-o",
        &f.arg("x.png"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let decoded = image::open(f.path("x.png")).expect("decoded PNG");
    assert_eq!((decoded.width(), decoded.height()), (45, 30));

    let out = ocular(&[
        "roundtrip",
        &f.arg("in.png"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("PSNR"));
}

#[test]
fn failures_are_clean() {
    let f = Fixture::new();
    let out = ocular(&[
        "encode",
        &f.arg("in.png"),
        "-o",
        &f.arg("x.ocu"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Wrong model.
    let out = ocular(&[
        "decode",
        &f.arg("x.ocu"),
        "-o",
        &f.arg("y.png"),
        "--model",
        &f.arg("b.safetensors"),
    ]);
    assert_clean_failure(&out, "made by model 'a'");
    // Corrupt file.
    let mut bytes = std::fs::read(f.path("x.ocu")).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(f.path("bad.ocu"), &bytes).expect("write");
    let out = ocular(&[
        "decode",
        &f.arg("bad.ocu"),
        "-o",
        &f.arg("y.png"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert_clean_failure(&out, "CRC");
    // Not an .ocu file at all.
    let out = ocular(&["info", &f.arg("in.png")]);
    assert_clean_failure(&out, "not a valid .ocu file");
    // Missing input, not an image, not a model.
    let out = ocular(&[
        "encode",
        &f.arg("missing.png"),
        "-o",
        &f.arg("z.ocu"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert_clean_failure(&out, "missing.png");
    let out = ocular(&[
        "encode",
        &f.arg("x.ocu"),
        "-o",
        &f.arg("z.ocu"),
        "--model",
        &f.arg("a.safetensors"),
    ]);
    assert_clean_failure(&out, "unusable input image");
    let out = ocular(&[
        "encode",
        &f.arg("in.png"),
        "-o",
        &f.arg("z.ocu"),
        "--model",
        &f.arg("in.png"),
    ]);
    assert_clean_failure(&out, "invalid model");
    // Bad arguments.
    let out = ocular(&["encode", &f.arg("in.png")]);
    assert_clean_failure(&out, "--output");
}

#[test]
fn every_command_explains_itself() {
    for command in [
        "encode",
        "decode",
        "info",
        "roundtrip",
        "models",
        "eval",
        "train",
    ] {
        let out = ocular(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help: {}", text(&out));
        assert!(text(&out).contains("Usage"), "{}", text(&out));
    }
}
