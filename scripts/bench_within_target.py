#!/usr/bin/env python3
"""Summarise `ocular bench imagenet` CSVs per codec, overall and on the images every codec
codes within the target (the fair comparison when some codecs cannot reach it on some images).

Several CSVs of the same images (e.g. one run with the baselines, one with refined ocular codecs)
are joined by image; a codec name present in several files keeps the first file's rows, and
a later file's codecs can be renamed with --suffix (e.g. ocular:machine -> ocular:machine+refine).

Accuracy is that of one judge (--judge, e.g. lite1; default: the first judge of the first file);
CSVs written before judges were named have one, lite0.

Usage: scripts/bench_within_target.py --target 0.25 [--judge lite1] A.csv [B.csv --suffix B=+refine20]
"""
import argparse
import csv
import sys
from collections import defaultdict


def judges_of(columns):
    """The judges of a CSV's columns `top1_correct[J]`; `lite0` for a CSV from before judges."""
    if "top1_correct" in columns:
        return ["lite0"]
    return [c[len("top1_correct["):-1] for c in columns
            if c.startswith("top1_correct[") and c.endswith("]")]


def verdict_columns(row, judge):
    """The row with `top1_correct` and `top5_correct` of `judge`."""
    if "top1_correct" not in row:
        row["top1_correct"] = row[f"top1_correct[{judge}]"]
        row["top5_correct"] = row[f"top5_correct[{judge}]"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csvs", nargs="+")
    parser.add_argument("--target", type=float, default=0.25)
    parser.add_argument("--suffix", action="append", default=[],
                        help="FILE=SUFFIX: append SUFFIX to the ocular codec names of FILE")
    parser.add_argument("--codecs", help="comma-separated codecs to report (default: all)")
    parser.add_argument("--judge", help="the judge whose accuracy is reported (default: the first)")
    args = parser.parse_args()
    suffixes = dict(s.split("=", 1) for s in args.suffix)

    rows = {}  # (codec, image) -> row
    for path in args.csvs:
        suffix = suffixes.get(path, "")
        reader = csv.DictReader(open(path, newline=""))
        judges = judges_of(reader.fieldnames or [])
        if args.judge is None:
            args.judge = judges[0]
        if args.judge not in judges:
            sys.exit(f"{path}: no judge {args.judge} (judges: {', '.join(judges)})")
        for row in reader:
            row = verdict_columns(row, args.judge)
            codec = row["codec"]
            if row["target_bpp"] and float(row["target_bpp"]) != args.target:
                continue
            if codec.startswith("ocular:"):
                codec += suffix
            rows.setdefault((codec, row["image"]), row)
    codecs = list(dict.fromkeys(codec for codec, _ in rows))
    if args.codecs:
        codecs = [c for c in args.codecs.split(",") if c in codecs]
    images = sorted({image for codec, image in rows if codec == codecs[0]})
    images = [i for i in images if all((c, i) in rows for c in codecs)]
    within = [i for i in images
              if all(rows[(c, i)]["over_target"] != "true" for c in codecs)]

    def table(selected, title):
        print(f"{title}: {len(selected)} images, target {args.target} bpp")
        print(f"{'codec':<32} {'bpp':>7} {'top-1 %':>8} {'top-5 %':>8} {'PSNR':>6} {'MS-SSIM':>8}")
        for codec in codecs:
            chosen = [rows[(codec, i)] for i in selected]
            n = len(chosen) or 1
            mean = lambda key: sum(float(r[key] or "nan") for r in chosen) / n  # noqa: E731
            top1 = 100 * sum(r["top1_correct"] == "true" for r in chosen) / n
            top5 = 100 * sum(r["top5_correct"] == "true" for r in chosen) / n
            quality = (f"{mean('psnr'):6.2f} {mean('ms_ssim'):8.4f}"
                       if codec != "uncompressed" else f"{'-':>6} {'-':>8}")
            print(f"{codec:<32} {mean('bpp'):7.4f} {top1:8.1f} {top5:8.1f} {quality}")
        print()

    print(f"judge: {args.judge}")
    table(images, "all images")
    table(within, "images every codec codes within the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
