#!/usr/bin/env python3
"""Writes tests/fixtures/msssim.json: MS-SSIM reference values from pytorch-msssim.

tests/msssim.rs rebuilds the same image pairs in Rust from the integer arithmetic below (no
image files) and checks `ocular_models::msssim::ms_ssim` against these values to 1e-4.

The committed fixture was produced with pytorch-msssim 1.0.0 on PyTorch 2.13.0 (+cu130 wheel,
run on the CPU), in float64. To regenerate it (from the repository root; nothing from /tmp is
committed):

    # torch itself: scripts/setup-libtorch.sh installs it into ~/.cache/ocular/libtorch-2.13.0
    python3 -m pip install --target /tmp/pydeps typing_extensions sympy mpmath networkx \
        jinja2 MarkupSafe fsspec filelock numpy pytorch-msssim==1.0.0
    # The PyPI torch wheel is a CUDA build: `import torch` has to load the CUDA libraries even
    # though only the CPU is used (~2.5 GB).
    python3 -m pip install --target /tmp/pydeps-cuda \
        "cuda-toolkit[cublas,cudart,cufft,cufile,curand,cusparse,nvjitlink,nvrtc]==13.0.3" \
        nvidia-cudnn-cu13==9.20.0.48 nvidia-cusparselt-cu13==0.8.1 \
        nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5
    LD_LIBRARY_PATH=$(echo /tmp/pydeps-cuda/nvidia/{cu13,cudnn,cusparselt,nccl,nvshmem}/lib | tr ' ' :) \
    PYTHONPATH=/tmp/pydeps:$HOME/.cache/ocular/libtorch-2.13.0 \
        python3 scripts/msssim_fixture.py

Image generation (mirrored exactly by tests/msssim.rs; all integer arithmetic, u8 pixels,
then float = u8 / 255):

* `Lcg`: state = state * 1664525 + 1013904223 (mod 2^32), `next()` returns the new state;
  `sym(a)` = (next() >> 16) % (2a + 1) - a, a uniform integer in [-a, a].
* original pixel (b, c, y, x), drawn in row-major (b, c, y, x) order from Lcg(seed):
  clamp((2 tri(3x + 2y + 85c) + tri((x^2 + 3y^2) // 97 + 40c) + tri(17x + 13y + 29c)) // 4
        + sym(texture), 0, 255), where tri(t) = t % 512 if that is < 256 else 511 - t % 512.
* the distorted image applies `ops` in order to the whole batch:
  - ["blur", r]: box blur, (2r+1)^2 window, edges replicated, sum // (2r+1)^2;
  - ["shift", dx, dy]: out(y, x) = in(min(y + dy, H - 1), min(x + dx, W - 1));
  - ["noise", a]: out = clamp(in + sym(a), 0, 255), drawn in (b, c, y, x) order from one
    Lcg(seed ^ 0x9E3779B9) shared by all noise ops of the case.
"""

import importlib.metadata
import json
import os
import sys

import torch
from pytorch_msssim import ms_ssim

MASK = 0xFFFFFFFF
NOISE_SEED_XOR = 0x9E3779B9


class Lcg:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state * 1664525 + 1013904223) & MASK
        return self.state

    def sym(self, a):
        return (self.next() >> 16) % (2 * a + 1) - a


def tri(t):
    t %= 512
    return t if t < 256 else 511 - t


def clamp(v):
    return 0 if v < 0 else 255 if v > 255 else v


def original(batch, channels, height, width, seed, texture):
    """Flat list of u8 in (b, c, y, x) order."""
    rng = Lcg(seed)
    out = []
    for _ in range(batch):
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    smooth = (
                        2 * tri(3 * x + 2 * y + 85 * c)
                        + tri((x * x + 3 * y * y) // 97 + 40 * c)
                        + tri(17 * x + 13 * y + 29 * c)
                    ) // 4
                    out.append(clamp(smooth + rng.sym(texture)))
    return out


def planes(batch, channels):
    return batch * channels


def box_blur(img, n_planes, height, width, r):
    out = [0] * len(img)
    k = 2 * r + 1
    for p in range(n_planes):
        base = p * height * width
        # Horizontal sums with replicated edges, then vertical sums of those.
        rows = [0] * (height * width)
        for y in range(height):
            for x in range(width):
                s = 0
                for d in range(-r, r + 1):
                    xx = min(max(x + d, 0), width - 1)
                    s += img[base + y * width + xx]
                rows[y * width + x] = s
        for y in range(height):
            for x in range(width):
                s = 0
                for d in range(-r, r + 1):
                    yy = min(max(y + d, 0), height - 1)
                    s += rows[yy * width + x]
                out[base + y * width + x] = s // (k * k)
    return out


def shift(img, n_planes, height, width, dx, dy):
    out = [0] * len(img)
    for p in range(n_planes):
        base = p * height * width
        for y in range(height):
            for x in range(width):
                out[base + y * width + x] = img[
                    base + min(y + dy, height - 1) * width + min(x + dx, width - 1)
                ]
    return out


def distort(img, case):
    n_planes = planes(case["batch"], case["channels"])
    h, w = case["height"], case["width"]
    rng = Lcg(case["seed"] ^ NOISE_SEED_XOR)
    for op in case["ops"]:
        if op[0] == "blur":
            img = box_blur(img, n_planes, h, w, op[1])
        elif op[0] == "shift":
            img = shift(img, n_planes, h, w, op[1], op[2])
        elif op[0] == "noise":
            img = [clamp(v + rng.sym(op[1])) for v in img]
        else:
            raise ValueError(op)
    return img


CASES = [
    # name, batch, channels, height, width, seed, texture, ops
    ("rgb192_noise2", 1, 3, 192, 192, 1, 6, [["noise", 2]]),
    ("rgb192_noise12", 1, 3, 192, 192, 2, 6, [["noise", 12]]),
    ("rgb192_noise60", 1, 3, 192, 192, 3, 6, [["noise", 60]]),
    ("rgb192_noise160", 1, 3, 192, 192, 4, 6, [["noise", 160]]),
    ("rgb192_noise220", 1, 3, 192, 192, 4, 6, [["noise", 220]]),
    # cs < 0 at the middle scale for every channel: relu makes MS-SSIM exactly 0.
    ("rgb192_shift_noise100_relu", 1, 3, 192, 192, 4, 6, [["shift", 12, 7], ["noise", 100]]),
    ("rgb161x200_blur1", 1, 3, 161, 200, 5, 10, [["blur", 1]]),
    ("gray161x200_blur3_noise8", 1, 1, 161, 200, 6, 10, [["blur", 3], ["noise", 8]]),
    ("gray256x176_shift", 1, 1, 256, 176, 7, 4, [["shift", 3, 1]]),
    ("rgb256x176_shift_blur_noise", 1, 3, 256, 176, 8, 8, [["shift", 1, 2], ["blur", 2], ["noise", 24]]),
    ("rgb_batch2_193x171_blur2_noise4", 2, 3, 193, 171, 9, 12, [["blur", 2], ["noise", 4]]),
    ("gray_batch2_161x161_noise32", 2, 1, 161, 161, 10, 0, [["noise", 32]]),
]


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    version = importlib.metadata.version("pytorch-msssim")
    cases = []
    for name, batch, channels, height, width, seed, texture, ops in CASES:
        case = dict(name=name, batch=batch, channels=channels, height=height, width=width,
                    seed=seed, texture=texture, ops=ops)
        x = original(batch, channels, height, width, seed, texture)
        y = distort(x, case)
        shape = (batch, channels, height, width)
        xt = torch.tensor(x, dtype=torch.uint8).view(shape)
        yt = torch.tensor(y, dtype=torch.uint8).view(shape)
        ref64 = ms_ssim(xt.double() / 255.0, yt.double() / 255.0, data_range=1.0, size_average=False)
        ref32 = ms_ssim(xt.float() / 255.0, yt.float() / 255.0, data_range=1.0, size_average=False)
        case["expected"] = [float(v) for v in ref64]
        case["expected_f32"] = [float(v) for v in ref32]
        # Checksums of the u8 pixels so a mismatch in image generation is told apart from one in
        # MS-SSIM.
        case["sum_original"] = sum(x)
        case["sum_distorted"] = sum(y)
        cases.append(case)
        f32_diff = max(abs(a - b) for a, b in zip(case["expected"], case["expected_f32"]))
        print(f"{name:34s} {case['expected']}  (float32 differs by {f32_diff:.1e})", file=sys.stderr)
    fixture = {
        "generator": "scripts/msssim_fixture.py",
        "reference": f"pytorch_msssim {version} ms_ssim(X, Y, data_range=1.0, size_average=False), "
                     f"torch {torch.__version__}, float64 (expected_f32: the same in float32)",
        "cases": cases,
    }
    path = os.path.join(root, "tests", "fixtures", "msssim.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}", file=sys.stderr)


if __name__ == "__main__":
    main()
