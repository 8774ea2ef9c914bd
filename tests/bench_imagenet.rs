//! `ocular_cli::bench`: the ImageNet rate–accuracy benchmark. Folder parsing, the crop protocol,
//! judges, shards and their merge, CSV. The runs use a tiny untrained network, JPEG, generated
//! images and stand-in judges (a fixed function of the pixels), so they take seconds and need
//! no weights; tests that need the classifier weights (`make setup`) or `../shared/data` fail
//! with a message saying what is missing.
//!
//! `imagenet_dev_timing` (ignored) measures the time per image on `../shared/data/imagenet-dev`:
//! `BENCH_LIMIT=20 cargo test -p ocular --test bench_imagenet imagenet_dev_timing -- --ignored --nocapture`

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::{Rgb, RgbImage};
use ocular::observer::{weights_path, Observation, Observer, ObserverError, Synsets, Variant};
use ocular::train::{
    untrained_model_bytes, untrained_observer_mix_model_bytes, HyperpriorConfig, QualityRange,
};
use ocular::Model;
use ocular_cli::bench::{
    builtin_family, classifier_crop, merge, run, scan_folder, BenchCodec, BenchConfig, BenchError,
    BenchReport, BenchRow, Judge, JudgeSpec, LabeledImage, Shard, Verdict, REFERENCE_CODEC,
};
use tch::{Kind, Tensor};

const TINY: HyperpriorConfig = HyperpriorConfig { n: 8, m: 12 };
const SYNSETS: &str = "n01440764\ttench\nn01443537\tgoldfish\nn01484850\tgreat white shark\n";

fn synsets() -> Synsets {
    Synsets::parse(SYNSETS).expect("test synsets")
}

/// The untrained model of `seed` (the same file at every call).
fn tiny_model(seed: i64) -> Model {
    let bytes = untrained_model_bytes(TINY, "tiny", seed).expect("untrained model");
    Model::from_bytes(&bytes).expect("a fresh model file loads")
}

/// The built-in judges `specs` names (e.g. `lite0,lite1`).
///
/// # Panics
/// If their weights are absent (run `make setup`): a green run must mean the test ran.
fn builtin_judges(specs: &str) -> Vec<Judge> {
    let specs = JudgeSpec::parse_list(specs).expect("judges");
    for spec in &specs {
        if let JudgeSpec::Builtin(variant) = spec {
            let path = weights_path(*variant);
            assert!(
                path.exists(),
                "no {variant} weights at {}: run `make setup` (scripts/setup-observer.sh)",
                path.display()
            );
        }
    }
    specs
        .iter()
        .map(|spec| Judge::load(spec, None).expect("the judge loads"))
        .collect()
}

/// A stand-in classifier: the class is the mean pixel value (normalised, in [-1, 1]) scaled
/// onto 0..`classes`, plus `offset`; it records the side of every batch it sees.
#[derive(Debug)]
struct MeanJudge {
    offset: f64,
    sides: Arc<Mutex<Vec<i64>>>,
}

impl MeanJudge {
    /// The judge and the record of the sides of the batches it saw.
    fn judge(name: &str, side: i64, offset: f64) -> (Judge, Arc<Mutex<Vec<i64>>>) {
        let sides = Arc::new(Mutex::new(Vec::new()));
        let observer = MeanJudge {
            offset,
            sides: Arc::clone(&sides),
        };
        (Judge::new(name, side, Box::new(observer)), sides)
    }
}

impl Observer for MeanJudge {
    fn observe(&self, x: &Tensor) -> Result<Observation, ObserverError> {
        let size = x.size();
        self.sides.lock().expect("lock").push(size[3]);
        let mean = x.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
        let target = (mean + 1.0) * 0.5 * 999.0 + self.offset;
        let classes = Tensor::arange(1000, (Kind::Float, x.device()));
        let logits = -(classes.unsqueeze(0) - target.unsqueeze(1)).square() * 0.01;
        Ok(Observation {
            logits,
            features: Vec::new(),
        })
    }

    fn name(&self) -> String {
        "mean".into()
    }
}

/// Two stand-in judges that disagree: `mean` at 224 and `shifted` at 64 pixels.
fn stand_in_judges() -> Vec<Judge> {
    vec![
        MeanJudge::judge("mean", 224, 0.0).0,
        MeanJudge::judge("shifted", 64, 300.0).0,
    ]
}

/// A file of `../shared/data`, which CI checks out beside the repository.
///
/// # Panics
/// If it is absent: the test cannot run, and a green run must mean that it ran.
fn shared_data(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(relative);
    assert!(
        path.exists(),
        "{} not found: this test needs ../shared/data beside the repository",
        path.display()
    );
    path
}

fn photo_like(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| {
            let smooth = (x * (2 + k + seed) / 3 + y * (1 + 2 * k) / 2) % 256;
            let texture = ((x ^ y) * (5 + seed)) % 32;
            ((smooth + texture) % 256) as u8
        };
        Rgb([v(0), v(1), v(2)])
    })
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, b"not decoded by the scan").expect("write");
}

#[test]
fn scans_imagenet_style_folders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for file in [
        "n01443537/b.png",
        "n01443537/a.JPEG", // the validation set's upper-case extension
        "n01443537/notes.txt",
        "n01443537/.hidden.png",
        "n01443537/LOC_val.csv",
        "n01440764/sub/c.jpg",
        "n01440764/d.WebP",
        "n01440764/e.jpeg.bak",
        "n01440764/noext",
        "README.txt",
        "loose.png",
        ".git/x.png",
    ] {
        touch(&root.join(file));
    }
    std::fs::create_dir_all(root.join("n01484850")).expect("empty class folder");
    let images = scan_folder(root, &synsets()).expect("scan");
    let found: Vec<(&str, &str, usize)> = images
        .iter()
        .map(|i| (i.name.as_str(), i.wnid.as_str(), i.label))
        .collect();
    assert_eq!(
        found,
        [
            ("n01440764/d.WebP", "n01440764", 0),
            ("n01440764/sub/c.jpg", "n01440764", 0),
            ("n01443537/a.JPEG", "n01443537", 1),
            ("n01443537/b.png", "n01443537", 1),
        ]
    );
    assert_eq!(images[2].path, root.join("n01443537/a.JPEG"));

    // A folder that is not a wnid is an error naming it.
    touch(&root.join("n99999999/x.JPEG"));
    match scan_folder(root, &synsets()) {
        Err(BenchError::UnknownWnid { wnid, path }) => {
            assert_eq!((wnid.as_str(), path), ("n99999999", root.join("n99999999")));
        }
        other => panic!("expected UnknownWnid, got {other:?}"),
    }
    let error = scan_folder(root, &synsets()).expect_err("unknown wnid");
    assert!(error.to_string().contains("n99999999"), "{error}");

    let empty = tempfile::tempdir().expect("temp dir");
    touch(&empty.path().join("n01440764/readme.txt"));
    assert!(matches!(
        scan_folder(empty.path(), &synsets()),
        Err(BenchError::NoImages(_))
    ));
    assert!(matches!(
        scan_folder(&root.join("missing"), &synsets()),
        Err(BenchError::Io { .. })
    ));
}

#[test]
fn the_real_synsets_label_imagenet_dev() {
    let (synsets_path, dev) = (
        shared_data("imagenet/synsets.txt"),
        shared_data("imagenet-dev"),
    );
    let synsets = Synsets::load(&synsets_path).expect("synsets.txt");
    let images = scan_folder(&dev, &synsets).expect("imagenet-dev scans");
    assert_eq!(images.len(), 500);
    let mut names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert!(names.iter().eq(images.iter().map(|i| &i.name)), "sorted");
    for image in &images {
        assert_eq!(synsets.wnid(image.label), Some(image.wnid.as_str()));
        assert!(image.name.starts_with(&format!("{}/", image.wnid)));
    }
}

#[test]
fn crops_the_classifier_window() {
    // 300 wide, 500 tall: the window is the square of floor(300 * 224 / 256) = 262 pixels at
    // left (300 - 262 + 1) / 2 = 19, top (500 - 262 + 1) / 2 = 119. Gray inside, red outside:
    // a window one pixel off would pull red into the resized crop.
    let (left, top, side) = (19, 119, 262);
    let image = RgbImage::from_fn(300, 500, |x, y| {
        let inside = (left..left + side).contains(&x) && (top..top + side).contains(&y);
        if inside {
            Rgb([128, 128, 128])
        } else {
            Rgb([255, 0, 0])
        }
    });
    let crop = classifier_crop(&image.into()).expect("crop");
    assert_eq!(crop.dimensions(), (224, 224));
    assert!(
        crop.pixels().all(|p| *p == Rgb([128, 128, 128])),
        "the crop is exactly the window"
    );
    // The same image one pixel smaller on the left: now red reaches the window's edge.
    let shifted = RgbImage::from_fn(300, 500, |x, y| {
        let inside = (left + 1..left + side).contains(&x) && (top..top + side).contains(&y);
        if inside {
            Rgb([128, 128, 128])
        } else {
            Rgb([255, 0, 0])
        }
    });
    let crop = classifier_crop(&shifted.into()).expect("crop");
    assert!(crop.get_pixel(0, 100)[0] > 128, "the red column shows");

    // At 256x256 the window is 224 at (16, 16) and the resize is the identity.
    let image = photo_like(256, 256, 3);
    let crop = classifier_crop(&image.clone().into()).expect("crop");
    let window = image::imageops::crop_imm(&image, 16, 16, 224, 224).to_image();
    assert_eq!(crop, window);

    // Gray images come out as RGB; nothing is left of a 1-pixel side.
    let gray = image::GrayImage::from_pixel(180, 160, image::Luma([77]));
    let crop = classifier_crop(&gray.into()).expect("gray crop");
    assert!(crop.pixels().all(|p| *p == Rgb([77, 77, 77])));
    assert!(classifier_crop(&photo_like(1, 40, 0).into()).is_err());
}

#[test]
fn codecs_shards_and_configurations() {
    let mut resolve = |family: &str| match family {
        "tiny" => Ok(vec![tiny_model(1)]),
        other => Err(ocular::Error::NoSuchModel(other.to_string())),
    };
    let codec = BenchCodec::parse("ocular:tiny", &mut resolve).expect("ocular family");
    assert_eq!(codec.name(), "ocular:tiny");
    assert!(matches!(&codec, BenchCodec::Ocular { models, .. } if models.len() == 1));
    for (spec, name) in [("jpeg", "jpeg"), (" JPG ", "jpeg"), ("WebP", "webp")] {
        let codec = BenchCodec::parse(spec, &mut resolve).expect("baseline");
        assert_eq!(codec.to_string(), name);
    }
    assert!(matches!(
        BenchCodec::parse("avif", &mut resolve),
        Err(BenchError::UnknownCodec(_))
    ));
    assert!(matches!(
        BenchCodec::parse("ocular:", &mut resolve),
        Err(BenchError::UnknownCodec(_))
    ));
    assert!(matches!(
        BenchCodec::parse("ocular:huge", &mut resolve),
        Err(BenchError::Family { family, .. }) if family == "huge"
    ));
    // Without built-in models, the built-in families are clear errors.
    if Model::builtin_names().next().is_none() {
        assert!(builtin_family("human").is_err());
    }

    let shard: Shard = "1/3".parse().expect("shard");
    assert_eq!(
        (shard.index(), shard.count(), shard.to_string()),
        (1, 3, "1/3".into())
    );
    assert_eq!(
        (0..7).filter(|&i| shard.contains(i)).collect::<Vec<_>>(),
        [1, 4]
    );
    for bad in ["3/3", "1/0", "1", "a/b", "-1/3", ""] {
        assert!(
            matches!(bad.parse::<Shard>(), Err(BenchError::Shard(_))),
            "{bad}"
        );
    }

    let images: Vec<LabeledImage> = (0..7)
        .map(|i| LabeledImage {
            path: PathBuf::from(format!("n01440764/{i}.png")),
            name: format!("n01440764/{i}.png"),
            wnid: "n01440764".into(),
            label: 0,
        })
        .collect();
    let jpeg = || BenchCodec::Baseline(ocular_cli::bench::Baseline::Jpeg);
    let mut config = BenchConfig::new(images.clone(), vec![jpeg()], vec![0.25]);
    config.validate().expect("valid");
    config.limit = Some(5);
    config.shard = Some(shard);
    let selected: Vec<&str> = config
        .selected_images()
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(selected, ["n01440764/1.png", "n01440764/4.png"]);

    let invalid = [
        BenchConfig::new(Vec::new(), vec![jpeg()], vec![0.25]),
        BenchConfig::new(images.clone(), Vec::new(), vec![0.25]),
        BenchConfig::new(images.clone(), vec![jpeg()], Vec::new()),
        BenchConfig::new(images.clone(), vec![jpeg()], vec![0.0]),
        BenchConfig::new(images.clone(), vec![jpeg()], vec![f64::NAN]),
        BenchConfig::new(images.clone(), vec![jpeg()], vec![0.1, 0.1]),
        BenchConfig::new(images.clone(), vec![jpeg(), jpeg()], vec![0.1]),
        BenchConfig::new(
            images.clone(),
            vec![BenchCodec::ocular("none", Vec::new())],
            vec![0.1],
        ),
        BenchConfig::new(
            images.clone(),
            vec![BenchCodec::ocular("a,b", vec![tiny_model(1)])],
            vec![0.1],
        ),
    ];
    for config in &invalid {
        assert!(
            matches!(config.validate(), Err(BenchError::Config(_))),
            "{config:?}"
        );
    }
    let mut zero = BenchConfig::new(images, vec![jpeg()], vec![0.1]);
    zero.limit = Some(0);
    assert!(matches!(zero.validate(), Err(BenchError::Config(_))));
}

fn verdict(judge: &str, predicted: usize, label: usize) -> Verdict {
    Verdict {
        judge: judge.into(),
        predicted,
        top1_correct: predicted == label,
        top5_correct: predicted.abs_diff(label) < 3,
    }
}

fn row(image: &str, codec: &str, target: Option<f64>) -> BenchRow {
    BenchRow {
        image: image.into(),
        wnid: "n01440764".into(),
        label: 0,
        codec: codec.into(),
        target_bpp: target,
        bpp: 0.1 + 0.2,
        over_target: false,
        verdicts: vec![verdict("lite0", 0, 0), verdict("lite1", 2, 0)],
        psnr: Some(31.123_456_789_012_345),
        ms_ssim: Some(0.987_654_321_012_345_6),
        setting: "37".into(),
        bytes: 1234,
        deep_distance: None,
    }
}

#[test]
fn csv_round_trip() {
    let mut rows = vec![
        row("n01440764/plain.JPEG", REFERENCE_CODEC, None),
        row(
            "n01440764/with, comma \"quoted\"\nand a line.png",
            "jpeg",
            Some(0.25),
        ),
        row("n01440764/x.png", "ocular:tiny", Some(1e-3)),
    ];
    rows[0].psnr = None;
    rows[0].ms_ssim = None;
    rows[0].bpp = 24.0;
    rows[0].setting = String::new();
    rows[1].psnr = Some(f64::INFINITY);
    rows[1].ms_ssim = None;
    rows[1].verdicts[0] = verdict("lite0", 999, 0);
    rows[2].over_target = true;
    rows[2].setting = "tiny, q1".into();
    let report = BenchReport { rows };
    let csv = report.to_csv();
    let header = "image,wnid,label,codec,target_bpp,bpp,over_target,psnr,ms_ssim,setting,bytes,\
                  top1_correct[lite0],top5_correct[lite0],predicted[lite0],\
                  top1_correct[lite1],top5_correct[lite1],predicted[lite1]\n";
    assert!(csv.starts_with(header), "{csv}");
    assert!(csv.contains(",1234,true,true,0,false,true,2\n"), "{csv}");
    let back = BenchReport::from_csv(&csv).expect("reads back");
    assert_eq!(back, report);
    assert_eq!(back.judges(), ["lite0", "lite1"]);
    // With deep-feature distances: one more column after the fixed ones.
    let mut perceptual = report.clone();
    perceptual.rows[1].deep_distance = Some(0.123_456_789);
    perceptual.rows[2].deep_distance = Some(1.5);
    let with_distances = perceptual.to_csv();
    assert!(
        with_distances.starts_with("image,wnid,label,codec,target_bpp,bpp,over_target,psnr,ms_ssim,setting,bytes,deep_distance,top1_correct[lite0]"),
        "{with_distances}"
    );
    assert_eq!(
        BenchReport::from_csv(&with_distances).expect("reads back"),
        perceptual
    );
    assert!(perceptual.table().contains("deep dist") && !report.table().contains("deep dist"));
    // CRLF line ends (a line break inside a quoted field is kept as it is, CR and all).
    let mut crlf = report.clone();
    crlf.rows[1].image = crlf.rows[1].image.replace('\n', "\r\n");
    assert_eq!(
        BenchReport::from_csv(&csv.replace('\n', "\r\n")).expect("CRLF"),
        crlf
    );
    assert_eq!(
        BenchReport::from_csv(&csv[..csv.find('\n').expect("header") + 1]).expect("header only"),
        BenchReport::default()
    );
    // A report without rows (a shard without images) has no judges, and reads back.
    let empty = BenchReport::default().to_csv();
    assert_eq!(
        empty,
        "image,wnid,label,codec,target_bpp,bpp,over_target,psnr,ms_ssim,setting,bytes\n"
    );
    assert_eq!(
        BenchReport::from_csv(&empty).expect("empty"),
        BenchReport::default()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shard.csv");
    std::fs::write(&path, &csv).expect("write");
    assert_eq!(BenchReport::read_csv(&path).expect("file"), report);
    assert!(matches!(
        BenchReport::read_csv(&dir.path().join("missing.csv")),
        Err(BenchError::Io { .. })
    ));

    let header_end = csv.find('\n').expect("header") + 1;
    let bad = [
        (String::new(), 0),
        (csv.replace("image,wnid", "name,wnid"), 1),
        // No judge, a judge's columns incomplete, out of order, or twice.
        (csv.replacen(",top1_correct[lite0],top5_correct[lite0],predicted[lite0],top1_correct[lite1],top5_correct[lite1],predicted[lite1]", "", 1), 2),
        (csv.replacen(",predicted[lite1]", "", 1), 1),
        (csv.replacen("top5_correct[lite1]", "top5_correct[lite2]", 1), 1),
        (csv.replacen("[lite1]", "[lite0]", 3), 1),
        (csv.replacen("[lite0]", "[]", 3), 1),
        (format!("{}a,b,c\n", &csv[..header_end]), 2),
        (csv.replacen(",1234", ",12x4", 1), 2),
        (csv.replacen(",true,true,0,", ",yes,true,0,", 1), 2),
        (csv.replacen(",true,true,0,", ",,,,", 1), 2),
        (format!("{}\"open", &csv[..header_end]), 2),
    ];
    for (text, line) in bad {
        match BenchReport::from_csv(&text) {
            Err(BenchError::Csv { line: at, .. }) => assert_eq!(at, line, "{text}"),
            other => panic!("expected a CSV error, got {other:?} for {text}"),
        }
    }
}

/// CSVs written before judges were named (`top1_correct,top5_correct,predicted` after
/// `over_target`) read as judged by Lite0, the only built-in judge then.
#[test]
fn old_csvs_read_as_judged_by_lite0() {
    let old = "image,wnid,label,codec,target_bpp,bpp,over_target,top1_correct,top5_correct,\
               predicted,psnr,ms_ssim,setting,bytes\n\
               n01440764/a.png,n01440764,0,uncompressed,,24,false,true,true,0,,,,150528\n\
               n01440764/a.png,n01440764,0,jpeg,0.25,0.24,false,false,true,7,30.5,0.97,12,1505\n";
    let report = BenchReport::from_csv(old).expect("an old CSV reads");
    assert_eq!(report.judges(), ["lite0"]);
    assert_eq!(
        report.rows[1].verdicts,
        [verdict("lite0", 7, 0)].map(|mut v| {
            v.top5_correct = true;
            v
        })
    );
    assert_eq!(
        (report.rows[1].bytes, report.rows[1].psnr),
        (1505, Some(30.5))
    );
    // Written again in the current layout, it reads back the same.
    let csv = report.to_csv();
    assert!(csv.contains(",top1_correct[lite0],"));
    assert_eq!(BenchReport::from_csv(&csv).expect("rewritten"), report);
    // The docs' results of the earlier runs stay readable.
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results/imagenet-dev.csv");
    let earlier = BenchReport::read_csv(&results).expect("docs/results/imagenet-dev.csv");
    assert_eq!(earlier.judges(), ["lite0"]);
    assert!(earlier.rows.len() > 500);
}

/// Per-judge summaries, table and plot of a hand-made report whose judges disagree, and merges
/// of reports with different judges refused.
#[test]
fn judges_are_reported_apart() {
    let mut rows = Vec::new();
    for (i, image) in ["n01440764/a.png", "n01440764/b.png"]
        .into_iter()
        .enumerate()
    {
        let mut reference = row(image, REFERENCE_CODEC, None);
        reference.verdicts = vec![verdict("lite0", 0, 0), verdict("lite1", 0, 0)];
        reference.psnr = None;
        reference.ms_ssim = None;
        let mut jpeg = row(image, "jpeg", Some(0.25));
        // Lite0 keeps both, Lite1 only the first; top-5 keeps both under both.
        jpeg.verdicts = vec![verdict("lite0", 0, 0), verdict("lite1", i, 0)];
        rows.extend([reference, jpeg]);
    }
    let report = BenchReport { rows };
    let summaries = report.summaries();
    assert_eq!(summaries.len(), 2);
    let jpeg = &summaries[1];
    let lite0 = jpeg.judge("lite0").expect("lite0");
    let lite1 = jpeg.judge("lite1").expect("lite1");
    assert_eq!((lite0.top1, lite0.top5), (1.0, 1.0));
    assert_eq!((lite1.top1, lite1.top5, lite1.top1_correct), (0.5, 1.0, 1));
    assert!(jpeg.judge("lite2").is_none());
    let table = report.table();
    let jpeg_line = table.lines().nth(2).expect("the jpeg line");
    let cells: Vec<&str> = jpeg_line.split_whitespace().collect();
    assert_eq!(
        cells[4..10],
        ["100.0", "100.0", "+0.0", "50.0", "100.0", "-50.0"],
        "{table}"
    );
    let svg = report.svg(0.25).expect("plot");
    for text in ["judge lite0", "judge lite1", "MS-SSIM vs top-1 (lite1)"] {
        assert!(svg.contains(text), "the SVG lacks '{text}'");
    }

    // Shards judged by different judges do not merge.
    let mut other = report.clone();
    for row in &mut other.rows {
        row.image = row.image.replace("n01440764/", "n01440764/other-");
        row.verdicts.truncate(1);
    }
    match merge([report.clone(), other]) {
        Err(BenchError::Merge(message)) => assert!(message.contains("[lite0]"), "{message}"),
        other => panic!("expected a merge error, got {other:?}"),
    }
}

/// Judges as named on the command line, and runs refusing judges they cannot report.
#[test]
fn judge_names_and_errors() {
    let specs = JudgeSpec::parse_list("lite0,lite1,torchscript:my/net.pt").expect("judges");
    let names: Vec<String> = specs.iter().map(JudgeSpec::name).collect();
    assert_eq!(names, ["lite0", "lite1", "net"]);
    assert_eq!(specs[1], JudgeSpec::Builtin(Variant::Lite1));
    let error = JudgeSpec::parse_list("lite0,vgg16").expect_err("unknown");
    assert!(error.to_string().contains("'vgg16'"), "{error}");
    assert!(error.to_string().contains("torchscript:FILE"), "{error}");
    let error = JudgeSpec::parse_list("lite1,lite1").expect_err("twice");
    assert!(error.to_string().contains("twice"), "{error}");
    // A missing TorchScript file is an error naming the judge.
    let missing = JudgeSpec::TorchScript("/nonexistent/judge.pt".into());
    match Judge::load(&missing, None) {
        Err(error @ BenchError::Judge { .. }) => {
            assert!(error.to_string().contains("judge.pt"), "{error}");
        }
        other => panic!("expected a judge error, got {other:?}"),
    }

    let images = vec![LabeledImage {
        path: PathBuf::from("n01440764/0.png"),
        name: "n01440764/0.png".into(),
        wnid: "n01440764".into(),
        label: 0,
    }];
    let jpeg = || vec![BenchCodec::Baseline(ocular_cli::bench::Baseline::Jpeg)];
    let config = BenchConfig::new(images, jpeg(), vec![0.25]);
    let same = vec![
        MeanJudge::judge("a", 224, 0.0).0,
        MeanJudge::judge("a", 64, 0.0).0,
    ];
    let comma = vec![MeanJudge::judge("a,b", 224, 0.0).0];
    for judges in [Vec::new(), same, comma] {
        assert!(
            matches!(run(&config, &judges), Err(BenchError::Config(_))),
            "{judges:?}"
        );
    }
}

/// The judges get the crops at their own size: 224 as they are, 64 resized.
#[test]
fn judges_see_the_crop_at_their_own_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_dataset(dir.path(), 1);
    let images = scan_folder(dir.path(), &synsets()).expect("scan");
    let (native, native_sides) = MeanJudge::judge("native", 224, 0.0);
    let (small, small_sides) = MeanJudge::judge("small", 64, 0.0);
    let codecs = vec![BenchCodec::Baseline(ocular_cli::bench::Baseline::Jpeg)];
    let report = run(
        &BenchConfig::new(images, codecs, vec![0.5]),
        &[native, small],
    )
    .expect("run");
    assert_eq!(report.rows.len(), 2);
    // One batch per image: the uncompressed crop and the JPEG.
    assert_eq!(*native_sides.lock().expect("lock"), [224]);
    assert_eq!(*small_sides.lock().expect("lock"), [64]);
    // A smooth resize keeps the mean: the two judges agree within a few classes.
    for row in &report.rows {
        let [a, b] = [&row.verdicts[0], &row.verdicts[1]];
        assert!(a.predicted.abs_diff(b.predicted) <= 10, "{row:?}");
    }
}

/// `count` generated photos of several sizes in two classes of [`SYNSETS`].
fn write_dataset(root: &Path, count: u32) {
    let sizes = [(240, 200), (200, 320), (300, 300), (260, 180), (330, 250)];
    for i in 0..count {
        let (width, height) = sizes[i as usize % sizes.len()];
        let wnid = ["n01440764", "n01484850"][i as usize % 2];
        let path = root.join(wnid).join(format!("img{i}.png"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        photo_like(width, height, i)
            .save(&path)
            .expect("write image");
    }
}

/// `bench imagenet --html`: the crop beside each codec at each target, with the first judge's
/// top-5 classes under every picture.
#[test]
fn the_visual_report_shows_every_target_and_the_first_judges_top5() {
    let judges = stand_in_judges();
    let dir = tempfile::tempdir().expect("temp dir");
    write_dataset(&dir.path().join("data"), 2);
    let images = scan_folder(&dir.path().join("data"), &synsets()).expect("scan");
    let codecs = vec![
        BenchCodec::ocular("tiny", vec![tiny_model(1)]),
        BenchCodec::Baseline(ocular_cli::bench::Baseline::Jpeg),
    ];
    let mut config = BenchConfig::new(images, codecs, vec![0.25, 1.5]);
    config.keep_pictures = 1;
    let run = ocular_cli::bench::run_keeping(&config, &judges).expect("run");
    assert_eq!(run.report.rows.len(), 2 * 5);
    assert_eq!(run.pictures.len(), 1, "only the first image is kept");
    let crops = &run.pictures[0].crops;
    assert_eq!(crops.len(), 5);
    assert!(crops
        .iter()
        .all(|c| c.top5.len() == 5 && c.image.width() == 224));
    let path = dir.path().join("bench.html");
    let options = ocular_cli::html::HtmlOptions::default();
    let summary = run
        .report
        .write_html(&run.pictures, Some(&synsets()), &path, &options)
        .expect("written");
    assert_eq!((summary.sections, summary.pictures), (1, 5), "{summary:?}");
    let html = std::fs::read_to_string(&path).expect("page");
    let first = &run.report.rows[0];
    let heading = format!("{} (tench)", first.image);
    for text in [
        &heading,
        "top-5 (mean):",
        "0.25 bpp",
        "1.5 bpp",
        "ocular:tiny",
        "jpeg",
    ] {
        assert!(html.contains(text), "{text} missing");
    }
    assert_eq!(
        html.matches("top-5 (mean):").count(),
        5,
        "under every picture"
    );
    assert!(!html.contains("shifted"), "only the first judge's classes");
}

#[test]
fn shards_merge_into_the_report_of_one_run() {
    let judges = stand_in_judges();
    let dir = tempfile::tempdir().expect("temp dir");
    write_dataset(dir.path(), 5);
    let images = scan_folder(dir.path(), &synsets()).expect("scan");
    assert_eq!(images.len(), 5);
    let targets = vec![0.25, 1.5];
    let config = |shard: Option<Shard>| {
        let codecs = vec![
            BenchCodec::ocular("tiny", vec![tiny_model(1)]),
            BenchCodec::Baseline(ocular_cli::bench::Baseline::Jpeg),
        ];
        let mut config = BenchConfig::new(images.clone(), codecs, targets.clone());
        config.limit = Some(4);
        config.shard = shard;
        config
    };
    let start = Instant::now();
    let whole = run(&config(None), &judges).expect("one run");
    let whole_seconds = start.elapsed().as_secs_f64();

    // 4 images x (uncompressed + 2 codecs x 2 targets).
    assert_eq!(whole.rows.len(), 4 * 5);
    let names: Vec<&str> = images[..4].iter().map(|i| i.name.as_str()).collect();
    for (i, rows) in whole.rows.chunks(5).enumerate() {
        assert!(rows.iter().all(|r| r.image == names[i]));
        let codecs: Vec<(&str, Option<f64>)> = rows
            .iter()
            .map(|r| (r.codec.as_str(), r.target_bpp))
            .collect();
        assert_eq!(
            codecs,
            [
                (REFERENCE_CODEC, None),
                ("ocular:tiny", Some(0.25)),
                ("ocular:tiny", Some(1.5)),
                ("jpeg", Some(0.25)),
                ("jpeg", Some(1.5)),
            ]
        );
        let reference = &rows[0];
        assert_eq!((reference.bpp, reference.bytes), (24.0, 224 * 224 * 3));
        assert!(reference.psnr.is_none() && reference.ms_ssim.is_none());
        for row in &rows[1..] {
            let target = row.target_bpp.expect("a target");
            assert!((row.bpp - row.bytes as f64 * 8.0 / (224.0 * 224.0)).abs() < 1e-12);
            assert_eq!(row.over_target, row.bpp > target, "{row:?}");
            if row.over_target {
                // The smallest setting: quality 1, or the family's lowest rate point.
                assert!(row.setting == "1" || row.setting == "tiny", "{row:?}");
            }
            assert!(row.psnr.is_some_and(|p| p > 5.0), "{row:?}");
            assert!(row.ms_ssim.is_some(), "MS-SSIM works on 224x224");
        }
        for row in rows {
            let names: Vec<&str> = row.verdicts.iter().map(|v| v.judge.as_str()).collect();
            assert_eq!(names, ["mean", "shifted"]);
            for verdict in &row.verdicts {
                assert!(verdict.predicted < 1000);
                assert_eq!(verdict.top1_correct, verdict.predicted == row.label);
                assert!(!verdict.top1_correct || verdict.top5_correct);
            }
            // The judges see the same crop and disagree by their offset of 300 classes.
            let [mean, shifted] = [&row.verdicts[0], &row.verdicts[1]];
            assert!(
                shifted.predicted.abs_diff(mean.predicted.min(699) + 300) <= 10,
                "{row:?}"
            );
        }
    }
    let jpeg_high = whole
        .rows
        .iter()
        .filter(|r| r.codec == "jpeg" && r.target_bpp == Some(1.5));
    assert!(jpeg_high.clone().all(|r| !r.over_target && r.bpp > 0.5));

    // Shards 0/3, 1/3, 2/3 (images {0, 3}, {1}, {2}) through CSV, merged in any order.
    let mut shards = Vec::new();
    for index in [2, 0, 1] {
        let shard = Shard::new(index, 3).expect("shard");
        let report = run(&config(Some(shard)), &judges).expect("shard run");
        shards.push(BenchReport::from_csv(&report.to_csv()).expect("CSV reads back"));
    }
    assert_eq!(
        shards.iter().map(|r| r.rows.len()).collect::<Vec<_>>(),
        [5, 10, 5]
    );
    let merged = merge(shards.clone()).expect("merge");
    assert_eq!(merged, whole);
    assert_eq!(merged.table(), whole.table());
    assert_eq!(merged.summaries(), whole.summaries());
    assert!(matches!(
        merge([shards[0].clone(), shards[0].clone()]),
        Err(BenchError::Merge(_))
    ));
    // More shards than images: an empty report, which merges away.
    let mut empty = config(Some(Shard::new(4, 5).expect("shard")));
    empty.limit = Some(3);
    let empty = run(&empty, &judges).expect("empty shard");
    assert!(empty.rows.is_empty());
    let empty = BenchReport::from_csv(&empty.to_csv()).expect("an empty shard's CSV");
    assert_eq!(merge([merged.clone(), empty]).expect("merge"), whole);

    // Summaries, table, JSON, plot.
    let summaries = whole.summaries();
    assert_eq!(summaries.len(), 5);
    let reference = whole.reference().expect("reference");
    assert_eq!(reference, summaries[0]);
    assert_eq!(
        (reference.codec.as_str(), reference.images),
        (REFERENCE_CODEC, 4)
    );
    assert_eq!(whole.judges(), ["mean", "shifted"]);
    for summary in &summaries {
        assert_eq!(summary.images, 4);
        assert_eq!(summary.judges.len(), 2);
        for judge in &summary.judges {
            assert!((judge.top1 - judge.top1_correct as f64 / 4.0).abs() < 1e-12);
            assert!(judge.top5 >= judge.top1);
        }
        assert_eq!(summary.psnr.is_some(), summary.codec != REFERENCE_CODEC);
    }
    let table = whole.table();
    assert_eq!(table.lines().count(), 1 + summaries.len());
    for column in [
        "mean top-1 %",
        "mean top-5 %",
        "shifted top-1 %",
        "shifted Δ top-1",
    ] {
        assert!(table.contains(column), "{table}");
    }
    assert!(table.starts_with("codec") && table.contains("ocular:tiny"));
    let json: serde_json::Value = serde_json::from_str(&whole.to_json()).expect("JSON");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(20));
    assert_eq!(json["summaries"].as_array().map(Vec::len), Some(5));
    assert_eq!(json["summaries"][1]["judges"][1]["judge"], "shifted");
    assert_eq!(json["rows"][0]["verdicts"][0]["judge"], "mean");
    let svg_path = dir.path().join("accuracy.svg");
    whole.plot_svg(&svg_path).expect("plot");
    let svg = std::fs::read_to_string(&svg_path).expect("SVG written");
    for text in [
        "top-1 accuracy (%)",
        "top-5 accuracy (%)",
        "judge mean",
        "judge shifted",
        "bits per pixel",
        "MS-SSIM (dB)",
        "at 0.25 bpp",
        "ocular:tiny",
        "JPEG (4:2:0)",
        "uncompressed crop",
    ] {
        assert!(svg.contains(text), "the SVG lacks '{text}'");
    }
    assert!(whole.svg(1.4).expect("svg").contains("at 1.5 bpp"));
    assert!(matches!(
        BenchReport::default().svg(0.25),
        Err(BenchError::Plot(_))
    ));
    println!("one run of 4 images: {whole_seconds:.2} s");
}

#[test]
fn labels_line_up_with_the_classifier() {
    let (synsets_path, dev) = (
        shared_data("imagenet/synsets.txt"),
        shared_data("imagenet-dev"),
    );
    let judges = builtin_judges("lite0,lite1");
    let synsets = Synsets::load(&synsets_path).expect("synsets.txt");
    let ostrich: Vec<LabeledImage> = scan_folder(&dev, &synsets)
        .expect("scan")
        .into_iter()
        .filter(|i| i.name == "n01518878/014f0024918a7b6f.png")
        .collect();
    assert_eq!(ostrich.len(), 1);
    let codecs = vec![BenchCodec::Baseline(ocular_cli::bench::Baseline::Webp)];
    let report = run(&BenchConfig::new(ostrich, codecs, vec![1.0]), &judges).expect("run");
    let ostrich_class = synsets.index_of("n01518878").expect("ostrich");
    assert_eq!(report.judges(), ["lite0", "lite1"]);
    for row in &report.rows {
        assert_eq!(row.label, ostrich_class);
        for verdict in &row.verdicts {
            assert_eq!(verdict.predicted, ostrich_class, "{row:?}");
            assert!(verdict.top1_correct && verdict.top5_correct);
        }
    }
}

/// Time per image on imagenet-dev with ocular (a built-in family, else untrained N=64, M=96
/// models), JPEG and WebP. Environment: `BENCH_LIMIT` (images, 20), `BENCH_TARGETS` (bpp list,
/// `0.25`), `BENCH_CODECS` (`ocular,jpeg,webp`), `BENCH_MODEL_FILES` (model files of the ocular
/// family, by increasing rate), else `BENCH_MODELS` (untrained models standing in for a family
/// when none is built in, 1), `BENCH_JUDGES` (`lite0,lite1`), `BENCH_OUT` (a folder to write `bench.csv`, `bench.json` and
/// `bench.svg` into).
#[test]
#[ignore = "timing on ../shared/data/imagenet-dev; run with --ignored --nocapture"]
fn imagenet_dev_timing() {
    let (synsets_path, dev) = (
        shared_data("imagenet/synsets.txt"),
        shared_data("imagenet-dev"),
    );
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let judges = builtin_judges(&env("BENCH_JUDGES", "lite0,lite1"));
    let limit: usize = env("BENCH_LIMIT", "20").parse().expect("BENCH_LIMIT");
    let targets: Vec<f64> = env("BENCH_TARGETS", "0.25")
        .split(',')
        .map(|t| t.trim().parse().expect("BENCH_TARGETS"))
        .collect();
    let untrained: i64 = env("BENCH_MODELS", "1").parse().expect("BENCH_MODELS");
    let synsets = Synsets::load(&synsets_path).expect("synsets.txt");
    let images = scan_folder(&dev, &synsets).expect("scan");
    let files = env("BENCH_MODEL_FILES", "");
    let mut resolve = |family: &str| {
        if !files.is_empty() {
            return files
                .split(',')
                .map(|f| Model::load(f.trim().as_ref()))
                .collect();
        }
        builtin_family(family).or_else(|_| {
            let config = HyperpriorConfig { n: 64, m: 96 };
            Ok((1..=untrained)
                .map(|seed| {
                    let bytes = untrained_model_bytes(config, "untrained", seed).expect("model");
                    Model::from_bytes(&bytes).expect("model")
                })
                .collect())
        })
    };
    let codecs = env("BENCH_CODECS", "ocular,jpeg,webp")
        .split(',')
        .map(|c| {
            let spec = if c.trim() == "ocular" {
                "ocular:human"
            } else {
                c
            };
            BenchCodec::parse(spec, &mut resolve).expect("BENCH_CODECS")
        })
        .collect::<Vec<_>>();
    let names: Vec<String> = codecs.iter().map(BenchCodec::name).collect();
    let mut config = BenchConfig::new(images, codecs, targets.clone());
    config.limit = Some(limit);
    let start = Instant::now();
    let report = run(&config, &judges).expect("benchmark");
    let seconds = start.elapsed().as_secs_f64();
    let count = config.selected_images().len();
    println!("{}", report.table());
    if let Ok(out) = std::env::var("BENCH_OUT") {
        let out = Path::new(&out);
        std::fs::create_dir_all(out).expect("BENCH_OUT");
        std::fs::write(out.join("bench.csv"), report.to_csv()).expect("CSV");
        std::fs::write(out.join("bench.json"), report.to_json()).expect("JSON");
        report.plot_svg(&out.join("bench.svg")).expect("SVG");
    }
    println!(
        "{names:?} at {targets:?} bpp, {count} images: {seconds:.1} s, {:.3} s per image, \
         {:.0} s ({:.1} min) per 1000 images",
        seconds / count as f64,
        seconds / count as f64 * 1000.0,
        seconds / count as f64 * 1000.0 / 60.0
    );
}

/// One variable-rate model is benchmarked at exact rates: every crop's file within
/// `[0.97 T, T]` (its quality as the setting), at the observer mix `@alpha` of a network for
/// every mix; a mix of anything else, or a mix that is no number in [0, 1], is refused.
#[test]
fn a_variable_rate_model_is_benchmarked_at_exact_rates_and_its_mix() {
    let range = QualityRange::new(-2.0, 12.0).expect("range");
    let bytes = untrained_observer_mix_model_bytes(TINY, "mix", 4, range).expect("model");
    let mut resolve = |family: &str| -> Result<Vec<Model>, ocular::Error> {
        match family {
            "mix" => Ok(vec![Model::from_bytes(&bytes)?]),
            _ => Ok(vec![tiny_model(1)]),
        }
    };
    let codec = BenchCodec::parse("ocular:mix@0.4", &mut resolve).expect("a mix");
    assert_eq!(codec.name(), "ocular:mix@0.4");
    assert!(matches!(
        BenchCodec::parse("ocular:tiny@0.4", &mut resolve),
        Err(BenchError::Config(_))
    ));
    assert!(matches!(
        BenchCodec::parse("ocular:mix@1.5", &mut resolve),
        Err(BenchError::UnknownCodec(_))
    ));

    let judges = stand_in_judges();
    let dir = tempfile::tempdir().expect("temp dir");
    write_dataset(dir.path(), 2);
    let images = scan_folder(dir.path(), &synsets()).expect("scan");
    let targets = vec![0.5, 1.0];
    let report = run(&BenchConfig::new(images, vec![codec], targets), &judges).expect("run");
    let coded: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.target_bpp.is_some())
        .collect();
    assert_eq!(coded.len(), 4);
    for row in coded {
        let target = row.target_bpp.unwrap_or_default();
        assert!(!row.over_target, "{row:?}");
        assert!(row.bpp <= target && row.bpp >= 0.97 * target, "{row:?}");
        assert!(row.setting.starts_with('q'), "{}", row.setting);
    }
}
