//! Results of a benchmark: per-image rows, summaries per codec and target, CSV (written and read
//! back), JSON, a text table, and the merging of shards.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BenchError;
use crate::eval::csv_field;

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
    /// The classifier's top-1 class is the label.
    pub top1_correct: bool,
    /// The label is among the classifier's 5 most probable classes.
    pub top5_correct: bool,
    /// The classifier's top-1 class index.
    pub predicted: usize,
    /// PSNR (RGB, dB) of the decoded crop against the uncompressed crop; `None` for the latter.
    pub psnr: Option<f64>,
    /// MS-SSIM of the decoded crop against the uncompressed crop; `None` for the latter.
    pub ms_ssim: Option<f64>,
    /// The quality for JPEG / WebP, the model name for ocular, empty for the uncompressed crop.
    pub setting: String,
    /// Size of the whole file (for the uncompressed crop: its 8-bit RGB pixels).
    pub bytes: usize,
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
    /// Top-1 accuracy, 0..1.
    pub top1: f64,
    /// Top-5 accuracy, 0..1.
    pub top5: f64,
    /// Images classified right (top-1).
    pub top1_correct: usize,
    /// Images whose class is in the top 5.
    pub top5_correct: usize,
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
}

/// The result of [`super::run`] or [`merge`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Per image (sorted by name): the uncompressed crop, then each codec at each target.
    pub rows: Vec<BenchRow>,
}

/// The CSV columns, in the order of [`BenchRow`]'s fields.
const CSV_HEADER: [&str; 14] = [
    "image",
    "wnid",
    "label",
    "codec",
    "target_bpp",
    "bpp",
    "over_target",
    "top1_correct",
    "top5_correct",
    "predicted",
    "psnr",
    "ms_ssim",
    "setting",
    "bytes",
];

/// Merges the reports of shards (of the same images, codecs and targets) into the report one
/// run over all the images gives: the rows of all, ordered by image name, each image's rows in
/// their order.
///
/// # Errors
/// [`BenchError::Merge`] if two reports have a row of the same image, codec and target (e.g.
/// the same shard twice).
pub fn merge(reports: impl IntoIterator<Item = BenchReport>) -> Result<BenchReport, BenchError> {
    let mut rows: Vec<BenchRow> = reports.into_iter().flat_map(|r| r.rows).collect();
    let mut seen = HashSet::new();
    for row in &rows {
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

impl BenchReport {
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

    /// The rows as CSV with a header line (columns as [`BenchRow`]'s fields; RFC 4180 quoting;
    /// empty fields for `None`). [`Self::from_csv`] reads it back exactly.
    pub fn to_csv(&self) -> String {
        let mut csv = CSV_HEADER.join(",");
        csv.push('\n');
        let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.rows {
            let fields = [
                csv_field(&r.image),
                csv_field(&r.wnid),
                r.label.to_string(),
                csv_field(&r.codec),
                optional(r.target_bpp),
                r.bpp.to_string(),
                r.over_target.to_string(),
                r.top1_correct.to_string(),
                r.top5_correct.to_string(),
                r.predicted.to_string(),
                optional(r.psnr),
                optional(r.ms_ssim),
                csv_field(&r.setting),
                r.bytes.to_string(),
            ];
            csv.push_str(&fields.join(","));
            csv.push('\n');
        }
        csv
    }

    /// Reads the CSV of [`Self::to_csv`] (e.g. of one shard, for [`merge`]).
    ///
    /// # Errors
    /// [`BenchError::Csv`] for another header, a record with the wrong number of fields, a value
    /// that does not parse, or an unterminated quote.
    pub fn from_csv(text: &str) -> Result<Self, BenchError> {
        let records = parse_csv(text)?;
        let mut records = records.into_iter();
        match records.next() {
            Some((_, header)) if header == CSV_HEADER => {}
            Some((line, header)) => {
                return Err(BenchError::Csv {
                    line,
                    message: format!(
                        "the header is {:?}, expected {}",
                        header.join(","),
                        CSV_HEADER.join(",")
                    ),
                })
            }
            None => {
                return Err(BenchError::Csv {
                    line: 0,
                    message: "empty file (no header)".into(),
                })
            }
        }
        let rows = records
            .map(|(line, fields)| parse_row(line, fields))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BenchReport { rows })
    }

    /// Reads a CSV file written from [`Self::to_csv`].
    ///
    /// # Errors
    /// [`BenchError::Io`] if it cannot be read, otherwise as [`Self::from_csv`].
    pub fn read_csv(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_csv(&text)
    }

    /// `{"rows": [...], "summaries": [...]}`, pretty-printed; infinite values (the PSNR of an
    /// identical crop) become `null`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({ "rows": self.rows, "summaries": self.summaries() });
        // Serialising plain structs into a String cannot fail.
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// The summaries as an aligned text table, one line per codec and target, the uncompressed
    /// crop first; `Δ top-1` is the change in points against the uncompressed crops.
    pub fn table(&self) -> String {
        let summaries = self.summaries();
        let reference = summaries
            .iter()
            .find(|s| s.codec == REFERENCE_CODEC)
            .map(|s| s.top1);
        let header = [
            "codec",
            "target",
            "images",
            "bpp",
            "top-1 %",
            "top-5 %",
            "Δ top-1",
            "PSNR dB",
            "MS-SSIM",
            "MS-SSIM dB",
            "over target",
        ];
        let optional = |v: Option<f64>, decimals: usize| {
            v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
        };
        let lines: Vec<[String; 11]> = summaries
            .iter()
            .map(|s| {
                let delta = match (s.codec == REFERENCE_CODEC, reference) {
                    (false, Some(reference)) => format!("{:+.1}", (s.top1 - reference) * 100.0),
                    _ => "-".into(),
                };
                [
                    s.codec.clone(),
                    s.target_bpp.map_or_else(|| "-".into(), |t| t.to_string()),
                    s.images.to_string(),
                    format!("{:.4}", s.bpp),
                    format!("{:.1}", s.top1 * 100.0),
                    format!("{:.1}", s.top5 * 100.0),
                    delta,
                    optional(s.psnr, 2),
                    optional(s.ms_ssim, 4),
                    optional(s.ms_ssim_db, 2),
                    s.over_target.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut table = String::new();
        let header_line = header.map(str::to_string);
        for line in std::iter::once(&header_line).chain(&lines) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                // The codec aligns left, numbers right.
                let width = widths[i];
                if i == 0 {
                    let _ = write!(text, "{cell:<width$}");
                } else {
                    let _ = write!(text, "{cell:>width$}");
                }
            }
            table.push_str(text.trim_end());
            table.push('\n');
        }
        table
    }

    /// The SVG text of [`Self::plot_svg`] with the trade-off panel at `tradeoff_target` bpp (or
    /// the report's target nearest to it).
    ///
    /// # Errors
    /// [`BenchError::Plot`] if the report has no compressed rows or drawing fails.
    pub fn svg(&self, tradeoff_target: f64) -> Result<String, BenchError> {
        super::plot::svg(self, tradeoff_target)
    }

    /// Draws an SVG file with two panels: top-1 accuracy against mean bpp, one line per codec,
    /// with the uncompressed crops' accuracy as a horizontal line; and MS-SSIM (dB) against
    /// top-1 accuracy at 0.25 bpp (or the target nearest to it), one point per codec — who keeps
    /// more for a person and who more for the classifier at one rate.
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
    let count = |f: fn(&BenchRow) -> bool| rows.iter().filter(|&&r| f(r)).count();
    let images = rows.len();
    let top1_correct = count(|r| r.top1_correct);
    let top5_correct = count(|r| r.top5_correct);
    BenchSummary {
        codec: first.codec.clone(),
        target_bpp: first.target_bpp,
        images,
        top1: top1_correct as f64 / images as f64,
        top5: top5_correct as f64 / images as f64,
        top1_correct,
        top5_correct,
        bpp: mean(rows.iter().map(|r| r.bpp).collect()).unwrap_or(f64::NAN),
        psnr: mean(rows.iter().filter_map(|r| r.psnr).collect()),
        ms_ssim: mean(rows.iter().filter_map(|r| r.ms_ssim).collect()),
        ms_ssim_db: mean(
            rows.iter()
                .filter_map(|r| r.ms_ssim.map(ocular_models::msssim::ms_ssim_db))
                .collect(),
        ),
        over_target: count(|r| r.over_target),
    }
}

/// Splits CSV text into records of fields (RFC 4180: quoted fields may hold commas, doubled
/// quotes and line breaks; `\r\n` or `\n` ends a record; empty lines are skipped), each with
/// the 1-based line it starts on.
fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, BenchError> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut quoted = false; // the current field was quoted
    let (mut line, mut record_line) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => {
                return Err(BenchError::Csv {
                    line,
                    message: "a quote inside an unquoted field".into(),
                })
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !(fields.is_empty() && field.is_empty() && !quoted) {
                    fields.push(std::mem::take(&mut field));
                    records.push((record_line, std::mem::take(&mut fields)));
                }
                quoted = false;
                line += 1;
                record_line = line;
            }
            _ if quoted => {
                return Err(BenchError::Csv {
                    line,
                    message: "text after a closing quote".into(),
                })
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(BenchError::Csv {
            line: record_line,
            message: "unterminated quote".into(),
        });
    }
    if !(fields.is_empty() && field.is_empty() && !quoted) {
        fields.push(field);
        records.push((record_line, fields));
    }
    Ok(records)
}

fn parse_row(line: usize, fields: Vec<String>) -> Result<BenchRow, BenchError> {
    let fail = |message: String| BenchError::Csv { line, message };
    let fields: [String; 14] = fields.try_into().map_err(|fields: Vec<String>| {
        fail(format!(
            "{} fields, expected {}",
            fields.len(),
            CSV_HEADER.len()
        ))
    })?;
    let [image, wnid, label, codec, target_bpp, bpp, over_target, top1_correct, top5_correct, predicted, psnr, ms_ssim, setting, bytes] =
        fields;
    fn value<T: std::str::FromStr>(column: &str, text: &str, line: usize) -> Result<T, BenchError> {
        text.parse().map_err(|_| BenchError::Csv {
            line,
            message: format!("{column} '{text}' does not parse"),
        })
    }
    let optional = |column: &str, text: &str| -> Result<Option<f64>, BenchError> {
        if text.is_empty() {
            Ok(None)
        } else {
            value(column, text, line).map(Some)
        }
    };
    Ok(BenchRow {
        label: value("label", &label, line)?,
        target_bpp: optional("target_bpp", &target_bpp)?,
        bpp: value("bpp", &bpp, line)?,
        over_target: value("over_target", &over_target, line)?,
        top1_correct: value("top1_correct", &top1_correct, line)?,
        top5_correct: value("top5_correct", &top5_correct, line)?,
        predicted: value("predicted", &predicted, line)?,
        psnr: optional("psnr", &psnr)?,
        ms_ssim: optional("ms_ssim", &ms_ssim)?,
        bytes: value("bytes", &bytes, line)?,
        image,
        wnid,
        codec,
        setting,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_records_with_quotes_and_line_breaks() {
        let text = "a,b\r\n\"x, \"\"y\"\"\nz\",\n\n,\"\"\n";
        let records = parse_csv(text).expect("valid CSV");
        let fields: Vec<Vec<&str>> = records
            .iter()
            .map(|(_, f)| f.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            fields,
            [vec!["a", "b"], vec!["x, \"y\"\nz", ""], vec!["", ""]]
        );
        let lines: Vec<usize> = records.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 2, 5]);
        assert!(parse_csv("\"open").is_err());
        assert!(parse_csv("a\"b").is_err());
        assert!(parse_csv("\"a\"b").is_err());
    }
}
