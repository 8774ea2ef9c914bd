#!/usr/bin/env python3
"""Summarise `ocular bench imagenet` CSVs per codec, overall and on the images every codec
codes within the target (the fair comparison when some codecs cannot reach it on some images).

Several CSVs of the same images (e.g. one run with the baselines, one with refined ocular codecs)
are joined by image; a codec name present in several files keeps the first file's rows, and
a later file's codecs can be renamed with --suffix (e.g. ocular:machine -> ocular:machine+refine).

Usage: scripts/bench_within_target.py --target 0.25 A.csv [B.csv --suffix B=+refine20]
"""
import argparse
import csv
import sys
from collections import defaultdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csvs", nargs="+")
    parser.add_argument("--target", type=float, default=0.25)
    parser.add_argument("--suffix", action="append", default=[],
                        help="FILE=SUFFIX: append SUFFIX to the ocular codec names of FILE")
    parser.add_argument("--codecs", help="comma-separated codecs to report (default: all)")
    args = parser.parse_args()
    suffixes = dict(s.split("=", 1) for s in args.suffix)

    rows = {}  # (codec, image) -> row
    for path in args.csvs:
        suffix = suffixes.get(path, "")
        for row in csv.DictReader(open(path, newline="")):
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

    table(images, "all images")
    table(within, "images every codec codes within the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
