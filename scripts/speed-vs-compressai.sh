#!/usr/bin/env bash
# Issue 10's speed figures in one go: ocular's pure-Rust encode / decode (criterion, release)
# against CompressAI's MeanScaleHyperprior(64, 96) with the same weights, on kodim23, ROUNDS
# times alternated; then whole-process `ocular decode` of a file of the default model, 10 times.
#
#   PYTHON=venv/bin/python scripts/speed-vs-compressai.sh [ROUNDS]
#
# PYTHON must have torch and compressai (`python3 -m venv cai && cai/bin/pip install torch
# compressai numpy pillow`). Training runs of the campaign are paused (SIGSTOP) while it measures
# and resumed after, so the figures are not shared with them.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
rounds=${1:-2}
kodim23=../shared/data/kodak/kodim23.png
export OMP_WAIT_POLICY=PASSIVE
cargo build --release --quiet -p ocular-cli
cargo bench --quiet -p ocular --bench codec --no-run
pkill -STOP -f "train .*--run-dir models/checkpoints/" || true
trap 'pkill -CONT -f "train .*--run-dir models/checkpoints/" || true' EXIT
for round in $(seq "$rounds"); do
  echo "== round $round"
  OCULAR_BENCH_MODEL=mse-q3 cargo bench --quiet -p ocular --bench codec 2>&1 |
    grep -E "time:|bytes|^codec/"
  "$python" scripts/compressai_speed.py models/trained/mse-q3.safetensors "$kodim23" \
    --runs 10 --threads 2 2>&1 | tail -4
done
echo "== whole-process decode (default model)"
dir=$(mktemp -d)
target/release/ocular encode "$kodim23" --output "$dir/k23.ocu" > /dev/null
for _ in $(seq 10); do
  /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB peak RSS" \
    target/release/ocular decode "$dir/k23.ocu" --output "$dir/k23.png" 2>&1 > /dev/null | tail -1
done
rm -rf "$dir"
