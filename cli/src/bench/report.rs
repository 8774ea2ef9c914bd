//! Results of a benchmark: per-image rows with every judge's verdict, summaries per codec,
//! target and judge, JSON, a text table, and the merging of shards (CSV: [`super::csv`]).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BenchError;

/// The codec name of the rows of the uncompressed crops (the reference accuracy).
pub const REFERENCE_CODEC: &str = "uncompressed";

/// One image through one codec at one target (or the uncompressed crop).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// The image ([`super::LabeledImage::name`], e.g. `n01440764/a.JPEG`).
    pub image: String,
    /// Its class folder.
    pub wnid: String,
    /// Its class index.
    pub label: usize,
    /// `ocular:<family>`, `jpeg`, `webp`, or [`REFERENCE_CODEC`].
    pub codec: String,
    /// The target bits per pixel; `None` for the uncompressed crop.
    pub target_bpp: Option<f64>,
    /// Bits per pixel reached: whole file bytes * 8 / (224 * 224); 24 for the uncompressed crop.
    pub bpp: f64,
    /// Even the smallest setting (JPEG / WebP quality 1, the family's lowest rate point) made a
    /// file above the target; that file is reported.
    pub over_target: bool,
    /// What each judge made of the crop, in the order of the run's judges (the same in every
    /// row of a report).
    pub verdicts: Vec<Verdict>,
    /// PSNR (RGB, dB) of the decoded crop against the uncompressed crop; `None` for the latter.
    pub psnr: Option<f64>,
    /// MS-SSIM of the decoded crop against the uncompressed crop; `None` for the latter.
    pub ms_ssim: Option<f64>,
    /// The quality for JPEG / WebP, the model name for ocular, empty for the uncompressed crop.
    pub setting: String,
    /// Size of the whole file (for the uncompressed crop: its 8-bit RGB pixels).
    pub bytes: usize,
    /// Deep-feature distance of the decoded crop to the uncompressed crop (EfficientNet-Lite1,
    /// uncalibrated; [`ocular::perceptual`]), when the run measured it; `None` for the latter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_distance: Option<f64>,
}

/// One judge's classification of one crop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The judge's name ([`super::Judge::name`], e.g. `lite1`).
    pub judge: String,
    /// The judge's top-1 class index.
    pub predicted: usize,
    /// The judge's top-1 class is the label.
    pub top1_correct: bool,
    /// The label is among the judge's 5 most probable classes.
    pub top5_correct: bool,
}

/// One judge's accuracy over the images of a [`BenchSummary`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeSummary {
    /// The judge's name.
    pub judge: String,
    /// Top-1 accuracy, 0..1.
    pub top1: f64,
    /// Top-5 accuracy, 0..1.
    pub top5: f64,
    /// Images classified right (top-1).
    pub top1_correct: usize,
    /// Images whose class is in the top 5.
    pub top5_correct: usize,
}

/// One codec at one target over all images (or the uncompressed crops).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchSummary {
    /// As [`BenchRow::codec`].
    pub codec: String,
    /// As [`BenchRow::target_bpp`].
    pub target_bpp: Option<f64>,
    /// Number of images.
    pub images: usize,
    /// The accuracy under each judge, in the report's order of judges.
    pub judges: Vec<JudgeSummary>,
    /// Mean bpp reached.
    pub bpp: f64,
    /// Mean PSNR (dB) over the images that have one.
    pub psnr: Option<f64>,
    /// Mean MS-SSIM over the images that have one.
    pub ms_ssim: Option<f64>,
    /// Mean of the per-image MS-SSIM in dB, `-10 log10(1 - MS-SSIM)`.
    pub ms_ssim_db: Option<f64>,
    /// Images above the target bpp.
    pub over_target: usize,
    /// Mean deep-feature distance over the images that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_distance: Option<f64>,
}

impl BenchSummary {
    /// The accuracy under the judge named `judge`.
    pub fn judge(&self, judge: &str) -> Option<&JudgeSummary> {
        self.judges.iter().find(|j| j.judge == judge)
    }
}

/// The result of [`super::run`] or [`merge`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Per image (sorted by name): the uncompressed crop, then each codec at each target.
    pub rows: Vec<BenchRow>,
}

/// Merges the reports of shards (of the same images, codecs, targets and judges) into the
/// report one run over all the images gives: the rows of all, ordered by image name, each
/// image's rows in their order.
///
/// # Errors
/// [`BenchError::Merge`] if two reports have a row of the same image, codec and target (e.g.
/// the same shard twice), or rows judged by different judges.
pub fn merge(reports: impl IntoIterator<Item = BenchReport>) -> Result<BenchReport, BenchError> {
    let mut rows: Vec<BenchRow> = reports.into_iter().flat_map(|r| r.rows).collect();
    let mut seen = HashSet::new();
    let judges = rows.first().map(judges_of).unwrap_or_default();
    for row in &rows {
        if judges_of(row) != judges {
            return Err(BenchError::Merge(format!(
                "{} is judged by [{}], other rows by [{}]",
                row.image,
                judges_of(row).join(", "),
                judges.join(", ")
            )));
        }
        let key = (&row.image, &row.codec, row.target_bpp.map(f64::to_bits));
        if !seen.insert(key) {
            return Err(BenchError::Merge(format!(
                "{} at {} appears twice for {}",
                row.codec,
                target_text(row.target_bpp),
                row.image
            )));
        }
    }
    // Stable: each image's rows keep the order of the run that made them.
    rows.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(BenchReport { rows })
}

fn target_text(target: Option<f64>) -> String {
    target.map_or_else(|| "-".into(), |t| format!("{t} bpp"))
}

/// The names of the judges of a row's verdicts.
fn judges_of(row: &BenchRow) -> Vec<&str> {
    row.verdicts.iter().map(|v| v.judge.as_str()).collect()
}

impl BenchReport {
    /// The judges of the report: those of its first row's verdicts, in their order (every row
    /// of a report made by [`super::run`], [`merge`] or [`Self::from_csv`] has the same).
    pub fn judges(&self) -> Vec<String> {
        self.rows.first().map_or_else(Vec::new, |row| {
            judges_of(row).into_iter().map(str::to_string).collect()
        })
    }

    /// Summaries per codec and target in the order the rows first name them (the uncompressed
    /// crop first, then each codec's targets).
    pub fn summaries(&self) -> Vec<BenchSummary> {
        let mut groups: Vec<(&str, Option<f64>, Vec<&BenchRow>)> = Vec::new();
        for row in &self.rows {
            match groups
                .iter_mut()
                .find(|(codec, target, _)| *codec == row.codec && *target == row.target_bpp)
            {
                Some((_, _, rows)) => rows.push(row),
                None => groups.push((&row.codec, row.target_bpp, vec![row])),
            }
        }
        groups
            .into_iter()
            .map(|(_, _, rows)| summary_of(&rows))
            .collect()
    }

    /// Whether any row has a deep-feature distance (the run measured the perceptual metric).
    pub fn has_deep_distances(&self) -> bool {
        self.rows.iter().any(|r| r.deep_distance.is_some())
    }

    /// The summary of the uncompressed crops, if the report has any.
    pub fn reference(&self) -> Option<BenchSummary> {
        self.summaries()
            .into_iter()
            .find(|s| s.codec == REFERENCE_CODEC)
    }

    /// The target bpps of the report, in order of appearance.
    pub fn targets(&self) -> Vec<f64> {
        let mut targets = Vec::new();
        for target in self.rows.iter().filter_map(|r| r.target_bpp) {
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        targets
    }

    /// `{"rows": [...], "summaries": [...]}`, pretty-printed; infinite values (the PSNR of an
    /// identical crop) become `null`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({ "rows": self.rows, "summaries": self.summaries() });
        // Serialising plain structs into a String cannot fail.
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// The summaries as an aligned text table, one line per codec and target, the uncompressed
    /// crop first; per judge the top-1 and top-5 accuracy and `Δ top-1`, the change in points
    /// against the uncompressed crops under that judge; with a last column, the mean
    /// deep-feature distance, when the rows have one.
    pub fn table(&self) -> String {
        let summaries = self.summaries();
        let judges = self.judges();
        let reference = summaries.iter().find(|s| s.codec == REFERENCE_CODEC);
        let mut header: Vec<String> = ["codec", "target", "images", "bpp"]
            .map(String::from)
            .to_vec();
        for judge in &judges {
            header.extend([
                format!("{judge} top-1 %"),
                format!("{judge} top-5 %"),
                format!("{judge} Δ top-1"),
            ]);
        }
        header.extend(["PSNR dB", "MS-SSIM", "MS-SSIM dB", "over target"].map(String::from));
        let perceptual = self.has_deep_distances();
        if perceptual {
            header.push("deep dist".into());
        }
        let lines: Vec<Vec<String>> = summaries
            .iter()
            .map(|s| {
                let mut line = table_line(s, reference, &judges);
                if perceptual {
                    line.push(
                        s.deep_distance
                            .map_or_else(|| "-".into(), |d| format!("{d:.4}")),
                    );
                }
                line
            })
            .collect();
        // The codec's name aligns left, the numbers right.
        let lines: Vec<Vec<String>> = std::iter::once(header).chain(lines).collect();
        crate::text::aligned(&lines, &[true])
    }

    /// The SVG text of [`Self::plot_svg`] with the trade-off panel at `tradeoff_target` bpp (or
    /// the report's target nearest to it).
    ///
    /// # Errors
    /// [`BenchError::Plot`] if the report has no compressed rows or drawing fails.
    pub fn svg(&self, tradeoff_target: f64) -> Result<String, BenchError> {
        super::plot::svg(self, tradeoff_target)
    }

    /// Draws an SVG file with a row of three panels per judge: top-1 and top-5 accuracy against
    /// mean bpp, one line per codec, with the uncompressed crops' accuracy as a horizontal line;
    /// and MS-SSIM (dB) against top-1 accuracy at 0.25 bpp (or the target nearest to it), one
    /// point per codec — who keeps more for a person and who more for the classifier at one
    /// rate.
    ///
    /// # Errors
    /// [`BenchError::Plot`] if the report has no compressed rows or drawing fails,
    /// [`BenchError::Io`] if the file cannot be written.
    pub fn plot_svg(&self, path: &Path) -> Result<(), BenchError> {
        let svg = self.svg(0.25)?;
        std::fs::write(path, svg).map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// One line of [`BenchReport::table`].
fn table_line(
    s: &BenchSummary,
    reference: Option<&BenchSummary>,
    judges: &[String],
) -> Vec<String> {
    let optional = |v: Option<f64>, decimals: usize| {
        v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
    };
    let mut line = vec![
        s.codec.clone(),
        s.target_bpp.map_or_else(|| "-".into(), |t| t.to_string()),
        s.images.to_string(),
        format!("{:.4}", s.bpp),
    ];
    for judge in judges {
        let accuracy = s.judge(judge);
        let baseline = reference
            .filter(|_| s.codec != REFERENCE_CODEC)
            .and_then(|r| r.judge(judge));
        let delta = match (accuracy, baseline) {
            (Some(a), Some(r)) => format!("{:+.1}", (a.top1 - r.top1) * 100.0),
            _ => "-".into(),
        };
        line.extend([
            optional(accuracy.map(|a| a.top1 * 100.0), 1),
            optional(accuracy.map(|a| a.top5 * 100.0), 1),
            delta,
        ]);
    }
    line.extend([
        optional(s.psnr, 2),
        optional(s.ms_ssim, 4),
        optional(s.ms_ssim_db, 2),
        s.over_target.to_string(),
    ]);
    line
}

/// Summary of a non-empty group of rows of one codec and target.
fn summary_of(rows: &[&BenchRow]) -> BenchSummary {
    let first = rows[0];
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            None
        } else {
            Some(values.iter().sum::<f64>() / values.len() as f64)
        }
    };
    let images = rows.len();
    let judges = judges_of(first)
        .into_iter()
        .map(|judge| {
            let verdicts = || {
                rows.iter()
                    .flat_map(|r| &r.verdicts)
                    .filter(|v| v.judge == judge)
            };
            let top1_correct = verdicts().filter(|v| v.top1_correct).count();
            let top5_correct = verdicts().filter(|v| v.top5_correct).count();
            JudgeSummary {
                judge: judge.to_string(),
                top1: top1_correct as f64 / images as f64,
                top5: top5_correct as f64 / images as f64,
                top1_correct,
                top5_correct,
            }
        })
        .collect();
    BenchSummary {
        codec: first.codec.clone(),
        target_bpp: first.target_bpp,
        images,
        judges,
        bpp: mean(rows.iter().map(|r| r.bpp).collect()).unwrap_or(f64::NAN),
        psnr: mean(rows.iter().filter_map(|r| r.psnr).collect()),
        ms_ssim: mean(rows.iter().filter_map(|r| r.ms_ssim).collect()),
        ms_ssim_db: mean(
            rows.iter()
                .filter_map(|r| r.ms_ssim.map(ocular_models::msssim::ms_ssim_db))
                .collect(),
        ),
        over_target: rows.iter().filter(|r| r.over_target).count(),
        deep_distance: mean(rows.iter().filter_map(|r| r.deep_distance).collect()),
    }
}
