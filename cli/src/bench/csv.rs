//! The CSV of a benchmark report: one record per row, fixed columns then three per judge;
//! written by [`BenchReport::to_csv`] and read back exactly by [`BenchReport::from_csv`], which
//! also reads the CSVs written before judges were named (one judge, `lite0`). A run that measured
//! the deep-feature distance has one more column, [`DEEP_DISTANCE_COLUMN`], after the fixed
//! ones.

use std::path::Path;

use super::report::{BenchReport, BenchRow, Verdict};
use super::BenchError;
use crate::eval::csv_field;

/// The columns every CSV starts with, in the order of [`BenchRow`]'s fields.
const FIXED_COLUMNS: [&str; 11] = [
    "image",
    "wnid",
    "label",
    "codec",
    "target_bpp",
    "bpp",
    "over_target",
    "psnr",
    "ms_ssim",
    "setting",
    "bytes",
];

/// The optional column after [`FIXED_COLUMNS`]: the deep-feature distance of each row.
const DEEP_DISTANCE_COLUMN: &str = "deep_distance";

/// The columns of each judge `J`, after the fixed ones: `top1_correct[J]`, `top5_correct[J]`,
/// `predicted[J]`.
const JUDGE_COLUMNS: [&str; 3] = ["top1_correct", "top5_correct", "predicted"];

/// The header of the CSVs written before judges were named: one judge, EfficientNet-Lite0
/// (the only built-in classifier then, unless `--observer-torchscript` replaced it).
const LEGACY_HEADER: [&str; 14] = [
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

/// The judge a legacy CSV's verdicts are given.
const LEGACY_JUDGE: &str = "lite0";

/// How the records of a CSV are laid out.
enum Layout {
    /// [`FIXED_COLUMNS`], [`DEEP_DISTANCE_COLUMN`] if `true`, then [`JUDGE_COLUMNS`] for each
    /// of these judges.
    Judged(Vec<String>, bool),
    /// [`LEGACY_HEADER`].
    Legacy,
}

impl BenchReport {
    /// The rows as CSV with a header line: [`FIXED_COLUMNS`] (`image,wnid,label,codec,
    /// target_bpp,bpp,over_target,psnr,ms_ssim,setting,bytes`), then for each judge `J` of
    /// [`Self::judges`] `top1_correct[J],top5_correct[J],predicted[J]` (RFC 4180 quoting;
    /// empty fields for `None` and for a verdict a row lacks). [`Self::from_csv`] reads it
    /// back exactly. When rows have a deep-feature distance, a column `deep_distance` follows
    /// the fixed ones.
    pub fn to_csv(&self) -> String {
        let judges = self.judges();
        let perceptual = self.has_deep_distances();
        let mut header: Vec<String> = FIXED_COLUMNS.map(String::from).to_vec();
        if perceptual {
            header.push(DEEP_DISTANCE_COLUMN.into());
        }
        for judge in &judges {
            header.extend(JUDGE_COLUMNS.map(|c| format!("{c}[{judge}]")));
        }
        let mut csv = header.join(",");
        csv.push('\n');
        for row in &self.rows {
            csv.push_str(&record(row, &judges, perceptual).join(","));
            csv.push('\n');
        }
        csv
    }

    /// Reads the CSV of [`Self::to_csv`] (e.g. of one shard, for [`super::merge`]). A CSV
    /// written before judges were named (columns `top1_correct,top5_correct,predicted` after
    /// `over_target`) is read as judged by `lite0`.
    ///
    /// # Errors
    /// [`BenchError::Csv`] for another header, a record with the wrong number of fields, a value
    /// that does not parse (an empty verdict included), or an unterminated quote.
    pub fn from_csv(text: &str) -> Result<Self, BenchError> {
        let mut records = parse_csv(text)?.into_iter();
        let Some((line, header)) = records.next() else {
            return Err(BenchError::Csv {
                line: 0,
                message: "empty file (no header)".into(),
            });
        };
        let layout = layout(line, &header)?;
        let rows = records
            .map(|(line, fields)| parse_row(line, fields, &layout))
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
}

/// The fields of a row under `judges`.
fn record(row: &BenchRow, judges: &[String], perceptual: bool) -> Vec<String> {
    let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut fields = vec![
        csv_field(&row.image),
        csv_field(&row.wnid),
        row.label.to_string(),
        csv_field(&row.codec),
        optional(row.target_bpp),
        row.bpp.to_string(),
        row.over_target.to_string(),
        optional(row.psnr),
        optional(row.ms_ssim),
        csv_field(&row.setting),
        row.bytes.to_string(),
    ];
    if perceptual {
        fields.push(optional(row.deep_distance));
    }
    for judge in judges {
        match row.verdicts.iter().find(|v| &v.judge == judge) {
            Some(v) => fields.extend([
                v.top1_correct.to_string(),
                v.top5_correct.to_string(),
                v.predicted.to_string(),
            ]),
            None => fields.extend([String::new(), String::new(), String::new()]),
        }
    }
    fields
}

/// The layout a header announces.
fn layout(line: usize, header: &[String]) -> Result<Layout, BenchError> {
    if header == LEGACY_HEADER {
        return Ok(Layout::Legacy);
    }
    let expected = || {
        format!(
            "expected {},{}[JUDGE],... (three columns per judge)",
            FIXED_COLUMNS.join(","),
            JUDGE_COLUMNS.join("[JUDGE],")
        )
    };
    let fail = |message: String| BenchError::Csv { line, message };
    let mut fixed = FIXED_COLUMNS.len();
    let perceptual = header.get(fixed).map(String::as_str) == Some(DEEP_DISTANCE_COLUMN);
    let starts_fixed = header.len() >= fixed && header[..fixed] == FIXED_COLUMNS;
    if perceptual {
        fixed += 1;
    }
    // No judge columns: the CSV of a report without rows (e.g. a shard without images).
    let judge_columns = match header.get(fixed..) {
        Some(rest) if starts_fixed && rest.len() % JUDGE_COLUMNS.len() == 0 => rest,
        _ => {
            return Err(fail(format!(
                "the header is {:?}, {}",
                header.join(","),
                expected()
            )))
        }
    };
    let mut judges = Vec::new();
    for columns in judge_columns.chunks(JUDGE_COLUMNS.len()) {
        let judge = judge_of(&columns[0], JUDGE_COLUMNS[0]).unwrap_or_default();
        let consistent = !judge.is_empty()
            && columns
                .iter()
                .zip(JUDGE_COLUMNS)
                .all(|(column, name)| judge_of(column, name) == Some(judge));
        if !consistent || judges.contains(&judge.to_string()) {
            return Err(fail(format!(
                "judge columns {:?}: {}",
                columns.join(","),
                expected()
            )));
        }
        judges.push(judge.to_string());
    }
    Ok(Layout::Judged(judges, perceptual))
}

/// `J` of a column `name[J]`.
fn judge_of<'a>(column: &'a str, name: &str) -> Option<&'a str> {
    column
        .strip_prefix(name)?
        .strip_prefix('[')?
        .strip_suffix(']')
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

fn parse_row(line: usize, fields: Vec<String>, layout: &Layout) -> Result<BenchRow, BenchError> {
    let expected = match layout {
        Layout::Legacy => LEGACY_HEADER.len(),
        Layout::Judged(judges, perceptual) => {
            FIXED_COLUMNS.len() + usize::from(*perceptual) + JUDGE_COLUMNS.len() * judges.len()
        }
    };
    if fields.len() != expected {
        return Err(BenchError::Csv {
            line,
            message: format!("{} fields, expected {expected}", fields.len()),
        });
    }
    let mut fields = fields.into_iter();
    let mut next = || fields.next().unwrap_or_default();
    let (image, wnid, label, codec, target_bpp, bpp, over_target) =
        (next(), next(), next(), next(), next(), next(), next());
    let legacy_verdict = match layout {
        Layout::Legacy => Some([next(), next(), next()]),
        Layout::Judged(..) => None,
    };
    let (psnr, ms_ssim, setting, bytes) = (next(), next(), next(), next());
    let deep_distance = match layout {
        Layout::Judged(_, true) => optional("deep_distance", &next(), line)?,
        _ => None,
    };
    let verdicts = match layout {
        Layout::Judged(judges, _) => judges
            .iter()
            .map(|judge| verdict(line, judge, [next(), next(), next()]))
            .collect::<Result<Vec<_>, _>>()?,
        Layout::Legacy => legacy_verdict
            .into_iter()
            .map(|fields| verdict(line, LEGACY_JUDGE, fields))
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(BenchRow {
        label: value("label", &label, line)?,
        target_bpp: optional("target_bpp", &target_bpp, line)?,
        bpp: value("bpp", &bpp, line)?,
        over_target: value("over_target", &over_target, line)?,
        verdicts,
        psnr: optional("psnr", &psnr, line)?,
        ms_ssim: optional("ms_ssim", &ms_ssim, line)?,
        bytes: value("bytes", &bytes, line)?,
        deep_distance,
        image,
        wnid,
        codec,
        setting,
    })
}

/// A verdict from its three fields (`top1_correct`, `top5_correct`, `predicted`).
fn verdict(
    line: usize,
    judge: &str,
    [top1, top5, predicted]: [String; 3],
) -> Result<Verdict, BenchError> {
    let column = |name: &str| format!("{name}[{judge}]");
    Ok(Verdict {
        judge: judge.to_string(),
        top1_correct: value(&column("top1_correct"), &top1, line)?,
        top5_correct: value(&column("top5_correct"), &top5, line)?,
        predicted: value(&column("predicted"), &predicted, line)?,
    })
}

fn value<T: std::str::FromStr>(column: &str, text: &str, line: usize) -> Result<T, BenchError> {
    text.parse().map_err(|_| BenchError::Csv {
        line,
        message: format!("{column} '{text}' does not parse"),
    })
}

fn optional(column: &str, text: &str, line: usize) -> Result<Option<f64>, BenchError> {
    if text.is_empty() {
        Ok(None)
    } else {
        value(column, text, line).map(Some)
    }
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
