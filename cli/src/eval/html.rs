//! The visual report of an evaluation ([`EvalReport::write_html`]): for every kept image and
//! every ocular family, the original beside the family's pictures and the baselines matched to
//! them, with a slider over the family's rate points; where the same files were also decoded
//! with the realism knob (`eval --realism`), one more section per rate point whose slider steps
//! through the knob's settings.

use std::path::Path;

use super::{EvalError, EvalReport, EvalRow, KeptPictures};
use crate::html::{self, Column, HtmlOptions, Page, PageSummary, Picture, Section};

/// [`EvalRow`] fields that [`row_numbers`] shows itself or that are not a picture's quality; any
/// other numeric field a row carries (an optional metric) is shown under its field name.
const NOT_EXTRA: [&str; 15] = [
    "codec",
    "family",
    "setting",
    "target",
    "image",
    "width",
    "height",
    "bytes",
    "bpp",
    "psnr",
    "ms_ssim",
    "ms_ssim_db",
    "encode_seconds",
    "decode_seconds",
    "over_target",
];

impl EvalReport {
    /// Writes the visual report of `pictures` (from [`super::evaluate_keeping`]) to `path`, with
    /// the pictures in a folder beside it ([`html_page`], [`html::write_page`]).
    ///
    /// # Errors
    /// [`EvalError::Html`] if the page or a picture cannot be written.
    pub fn write_html(
        &self,
        pictures: &[KeptPictures],
        path: &Path,
        options: &HtmlOptions,
    ) -> Result<PageSummary, EvalError> {
        Ok(html::write_page(&html_page(self, pictures), path, options)?)
    }
}

/// The page model of an evaluation: one section per kept image and ocular family (in the
/// order the rows name them), stepping through the family's rate points (the ocular rows'
/// targets); its columns are the family and every baseline matched to all of those rate
/// points. Rows without a kept picture are left out.
pub fn html_page(report: &EvalReport, pictures: &[KeptPictures]) -> Page {
    let mut page = Page {
        title: "ocular: side by side at matched bpp".into(),
        intro: vec![
            "Every codec's decoded picture of each image, beside the original. Baselines are \
             matched to the bpp of the ocular file of each rate point; the slider steps through \
             the rate points of a model family. Numbers are against the original: bpp of the \
             whole file, PSNR over RGB, MS-SSIM (n/a when a side is under 161 pixels)."
                .into(),
        ],
        sections: Vec::new(),
    };
    for kept in pictures {
        let rows: Vec<&EvalRow> = report
            .rows
            .iter()
            .filter(|r| r.image == kept.image)
            .collect();
        let mut families: Vec<&str> = Vec::new();
        // Realism settings (`EvalModel::with_realism`) are steps of their family's own slider.
        for row in rows.iter().filter(|r| is_plain_ocular(r)) {
            if !families.contains(&row.family.as_str()) {
                families.push(&row.family);
            }
        }
        for family in families {
            if let Some(section) = family_section(kept, &rows, family) {
                page.sections.push(section);
            }
            page.sections.extend(realism_sections(kept, &rows, family));
        }
    }
    page
}

/// Whether `row` is an ocular row decoded without the realism knob.
fn is_plain_ocular(row: &EvalRow) -> bool {
    row.codec.starts_with("ocular:") && !row.family.contains(REALISM_FAMILY)
}

/// What [`super::EvalModel::with_realism`] appends to a family: `<family> R=<r>`.
const REALISM_FAMILY: &str = " R=";

/// For every rate point of `family` whose file was also decoded with the realism knob, a
/// section whose slider steps through the knob's settings (R = 0 the plain decoder), the
/// baselines matched to that rate point beside it.
fn realism_sections(kept: &KeptPictures, rows: &[&EvalRow], family: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let plain = rows
        .iter()
        .copied()
        .filter(|r| r.family == family && is_plain_ocular(r));
    for base in plain {
        let prefix = format!("{family}{REALISM_FAMILY}");
        let settings: Vec<&EvalRow> = rows
            .iter()
            .copied()
            .filter(|r| r.family.starts_with(&prefix) && r.target.starts_with(&base.target))
            .filter(|r| r.target[base.target.len()..].starts_with("@R"))
            .collect();
        let Some(first) = picture(kept, base) else {
            continue;
        };
        let mut variants = vec![first];
        let mut steps = vec!["R=0".to_string()];
        for row in settings {
            if let Some(p) = picture(kept, row) {
                steps.push(row.family[family.len() + 1..].to_string());
                variants.push(p);
            }
        }
        if steps.len() < 2 {
            continue;
        }
        let mut columns = vec![Column {
            name: family.to_string(),
            variants,
        }];
        for row in rows.iter().filter(|r| !r.codec.starts_with("ocular:")) {
            if row.target == base.target {
                if let Some(p) = picture(kept, row) {
                    columns.push(Column {
                        name: row.codec.clone(),
                        variants: vec![p; steps.len()],
                    });
                }
            }
        }
        sections.push(Section {
            heading: format!("{}: {family} at {}, realism", kept.image, base.target),
            slider: "realism".into(),
            steps,
            original: original_picture(kept),
            columns,
        });
    }
    sections
}

/// The section of one image and one ocular family, if any of its rows has a picture.
fn family_section(kept: &KeptPictures, rows: &[&EvalRow], family: &str) -> Option<Section> {
    let ocular: Vec<&EvalRow> = rows
        .iter()
        .copied()
        .filter(|r| r.family == family && r.codec.starts_with("ocular:"))
        .filter(|r| picture_of(kept, r).is_some())
        .collect();
    let steps: Vec<String> = ocular.iter().map(|r| r.target.clone()).collect();
    if steps.is_empty() {
        return None;
    }
    let mut columns = vec![Column {
        name: family.to_string(),
        variants: ocular.iter().filter_map(|r| picture(kept, r)).collect(),
    }];
    let mut baselines: Vec<&str> = Vec::new();
    for row in rows.iter().filter(|r| !r.codec.starts_with("ocular:")) {
        if steps.contains(&row.target) && !baselines.contains(&row.codec.as_str()) {
            baselines.push(&row.codec);
        }
    }
    for codec in baselines {
        let variants: Vec<Picture> = steps
            .iter()
            .filter_map(|step| rows.iter().find(|r| r.codec == codec && &r.target == step))
            .filter_map(|r| picture(kept, r))
            .collect();
        // A baseline missing at some rate point would shift the slider: leave it out.
        if variants.len() == steps.len() {
            columns.push(Column {
                name: codec.to_string(),
                variants,
            });
        }
    }
    Some(Section {
        heading: format!("{}: {family}", kept.image),
        slider: "rate point".into(),
        steps,
        original: original_picture(kept),
        columns,
    })
}

fn picture_of<'a>(kept: &'a KeptPictures, row: &EvalRow) -> Option<&'a image::RgbImage> {
    kept.decoded
        .iter()
        .find(|p| p.codec == row.codec && p.target == row.target)
        .map(|p| &p.image)
}

fn picture(kept: &KeptPictures, row: &EvalRow) -> Option<Picture> {
    let image = picture_of(kept, row)?.clone();
    let label = if row.codec.starts_with("ocular:") {
        row.setting.clone()
    } else {
        format!("quality {}", row.setting)
    };
    let mut notes = Vec::new();
    if row.over_target {
        notes.push("above the target bpp even at quality 1".to_string());
    }
    Some(Picture {
        label,
        image,
        numbers: row_numbers(row),
        notes,
    })
}

fn original_picture(kept: &KeptPictures) -> Picture {
    let (width, height) = kept.original.dimensions();
    let mut original = Picture::new(kept.image.clone(), kept.original.clone());
    original
        .numbers
        .push(("size".into(), format!("{width}x{height}")));
    original
}

/// bpp, PSNR, MS-SSIM, then every optional metric the row carries ([`extra_numbers`]).
fn row_numbers(row: &EvalRow) -> Vec<(String, String)> {
    let ms_ssim = match (row.ms_ssim, row.ms_ssim_db) {
        (Some(value), Some(db)) => format!("{value:.4} ({db:.2} dB)"),
        (Some(value), None) => format!("{value:.4}"),
        _ => "n/a".into(),
    };
    let mut numbers = vec![
        ("bpp".to_string(), format!("{:.3}", row.bpp)),
        ("PSNR".to_string(), format!("{:.2} dB", row.psnr)),
        ("MS-SSIM".to_string(), ms_ssim),
    ];
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(row) {
        numbers.extend(extra_numbers(&fields));
    }
    numbers
}

/// The numeric fields of a serialised row that are not in [`NOT_EXTRA`] (optional metrics such
/// as a deep-feature distance), by field name; `null` ones (metric not measured) are skipped.
pub(crate) fn extra_numbers(
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, String)> {
    fields
        .iter()
        .filter(|(name, _)| !NOT_EXTRA.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.replace('_', " "), format!("{:.4}", value.as_f64()?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_metrics_are_shown_by_name_and_known_fields_are_not() {
        let fields = serde_json::json!({
            "codec": "jpeg", "bpp": 0.5, "psnr": 30.0, "width": 10,
            "feature_distance": 0.123456, "lpips": null, "note": "text",
        });
        let serde_json::Value::Object(fields) = fields else {
            panic!("an object")
        };
        assert_eq!(
            extra_numbers(&fields),
            vec![("feature distance".to_string(), "0.1235".to_string())]
        );
    }
}
