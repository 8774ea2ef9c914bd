#!/usr/bin/env python3
"""CompressAI's MeanScaleHyperprior(64, 96) with an ocular model's weights: in-process times.

The baseline of issue 10's speed target: CompressAI's `compress` / `decompress` of the same
networks (ocular's fixed-rate models are this architecture, with the same parameter names), on
one image, with libtorch's threads set as ocular's are. Loading ocular's trained weights keeps
the comparison honest: the range coders see the same latents and code a file of about the same
size as `ocular encode --model <the same model>`.

    python3 scripts/compressai_speed.py models/trained/mse-q3.safetensors kodim23.png \
        [--threads 2] [--runs 5]

Prints the file size, bpp, PSNR of the decoded image, and the median and range of `compress` and
`decompress` over the runs (the first, warm-up call is not counted). Needs `torch`, `compressai`,
`numpy` and `Pillow` (e.g. in a virtual environment: `pip install torch compressai`).
"""
import argparse
import json
import statistics
import struct
import time

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.models import MeanScaleHyperprior
from PIL import Image

DTYPES = {"F16": np.float16, "F32": np.float32}


def read_safetensors(path):
    """The tensors of a safetensors file, as float32 torch tensors, by name."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[meta["dtype"]])
        tensors[name] = torch.from_numpy(array.astype(np.float32).reshape(meta["shape"]))
    return tensors


def load_model(path):
    """MeanScaleHyperprior(64, 96) holding the weights of an ocular model file."""
    model = MeanScaleHyperprior(64, 96)
    # ocular's hyper-networks use ReLU where CompressAI's use LeakyReLU (same cost).
    for hyper in (model.h_a, model.h_s):
        for i, layer in enumerate(hyper):
            if isinstance(layer, torch.nn.LeakyReLU):
                hyper[i] = torch.nn.ReLU()
    # ocular's factorised prior of z has three hidden layers of 3 (CompressAI's default: four).
    model.entropy_bottleneck = EntropyBottleneck(64, filters=(3, 3, 3))
    state = model.state_dict()
    tensors = read_safetensors(path)
    # The layouts are CompressAI's own, GDN's beta and gamma included (both store
    # sqrt(max(value + pedestal, pedestal)) with the pedestal 2^-36); the names too but for the
    # factorised prior's lists (`_matrix0` here, `matrices.0` there).
    for name, value in tensors.items():
        for old, new in (("._matrix", ".matrices."), ("._bias", ".biases."), ("._factor", ".factors.")):
            name = name.replace(old, new)
        if name not in state:
            raise SystemExit(f"{path}: tensor {name} has no place in MeanScaleHyperprior(64, 96)")
        if state[name].shape != value.shape:
            raise SystemExit(f"{name}: shape {tuple(value.shape)} in the file, {tuple(state[name].shape)} expected")
        state[name] = value
    model.load_state_dict(state)
    model.eval()
    model.update(force=True)
    return model


def timed(fn, runs):
    fn()  # warm-up
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    pixels = np.asarray(Image.open(args.image).convert("RGB"), dtype=np.float32) / 255.0
    height, width = pixels.shape[:2]
    if height % 64 or width % 64:
        raise SystemExit(f"{args.image}: {width}x{height} is not a multiple of 64 (pad it first)")
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous()
    with torch.no_grad():
        coded, encode_times = timed(lambda: model.compress(x), args.runs)
        decoded, decode_times = timed(
            lambda: model.decompress(coded["strings"], coded["shape"]), args.runs
        )
    size = sum(len(s[0]) for s in coded["strings"])
    x_hat = decoded["x_hat"].clamp(0, 1)
    mse = torch.mean((torch.round(x_hat * 255) - torch.round(x * 255)) ** 2).item()
    psnr = 10 * np.log10(255**2 / mse)
    print(f"compressai MeanScaleHyperprior(64, 96), {args.threads} threads, {args.runs} runs")
    print(f"size: {size} bytes, {8 * size / (width * height):.4f} bpp, PSNR {psnr:.2f} dB")
    for label, times in (("compress", encode_times), ("decompress", decode_times)):
        ms = [1000 * t for t in times]
        print(f"{label}: median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f})")


if __name__ == "__main__":
    main()
