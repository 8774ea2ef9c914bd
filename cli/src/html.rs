//! Self-contained visual reports: a page of side-by-side pictures with a zoomed crop, a slider
//! and the numbers under each picture (the writer behind `ocular eval --html`).
//!
//! The data model is generic: a [`Page`] holds [`Section`]s (e.g. one image under one model
//! family); a section has one reference picture (the original) and [`Column`]s (codecs), and every
//! column one [`Picture`] per *step* of the section's slider (e.g. the rate points of a
//! variable-rate model and the JPEG / WebP files matched to each; later the settings of a
//! realism knob). Moving the slider shows step `i` in every column at once.
//!
//! [`write_page`] writes the page and, in a folder beside it named after it (`report.html` ->
//! `report_files/`), every picture as a lossless WebP file. The page needs no network: CSS and
//! JavaScript are inline, pictures are referenced by relative paths. Every string from the
//! model is HTML-escaped. Sections are written in order while the page and its files stay within
//! [`HtmlOptions::max_bytes`]; the rest are left out and the page says how many.
//!
//! The zoomed crop shows a `crop x crop` region of every picture at `zoom` times its size with
//! `image-rendering: pixelated`; it starts on the region of the original with the most detail
//! (largest sum of absolute luma differences between neighbours) and follows a click on any
//! picture of the section.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::RgbImage;

/// Everything that can stop a page from being written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HtmlError {
    /// The page model is inconsistent (a column without one picture per step, no steps...).
    #[error("invalid page: {0}")]
    Page(String),
    /// A picture cannot be encoded.
    #[error("cannot encode the picture {}: {message}", .path.display())]
    Encode {
        /// The file it was meant for.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file or folder cannot be written.
    #[error("cannot write {}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// One picture with its caption: a label, numbers (name, value) and free lines of text.
#[derive(Clone, Debug)]
pub struct Picture {
    /// Shown above the numbers, e.g. `mse-vr@q3` or `quality 41`.
    pub label: String,
    /// The pixels.
    pub image: RgbImage,
    /// Shown as a two-column table, in order, e.g. `("bpp", "0.251")`.
    pub numbers: Vec<(String, String)>,
    /// Shown below the numbers, one line each (e.g. a classifier's top-5 labels).
    pub notes: Vec<String>,
}

impl Picture {
    /// A picture with a label and nothing else in its caption.
    pub fn new(label: impl Into<String>, image: RgbImage) -> Self {
        Self {
            label: label.into(),
            image,
            numbers: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// A codec in a section: one picture per step of the section's slider.
#[derive(Clone, Debug)]
pub struct Column {
    /// The column's heading, e.g. `ocular (mse)` or `jpeg`.
    pub name: String,
    /// One per step, in the order of [`Section::steps`].
    pub variants: Vec<Picture>,
}

/// One comparison: a reference picture beside columns that a slider steps through together.
#[derive(Clone, Debug)]
pub struct Section {
    /// The section's heading, e.g. `kodim01.png: ocular (mse)`.
    pub heading: String,
    /// What the slider steps through, e.g. `rate point`.
    pub slider: String,
    /// The label of every step (at least one).
    pub steps: Vec<String>,
    /// The picture every column is compared with (the same at every step).
    pub original: Picture,
    /// The codecs.
    pub columns: Vec<Column>,
}

/// A whole page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The `<title>` and the top heading.
    pub title: String,
    /// Paragraphs under the heading.
    pub intro: Vec<String>,
    /// The comparisons, written in order while they fit in [`HtmlOptions::max_bytes`].
    pub sections: Vec<Section>,
}

/// Sizes of the page and its crops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HtmlOptions {
    /// At most this many bytes for the page and its pictures together: sections that would go
    /// over are left out (default 20 MB).
    pub max_bytes: u64,
    /// Side of the zoomed crop in source pixels (default 128; smaller for smaller images).
    pub crop: u32,
    /// Magnification of the crop (default 3).
    pub zoom: u32,
}

impl Default for HtmlOptions {
    fn default() -> Self {
        Self {
            max_bytes: 20_000_000,
            crop: 128,
            zoom: 3,
        }
    }
}

/// What [`write_page`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSummary {
    /// The folder of pictures beside the page.
    pub files_dir: PathBuf,
    /// Sections written.
    pub sections: usize,
    /// Sections left out to stay within [`HtmlOptions::max_bytes`].
    pub omitted: usize,
    /// Pictures written.
    pub pictures: usize,
    /// Bytes of the page and its pictures.
    pub bytes: u64,
}

/// Room kept for the HTML text itself when deciding which sections fit.
const PAGE_TEXT_RESERVE: u64 = 64 * 1024;

/// Writes `page` to `path` and its pictures into `<stem>_files/` beside it (created if needed;
/// lossless WebP files of earlier pages there are removed first).
///
/// # Errors
/// [`HtmlError::Page`] if a section has no steps or a column not one picture per step;
/// [`HtmlError::Encode`] if a picture cannot be encoded (e.g. wider than 16383 pixels);
/// [`HtmlError::Io`] if the folder, a picture or the page cannot be written.
pub fn write_page(
    page: &Page,
    path: &Path,
    options: &HtmlOptions,
) -> Result<PageSummary, HtmlError> {
    for section in &page.sections {
        check_section(section)?;
    }
    let (dir, dir_url) = files_dir(path);
    std::fs::create_dir_all(&dir).map_err(|source| HtmlError::Io {
        path: dir.clone(),
        source,
    })?;
    remove_old_pictures(&dir)?;
    let mut budget = options.max_bytes.saturating_sub(PAGE_TEXT_RESERVE);
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut written = 0;
    for (index, section) in page.sections.iter().enumerate() {
        let encoded = encode_section(section, index, &dir)?;
        let bytes: u64 = encoded.iter().map(|(_, b)| b.len() as u64).sum();
        if bytes > budget {
            break;
        }
        budget -= bytes;
        files.extend(encoded);
        written += 1;
    }
    for (file, bytes) in &files {
        write_file(file, bytes)?;
    }
    let html = render_page(page, written, &dir_url, options);
    write_file(path, html.as_bytes())?;
    Ok(PageSummary {
        files_dir: dir,
        sections: written,
        omitted: page.sections.len() - written,
        pictures: files.len(),
        bytes: html.len() as u64 + files.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
    })
}

fn check_section(section: &Section) -> Result<(), HtmlError> {
    if section.steps.is_empty() {
        return Err(HtmlError::Page(format!(
            "section '{}' has no steps",
            section.heading
        )));
    }
    for column in &section.columns {
        if column.variants.len() != section.steps.len() {
            return Err(HtmlError::Page(format!(
                "column '{}' of section '{}' has {} pictures for {} steps",
                column.name,
                section.heading,
                column.variants.len(),
                section.steps.len()
            )));
        }
    }
    Ok(())
}

/// The pictures' folder beside `page` and its relative URL (percent-encoded).
fn files_dir(page: &Path) -> (PathBuf, String) {
    let stem = page
        .file_stem()
        .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
    let name = format!("{stem}_files");
    (page.with_file_name(&name), percent_encode(&name))
}

/// Removes the files a previous [`write_page`] left in `dir` (`s<N>-*.webp`).
fn remove_old_pictures(dir: &Path) -> Result<(), HtmlError> {
    let io = |source| HtmlError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| is_picture_name(&n)) {
            std::fs::remove_file(&path).map_err(|source| HtmlError::Io { path, source })?;
        }
    }
    Ok(())
}

fn is_picture_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('s') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with('-') && name.ends_with(".webp")
}

/// File name of column `column` (`None`: the original) at step `step` of section `section`.
fn picture_name(section: usize, column: Option<usize>, step: usize) -> String {
    match column {
        None => format!("s{section}-original.webp"),
        Some(c) => format!("s{section}-c{c}-v{step}.webp"),
    }
}

/// Every picture of a section as (file, lossless WebP bytes).
fn encode_section(
    section: &Section,
    index: usize,
    dir: &Path,
) -> Result<Vec<(PathBuf, Vec<u8>)>, HtmlError> {
    let mut files = Vec::new();
    let original = dir.join(picture_name(index, None, 0));
    files.push((
        original.clone(),
        lossless_webp(&section.original.image, &original)?,
    ));
    for (c, column) in section.columns.iter().enumerate() {
        for (step, picture) in column.variants.iter().enumerate() {
            let file = dir.join(picture_name(index, Some(c), step));
            files.push((file.clone(), lossless_webp(&picture.image, &file)?));
        }
    }
    Ok(files)
}

/// WebP's largest width and height.
const WEBP_MAX_SIDE: u32 = 16383;

fn lossless_webp(image: &RgbImage, path: &Path) -> Result<Vec<u8>, HtmlError> {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 || width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE {
        return Err(HtmlError::Encode {
            path: path.to_path_buf(),
            message: format!("{width}x{height} is outside WebP's 1..={WEBP_MAX_SIDE} a side"),
        });
    }
    webp::Encoder::from_rgb(image.as_raw(), width, height)
        .encode_simple(true, 75.0)
        .map(|memory| memory.to_vec())
        .map_err(|e| HtmlError::Encode {
            path: path.to_path_buf(),
            message: format!("libwebp: {e:?}"),
        })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HtmlError> {
    std::fs::write(path, bytes).map_err(|source| HtmlError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references: safe in element
/// content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// `text` as one path segment of a relative URL: every byte but ASCII letters, digits and
/// `-._~` percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The top-left corner of the `side x side` region (on a grid of `side / 4`) of `image` with the
/// largest sum of absolute differences between horizontally and vertically neighbouring lumas;
/// `side` is first clamped to the image.
pub fn busiest_region(image: &RgbImage, side: u32) -> (u32, u32) {
    let (width, height) = image.dimensions();
    let side = side.min(width).min(height);
    if side == 0 {
        return (0, 0);
    }
    let luma = |x: u32, y: u32| {
        let [r, g, b] = image.get_pixel(x, y).0;
        2 * i64::from(r) + 5 * i64::from(g) + i64::from(b)
    };
    let detail = |x: u32, y: u32| {
        let right = if x + 1 < width {
            (luma(x + 1, y) - luma(x, y)).abs()
        } else {
            0
        };
        let down = if y + 1 < height {
            (luma(x, y + 1) - luma(x, y)).abs()
        } else {
            0
        };
        right + down
    };
    let grid = (side / 4).max(1);
    let positions = |extent: u32| (0..=(extent - side) / grid).map(move |k| k * grid);
    let mut best = ((0, 0), -1);
    for top in positions(height) {
        for left in positions(width) {
            // Every other pixel in both directions: plenty to rank regions.
            let sum: i64 = (top..top + side)
                .step_by(2)
                .flat_map(|y| (left..left + side).step_by(2).map(move |x| (x, y)))
                .map(|(x, y)| detail(x, y))
                .sum();
            if sum > best.1 {
                best = ((left, top), sum);
            }
        }
    }
    best.0
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\
section.cmp{border-top:1px solid #ccc;margin-top:1.5em}\
.grid{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}\
figure{margin:0;background:#fff;padding:6px;border:1px solid #ddd}\
figure h3{margin:0 0 4px;font-size:15px}\
.frame{position:relative;line-height:0;cursor:crosshair}\
.frame img{display:block;width:100%;height:auto}\
.mark{position:absolute;border:1px solid #f0f;box-shadow:0 0 0 1px #fff;pointer-events:none}\
.zoom{position:relative;overflow:hidden;margin-top:6px;background:#000}\
.zoom img{position:absolute;max-width:none;image-rendering:pixelated}\
table.nums{border-collapse:collapse;margin-top:4px}\
table.nums th{text-align:left;font-weight:normal;color:#555;padding-right:1em}\
table.nums td{text-align:right;font-variant-numeric:tabular-nums}\
.ctl{margin:.5em 0}.ctl input{vertical-align:middle;width:20em}\
.label{font-weight:600}.note{color:#555;font-size:13px}";

const SCRIPT: &str = r#"
"use strict";
function showStep(section, step) {
  for (const figure of section.querySelectorAll("figure[data-srcs]")) {
    const srcs = figure.dataset.srcs.split(" ");
    const src = srcs[Math.min(step, srcs.length - 1)];
    for (const img of figure.querySelectorAll("img")) { if (img.getAttribute("src") !== src) img.src = src; }
  }
  for (const el of section.querySelectorAll("[data-step]")) { el.hidden = Number(el.dataset.step) !== step; }
}
function moveCrop(section, x, y) {
  const zoom = Number(section.dataset.zoom), side = Number(section.dataset.crop);
  const w = Number(section.dataset.width), h = Number(section.dataset.height);
  const left = Math.max(0, Math.min(w - side, Math.round(x - side / 2)));
  const top = Math.max(0, Math.min(h - side, Math.round(y - side / 2)));
  for (const img of section.querySelectorAll(".zoom img")) {
    img.style.left = -left * zoom + "px"; img.style.top = -top * zoom + "px";
  }
  for (const mark of section.querySelectorAll(".mark")) {
    mark.style.left = 100 * left / w + "%"; mark.style.top = 100 * top / h + "%";
  }
}
for (const section of document.querySelectorAll("section.cmp")) {
  const slider = section.querySelector("input.step");
  slider.addEventListener("input", () => showStep(section, Number(slider.value)));
  slider.addEventListener("change", () => showStep(section, Number(slider.value)));
  showStep(section, Number(slider.value));
  for (const frame of section.querySelectorAll(".frame")) {
    frame.addEventListener("click", (event) => {
      const box = frame.getBoundingClientRect();
      moveCrop(section, (event.clientX - box.left) / box.width * Number(section.dataset.width),
        (event.clientY - box.top) / box.height * Number(section.dataset.height));
    });
  }
}
"#;

/// The whole HTML text of `page` with only its first `written` sections.
fn render_page(page: &Page, written: usize, dir_url: &str, options: &HtmlOptions) -> String {
    let omitted = page.sections.len() - written;
    let mut html = String::new();
    let title = escape(&page.title);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    for paragraph in &page.intro {
        let _ = writeln!(html, "<p>{}</p>", escape(paragraph));
    }
    if omitted > 0 {
        let _ = writeln!(
            html,
            "<p class=\"note\" id=\"omitted\">{omitted} more comparison(s) left out to keep the \
             page and its pictures under {} MB.</p>",
            options.max_bytes / 1_000_000
        );
    }
    for (index, section) in page.sections.iter().enumerate().take(written) {
        render_section(&mut html, section, index, dir_url, options);
    }
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    html
}

fn render_section(
    html: &mut String,
    section: &Section,
    index: usize,
    dir_url: &str,
    options: &HtmlOptions,
) {
    let (width, height) = section.original.image.dimensions();
    let side = options.crop.min(width).min(height).max(1);
    let crop = Crop {
        corner: busiest_region(&section.original.image, side),
        side,
        zoom: options.zoom.max(1),
        width,
        height,
    };
    let last = section.steps.len().saturating_sub(1);
    let _ = write!(
        html,
        "<section class=\"cmp\" id=\"s{index}\" data-width=\"{width}\" data-height=\"{height}\" \
         data-crop=\"{side}\" data-zoom=\"{}\">\n<h2>{}</h2>\n<div class=\"ctl\"><label>{} \
         <input type=\"range\" class=\"step\" id=\"s{index}-step\" min=\"0\" max=\"{last}\" \
         step=\"1\" value=\"0\"></label> ",
        crop.zoom,
        escape(&section.heading),
        escape(&section.slider),
    );
    for (step, label) in section.steps.iter().enumerate() {
        let _ = write!(
            html,
            "<span class=\"label\" data-step=\"{step}\"{}>{}</span>",
            hidden(step),
            escape(label)
        );
    }
    let _ = write!(html, " <span class=\"note\">(click a picture to move the {side}x{side} crop)</span></div>\n<div class=\"grid\">\n");
    let url = |column, step| format!("{dir_url}/{}", picture_name(index, column, step));
    render_figure(
        html,
        "original",
        &[&section.original],
        &[url(None, 0)],
        &crop,
    );
    for (c, column) in section.columns.iter().enumerate() {
        let pictures: Vec<&Picture> = column.variants.iter().collect();
        let urls: Vec<String> = (0..pictures.len()).map(|s| url(Some(c), s)).collect();
        render_figure(html, &column.name, &pictures, &urls, &crop);
    }
    html.push_str("</div>\n</section>\n");
}

/// Where the zoomed crop of a section starts and how large it is drawn.
struct Crop {
    corner: (u32, u32),
    side: u32,
    zoom: u32,
    width: u32,
    height: u32,
}

fn hidden(step: usize) -> &'static str {
    if step == 0 {
        ""
    } else {
        " hidden"
    }
}

/// One column: the picture of step 0 (the script swaps in the others), its crop and one caption
/// per step. A single picture is the same at every step.
fn render_figure(
    html: &mut String,
    name: &str,
    pictures: &[&Picture],
    urls: &[String],
    crop: &Crop,
) {
    let srcs = escape(&urls.join(" "));
    let first = escape(&urls[0]);
    let (w, h, z) = (crop.width, crop.height, crop.zoom);
    let (x, y) = crop.corner;
    let _ = write!(
        html,
        "<figure data-srcs=\"{srcs}\" style=\"width:{}px\">\n<h3>{}</h3>\n<div class=\"frame\"><img class=\"main\" \
         src=\"{first}\" width=\"{w}\" height=\"{h}\" alt=\"{}\"><div class=\"mark\" \
         style=\"left:{}%;top:{}%;width:{}%;height:{}%\"></div></div>\n<div class=\"zoom\" \
         style=\"width:{}px;height:{}px\"><img class=\"zoomed\" src=\"{first}\" alt=\"\" \
         style=\"width:{}px;height:{}px;left:-{}px;top:-{}px\"></div>\n",
        (crop.side * z).max(160),
        escape(name),
        escape(name),
        percent(x, w),
        percent(y, h),
        percent(crop.side, w),
        percent(crop.side, h),
        crop.side * z,
        crop.side * z,
        w * z,
        h * z,
        x * z,
        y * z,
    );
    let many = pictures.len() > 1;
    for (step, picture) in pictures.iter().enumerate() {
        let attributes = if many {
            format!(" data-step=\"{step}\"{}", hidden(step))
        } else {
            String::new()
        };
        let _ = write!(html, "<figcaption{attributes}>");
        render_caption(html, picture);
        html.push_str("</figcaption>\n");
    }
    html.push_str("</figure>\n");
}

fn percent(part: u32, whole: u32) -> String {
    format!("{:.4}", 100.0 * f64::from(part) / f64::from(whole.max(1)))
}

fn render_caption(html: &mut String, picture: &Picture) {
    let _ = write!(
        html,
        "<div class=\"label\">{}</div>",
        escape(&picture.label)
    );
    if !picture.numbers.is_empty() {
        html.push_str("<table class=\"nums\">");
        for (name, value) in &picture.numbers {
            let _ = write!(
                html,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(name),
                escape(value)
            );
        }
        html.push_str("</table>");
    }
    for note in &picture.notes {
        let _ = write!(html, "<div class=\"note\">{}</div>", escape(note));
    }
}
