//! `ocular_cli::eval`: rate–distortion evaluation against JPEG and WebP at matched bpp. Uses a small
//! untrained network (codes correctly, poorly) and three generated images, so it runs in seconds.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use ocular::train::{untrained_model_bytes, HyperpriorConfig};
use ocular::Model;
use ocular_cli::eval::{evaluate, Baseline, EvalConfig, EvalError, EvalModel, EvalReport};

const TINY: HyperpriorConfig = HyperpriorConfig { n: 8, m: 12 };

fn tiny_model(label: &str, seed: i64) -> EvalModel {
    let bytes = untrained_model_bytes(TINY, "tiny", seed).expect("untrained model");
    EvalModel::new(Model::from_bytes(&bytes).expect("a fresh model file loads")).with_label(label)
}

fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (3 + k) + y * (5 + 2 * k) + (x * y) % (7 + k)) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

fn smooth_image() -> RgbImage {
    RgbImage::from_fn(176, 168, |x, y| {
        Rgb([
            (x + y / 3) as u8,
            (128 + y / 2 - x / 4) as u8,
            ((x * y) / 160) as u8,
        ])
    })
}

/// Three images in `dir`: one large enough for MS-SSIM (both sides >= 161), one small with odd
/// sides, and one so small that JPEG's headers alone exceed the ocular file.
fn write_images(dir: &Path) -> Vec<PathBuf> {
    let images = [
        ("smooth.png", smooth_image()),
        ("busy, odd.png", photo_like(67, 45)),
        ("tiny.png", photo_like(16, 12)),
    ];
    images
        .into_iter()
        .map(|(name, image)| {
            let path = dir.join(name);
            image.save(&path).expect("write test image");
            path
        })
        .collect()
}

/// The (horizontal, vertical) sampling factors of each component of the SOF0 frame of a JPEG
/// file, and the number of components in its first scan; fails on any other frame type.
fn sof0_sampling_and_scan(jpeg: &[u8]) -> (Vec<(u8, u8)>, u8) {
    assert_eq!(&jpeg[..2], [0xFF, 0xD8], "SOI");
    let mut sampling = None;
    let mut at = 2;
    loop {
        assert_eq!(jpeg[at], 0xFF, "marker expected at {at}");
        let marker = jpeg[at + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        assert!(
            !(0xC1..=0xCF).contains(&marker) || [0xC4, 0xC8, 0xCC].contains(&marker),
            "frame is SOF{:X}, not SOF0",
            marker - 0xC0
        );
        if marker == 0xC0 {
            // Lf (2), P (1), Y (2), X (2), Nf (1), then Nf x (C, H<<4 | V, Tq).
            let count = usize::from(jpeg[at + 9]);
            let factors = (0..count).map(|i| jpeg[at + 10 + 3 * i + 1]);
            sampling = Some(factors.map(|f| (f >> 4, f & 0x0F)).collect());
        }
        if marker == 0xDA {
            return (sampling.expect("SOF0 before the first scan"), jpeg[at + 4]);
        }
        at += 2 + length;
    }
}

#[test]
fn report_matches_rates_and_writes_every_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path());
    let models = vec![tiny_model("tiny-a", 1), tiny_model("tiny-b", 2)];
    let mut config = EvalConfig::new(images, models);
    config.baselines = vec![Baseline::Jpeg, Baseline::Webp, Baseline::Jpeg]; // duplicate ignored
    let report = evaluate(&config).expect("evaluation");

    // A row for every codec x image (x model).
    assert_eq!(report.rows.len(), 3 * 2 * 3);
    for image in ["smooth.png", "busy, odd.png", "tiny.png"] {
        for target in ["tiny-a", "tiny-b"] {
            for codec in [format!("ocular:{target}"), "jpeg".into(), "webp".into()] {
                let matching = report
                    .rows
                    .iter()
                    .filter(|r| r.image == image && r.target == target && r.codec == codec)
                    .count();
                assert_eq!(matching, 1, "{codec} on {image} at {target}");
            }
        }
    }
    for row in &report.rows {
        let pixels = f64::from(row.width * row.height);
        assert!((row.bpp - row.bytes as f64 * 8.0 / pixels).abs() < 1e-12);
        assert!(row.psnr > 0.0 && row.encode_seconds >= 0.0 && row.decode_seconds >= 0.0);
        assert_eq!(
            row.ms_ssim.is_some(),
            row.image == "smooth.png",
            "MS-SSIM needs 161 px"
        );
        assert_eq!(row.ms_ssim.is_some(), row.ms_ssim_db.is_some());
        if row.codec.starts_with("ocular:") {
            assert!(!row.over_target);
            assert_eq!(row.family, "ocular (mse)");
            continue;
        }
        // Baselines: at most the bpp of the ocular model they were matched to, unless even
        // quality 1 is larger.
        let target = report
            .rows
            .iter()
            .find(|r| r.image == row.image && r.codec == format!("ocular:{}", row.target))
            .expect("the ocular row of the target");
        let quality: u8 = row.setting.parse().expect("baseline setting is a quality");
        assert!((1..=100).contains(&quality));
        if row.over_target {
            assert_eq!(quality, 1);
            assert!(row.bpp > target.bpp);
        } else {
            assert!(
                row.bpp <= target.bpp,
                "{} {} bpp > {} bpp",
                row.codec,
                row.bpp,
                target.bpp
            );
        }
    }

    // JPEG's headers and tables alone are larger than the ocular file of a 16x12 image.
    let jpeg_tiny = report
        .rows
        .iter()
        .filter(|r| r.codec == "jpeg" && r.image == "tiny.png");
    assert!(jpeg_tiny.clone().count() == 2 && jpeg_tiny.clone().all(|r| r.over_target));
    let over: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| r.over_target)
        .map(|r| r.codec.as_str())
        .collect();
    assert!(over.iter().all(|&c| c == "jpeg" || c == "webp"), "{over:?}");

    let means = report.means();
    assert_eq!(means.len(), 2 * 3);
    let codecs: Vec<&str> = means.iter().map(|m| m.codec.as_str()).collect();
    assert_eq!(
        codecs,
        [
            "ocular:tiny-a",
            "jpeg",
            "webp",
            "ocular:tiny-b",
            "jpeg",
            "webp"
        ]
    );
    for mean in &means {
        assert_eq!((mean.images, mean.ms_ssim_images), (3, 1));
        assert!(mean.ms_ssim.is_some() && mean.bpp > 0.0 && mean.psnr.is_finite());
    }
    let table = report.table();
    assert_eq!(table.lines().count(), 1 + means.len());
    assert!(table.starts_with("codec") && table.contains("ocular:tiny-b"));
    assert!(table.contains("above target at quality 1") && table.contains("MS-SSIM of 1 of 3"));

    // CSV: a header and one line per row; the image name with a comma is quoted.
    let csv = report.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + report.rows.len());
    assert!(lines[0].starts_with("codec,family,setting,target,image,width,height,bytes,bpp,psnr"));
    let columns = lines[0].split(',').count();
    for line in &lines[1..] {
        let unquoted = line.replace("\"busy, odd.png\"", "busy-odd");
        assert_eq!(unquoted.split(',').count(), columns, "{line}");
    }

    // JSON parses, carries rows and means, and reads back into a report.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    assert_eq!(
        json["rows"].as_array().map(Vec::len),
        Some(report.rows.len())
    );
    assert_eq!(json["means"].as_array().map(Vec::len), Some(means.len()));
    let back: EvalReport = serde_json::from_value(json).expect("rows deserialise");
    assert_eq!(back.rows.len(), report.rows.len());

    // The plot: an SVG with both panels' axis labels and a legend entry per family.
    let svg_path = dir.path().join("rd.svg");
    report.plot_svg(&svg_path).expect("plot");
    let svg = std::fs::read_to_string(&svg_path).expect("SVG written");
    assert!(svg.trim_start().starts_with("<svg") || svg.trim_start().starts_with("<?xml"));
    for text in [
        "bits per pixel",
        "PSNR (dB)",
        "MS-SSIM (dB)",
        "ocular (mse)",
        "JPEG (4:2:0)",
        "WebP (lossy)",
    ] {
        assert!(svg.contains(text), "the SVG lacks '{text}'");
    }
    assert!(!svg.contains("published"));
    // With the published Kodak references: their legend entries, dashed.
    report
        .plot_svg_with(&svg_path, &ocular_cli::eval::PUBLISHED_KODAK)
        .expect("plot");
    let svg = std::fs::read_to_string(&svg_path).expect("SVG written");
    for curve in ocular_cli::eval::PUBLISHED_KODAK {
        assert!(svg.contains(curve.label), "the SVG lacks '{}'", curve.label);
    }
    assert!(svg.contains("ocular (mse)"));
}

#[test]
fn jpeg_is_420_baseline_and_webp_is_lossy_at_every_quality() {
    // Odd sizes need padded chroma; jpeg-encoder switches to 4:4:4 from quality 90 by default.
    for image in [photo_like(67, 45), photo_like(1, 1), photo_like(176, 168)] {
        for quality in [1, 37, 89, 90, 100] {
            let jpeg = Baseline::Jpeg
                .encode(&image, quality)
                .expect("JPEG encodes");
            let (sampling, scan_components) = sof0_sampling_and_scan(&jpeg);
            assert_eq!(
                sampling,
                [(2, 2), (1, 1), (1, 1)],
                "4:2:0 at quality {quality}"
            );
            assert_eq!(
                scan_components, 3,
                "one interleaved scan at quality {quality}"
            );
            let decoded = Baseline::Jpeg.decode(&jpeg).expect("JPEG decodes");
            assert_eq!(decoded.dimensions(), image.dimensions());

            let webp = Baseline::Webp
                .encode(&image, quality)
                .expect("WebP encodes");
            // RIFF....WEBP then the first chunk: "VP8 " is lossy, "VP8L" lossless, "VP8X" extended.
            assert_eq!((&webp[..4], &webp[8..12]), (&b"RIFF"[..], &b"WEBP"[..]));
            assert_eq!(&webp[12..16], b"VP8 ", "lossy WebP at quality {quality}");
            let decoded = Baseline::Webp.decode(&webp).expect("WebP decodes");
            assert_eq!(decoded.dimensions(), image.dimensions());
        }
    }
    // Higher quality, more bytes: the rate search has something to search. And the decoders
    // really decode: a smooth image at quality 95 comes back close to its source (a decoder
    // that misreads the file gives ~9 dB here).
    let image = smooth_image();
    for baseline in Baseline::ALL {
        let small = baseline.encode(&image, 10).expect("encode").len();
        let bytes = baseline.encode(&image, 95).expect("encode");
        assert!(
            small < bytes.len(),
            "{baseline}: {small} >= {} bytes",
            bytes.len()
        );
        let decoded = baseline.decode(&bytes).expect("decode");
        let psnr = ocular::metrics::measure(&image, &decoded).psnr;
        assert!(psnr > 40.0, "{baseline} at quality 95: {psnr:.2} dB");
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path());

    let no_models = EvalConfig::new(images.clone(), Vec::new());
    assert!(matches!(evaluate(&no_models), Err(EvalError::Config(_))));
    let no_images = EvalConfig::new(Vec::new(), vec![tiny_model("a", 1)]);
    assert!(matches!(evaluate(&no_images), Err(EvalError::Config(_))));
    let same_label = EvalConfig::new(images, vec![tiny_model("a", 1), tiny_model("a", 2)]);
    assert!(matches!(evaluate(&same_label), Err(EvalError::Config(_))));

    let not_an_image = dir.path().join("garbage.png");
    std::fs::write(&not_an_image, b"not a PNG").expect("write");
    let missing = dir.path().join("missing.png");
    for path in [not_an_image, missing] {
        let config = EvalConfig::new(vec![path.clone()], vec![tiny_model("a", 1)]);
        let error = evaluate(&config).expect_err("unreadable image");
        assert!(matches!(error, EvalError::Image(_)), "{error:?}");
        let message = format!("{}", std::error::Error::source(&error).expect("source"));
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    let empty = RgbImage::new(0, 0);
    for baseline in Baseline::ALL {
        assert!(baseline.encode(&empty, 50).is_err());
        assert!(baseline.encode(&photo_like(8, 8), 0).is_err());
        assert!(baseline.encode(&photo_like(8, 8), 101).is_err());
        assert!(baseline.decode(b"not an image").is_err());
        assert!(baseline.decode(&[]).is_err());
    }
    assert!(Baseline::Webp.encode(&RgbImage::new(16384, 1), 50).is_err());
    assert_eq!("JPG".parse::<Baseline>().ok(), Some(Baseline::Jpeg));
    assert_eq!(" webp ".parse::<Baseline>().ok(), Some(Baseline::Webp));
    assert!(matches!(
        "avif".parse::<Baseline>(),
        Err(EvalError::UnknownBaseline(_))
    ));

    let empty_report = EvalReport::default();
    assert!(empty_report.means().is_empty());
    assert_eq!(empty_report.to_csv().lines().count(), 1);
    assert!(matches!(
        empty_report.plot_svg(&dir.path().join("empty.svg")),
        Err(EvalError::Plot(_))
    ));
}

/// `EvalModel::with_realism`: the same files decoded with the realism decoder are rows of their
/// own curve, matched to no baseline (their files are the plain rows' files), and differ from
/// the plain rows where the decoders differ.
#[test]
fn realism_settings_are_rows_of_their_own() {
    use ocular_models::realism::{fingerprint_hex, realism_file_bytes, RealismInfo};
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path());
    let bytes = untrained_model_bytes(TINY, "tiny", 5).expect("untrained model");
    let model = || Model::from_bytes(&bytes).expect("model");
    // g_s' = g_s with its last bias raised by 0.25: the decoders differ by a known shift.
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("model file");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with("g_s."))
        .map(|(name, view)| {
            let mut values = ocular_models::model_file::tensor_f32(&view).expect("a float tensor");
            if name == "g_s.6.bias" {
                values.iter_mut().for_each(|v| *v += 0.25);
            }
            (name, view.shape().to_vec(), values)
        })
        .collect();
    let info = RealismInfo {
        model_name: "tiny".into(),
        model_fingerprint: fingerprint_hex(model().fingerprint().0),
        adversarial_weight: 0.0,
        steps: 0,
        cpu_seconds: 0.0,
    };
    let companion = realism_file_bytes(&info, &tensors).expect("companion");
    let with_decoder = || {
        model()
            .with_realism_decoder(&companion)
            .expect("the companion fits")
    };
    let models = vec![
        EvalModel::new(with_decoder()),
        EvalModel::new(with_decoder()).with_realism(1.0),
    ];
    let mut config = EvalConfig::new(images, models);
    config.baselines = vec![Baseline::Jpeg];
    config.progress = false;
    config.keep_pictures = 1;
    let evaluation = ocular_cli::eval::evaluate_keeping(&config).expect("evaluates");
    // The visual report steps through the knob's settings on a slider of their own.
    let page = ocular_cli::eval::html_page(&evaluation.report, &evaluation.pictures);
    let realism: Vec<_> = page
        .sections
        .iter()
        .filter(|s| s.slider == "realism")
        .collect();
    assert_eq!(realism.len(), 1, "one rate point of one kept image");
    assert_eq!(realism[0].steps, ["R=0", "R=1"]);
    assert_eq!(realism[0].columns.len(), 2, "the family and JPEG");
    let report = evaluation.report;
    let rows = |codec: &str| {
        report
            .rows
            .iter()
            .filter(|r| r.codec == codec)
            .collect::<Vec<_>>()
    };
    let (plain, realistic) = (rows("ocular:tiny"), rows("ocular:tiny@R1"));
    assert_eq!((plain.len(), realistic.len()), (3, 3));
    assert_eq!(rows("jpeg").len(), 3, "baselines only for the plain rows");
    for (p, r) in plain.iter().zip(&realistic) {
        assert_eq!(p.bpp, r.bpp, "the same file");
        // Encoded once for both settings: the same measured time, not a second encoding's.
        assert_eq!(
            p.encode_seconds, r.encode_seconds,
            "{}: encoded twice",
            p.image
        );
        assert!(p.psnr != r.psnr, "{}: the decoders differ", p.image);
    }
    assert!(realistic.iter().all(|r| r.family.ends_with("R=1")));
}
