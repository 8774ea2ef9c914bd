//! The visual report of a benchmark ([`BenchReport::write_html`]): for every kept image, the
//! uncompressed classifier crop beside every codec's decoded crop, with a slider over the target
//! bpp and the first judge's top-5 classes under each picture.

use std::path::Path;

use super::{BenchError, BenchPicture, BenchPictures, BenchReport, BenchRow, REFERENCE_CODEC};
use crate::html::{self, Column, HtmlOptions, Page, PageSummary, Picture, Section};
use ocular::observer::Synsets;

impl BenchReport {
    /// Writes the visual report of `pictures` (from [`super::run_keeping`]) to `path`, with the
    /// pictures in a folder beside it ([`html_page`], [`html::write_page`]); `synsets` names the
    /// classes (without it they are shown by index).
    ///
    /// # Errors
    /// [`BenchError::Html`] if the page or a picture cannot be written.
    pub fn write_html(
        &self,
        pictures: &[BenchPictures],
        synsets: Option<&Synsets>,
        path: &Path,
        options: &HtmlOptions,
    ) -> Result<PageSummary, BenchError> {
        Ok(html::write_page(
            &html_page(self, pictures, synsets),
            path,
            options,
        )?)
    }
}

/// The page model of a benchmark: one section per kept image, stepping through the targets
/// (in the order of the rows); a column per codec that has a picture at every target.
pub fn html_page(
    report: &BenchReport,
    pictures: &[BenchPictures],
    synsets: Option<&Synsets>,
) -> Page {
    let judge = report
        .rows
        .iter()
        .find_map(|r| r.verdicts.first())
        .map_or_else(|| "the first judge".to_string(), |v| v.judge.clone());
    let mut page = Page {
        title: "ocular bench: classifier crops side by side".into(),
        intro: vec![format!(
            "The 224x224 classifier crop of each image beside every codec's decoded crop at each \
             target bpp (within the target unless marked). Numbers are against the uncompressed \
             crop; the lines below them are {judge}'s five most probable classes (* the true \
             class)."
        )],
        sections: Vec::new(),
    };
    for kept in pictures {
        if let Some(section) = image_section(report, kept, synsets, &judge) {
            page.sections.push(section);
        }
    }
    page
}

fn image_section(
    report: &BenchReport,
    kept: &BenchPictures,
    synsets: Option<&Synsets>,
    judge: &str,
) -> Option<Section> {
    let rows: Vec<&BenchRow> = report
        .rows
        .iter()
        .filter(|r| r.image == kept.image)
        .collect();
    let reference = rows.iter().find(|r| r.codec == REFERENCE_CODEC)?;
    let crop = kept.crops.iter().find(|c| c.codec == REFERENCE_CODEC)?;
    let class = |index: usize| class_name(synsets, index);
    let mut targets: Vec<f64> = Vec::new();
    let mut codecs: Vec<&str> = Vec::new();
    for row in &rows {
        if let Some(target) = row.target_bpp {
            if !targets.contains(&target) {
                targets.push(target);
            }
            if !codecs.contains(&row.codec.as_str()) {
                codecs.push(&row.codec);
            }
        }
    }
    let mut original = Picture::new(
        format!("uncompressed ({})", class(reference.label)),
        crop.image.clone(),
    );
    original.notes = top5_lines(crop, reference.label, synsets, judge);
    let columns = codecs
        .into_iter()
        .filter_map(|codec| {
            let variants: Vec<Picture> = targets
                .iter()
                .filter_map(|&t| {
                    let row = rows
                        .iter()
                        .find(|r| r.codec == codec && r.target_bpp == Some(t))?;
                    let crop = kept
                        .crops
                        .iter()
                        .find(|c| c.codec == codec && c.target_bpp == Some(t))?;
                    Some(picture(row, crop, synsets, judge))
                })
                .collect();
            (variants.len() == targets.len()).then(|| Column {
                name: codec.to_string(),
                variants,
            })
        })
        .collect();
    Some(Section {
        heading: format!("{} ({})", kept.image, class(reference.label)),
        slider: "target bpp".into(),
        steps: targets.iter().map(|t| format!("{t} bpp")).collect(),
        original,
        columns,
    })
}

fn class_name(synsets: Option<&Synsets>, index: usize) -> String {
    synsets
        .and_then(|s| s.name(index))
        .map_or_else(|| format!("class {index}"), str::to_string)
}

fn picture(row: &BenchRow, crop: &BenchPicture, synsets: Option<&Synsets>, judge: &str) -> Picture {
    let label = if row.codec.starts_with("ocular:") {
        row.setting.clone()
    } else {
        format!("quality {}", row.setting)
    };
    let optional =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "n/a".into(), |v| format!("{v:.4}{unit}"));
    let mut picture = Picture::new(label, crop.image.clone());
    picture.numbers = vec![
        ("bpp".into(), format!("{:.3}", row.bpp)),
        (
            "PSNR".into(),
            optional(row.psnr.map(|p| (p * 100.0).round() / 100.0), " dB"),
        ),
        ("MS-SSIM".into(), optional(row.ms_ssim, "")),
    ];
    if row.over_target {
        picture
            .notes
            .push("above the target even at the lowest setting".into());
    }
    picture
        .notes
        .extend(top5_lines(crop, row.label, synsets, judge));
    picture
}

/// `top-5 (<judge>):` and one line per class, `*` marking the true class.
fn top5_lines(
    crop: &BenchPicture,
    label: usize,
    synsets: Option<&Synsets>,
    judge: &str,
) -> Vec<String> {
    if crop.top5.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!("top-5 ({judge}):")];
    for (rank, &(class, probability)) in crop.top5.iter().enumerate() {
        let mark = if class == label { " *" } else { "" };
        lines.push(format!(
            "{}. {} {:.1}%{mark}",
            rank + 1,
            class_name(synsets, class),
            probability * 100.0
        ));
    }
    lines
}
