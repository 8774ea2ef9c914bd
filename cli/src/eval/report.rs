//! Results of an evaluation: per-image rows, means per rate point, CSV, JSON and a text table.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{EvalError, EvalKid};
use ocular::perceptual::Kid;

/// One codec at one setting on one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// `ocular:<label>` for ocular models, `jpeg` or `webp` for baselines.
    pub codec: String,
    /// The curve this row belongs to in plots: `ocular (mse)`, `jpeg`, ...
    pub family: String,
    /// The model label for ocular, the quality (1..=100) for baselines.
    pub setting: String,
    /// The label of the ocular model whose bpp a baseline was matched to (for ocular rows: its
    /// own label). Rows with the same `codec` and `target` form one rate point.
    pub target: String,
    /// The image (file name, or path where file names repeat).
    pub image: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Size of the whole compressed file.
    pub bytes: usize,
    /// `bytes * 8 / (width * height)`.
    pub bpp: f64,
    /// PSNR in dB over RGB (peak 255).
    pub psnr: f64,
    /// MS-SSIM in 0..1; `None` if a side of the image is below 161 pixels.
    pub ms_ssim: Option<f64>,
    /// MS-SSIM in dB, `-10 log10(1 - MS-SSIM)`.
    pub ms_ssim_db: Option<f64>,
    /// Time to encode (for baselines: the one encode at the chosen quality).
    pub encode_seconds: f64,
    /// Time to decode.
    pub decode_seconds: f64,
    /// For baselines: even quality 1 made a larger file than the target (quality 1 is
    /// reported). Always `false` for ocular rows.
    pub over_target: bool,
    /// The deep-feature distance to the source (EfficientNet-Lite1, uncalibrated; see
    /// [`ocular::perceptual`]), when the evaluation measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_distance: Option<f64>,
    /// The realism knob the ocular file was decoded with (0: the plain decoder; always 0 for
    /// baselines).
    #[serde(default)]
    pub realism: f32,
}

/// Means over the images of one codec at one rate point (one `codec` and `target`).
///
/// Every mean is the plain mean of the per-image values (MS-SSIM dB too), over the images that
/// have them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMean {
    /// As [`EvalRow::codec`].
    pub codec: String,
    /// As [`EvalRow::family`].
    pub family: String,
    /// As [`EvalRow::target`].
    pub target: String,
    /// The model label for ocular; for baselines the range of qualities chosen, e.g. `23-41`.
    pub setting: String,
    /// Number of images.
    pub images: usize,
    /// Mean bpp.
    pub bpp: f64,
    /// Mean PSNR (dB).
    pub psnr: f64,
    /// Mean MS-SSIM over the images that have one; `None` if none has.
    pub ms_ssim: Option<f64>,
    /// Mean of the per-image MS-SSIM dB values.
    pub ms_ssim_db: Option<f64>,
    /// Number of images with an MS-SSIM.
    pub ms_ssim_images: usize,
    /// Mean encode time.
    pub encode_seconds: f64,
    /// Mean decode time.
    pub decode_seconds: f64,
    /// Number of images where the baseline exceeded the target bpp even at quality 1.
    pub over_target: usize,
    /// Mean deep-feature distance over the images that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_distance: Option<f64>,
    /// KID of this codec and rate point ([`EvalReport::kid`]), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<Kid>,
    /// As [`EvalRow::realism`].
    #[serde(default)]
    pub realism: f32,
}

impl EvalMean {
    /// The rate point this mean belongs to whatever its realism setting: its `target` without
    /// the `@R<r>` that [`super::EvalModel::with_realism`] put in the label.
    pub fn rate_point(&self) -> String {
        match self.realism > 0.0 {
            true => self.target.replacen(&format!("@R{}", self.realism), "", 1),
            false => self.target.clone(),
        }
    }
}

/// The result of [`super::evaluate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// One row per image and ocular model, and per image, ocular model and baseline.
    pub rows: Vec<EvalRow>,
    /// KID per codec and rate point, when the evaluation measured the perceptual metrics (a
    /// figure of the set of images, not of one image, so not in the rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<Vec<EvalKid>>,
}

/// The CSV columns, in the order of [`EvalRow`]'s fields.
const CSV_HEADER: &str =
    "codec,family,setting,target,image,width,height,bytes,bpp,psnr,ms_ssim,ms_ssim_db,\
                          encode_seconds,decode_seconds,over_target";

impl EvalReport {
    /// Means per codec and rate point, in the order the rows first name them (for each ocular
    /// model: ocular, then its baselines).
    pub fn means(&self) -> Vec<EvalMean> {
        let mut groups: Vec<(&str, &str, Vec<&EvalRow>)> = Vec::new();
        for row in &self.rows {
            match groups
                .iter_mut()
                .find(|(codec, target, _)| *codec == row.codec && *target == row.target)
            {
                Some((_, _, rows)) => rows.push(row),
                None => groups.push((&row.codec, &row.target, vec![row])),
            }
        }
        groups
            .into_iter()
            .map(|(_, _, rows)| {
                let mut mean = mean_of(&rows);
                mean.kid = self.kid_of(&mean.codec, &mean.target);
                mean
            })
            .collect()
    }

    /// KID of `codec` at the rate point `target`, if measured.
    pub fn kid_of(&self, codec: &str, target: &str) -> Option<Kid> {
        self.kid
            .iter()
            .flatten()
            .find(|k| k.codec == codec && k.target == target)
            .map(|k| k.kid)
    }

    /// Whether the report holds perceptual metrics (deep-feature distances or KID).
    pub fn has_perceptual(&self) -> bool {
        self.kid.is_some() || self.rows.iter().any(|r| r.deep_distance.is_some())
    }

    /// The rows as CSV with a header line (RFC 4180 quoting; empty fields for missing MS-SSIM),
    /// with a last column `deep_distance` when the report has perceptual metrics.
    pub fn to_csv(&self) -> String {
        let perceptual = self.has_perceptual();
        let mut csv = String::from(CSV_HEADER);
        if perceptual {
            csv.push_str(",deep_distance");
        }
        csv.push('\n');
        let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.rows {
            let fields = [
                csv_field(&r.codec),
                csv_field(&r.family),
                csv_field(&r.setting),
                csv_field(&r.target),
                csv_field(&r.image),
                r.width.to_string(),
                r.height.to_string(),
                r.bytes.to_string(),
                r.bpp.to_string(),
                r.psnr.to_string(),
                optional(r.ms_ssim),
                optional(r.ms_ssim_db),
                r.encode_seconds.to_string(),
                r.decode_seconds.to_string(),
                r.over_target.to_string(),
            ];
            csv.push_str(&fields.join(","));
            if perceptual {
                csv.push(',');
                csv.push_str(&optional(r.deep_distance));
            }
            csv.push('\n');
        }
        csv
    }

    /// `{"rows": [...], "means": [...]}` (and `"kid": [...]` when measured), pretty-printed;
    /// infinite values (e.g. PSNR of an identical image) become `null`.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::json!({ "rows": self.rows, "means": self.means() });
        if let (Some(kid), Some(object)) = (&self.kid, value.as_object_mut()) {
            object.insert("kid".into(), serde_json::json!(kid));
        }
        // Serialising plain structs into a String cannot fail.
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// The means as an aligned text table, one line per codec and rate point, with a note where
    /// a baseline could not get down to the target bpp or MS-SSIM covers only some images
    /// (those with both sides of at least 161 pixels). When the report has perceptual metrics,
    /// two more columns: the mean deep-feature distance and KID (mean ± standard deviation over
    /// the subsets, both x 1000).
    pub fn table(&self) -> String {
        let means = self.means();
        let perceptual = self.has_perceptual();
        let mut header = vec![
            "codec",
            "target",
            "setting",
            "images",
            "bpp",
            "PSNR dB",
            "MS-SSIM",
            "MS-SSIM dB",
            "enc ms",
            "dec ms",
        ];
        if perceptual {
            header.extend(["deep dist", "KID x1e3"]);
        }
        header.push("note");
        let optional = |v: Option<f64>, decimals: usize| {
            v.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
        };
        let lines: Vec<Vec<String>> = means
            .iter()
            .map(|m| {
                let mut line = vec![
                    m.codec.clone(),
                    m.target.clone(),
                    m.setting.clone(),
                    m.images.to_string(),
                    format!("{:.4}", m.bpp),
                    format!("{:.2}", m.psnr),
                    optional(m.ms_ssim, 4),
                    optional(m.ms_ssim_db, 2),
                    format!("{:.1}", m.encode_seconds * 1e3),
                    format!("{:.1}", m.decode_seconds * 1e3),
                ];
                if perceptual {
                    line.push(optional(m.deep_distance, 4));
                    line.push(m.kid.map_or_else(
                        || "n/a".into(),
                        |k| format!("{:.2} ± {:.2}", k.mean * 1e3, k.std * 1e3),
                    ));
                }
                line.push(note(m));
                line
            })
            .collect();
        // Text columns align left, numbers right; the note is last.
        let left: Vec<bool> = (0..header.len())
            .map(|i| i < 3 || i + 1 == header.len())
            .collect();
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let lines: Vec<Vec<String>> = std::iter::once(header).chain(lines).collect();
        crate::text::aligned(&lines, &left)
    }

    /// Draws the mean rate–distortion curves into an SVG file: PSNR (RGB) against bpp and
    /// MS-SSIM (dB) against bpp side by side, one line per codec family, with a legend. Needs no
    /// fonts (the SVG names a sans-serif family; the viewer draws the text).
    ///
    /// # Errors
    /// [`EvalError::Plot`] if the report has no rows or drawing fails, [`EvalError::Io`] if the
    /// file cannot be written.
    pub fn plot_svg(&self, path: &Path) -> Result<(), EvalError> {
        self.plot_svg_with(path, &[])
    }

    /// Draws the perceptual metrics into an SVG file: the mean deep-feature distance and KID
    /// (x 1000) against bpp side by side, one line per codec family.
    ///
    /// # Errors
    /// [`EvalError::Plot`] if the report has no perceptual metrics or drawing fails,
    /// [`EvalError::Io`] if the file cannot be written.
    pub fn plot_perceptual_svg(&self, path: &Path) -> Result<(), EvalError> {
        if !self.has_perceptual() {
            return Err(EvalError::Plot(
                "the report has no perceptual metrics".into(),
            ));
        }
        let svg = super::plot::perceptual_svg(&self.means())?;
        write_text(path, &svg)
    }

    /// Whether some ocular rows were decoded with the realism knob above 0.
    pub fn has_realism(&self) -> bool {
        self.rows.iter().any(|r| r.realism > 0.0)
    }

    /// Draws the perception–distortion trade-off into an SVG file: KID (x 1000) and the mean
    /// deep-feature distance against PSNR, one line per ocular rate point through its realism
    /// settings, and JPEG and WebP at the bpp they were matched to.
    ///
    /// # Errors
    /// [`EvalError::Plot`] if the report has no realism settings or no perceptual metrics, or
    /// drawing fails; [`EvalError::Io`] if the file cannot be written.
    pub fn plot_tradeoff_svg(&self, path: &Path) -> Result<(), EvalError> {
        if !(self.has_realism() && self.has_perceptual()) {
            return Err(EvalError::Plot(
                "the trade-off needs realism settings and perceptual metrics".into(),
            ));
        }
        let svg = super::plot::tradeoff_svg(&self.means())?;
        write_text(path, &svg)
    }

    /// [`Self::plot_svg`] with `published` results drawn as dashed reference curves (e.g.
    /// [`super::PUBLISHED_KODAK`] for a Kodak evaluation).
    ///
    /// # Errors
    /// As [`Self::plot_svg`].
    pub fn plot_svg_with(
        &self,
        path: &Path,
        published: &[super::PublishedCurve],
    ) -> Result<(), EvalError> {
        let svg = super::plot::svg(&self.means(), published)?;
        write_text(path, &svg)
    }
}

/// What a mean hides: baselines above the target, MS-SSIM over only some images.
fn note(mean: &EvalMean) -> String {
    let mut notes = Vec::new();
    if mean.over_target > 0 {
        notes.push(format!(
            "{} image(s) above target at quality 1",
            mean.over_target
        ));
    }
    if (1..mean.images).contains(&mean.ms_ssim_images) {
        notes.push(format!(
            "MS-SSIM of {} of {} images",
            mean.ms_ssim_images, mean.images
        ));
    }
    notes.join("; ")
}

/// `text` as one CSV field: quoted (RFC 4180) if it holds a comma, quote or line break.
pub(crate) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Means of a non-empty group of rows of one codec and target.
/// Writes `text` to `path`, an [`EvalError::Io`] naming the path if it cannot.
fn write_text(path: &Path, text: &str) -> Result<(), EvalError> {
    std::fs::write(path, text).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn mean_of(rows: &[&EvalRow]) -> EvalMean {
    let first = rows[0];
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            None
        } else {
            Some(values.iter().sum::<f64>() / values.len() as f64)
        }
    };
    let all =
        |f: fn(&EvalRow) -> f64| mean(rows.iter().map(|&r| f(r)).collect()).unwrap_or(f64::NAN);
    let some = |f: fn(&EvalRow) -> Option<f64>| mean(rows.iter().filter_map(|&r| f(r)).collect());
    let setting = match rows
        .iter()
        .map(|r| r.setting.parse::<u8>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(qualities) => {
            let (low, high) = (qualities.iter().min(), qualities.iter().max());
            match (low, high) {
                (Some(low), Some(high)) if low != high => format!("{low}-{high}"),
                (Some(low), _) => low.to_string(),
                _ => String::new(),
            }
        }
        Err(_) => first.setting.clone(),
    };
    EvalMean {
        codec: first.codec.clone(),
        family: first.family.clone(),
        target: first.target.clone(),
        setting,
        images: rows.len(),
        bpp: all(|r| r.bpp),
        psnr: all(|r| r.psnr),
        ms_ssim: some(|r| r.ms_ssim),
        ms_ssim_db: some(|r| r.ms_ssim_db),
        ms_ssim_images: rows.iter().filter(|r| r.ms_ssim.is_some()).count(),
        encode_seconds: all(|r| r.encode_seconds),
        decode_seconds: all(|r| r.decode_seconds),
        over_target: rows.iter().filter(|r| r.over_target).count(),
        deep_distance: some(|r| r.deep_distance),
        kid: None,
        realism: first.realism,
    }
}
