//! Rate–accuracy plots as SVG (plotters' SVG backend: text is left to the viewer's fonts).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{BenchReport, BenchSummary, REFERENCE_CODEC};
use super::BenchError;
use crate::eval::plot::{legend_rows, legend_style, padded, FONT, LEGEND_GAP, OCULAR_COLORS};

const WIDTH: u32 = 1800;
/// Height of one judge's row of panels; the legend strip below them adds [`LEGEND_HEIGHT`] a
/// row of entries.
const HEIGHT: u32 = 500;
const LEGEND_HEIGHT: u32 = 40;
const REFERENCE_COLOR: RGBColor = RGBColor(90, 90, 90);

fn plot_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Plot(error.to_string())
}

/// A codec as the plots show it.
struct Codec {
    name: String,
    label: String,
    color: RGBColor,
}

/// The codecs of `summaries` (without the reference) in order of appearance, with legend text
/// and colour.
fn codecs(summaries: &[BenchSummary]) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = Vec::new();
    let mut ocular_colors = OCULAR_COLORS.iter().cycle();
    for summary in summaries {
        if summary.codec == REFERENCE_CODEC || codecs.iter().any(|c| c.name == summary.codec) {
            continue;
        }
        let (label, color) = legend_style(&summary.codec, &mut ocular_colors);
        codecs.push(Codec {
            name: summary.codec.clone(),
            label,
            color,
        });
    }
    codecs
}

/// What the accuracy panels plot: top-1 or top-5 under one judge.
#[derive(Clone, Copy)]
struct Accuracy<'a> {
    judge: &'a str,
    top5: bool,
}

impl Accuracy<'_> {
    /// The accuracy in percent of a summary, if it has a verdict of the judge.
    fn of(self, summary: &BenchSummary) -> Option<f64> {
        let judge = summary.judge(self.judge)?;
        Some(100.0 * if self.top5 { judge.top5 } else { judge.top1 })
    }

    fn name(self) -> &'static str {
        if self.top5 {
            "top-5"
        } else {
            "top-1"
        }
    }
}

/// Per judge a row of three panels (top-1 and top-5 against bpp; MS-SSIM dB against top-1 at
/// the target nearest `tradeoff_target`), and a legend below them.
pub(super) fn svg(report: &BenchReport, tradeoff_target: f64) -> Result<String, BenchError> {
    let summaries = report.summaries();
    let codecs = codecs(&summaries);
    let targets = report.targets();
    let Some(&target) = targets.iter().min_by(|a, b| {
        (*a - tradeoff_target)
            .abs()
            .total_cmp(&(*b - tradeoff_target).abs())
    }) else {
        return Err(BenchError::Plot("the report has no compressed rows".into()));
    };
    let reference = summaries.iter().find(|s| s.codec == REFERENCE_CODEC);
    let images = summaries.iter().map(|s| s.images).max().unwrap_or(0);
    let images = if images == 1 {
        "1 image".to_string()
    } else {
        format!("{images} images")
    };
    let judges = report.judges();
    let mut svg = String::new();
    {
        let rows = legend_rows(&legend_entries(&codecs, reference.is_some()), |e| {
            entry_width(&e.0)
        })
        .len() as u32;
        let panels_height = HEIGHT * judges.len().max(1) as u32;
        let size = (WIDTH, panels_height + LEGEND_HEIGHT * rows);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (panels, legend_strip) = root.split_vertically(panels_height);
        let rows = panels.split_evenly((judges.len().max(1), 1));
        for (judge, area) in judges.iter().zip(&rows) {
            let columns = area.split_evenly((1, 3));
            for (top5, panel) in [false, true].into_iter().zip(&columns) {
                let accuracy = Accuracy {
                    judge: judge.as_str(),
                    top5,
                };
                let curves = Curves {
                    summaries: &summaries,
                    codecs: &codecs,
                    reference,
                };
                accuracy_panel(panel, &curves, accuracy, &images)?;
            }
            let top1 = Accuracy {
                judge: judge.as_str(),
                top5: false,
            };
            tradeoff_panel(&columns[2], &summaries, &codecs, reference, top1, target)?;
        }
        legend(&legend_strip, &codecs, reference.is_some())?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// What an accuracy panel draws from.
struct Curves<'a> {
    summaries: &'a [BenchSummary],
    codecs: &'a [Codec],
    reference: Option<&'a BenchSummary>,
}

fn accuracy_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    data: &Curves<'_>,
    accuracy: Accuracy<'_>,
    images: &str,
) -> Result<(), BenchError> {
    let curves: Vec<(RGBColor, Vec<(f64, f64)>)> = data
        .codecs
        .iter()
        .map(|codec| {
            let mut points: Vec<(f64, f64)> = data
                .summaries
                .iter()
                .filter(|s| s.codec == codec.name)
                .filter_map(|s| Some((s.bpp, accuracy.of(s)?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (codec.color, points)
        })
        .collect();
    let reference_top1 = data.reference.and_then(|r| accuracy.of(r));
    let xs = curves.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
    let ys = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .chain(reference_top1);
    let (x_low, x_high) = padded(xs);
    let (y_low, y_high) = padded(ys);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} accuracy, judge {}, {images}",
                accuracy.name(),
                accuracy.judge
            ),
            (FONT, 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x_low.max(0.0)..x_high, y_low.max(-3.0)..y_high.min(103.0))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("bits per pixel (224x224 crop)")
        .y_desc(format!("{} accuracy (%)", accuracy.name()))
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 12))
        .draw()
        .map_err(plot_error)?;
    if let Some(y) = reference_top1 {
        let line = DashedLineSeries::new(
            [(x_low.max(0.0), y), (x_high, y)],
            6,
            4,
            REFERENCE_COLOR.stroke_width(2),
        );
        chart.draw_series(line).map_err(plot_error)?;
        let font = (FONT, 13)
            .into_font()
            .color(&REFERENCE_COLOR)
            .pos(Pos::new(HPos::Left, VPos::Bottom));
        let label = EmptyElement::at((x_low.max(0.0), y))
            + Text::new(format!("uncompressed: {y:.1}%"), (6, -4), font);
        chart
            .draw_series(std::iter::once(label))
            .map_err(plot_error)?;
    }
    for (color, points) in &curves {
        let line = LineSeries::new(points.iter().copied(), color.stroke_width(2));
        chart.draw_series(line).map_err(plot_error)?;
        let markers = points.iter().map(|&p| Circle::new(p, 3, color.filled()));
        chart.draw_series(markers).map_err(plot_error)?;
    }
    Ok(())
}

fn tradeoff_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    summaries: &[BenchSummary],
    codecs: &[Codec],
    reference: Option<&BenchSummary>,
    top1: Accuracy<'_>,
    target: f64,
) -> Result<(), BenchError> {
    let title = format!("MS-SSIM vs top-1 ({}) at {target} bpp", top1.judge);
    let points: Vec<(&Codec, (f64, f64))> = codecs
        .iter()
        .filter_map(|codec| {
            let s = summaries
                .iter()
                .find(|s| s.codec == codec.name && s.target_bpp == Some(target))?;
            let point = (top1.of(s)?, s.ms_ssim_db?);
            (point.0.is_finite() && point.1.is_finite()).then_some((codec, point))
        })
        .collect();
    if points.is_empty() {
        let text = format!("{title}: no MS-SSIM values");
        area.draw(&Text::new(text, (40, (HEIGHT / 2) as i32), (FONT, 16)))
            .map_err(plot_error)?;
        return Ok(());
    }
    let reference_top1 = reference.and_then(|r| top1.of(r));
    let (x_low, x_high) = padded(points.iter().map(|p| p.1 .0).chain(reference_top1));
    let (y_low, y_high) = padded(points.iter().map(|p| p.1 .1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x_low.max(-3.0)..x_high.min(103.0), y_low..y_high)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "top-1 accuracy of {} (%)  (better for the classifier ->)",
            top1.judge
        ))
        .y_desc("MS-SSIM (dB)  (better for a person ->)")
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 12))
        .draw()
        .map_err(plot_error)?;
    if let Some(x) = reference_top1 {
        let line = DashedLineSeries::new(
            [(x, y_low), (x, y_high)],
            6,
            4,
            REFERENCE_COLOR.stroke_width(2),
        );
        chart.draw_series(line).map_err(plot_error)?;
    }
    for (codec, point) in &points {
        let color = codec.color;
        chart
            .draw_series(std::iter::once(Circle::new(*point, 6, color.filled())))
            .map_err(plot_error)?;
        // Labels of points in the right third go to their left, to stay inside the panel.
        let on_the_left = point.0 > x_low + (x_high - x_low) * 2.0 / 3.0;
        let (anchor, offset) = if on_the_left {
            (HPos::Right, -10)
        } else {
            (HPos::Left, 10)
        };
        let font = (FONT, 13)
            .into_font()
            .color(&color)
            .pos(Pos::new(anchor, VPos::Center));
        let label = EmptyElement::at(*point) + Text::new(codec.label.clone(), (offset, 0), font);
        chart
            .draw_series(std::iter::once(label))
            .map_err(plot_error)?;
    }
    Ok(())
}

const LEGEND_FONT_SIZE: f64 = 15.0;
const LEGEND_SAMPLE: i32 = 28;

/// A legend entry: label, colour, dashed.
type LegendEntry = (String, RGBColor, bool);

/// One entry per codec, then the dashed reference line.
fn legend_entries(codecs: &[Codec], with_reference: bool) -> Vec<LegendEntry> {
    let mut entries: Vec<LegendEntry> = codecs
        .iter()
        .map(|c| (c.label.clone(), c.color, false))
        .collect();
    if with_reference {
        entries.push(("uncompressed crop".into(), REFERENCE_COLOR, true));
    }
    entries
}

/// Width of an entry. The SVG leaves text to the viewer: 0.6 em a character.
fn entry_width(label: &str) -> i32 {
    LEGEND_SAMPLE + 8 + (label.chars().count() as f64 * LEGEND_FONT_SIZE * 0.6).round() as i32
}

/// A line sample, marker and label per codec (and the dashed reference line), each row centred
/// in `area`.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    codecs: &[Codec],
    with_reference: bool,
) -> Result<(), BenchError> {
    let entries = legend_entries(codecs, with_reference);
    for (row, entries) in legend_rows(&entries, |e| entry_width(&e.0))
        .into_iter()
        .enumerate()
    {
        let y = (LEGEND_HEIGHT * row as u32 + LEGEND_HEIGHT / 2) as i32;
        legend_row(area, entries, y)?;
    }
    Ok(())
}

fn legend_row(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[LegendEntry],
    y: i32,
) -> Result<(), BenchError> {
    const SAMPLE: i32 = LEGEND_SAMPLE;
    let total = entries.iter().map(|e| entry_width(&e.0)).sum::<i32>()
        + LEGEND_GAP * (entries.len().saturating_sub(1) as i32);
    let mut x = ((WIDTH as i32 - total) / 2).max(8);
    for (label, color, dashed) in entries {
        if *dashed {
            for start in (0..SAMPLE).step_by(10) {
                let end = (start + 6).min(SAMPLE);
                let dash =
                    PathElement::new(vec![(x + start, y), (x + end, y)], color.stroke_width(2));
                area.draw(&dash).map_err(plot_error)?;
            }
        } else {
            let line = PathElement::new(vec![(x, y), (x + SAMPLE, y)], color.stroke_width(2));
            area.draw(&line).map_err(plot_error)?;
            let marker = Circle::new((x + SAMPLE / 2, y), 3, color.filled());
            area.draw(&marker).map_err(plot_error)?;
        }
        let font = (FONT, LEGEND_FONT_SIZE)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label.clone(), (x + SAMPLE + 8, y), font))
            .map_err(plot_error)?;
        x += entry_width(label) + LEGEND_GAP;
    }
    Ok(())
}
