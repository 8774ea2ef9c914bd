#!/usr/bin/env python3
"""Does encoder-side refinement help the classifier only at the exact view it optimised for?

Refinement (`ocular encode --refine N`) tunes the latent of an observer model against the
classifier's view of the decoded 224x224 crop. A gain that only holds for that exact view would
be adversarial rather than content. This script codes the first N crops of an ImageNet-style
folder with one model, with and without refinement, and classifies each decoded crop (and the
uncompressed crop) as `ocular classify` sees it (center crop 224/256, bicubic resize back to 224:
a shifted, rescaled view, not the one refined for) and mirrored left-right as well.

With `--views K` it also codes each crop refined over K changes of view (`--refine-views K`,
expectation over transformation), a fourth variant.

Usage: scripts/refine_transfer.py [--limit 40] [--model machine-q1] [--refine 20] [--views 4]
Needs Pillow and a built `ocular` (OCULAR=path, default target/debug/ocular).
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageOps


def crop_224(path: Path) -> Image.Image:
    """The benchmark's crop: short side resized to 256 (bicubic), center 224x224."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    return image.crop((left, top, left + 224, top + 224))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/imagenet-dev")
    parser.add_argument("--synsets", default="../shared/data/imagenet/synsets.txt")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--model", default="machine-q1")
    parser.add_argument("--refine", type=int, default=20)
    parser.add_argument("--views", type=int, default=0,
                        help="also refine over this many views (--refine-views); 0: not")
    args = parser.parse_args()
    ocular = os.environ.get("OCULAR", "target/debug/ocular")
    # One libtorch thread: the benchmark's setting, and polite next to other jobs.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    wnids = [line.split("\t")[0] for line in Path(args.synsets).read_text().splitlines()]
    images = sorted(Path(args.data).glob("*/*"))[: args.limit]

    def run(*command: str) -> str:
        return subprocess.run(
            [ocular, *command], check=True, capture_output=True, text=True, env=env
        ).stdout

    work = Path(tempfile.mkdtemp())
    # variant -> the encoder's refinement arguments
    coded_variants = {"plain": ["--refine", "0"], "refined": ["--refine", str(args.refine)]}
    if args.views > 0:
        coded_variants["refined+views"] = ["--refine", str(args.refine),
                                           "--refine-views", str(args.views)]
    variants = ["uncompressed", *coded_variants]
    views = {}  # path -> (variant, mirrored, label)
    bits = {variant: 0 for variant in coded_variants}
    for i, path in enumerate(images):
        label = wnids.index(path.parent.name)
        crop = work / f"{i}-uncompressed.png"
        crop_224(path).save(crop)
        for variant, refinement in coded_variants.items():
            coded = work / f"{i}-{variant}.ocu"
            run("encode", str(crop), "-o", str(coded), "--model", args.model, *refinement)
            bits[variant] += coded.stat().st_size * 8
            run("decode", str(coded), "-o", str(work / f"{i}-{variant}.png"))
        for variant in variants:
            decoded = work / f"{i}-{variant}.png"
            mirrored = work / f"{i}-{variant}-mirrored.png"
            ImageOps.mirror(Image.open(decoded)).save(mirrored)
            views[str(decoded)] = (variant, False, label)
            views[str(mirrored)] = (variant, True, label)
        print(f"\r{i + 1}/{len(images)} coded", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    correct = {}
    current = None
    for line in run("classify", "--top", "1", *views).splitlines():
        if line.endswith(":") and line[:-1] in views:
            current = views[line[:-1]]
        elif current is not None and line.strip().startswith("1."):
            predicted = int(line.split()[2])
            key = current[:2]
            correct[key] = correct.get(key, 0) + (predicted == current[2])
            current = None
    n = len(images)
    pixels = n * 224 * 224
    print(f"{n} crops, model {args.model}, refine {args.refine} steps, views {args.views}; "
          "top-1 % as `ocular classify` "
          "sees them (center 224/256 crop, resized), and mirrored")
    print(f"{'variant':<14} {'bpp':>7} {'top-1':>7} {'mirrored':>9}")
    for variant in variants:
        bpp = f"{bits[variant] / pixels:.4f}" if variant in bits else "24"
        print(f"{variant:<14} {bpp:>7} {100 * correct.get((variant, False), 0) / n:>6.1f}% "
              f"{100 * correct.get((variant, True), 0) / n:>8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
