//! `ocular_cli::html` and `EvalReport::write_html`: the visual report's page escapes what it shows,
//! references only files it wrote, needs no network and keeps to its size cap. (The page in a
//! real browser: `make test-browser`.)

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use ocular::train::{untrained_model_bytes, HyperpriorConfig};
use ocular::Model;
use ocular_cli::eval::{evaluate_keeping, Baseline, EvalConfig, EvalModel};
use ocular_cli::html::{write_page, Column, HtmlError, HtmlOptions, Page, Picture, Section};

const HOSTILE: &str = "<script>alert(\"x\")</script> & 'quoted'";

/// A picture whose every pixel differs from its neighbours (large losslessly).
fn noise(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        Rgb([a, b, c])
    })
}

fn picture(label: &str, seed: u32) -> Picture {
    let mut picture = Picture::new(label, noise(40, 30, seed));
    picture.numbers.push(("bpp".into(), "0.25".into()));
    picture.numbers.push((HOSTILE.into(), HOSTILE.into()));
    picture.notes.push(HOSTILE.into());
    picture
}

fn section(index: u32, steps: usize) -> Section {
    Section {
        heading: format!("image {index} {HOSTILE}"),
        slider: format!("setting {HOSTILE}"),
        steps: (0..steps).map(|s| format!("step {s} {HOSTILE}")).collect(),
        original: picture(HOSTILE, index * 100),
        columns: (0..2)
            .map(|c| Column {
                name: format!("codec {c} {HOSTILE}"),
                variants: (0..steps)
                    .map(|s| picture(HOSTILE, index * 100 + c * 10 + s as u32 + 1))
                    .collect(),
            })
            .collect(),
    }
}

fn page(sections: u32) -> Page {
    Page {
        title: HOSTILE.into(),
        intro: vec![HOSTILE.into()],
        sections: (0..sections).map(|i| section(i, 3)).collect(),
    }
}

/// The values of every `src="..."` attribute, percent-decoded.
fn sources(html: &str) -> Vec<String> {
    html.split("src=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().expect("closing quote"))
        .map(percent_decode)
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Every `src` and the `data-srcs` lists: (the relative URLs, whether each file exists).
fn referenced_files(page: &Path, html: &str) -> Vec<PathBuf> {
    let mut urls = sources(html);
    for rest in html.split("data-srcs=\"").skip(1) {
        let list = rest.split('"').next().expect("closing quote");
        urls.extend(list.split(' ').map(percent_decode));
    }
    let dir = page.parent().expect("a folder");
    urls.iter().map(|url| dir.join(url)).collect()
}

fn total_bytes(page: &Path, files_dir: &Path) -> u64 {
    let pictures: u64 = std::fs::read_dir(files_dir)
        .expect("the pictures' folder")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    pictures + std::fs::metadata(page).expect("page").len()
}

#[test]
fn every_string_is_escaped_and_every_referenced_file_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A page name that needs percent-encoding in a URL (space, '#', '%', non-ASCII).
    let path = dir.path().join("my report #1 100% é.html");
    let summary = write_page(&page(2), &path, &HtmlOptions::default()).expect("written");
    assert_eq!(
        (summary.sections, summary.omitted, summary.pictures),
        (2, 0, 14)
    );
    assert_eq!(
        summary.files_dir,
        dir.path().join("my report #1 100% é_files")
    );
    let html = std::fs::read_to_string(&path).expect("page");
    assert!(
        !html.contains("<script>alert"),
        "unescaped string in the page"
    );
    assert!(!html.contains("'quoted'"), "unescaped quote in the page");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quoted&#39;")
    );
    assert_eq!(
        html.matches("<script>").count(),
        1,
        "one inline script, the page's own"
    );
    // No external resource: no URL with a scheme, no stylesheet link.
    assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("<link"));
    let files = referenced_files(&path, &html);
    // Main picture and zoomed crop of the original and of 2 columns (src), plus the lists.
    assert!(files.len() >= 2 * (2 * 3 + 1 + 2 * 3), "{files:?}");
    for file in &files {
        assert!(
            file.is_file(),
            "the page references {} which is missing",
            file.display()
        );
        assert!(
            file.starts_with(&summary.files_dir),
            "{} outside",
            file.display()
        );
    }
    assert_eq!(
        html.matches("type=\"range\"").count(),
        2,
        "one slider per section"
    );
    assert!(html.contains("max=\"2\""), "three steps: 0..=2");
    assert_eq!(total_bytes(&path, &summary.files_dir), summary.bytes);
    assert!(image::open(&files[0]).expect("a picture decodes").width() == 40);
}

#[test]
fn sections_that_do_not_fit_the_size_cap_are_left_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("report.html");
    let full = write_page(&page(4), &path, &HtmlOptions::default()).expect("written");
    assert_eq!(full.omitted, 0);
    let page_text = std::fs::metadata(&path).expect("page").len();
    let per_section = (full.bytes - page_text) / 4;
    // Room for the page text and two sections, not three: rewritten in the same place, the
    // pictures of the first run must go too.
    let max_bytes = 64 * 1024 + per_section * 5 / 2;
    let options = HtmlOptions {
        max_bytes,
        ..Default::default()
    };
    let capped = write_page(&page(4), &path, &options).expect("written");
    assert_eq!((capped.sections, capped.omitted), (2, 2), "{capped:?}");
    let html = std::fs::read_to_string(&path).expect("page");
    assert!(
        html.contains("2 more comparison(s) left out"),
        "the page says so"
    );
    assert!(total_bytes(&path, &capped.files_dir) <= max_bytes);
    assert_eq!(
        std::fs::read_dir(&capped.files_dir).expect("dir").count(),
        14
    );
    for file in referenced_files(&path, &html) {
        assert!(file.is_file(), "{} is missing", file.display());
    }
}

#[test]
fn a_column_must_have_one_picture_per_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bad = page(1);
    bad.sections[0].columns[1].variants.pop();
    let error = write_page(&bad, &dir.path().join("r.html"), &HtmlOptions::default());
    assert!(matches!(error, Err(HtmlError::Page(_))), "{error:?}");
    assert!(!dir.path().join("r.html").exists());
}

#[test]
fn an_evaluation_shows_each_rate_point_beside_the_matched_baselines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images: Vec<PathBuf> = [("a.png", 48, 40), ("b.png", 40, 32)]
        .into_iter()
        .map(|(name, w, h)| {
            let path = dir.path().join(name);
            noise(w, h, w).save(&path).expect("image");
            path
        })
        .collect();
    let tiny = HyperpriorConfig { n: 8, m: 12 };
    let models = (1..=2)
        .map(|seed| {
            let bytes = untrained_model_bytes(tiny, "tiny", seed).expect("model");
            let model = Model::from_bytes(&bytes).expect("model loads");
            EvalModel::new(model).with_label(format!("tiny-{seed}"))
        })
        .collect();
    let mut config = EvalConfig::new(images, models);
    config.baselines = vec![Baseline::Jpeg];
    config.keep_pictures = 1;
    let evaluation = evaluate_keeping(&config).expect("evaluation");
    assert_eq!(evaluation.report.rows.len(), 8);
    assert_eq!(evaluation.pictures.len(), 1, "only the first image is kept");
    assert_eq!(evaluation.pictures[0].decoded.len(), 4);
    let path = dir.path().join("report.html");
    let summary = evaluation
        .report
        .write_html(&evaluation.pictures, &path, &HtmlOptions::default())
        .expect("written");
    // One family (both models are "ocular (mse)"), two rate points, the original, ocular, jpeg.
    assert_eq!((summary.sections, summary.pictures), (1, 5), "{summary:?}");
    let html = std::fs::read_to_string(&path).expect("page");
    for text in [
        "a.png: ocular (mse)",
        "tiny-1",
        "tiny-2",
        "jpeg",
        "bpp",
        "PSNR",
        "MS-SSIM",
    ] {
        assert!(html.contains(text), "{text} missing");
    }
    assert!(!html.contains("b.png"), "the second image was not kept");
    for file in referenced_files(&path, &html) {
        assert!(file.is_file(), "{} is missing", file.display());
    }
}
