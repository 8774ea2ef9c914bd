//! Rate–distortion plots as SVG (plotters' SVG backend: text is left to the viewer's fonts).

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::EvalMean;
use super::{EvalError, PublishedCurve};

const WIDTH: u32 = 1280;
/// Height of the two panels; the legend strip below them adds [`LEGEND_HEIGHT`].
const HEIGHT: u32 = 500;
const LEGEND_HEIGHT: u32 = 40;
pub(crate) const FONT: &str = "sans-serif";

/// Colours of the ocular families, in order of appearance (tab10 without red and green, then
/// tab20b's darker shades for long lists).
pub(crate) const OCULAR_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(57, 59, 121),
    RGBColor(140, 109, 49),
    RGBColor(132, 60, 57),
    RGBColor(99, 121, 57),
];
pub(crate) const JPEG_COLOR: RGBColor = RGBColor(214, 39, 40);
pub(crate) const WEBP_COLOR: RGBColor = RGBColor(44, 160, 44);
/// Colours of published reference curves (drawn dashed).
const PUBLISHED_COLORS: [RGBColor; 3] = [
    RGBColor(60, 60, 60),
    RGBColor(150, 150, 150),
    RGBColor(188, 189, 34),
];

/// Legend label and colour of a codec: fixed for the baselines, the next of `ocular_colors` for
/// ocular models.
pub(crate) fn legend_style<'a>(
    codec: &str,
    ocular_colors: &mut impl Iterator<Item = &'a RGBColor>,
) -> (String, RGBColor) {
    match codec {
        "jpeg" => ("JPEG (4:2:0)".to_string(), JPEG_COLOR),
        "webp" => ("WebP (lossy)".to_string(), WEBP_COLOR),
        other => (other.to_string(), *ocular_colors.next().unwrap_or(&BLACK)),
    }
}

fn plot_error(error: impl std::fmt::Display) -> EvalError {
    EvalError::Plot(error.to_string())
}

/// A codec family as the legend shows it.
struct Family<'a> {
    name: &'a str,
    label: String,
    color: RGBColor,
    dashed: bool,
}

/// One curve: its colour, style and (x, value) points in drawing order (by bpp in the rate
/// plots, by realism setting in the trade-off).
struct Curve {
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// The SVG text of the two panels (PSNR and MS-SSIM dB against bpp) for `means`, with one
/// legend for both below them (outside the charts, so it never hides a point).
pub(super) fn svg(means: &[EvalMean], published: &[PublishedCurve]) -> Result<String, EvalError> {
    if means.is_empty() {
        return Err(EvalError::Plot("the report has no rows".into()));
    }
    let mut families = families(means);
    families.extend(
        published
            .iter()
            .zip(PUBLISHED_COLORS.iter().cycle())
            .map(|(p, &color)| Family {
                name: p.label,
                label: p.label.to_string(),
                color,
                dashed: true,
            }),
    );
    let reference = |select: fn(&PublishedCurve) -> &'static [(f64, f64)]| {
        published
            .iter()
            .zip(PUBLISHED_COLORS.iter().cycle())
            .map(move |(p, &color)| Curve {
                color,
                dashed: true,
                points: select(p).to_vec(),
            })
    };
    let images = images_text(means);
    let mut psnr = curves(means, &families, |m| Some(m.psnr));
    psnr.extend(reference(|p| p.psnr));
    let mut ms_ssim = curves(means, &families, |m| m.ms_ssim_db);
    ms_ssim.extend(reference(|p| p.ms_ssim_db));
    two_panels(
        &families,
        Panel {
            curves: psnr,
            title: format!("PSNR (RGB), mean of {images}"),
            x_label: BPP,
            y_label: "PSNR (dB)",
            empty: "no values",
        },
        Panel {
            curves: ms_ssim,
            title: format!("MS-SSIM, mean of {images}"),
            x_label: BPP,
            y_label: "MS-SSIM (dB)",
            empty: "no values (MS-SSIM needs both sides >= 161 px)",
        },
    )
}

/// The SVG text of the perceptual panels for `means`: the mean deep-feature distance and KID
/// (x 1000) against bpp, measured with EfficientNet-Lite1 (`ocular::perceptual`).
pub(super) fn perceptual_svg(means: &[EvalMean]) -> Result<String, EvalError> {
    if means.is_empty() {
        return Err(EvalError::Plot("the report has no rows".into()));
    }
    let families = families(means);
    let images = images_text(means);
    two_panels(
        &families,
        Panel {
            curves: curves(means, &families, |m| m.deep_distance),
            title: format!("Deep-feature distance (Lite1, uncalibrated), mean of {images}"),
            x_label: BPP,
            y_label: "distance (lower is closer)",
            empty: "no values",
        },
        Panel {
            curves: curves(means, &families, |m| m.kid.map(|k| k.mean * 1e3)),
            title: format!("KID (Lite1, 256 px patches), {images}"),
            x_label: BPP,
            y_label: "KID x 1000 (lower is more realistic)",
            empty: "no values (KID needs images of at least 256x256)",
        },
    )
}

/// The SVG text of the perception–distortion trade-off (Blau & Michaeli 2018) for `means`: KID
/// (x 1000) and the deep-feature distance against PSNR. Each ocular rate point that was decoded
/// with realism settings above 0 is one line through its settings in increasing order (its
/// legend entry names the rate point); JPEG and WebP, matched to those rate points, are one line
/// each across them.
pub(super) fn tradeoff_svg(means: &[EvalMean]) -> Result<String, EvalError> {
    let mut points: Vec<String> = Vec::new();
    for mean in means.iter().filter(|m| m.realism > 0.0) {
        let point = mean.rate_point();
        if !points.contains(&point) {
            points.push(point);
        }
    }
    if points.is_empty() {
        return Err(EvalError::Plot("the report has no realism settings".into()));
    }
    // One series per rate point: its own means (any realism) in increasing realism.
    let mut series: Vec<(String, Vec<&EvalMean>)> = points
        .iter()
        .map(|point| {
            let mut members: Vec<&EvalMean> = means
                .iter()
                .filter(|m| m.codec.starts_with("ocular:") && m.rate_point() == *point)
                .collect();
            members.sort_by(|a, b| a.realism.total_cmp(&b.realism));
            (format!("{point}, realism 0 to 1"), members)
        })
        .collect();
    for baseline in ["jpeg", "webp"] {
        let mut members: Vec<&EvalMean> = means
            .iter()
            .filter(|m| m.codec == baseline && points.contains(&m.target))
            .collect();
        members.sort_by(|a, b| a.psnr.total_cmp(&b.psnr));
        if !members.is_empty() {
            series.push((baseline.to_string(), members));
        }
    }
    let mut ocular_colors = OCULAR_COLORS.iter().cycle();
    let families: Vec<Family<'_>> = series
        .iter()
        .map(|(name, _)| {
            let (label, color) = legend_style(name, &mut ocular_colors);
            Family {
                name,
                label,
                color,
                dashed: false,
            }
        })
        .collect();
    let curves = |value: fn(&EvalMean) -> Option<f64>| -> Vec<Curve> {
        series
            .iter()
            .zip(&families)
            .map(|((_, members), family)| Curve {
                color: family.color,
                dashed: false,
                points: members
                    .iter()
                    .filter_map(|m| value(m).map(|v| (m.psnr, v)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect(),
            })
            .filter(|curve| !curve.points.is_empty())
            .collect()
    };
    let images = images_text(means);
    two_panels(
        &families,
        Panel {
            curves: curves(|m| m.kid.map(|k| k.mean * 1e3)),
            title: format!("Perception against distortion: KID, {images}"),
            x_label: "PSNR (dB; right is less distortion)",
            y_label: "KID x 1000 (lower is more realistic)",
            empty: "no values (KID needs images of at least 256x256)",
        },
        Panel {
            curves: curves(|m| m.deep_distance),
            title: format!("Deep-feature distance against PSNR, mean of {images}"),
            x_label: "PSNR (dB; right is less distortion)",
            y_label: "distance (lower is closer)",
            empty: "no values",
        },
    )
}

fn images_text(means: &[EvalMean]) -> String {
    match means.iter().map(|m| m.images).max().unwrap_or(0) {
        1 => "1 image".to_string(),
        n => format!("{n} images"),
    }
}

/// The x axis of the rate plots.
const BPP: &str = "bits per pixel";

/// One panel of a plot: its curves, title, axis labels and what it says without values.
struct Panel {
    curves: Vec<Curve>,
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    empty: &'static str,
}

/// Two panels side by side with one legend for both below them.
fn two_panels(families: &[Family<'_>], left: Panel, right: Panel) -> Result<String, EvalError> {
    let mut svg = String::new();
    {
        let rows = legend_rows(families, entry_width).len() as u32;
        let size = (WIDTH, HEIGHT + LEGEND_HEIGHT * rows);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (panels, legend_strip) = root.split_vertically(HEIGHT);
        let (left_area, right_area) = panels.split_horizontally(WIDTH / 2);
        panel(&left_area, &left)?;
        panel(&right_area, &right)?;
        legend(&legend_strip, families)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The families of `means` in order of appearance, with legend text and colour (the same in
/// both panels, whichever points each panel has).
fn families(means: &[EvalMean]) -> Vec<Family<'_>> {
    let mut families: Vec<Family<'_>> = Vec::new();
    let mut ocular_colors = OCULAR_COLORS.iter().cycle();
    for mean in means {
        if families.iter().any(|f| f.name == mean.family) {
            continue;
        }
        let (label, color) = legend_style(&mean.family, &mut ocular_colors);
        families.push(Family {
            name: &mean.family,
            label,
            color,
            dashed: false,
        });
    }
    families
}

/// One curve per family that has finite values.
fn curves(
    means: &[EvalMean],
    families: &[Family<'_>],
    value: fn(&EvalMean) -> Option<f64>,
) -> Vec<Curve> {
    let mut curves = Vec::new();
    for family in families {
        let mut points: Vec<(f64, f64)> = means
            .iter()
            .filter(|m| m.family == family.name)
            .filter_map(|m| value(m).map(|y| (m.bpp, y)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !points.is_empty() {
            curves.push(Curve {
                color: family.color,
                dashed: family.dashed,
                points,
            });
        }
    }
    curves
}

/// `low..high` padded by 6% of the span on each side (or a little around a single value).
pub(crate) fn padded(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let low = values.clone().fold(f64::INFINITY, f64::min);
    let high = values.fold(f64::NEG_INFINITY, f64::max);
    let span = high - low;
    let pad = if span > 1e-9 {
        0.06 * span
    } else {
        0.1 * low.abs().max(1.0)
    };
    (low - pad, high + pad)
}

fn panel(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel) -> Result<(), EvalError> {
    let (curves, title) = (&panel.curves, panel.title.as_str());
    if curves.is_empty() {
        let text = format!("{title}: {}", panel.empty);
        area.draw(&Text::new(text, (40, (HEIGHT / 2) as i32), (FONT, 16)))
            .map_err(plot_error)?;
        return Ok(());
    }
    let points = || curves.iter().flat_map(|c| c.points.iter());
    let (x_low, x_high) = padded(points().map(|p| p.0));
    let (y_low, y_high) = padded(points().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x_low.max(0.0)..x_high, y_low..y_high)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label)
        .y_desc(panel.y_label)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 12))
        .draw()
        .map_err(plot_error)?;
    for curve in curves {
        let color = curve.color;
        let points = curve.points.iter().copied();
        if curve.dashed {
            let line = DashedLineSeries::new(points, 8, 5, color.stroke_width(2));
            chart.draw_series(line).map_err(plot_error)?;
        } else {
            let line = LineSeries::new(points, color.stroke_width(2));
            chart.draw_series(line).map_err(plot_error)?;
        }
        let markers = curve
            .points
            .iter()
            .map(|&p| Circle::new(p, 3, color.filled()));
        chart.draw_series(markers).map_err(plot_error)?;
    }
    Ok(())
}

const LEGEND_FONT_SIZE: f64 = 15.0;
const LEGEND_SAMPLE: i32 = 28;
pub(crate) const LEGEND_GAP: i32 = 36;

/// Width of a legend entry. The SVG leaves text to the viewer: 0.6 em a character.
fn entry_width(family: &Family<'_>) -> i32 {
    let text = (family.label.chars().count() as f64 * LEGEND_FONT_SIZE * 0.6).round() as i32;
    LEGEND_SAMPLE + 8 + text
}

/// Splits legend `entries` into rows no wider than the plot (`width` of each, `LEGEND_GAP`
/// between them; an entry wider than the plot gets a row of its own).
pub(crate) fn legend_rows<T>(entries: &[T], width: impl Fn(&T) -> i32) -> Vec<&[T]> {
    let max_width = WIDTH as i32 - 16;
    let mut rows = Vec::new();
    let (mut start, mut row_width) = (0, 0);
    for (i, entry) in entries.iter().enumerate() {
        let added = width(entry) + if i > start { LEGEND_GAP } else { 0 };
        if i > start && row_width + added > max_width {
            rows.push(&entries[start..i]);
            (start, row_width) = (i, width(entry));
        } else {
            row_width += added;
        }
    }
    rows.push(&entries[start..]);
    rows
}

/// A line sample, marker and label per family, each row centred in `area`.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    families: &[Family<'_>],
) -> Result<(), EvalError> {
    for (row, entries) in legend_rows(families, entry_width).into_iter().enumerate() {
        legend_row(
            area,
            entries,
            (LEGEND_HEIGHT * row as u32 + LEGEND_HEIGHT / 2) as i32,
        )?;
    }
    Ok(())
}

fn legend_row(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    families: &[Family<'_>],
    y: i32,
) -> Result<(), EvalError> {
    const FONT_SIZE: f64 = LEGEND_FONT_SIZE;
    const SAMPLE: i32 = LEGEND_SAMPLE;
    const GAP: i32 = LEGEND_GAP;
    let total = families.iter().map(entry_width).sum::<i32>()
        + GAP * (families.len().saturating_sub(1) as i32);
    let mut x = ((WIDTH as i32 - total) / 2).max(8);
    for family in families {
        let sample = vec![(x, y), (x + SAMPLE, y)];
        let style = family.color.stroke_width(2);
        if family.dashed {
            area.draw(&DashedPathElement::new(sample, 8, 5, style))
                .map_err(plot_error)?;
        } else {
            area.draw(&PathElement::new(sample, style))
                .map_err(plot_error)?;
        }
        let marker = Circle::new((x + SAMPLE / 2, y), 3, family.color.filled());
        area.draw(&marker).map_err(plot_error)?;
        let font = (FONT, FONT_SIZE)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let label = Text::new(family.label.clone(), (x + SAMPLE + 8, y), font);
        area.draw(&label).map_err(plot_error)?;
        x += entry_width(family) + GAP;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocular::perceptual::Kid;

    fn mean(codec: &str, target: &str, realism: f32, psnr: f64, kid: f64) -> EvalMean {
        EvalMean {
            codec: codec.to_string(),
            family: codec.to_string(),
            target: target.to_string(),
            setting: String::new(),
            images: 24,
            bpp: 0.3,
            psnr,
            ms_ssim: None,
            ms_ssim_db: None,
            ms_ssim_images: 0,
            encode_seconds: 0.0,
            decode_seconds: 0.0,
            over_target: 0,
            deep_distance: Some(kid * 10.0),
            kid: Some(Kid {
                mean: kid,
                std: kid / 10.0,
                subset_size: 100,
                subsets: 10,
            }),
            realism,
        }
    }

    /// One line per rate point through its realism settings, the baselines matched to it, and
    /// nothing to draw without realism settings.
    #[test]
    fn the_tradeoff_has_a_line_per_rate_point_and_the_baselines() {
        let means = [
            mean("ocular:m@0.3bpp", "m@0.3bpp", 0.0, 30.0, 0.03),
            mean("ocular:m@0.3bpp@R0.5", "m@0.3bpp@R0.5", 0.5, 29.5, 0.02),
            mean("ocular:m@0.3bpp@R1", "m@0.3bpp@R1", 1.0, 29.0, 0.01),
            mean("jpeg", "m@0.3bpp", 0.0, 27.0, 0.08),
        ];
        assert_eq!(means[1].rate_point(), "m@0.3bpp");
        let svg = tradeoff_svg(&means).expect("svg");
        assert!(svg.contains("m@0.3bpp, realism 0 to 1"));
        assert!(svg.contains("JPEG (4:2:0)"));
        assert!(svg.contains("PSNR (dB; right is less distortion)"));
        assert!(tradeoff_svg(&[means[0].clone(), means[3].clone()]).is_err());
    }
}
