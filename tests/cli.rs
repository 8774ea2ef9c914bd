//! The `ocular` command line: round trips through files, and clean failures (non-zero exit, a
//! message, no panic) for wrong models, corrupt files and bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ocular::train::{
    untrained_model_bytes, untrained_observer_mix_model_bytes, HyperpriorConfig, QualityRange,
};

fn ocular(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(args)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .output()
        .expect("the binary runs")
}

/// `ocular encode INPUT -o OUTPUT --model MODEL`.
fn encode_with(input: &str, output: &str, model: &str) -> Output {
    ocular(&["encode", input, "-o", output, "--model", model])
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
    let out = encode_with(&f.arg("in.png"), &f.arg("x.ocu"), &f.arg("a.safetensors"));
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
    let out = encode_with(&f.arg("in.png"), &f.arg("x.ocu"), &f.arg("a.safetensors"));
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
    // The realism knob on a model without a realism decoder: an error, and no PNG left behind.
    let out = ocular(&[
        "decode",
        &f.arg("x.ocu"),
        "-o",
        &f.arg("r.png"),
        "--model",
        &f.arg("a.safetensors"),
        "--realism",
        "0.5",
    ]);
    assert_clean_failure(&out, "has no realism decoder");
    assert!(!text(&out).contains("cannot write"), "{}", text(&out));
    assert!(!f.path("r.png").exists(), "a partial PNG was left behind");
    // Not an .ocu file at all.
    let out = ocular(&["info", &f.arg("in.png")]);
    assert_clean_failure(&out, "not a valid .ocu file");
    // Missing input, not an image, not a model.
    let out = encode_with(
        &f.arg("missing.png"),
        &f.arg("z.ocu"),
        &f.arg("a.safetensors"),
    );
    assert_clean_failure(&out, "missing.png");
    let out = encode_with(&f.arg("x.ocu"), &f.arg("z.ocu"), &f.arg("a.safetensors"));
    assert_clean_failure(&out, "unusable input image");
    let out = encode_with(&f.arg("in.png"), &f.arg("z.ocu"), &f.arg("in.png"));
    assert_clean_failure(&out, "invalid model");
    // Neither a file nor a built-in model name.
    let out = encode_with(&f.arg("in.png"), &f.arg("z.ocu"), "no-such-model");
    assert_clean_failure(&out, "nor a built-in model");
    // A TorchScript observer that is not there.
    let out = ocular(&[
        "classify",
        &f.arg("in.png"),
        "--observer-torchscript",
        &f.arg("absent.pt"),
    ]);
    assert_clean_failure(&out, "absent.pt");
    // Bad arguments.
    let out = ocular(&["encode", &f.arg("in.png")]);
    assert_clean_failure(&out, "--output");
}

#[test]
fn a_builtin_model_can_be_chosen_by_name() {
    let f = Fixture::new();
    let name = ocular::Model::builtin_names()
        .next()
        .expect("ocular has built-in models");
    let out = encode_with(&f.arg("in.png"), &f.arg("named.ocu"), name);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("model {name}")),
        "{}",
        text(&out)
    );
    let out = ocular(&["decode", &f.arg("named.ocu"), "-o", &f.arg("named.png")]);
    assert!(out.status.success(), "{}", text(&out));
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
        "classify",
        "train",
    ] {
        let out = ocular(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help: {}", text(&out));
        assert!(text(&out).contains("Usage"), "{}", text(&out));
    }
    for subcommand in ["imagenet", "merge"] {
        let out = ocular(&["bench", subcommand, "--help"]);
        assert!(
            out.status.success(),
            "bench {subcommand} --help: {}",
            text(&out)
        );
        assert!(text(&out).contains("Usage"), "{}", text(&out));
    }
}

#[test]
fn bench_judges_and_shards_fail_cleanly() {
    let unknown = ocular(&["bench", "imagenet", "--judges", "lite0,vgg16"]);
    assert_clean_failure(&unknown, "unknown judge 'vgg16'");
    let twice = ocular(&["bench", "imagenet", "--judges", "lite1,lite1"]);
    assert_clean_failure(&twice, "judge lite1 is given twice");
    let both = ocular(&[
        "bench",
        "imagenet",
        "--judges",
        "lite0",
        "--observer-torchscript",
        "x.pt",
    ]);
    assert_clean_failure(&both, "cannot be used with");
    // `--shard auto` outside a job array says what it looked for (the shard is resolved
    // before anything is loaded). The variables are cleared in the child only.
    let auto = Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(["bench", "imagenet", "--shard", "auto"])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .expect("the binary runs");
    assert_clean_failure(&auto, "neither SLURM_ARRAY_TASK_ID");
    let gaps = Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(["bench", "imagenet", "--shard", "auto"])
        .envs([
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "5"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ])
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .expect("the binary runs");
    assert_clean_failure(&gaps, "--array=0-2");
    assert_clean_failure(
        &ocular(&["bench", "imagenet", "--shard", "2/2"]),
        "invalid shard",
    );
}

#[test]
fn train_writes_a_usable_model_and_resumes_only_when_asked() {
    let f = Fixture::new();
    let data = f.path("data");
    std::fs::create_dir_all(data.join("nested")).expect("data dir");
    for (i, name) in ["one.png", "nested/two.png"].iter().enumerate() {
        let image = image::RgbImage::from_fn(96, 80, |x, y| {
            image::Rgb([
                (x * 2 + i as u32 * 40) as u8,
                (y * 3) as u8,
                ((x ^ y) * 4) as u8,
            ])
        });
        image.save(data.join(name)).expect("write training image");
    }
    let model = f.arg("trained.safetensors");
    let run = f.arg("run");
    let train = |steps: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--data",
            data.to_str().expect("utf-8"),
            "--output",
            &model,
            "--run-dir",
            &run,
            "--n",
            "8",
            "--m",
            "12",
            "--crop-size",
            "64",
            "--batch-size",
            "2",
            "--steps",
            steps,
            "--validate-every",
            "0",
            "--name",
            "tiny-trained",
            "--quiet",
        ];
        if resume {
            args.push("--resume");
        }
        ocular(&args)
    };
    let out = train("2", false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("trained 2 steps"), "{}", text(&out));
    let log = std::fs::read_to_string(f.path("run/train.csv")).expect("train.csv");
    assert!(log.starts_with("step,"), "{log}");

    let out = ocular(&["roundtrip", &f.arg("in.png"), "--model", &model]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("tiny-trained"), "{}", text(&out));

    assert_clean_failure(&train("3", false), "--resume");
    let out = train("3", true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("trained 3 steps"), "{}", text(&out));

    // A wider network (hidden layers and y) starts from the run's checkpoint (widened); a
    // narrower one is refused.
    let checkpoint = f.arg("run/checkpoint.safetensors");
    let wide_model = f.arg("wide.safetensors");
    let widen = |n: &str, m: &str, run_dir: &str| {
        ocular(&[
            "train",
            "--data",
            data.to_str().expect("utf-8"),
            "--output",
            &wide_model,
            "--run-dir",
            run_dir,
            "--init",
            &checkpoint,
            "--n",
            n,
            "--m",
            m,
            "--crop-size",
            "64",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--validate-every",
            "0",
            "--name",
            "tiny-wide",
            "--quiet",
        ])
    };
    assert_clean_failure(&widen("8", "8", &f.arg("narrower")), "can only be widened");
    let out = widen("12", "20", &f.arg("wider"));
    assert!(out.status.success(), "{}", text(&out));
    let out = ocular(&["roundtrip", &f.arg("in.png"), "--model", &wide_model]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("tiny-wide"), "{}", text(&out));
}

#[test]
fn rate_control_reaches_the_target_or_says_it_cannot() {
    let f = Fixture::new();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/ladybird.png");
    let out = ocular(&["encode", sample, "-o", &f.arg("r.ocu"), "--bpp", "0.25"]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::metadata(f.path("r.ocu")).expect("written").len();
    assert!(
        bytes as f64 * 8.0 / (768.0 * 512.0) <= 0.25,
        "{bytes} bytes exceed 0.25 bpp"
    );
    assert!(text(&out).contains("reached"), "{}", text(&out));
    // Exact: the variable-rate PSNR network lands within 3% under the target.
    assert!(
        bytes as f64 * 8.0 / (768.0 * 512.0) >= 0.97 * 0.25,
        "{bytes} bytes are below 0.97 x 0.25 bpp"
    );
    assert!(text(&out).contains("mse-vr"), "{}", text(&out));

    assert_clean_failure(
        &ocular(&["encode", sample, "-o", &f.arg("s.ocu"), "--bpp", "0.001"]),
        "cannot reach",
    );
    assert_clean_failure(
        &ocular(&["encode", sample, "-o", &f.arg("s.ocu"), "--bpp", "0"]),
        "positive",
    );
}

#[test]
fn refined_files_decode_and_keep_to_the_rate_target() {
    let f = Fixture::new();
    let out = ocular(&[
        "encode",
        &f.arg("in.png"),
        "-o",
        &f.arg("r.ocu"),
        "--model",
        "mse-q1",
        "--refine",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ocular(&["decode", &f.arg("r.ocu"), "-o", &f.arg("r.png")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        image::open(f.path("r.png"))
            .expect("decoded")
            .to_rgb8()
            .dimensions(),
        (45, 30)
    );

    // Refinement over views: a picture too small for them is refused plainly; a larger one
    // refines and decodes.
    let views = |input: &str, output: &str| {
        ocular(&[
            "encode",
            input,
            "-o",
            output,
            "--model",
            "mse-q1",
            "--refine",
            "2",
            "--refine-views",
            "2",
        ])
    };
    assert_clean_failure(&views(&f.arg("in.png"), &f.arg("v.ocu")), "at least 32 px");
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    })
    .save(f.path("larger.png"))
    .expect("write image");
    let out = views(&f.arg("larger.png"), &f.arg("v.ocu"));
    assert!(out.status.success(), "{}", text(&out));
    let out = ocular(&["decode", &f.arg("v.ocu"), "-o", &f.arg("v.png")]);
    assert!(out.status.success(), "{}", text(&out));
    // Views without refinement mean nothing: refused by the argument parser.
    let out = ocular(&[
        "encode",
        &f.arg("in.png"),
        "-o",
        &f.arg("w.ocu"),
        "--refine-views",
        "2",
    ]);
    assert_clean_failure(&out, "--refine");
    // An observer model refines against the classifier: without it, a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(["encode", &f.arg("in.png"), "-o", &f.arg("m.ocu")])
        .args(["--model", "machine-q1", "--refine", "1"])
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .env("OCULAR_CACHE", f.path("empty-cache"))
        .output()
        .expect("the binary runs");
    assert_clean_failure(&out, "observer unavailable");

    assert!(
        ocular::observer::default_weights_path().exists(),
        "the observer half needs the classifier weights: run `make setup`"
    );
    // The tiny image costs far more than 0.25 bpp in header alone: the alpha-1 family's
    // machine-q1 makes about 0.98 bpp of it, machine-q2 about 1.17, so 1.1 bpp takes the
    // first, refined under the budget.
    let observed_at = |bpp: &str, observer: &str| {
        ocular(&[
            "encode",
            &f.arg("in.png"),
            "-o",
            &f.arg("m.ocu"),
            "--bpp",
            bpp,
            "--observer",
            observer,
            "--refine",
            "2",
        ])
    };
    let out = observed_at("1.1", "1");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("machine-q1"), "{}", text(&out));
    let bytes = std::fs::metadata(f.path("m.ocu")).expect("written").len();
    assert!(bytes as f64 * 8.0 / (45.0 * 30.0) <= 1.1, "{bytes} bytes");
    // Above what the family's highest rate point makes: an error that says what it reaches,
    // not a smaller file in silence.
    assert_clean_failure(&observed_at("4", "1"), "reaches at most");
    // `machine` is the alpha-0.5 family, whose objective has an MS-SSIM term: too small an
    // image for its five scales is refused as the image's fault, before any work.
    assert_clean_failure(&observed_at("1.1", "machine"), "at least 161 px a side");
    let out = ocular(&["decode", &f.arg("m.ocu"), "-o", &f.arg("m.png")]);
    assert!(out.status.success(), "{}", text(&out));

    // Several observers at once: Lite0 and Lite2 together; the file is an ordinary one.
    let observed_by = |model: &str, observers: &str, output: &str| {
        ocular(&[
            "encode",
            &f.arg("in.png"),
            "-o",
            &f.arg(output),
            "--model",
            model,
            "--refine",
            "1",
            "--refine-observers",
            observers,
        ])
    };
    let out = observed_by("machine-q1", "lite0,LITE2", "e.ocu");
    assert!(out.status.success(), "{}", text(&out));
    let out = ocular(&["decode", &f.arg("e.ocu"), "-o", &f.arg("e.png")]);
    assert!(out.status.success(), "{}", text(&out));
    // A PSNR model observes nothing; unknown and repeated classifiers are refused up front.
    assert_clean_failure(
        &observed_by("mse-q1", "lite0", "p.ocu"),
        "compares no classifier",
    );
    assert_clean_failure(&observed_by("machine-q1", "lite3", "x.ocu"), "lite3");
    assert_clean_failure(
        &observed_by("machine-q1", "lite2,lite2", "x.ocu"),
        "given twice",
    );
}

/// `ocular models` says which built-in models each `--observer` selects.
#[test]
fn the_model_list_names_what_each_observer_selects() {
    let out = ocular(&["models"]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    let line = |name: &str| {
        listing
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {listing}"))
            .to_string()
    };
    assert!(line("mixed-q1").contains("--observer machine"), "{listing}");
    assert!(line("machine-q2").contains("--observer 1"), "{listing}");
    assert!(line("msssim-q3").contains("--observer human"), "{listing}");
    assert!(line("mse-vr").contains("the default"), "{listing}");
    assert!(!line("mse-vr").contains("--observer"), "{listing}");
}

/// A reader that goes away (`ocular models | head -1`) ends the command quietly, not in a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocular"))
        .arg("models")
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Closed before the program (which first loads libtorch) writes a line.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("it ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{stderr}");
}

/// A saved `eval --json` report is drawn again without evaluating anything.
#[test]
fn eval_redraws_a_saved_report() {
    let f = Fixture::new();
    let saved = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results/kodak.json");
    let out = ocular(&[
        "eval",
        "--from-json",
        &path_str(&saved),
        "--published-kodak",
        "--plot",
        &f.arg("rd.svg"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ocular:mse-q3"), "{}", text(&out));
    let svg = std::fs::read_to_string(f.path("rd.svg")).expect("SVG written");
    assert!(svg.contains("(published)"));
    std::fs::write(f.path("other.json"), "{\"rows\": 3}").expect("write");
    let out = ocular(&["eval", "--from-json", &f.arg("other.json")]);
    assert_clean_failure(&out, "not an `ocular eval --json` report");
}

/// `eval --html` writes the page and its pictures beside it; its options need it.
#[test]
fn eval_writes_a_visual_report() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("images")).expect("mkdir");
    std::fs::copy(f.path("in.png"), f.path("images/in.png")).expect("copy");
    let out = ocular(&[
        "eval",
        "--data",
        &f.arg("images"),
        "--model",
        &f.arg("a.safetensors"),
        "--model",
        &f.arg("b.safetensors"),
        "--against",
        "webp",
        "--quiet",
        "--html",
        &f.arg("page.html"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 comparison(s)"), "{}", text(&out));
    let html = std::fs::read_to_string(f.path("page.html")).expect("page written");
    assert!(html.contains("in.png: ocular (mse)") && html.contains("webp"));
    // The original, and two rate points of ocular and webp each.
    assert_eq!(
        std::fs::read_dir(f.path("page_files"))
            .expect("pictures")
            .count(),
        5
    );
    let out = ocular(&["eval", "--html-images", "2"]);
    assert_clean_failure(&out, "--html");
    let out = ocular(&["eval", "--from-json", "r.json", "--html", "p.html"]);
    assert_clean_failure(&out, "cannot be used with");
}

#[test]
fn a_variable_rate_model_trains_and_codes_at_any_quality_and_exact_rate() {
    let f = Fixture::new();
    let data = f.path("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let image = image::RgbImage::from_fn(96, 80, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x ^ y) * 4) as u8])
    });
    image
        .save(data.join("one.png"))
        .expect("write training image");
    let model = f.arg("vr.safetensors");
    let train = |range: &str| {
        ocular(&[
            "train",
            "--data",
            &path_str(&data),
            "--output",
            &model,
            "--run-dir",
            &f.arg(&format!("run{range}")),
            "--n",
            "8",
            "--m",
            "12",
            "--crop-size",
            "64",
            "--batch-size",
            "1",
            "--steps",
            "2",
            "--decay-steps",
            "1",
            "--validate-every",
            "0",
            "--variable-rate",
            range,
            "--name",
            "tiny-vr",
            "--quiet",
        ])
    };
    assert_clean_failure(&train("5..2"), "quality range");
    assert_clean_failure(&train("two..five"), "MIN..MAX");
    let out = train("0..10");
    assert!(out.status.success(), "{}", text(&out));

    let input = f.arg("in.png");
    let out = ocular(&[
        "encode",
        &input,
        "-o",
        &f.arg("q.ocu"),
        "--model",
        &model,
        "-q",
        "2.5",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ocular(&["info", &f.arg("q.ocu")]);
    assert!(text(&out).contains("quality 2.500"), "{}", text(&out));
    let out = ocular(&[
        "decode",
        &f.arg("q.ocu"),
        "-o",
        &f.arg("q.png"),
        "--model",
        &model,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_clean_failure(
        &ocular(&[
            "encode",
            &input,
            "-o",
            &f.arg("x.ocu"),
            "--model",
            &model,
            "-q",
            "12",
        ]),
        "outside the range",
    );
    // A fixed-rate model takes no continuous quality.
    assert_clean_failure(
        &ocular(&[
            "encode",
            &input,
            "-o",
            &f.arg("x.ocu"),
            "--model",
            &f.arg("a.safetensors"),
            "-q",
            "2",
        ]),
        "fixed-rate",
    );
    assert_clean_failure(
        &ocular(&[
            "encode",
            &input,
            "-o",
            &f.arg("x.ocu"),
            "--model",
            &model,
            "--bpp",
            "0.0001",
        ]),
        "cannot reach",
    );
}

/// `--perceptual`: a saved perceptual report is redrawn with its KID and second plot; without
/// the Lite1 weights the flag fails at once, saying what is missing.
#[test]
fn eval_perceptual_redraws_and_needs_lite1() {
    let f = Fixture::new();
    let saved =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results/kodak-mse-vr-qualities.json");
    let out = ocular(&[
        "eval",
        "--from-json",
        &path_str(&saved),
        "--plot",
        &f.arg("rd.svg"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("KID x1e3"), "{}", text(&out));
    let svg = std::fs::read_to_string(f.path("rd-perceptual.svg")).expect("second SVG written");
    assert!(svg.contains("KID"));
    let out = Command::new(env!("CARGO_BIN_EXE_ocular"))
        .args(["eval", "--model", "mse-vr", "--perceptual", "--limit", "1"])
        .env("OCULAR_CACHE", f.path("empty-cache"))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .output()
        .expect("the binary runs");
    assert_clean_failure(&out, "EfficientNet-Lite1 weights, not found");
}

/// `encode --model FILE --observer WHO` with a network for every observer mix: the mix at a
/// quality or an exact rate, carried by the file (`info` shows it) so `decode` needs nothing
/// else; a mix other models cannot code at, or a mix that is no number, is refused plainly.
#[test]
fn a_network_for_every_observer_mix_codes_at_the_mix_asked() {
    let f = Fixture::new();
    let range = QualityRange::new(0.0, 10.0).expect("range");
    let bytes =
        untrained_observer_mix_model_bytes(HyperpriorConfig { n: 8, m: 12 }, "mix", 3, range)
            .expect("model");
    let model = f.arg("mix.safetensors");
    std::fs::write(&model, bytes).expect("write model");
    let (input, coded, decoded) = (f.arg("in.png"), f.arg("m.ocu"), f.arg("m.png"));
    let encode = |extra: &[&str]| {
        let mut args = vec![
            "encode",
            input.as_str(),
            "-o",
            coded.as_str(),
            "--model",
            model.as_str(),
        ];
        args.extend_from_slice(extra);
        ocular(&args)
    };
    let out = encode(&["--observer", "0.3", "--quality", "6"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ocular(&["info", &coded]);
    assert!(text(&out).contains("observer:  mix 0.3"), "{}", text(&out));
    let out = ocular(&["decode", &coded, "-o", &decoded, "--model", &model]);
    assert!(out.status.success(), "{}", text(&out));

    let out = encode(&["--observer", "machine", "--bpp", "1.5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reached"), "{}", text(&out));
    assert!(text(&ocular(&["info", &coded])).contains("observer:  mix 0.5"));

    assert_clean_failure(&encode(&["--observer", "most"]), "a number in 0..=1");
    let plain = f.arg("a.safetensors");
    let out = ocular(&[
        "encode",
        &input,
        "-o",
        &coded,
        "--model",
        &plain,
        "--observer",
        "0.5",
    ]);
    assert_clean_failure(&out, "needs one network for every observer mix");
    let out = ocular(&["encode", &input, "-o", &coded, "--observer", "0.5"]);
    assert_clean_failure(&out, "--observer picks");
}
