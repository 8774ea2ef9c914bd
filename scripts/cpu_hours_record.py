#!/usr/bin/env python3
"""Quality per CPU-hour of a campaign run: Kodak PSNR (or MS-SSIM in dB) at fixed rates against
cumulative CPU-hours.

Reads a run's validation.csv (written by `ocular train --variable-rate ... --validation-qualities`:
one row per validated quality and step, with the run's cumulative CPU seconds), interpolates
PSNR at each target bpp between the two validated qualities that bracket it (linearly in
log(bpp), the usual way rate-distortion curves are read), and writes a CSV and an SVG plot.

    scripts/cpu_hours_record.py models/checkpoints/mse-vr/validation.csv \
        --bpp 0.25,0.5 --csv docs/results/mse-vr-cpu-hours.csv --svg docs/results/mse-vr-cpu-hours.svg
    scripts/cpu_hours_record.py models/checkpoints/msssim-vr/validation.csv --metric ms-ssim-db ...

Standard library only (the training machine has no numpy / matplotlib).
"""
import argparse
import csv
import math
import sys
from collections import defaultdict


def read_points(path, metric):
    """{(step, cpu_hours): [(bpp, value, ms_ssim), ...]} sorted by bpp; value is PSNR, or
    MS-SSIM in dB (-10 log10(1 - MS-SSIM)) for the metric `ms-ssim-db`."""
    points = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (int(row["step"]), float(row["cpu_seconds"]) / 3600.0)
            ms_ssim = float(row["ms_ssim"])
            value = float(row["psnr"]) if metric == "psnr" else -10 * math.log10(1 - ms_ssim)
            points[key].append((float(row["bpp"]), value, ms_ssim))
    return {k: sorted(v) for k, v in sorted(points.items())}


def at_rate(curve, target):
    """PSNR at `target` bpp, interpolated in log(bpp); None outside the validated span."""
    for (b0, p0, _), (b1, p1, _) in zip(curve, curve[1:]):
        if b0 <= target <= b1 and b1 > b0:
            t = (math.log(target) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return p0 + t * (p1 - p0)
    return None


def svg_plot(rows, targets, title, label):
    width, height, margin = 640, 400, 60
    xs = [r[1] for r in rows]
    ys = [v for r in rows for v in r[2:] if v is not None]
    if not xs or not ys:
        return None
    x0, x1 = 0.0, max(xs) * 1.05 or 1.0
    y0, y1 = math.floor(min(ys) - 0.5), math.ceil(max(ys) + 0.5)
    sx = lambda x: margin + (x - x0) / (x1 - x0) * (width - 2 * margin)
    sy = lambda y: height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
           f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
           f'<text x="{width / 2}" y="{height - 20}" text-anchor="middle">cumulative CPU-hours of the run</text>',
           f'<text x="18" y="{height / 2}" text-anchor="middle" transform="rotate(-90 18 {height / 2})">Kodak {label} (dB)</text>']
    for i in range(6):
        x = x0 + i * (x1 - x0) / 5
        out.append(f'<text x="{sx(x):.1f}" y="{height - margin + 16}" text-anchor="middle">{x:.2f}</text>')
    for y in range(int(y0), int(y1) + 1):
        out.append(f'<text x="{margin - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{y}</text>')
        out.append(f'<line x1="{margin}" y1="{sy(y):.1f}" x2="{width - margin}" y2="{sy(y):.1f}" stroke="#eee"/>')
    for k, target in enumerate(targets):
        pts = [(sx(r[1]), sy(r[2 + k])) for r in rows if r[2 + k] is not None]
        colour = colours[k % len(colours)]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{width - margin - 110}" y="{margin + 16 * k}" fill="{colour}">{label} @ {target} bpp</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("validation", help="a run's validation.csv")
    parser.add_argument("--bpp", default="0.25,0.5", help="target rates, comma separated")
    parser.add_argument("--csv", help="write the record here")
    parser.add_argument("--svg", help="write the plot here")
    parser.add_argument("--title", default="Quality per CPU-hour")
    parser.add_argument("--metric", choices=["psnr", "ms-ssim-db"], default="psnr")
    args = parser.parse_args()
    targets = [float(t) for t in args.bpp.split(",")]
    rows = [(step, hours, *[at_rate(curve, t) for t in targets])
            for (step, hours), curve in read_points(args.validation, args.metric).items()]
    column = args.metric.replace("-", "_")
    header = ["step", "cpu_hours"] + [f"{column}_at_{t}_bpp" for t in targets]
    writer = csv.writer(open(args.csv, "w", newline="") if args.csv else sys.stdout)
    writer.writerow(header)
    for step, hours, *values in rows:
        writer.writerow([step, f"{hours:.3f}"] + ["" if v is None else f"{v:.3f}" for v in values])
    if args.svg:
        label = "PSNR" if args.metric == "psnr" else "MS-SSIM"
        plot = svg_plot(rows, targets, args.title, label)
        if plot is None:
            sys.exit("no validation rows bracket the targets yet")
        open(args.svg, "w").write(plot)


if __name__ == "__main__":
    main()
