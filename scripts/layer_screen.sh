#!/usr/bin/env bash
# The cheap screen of observer objectives (issue 11): no training; the built-in machine family's
# latents are refined against each candidate objective (classifier layers, alpha) under rate
# control at 0.25 bpp, and every crop is judged by Lite0 (the observer) and Lite1 (never used in
# training). The objective that keeps the most top-1 under Lite1 is the one to train with.
#
#   scripts/layer_screen.sh [LIMIT] [STEPS]      default: 100 images of imagenet-dev, 20 steps
#
# Writes runs/layer-screen/<objective>.csv and .txt (the run's table: top-1 under each judge),
# one bench run each, skipped when its CSV exists (so the screen resumes by objective). About
# LIMIT x 2.5 s x STEPS / 20 per objective on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
limit=${1:-100}
steps=${2:-20}
out=runs/layer-screen
mkdir -p "$out"
# OCULAR names a prebuilt binary (e.g. a copy of target/debug/ocular: refinement spends its time
# in libtorch, which is optimised either way), so that rebuilding the tree cannot disturb the screen.
if [ -n "${OCULAR:-}" ]; then
  ocular=("$OCULAR")
else
  ocular=(cargo run --quiet --release -p ocular-cli --features torch --)
fi
objectives=(
  observer-1@stage1,head    # what the machine family was trained with
  observer-1@stage1         # early
  observer-1@stage2,stage4  # middle
  observer-1@head           # the head's features
  observer-1@logits         # the classifier's decision
  observer-0.5@stage1,head  # half pixels (MS-SSIM), half features
)
for objective in "${objectives[@]}"; do
  csv="$out/${objective//[@,]/_}.csv"
  [ -f "$csv" ] && continue
  "${ocular[@]}" bench imagenet --data ../shared/data/imagenet-dev \
    --synsets ../shared/data/imagenet/synsets.txt --bpp 0.25 --codecs ocular:machine \
    --judges lite0,lite1 --limit "$limit" --refine "$steps" --refine-objective "$objective" \
    --threads 1 --quiet --csv "$csv.partial" > "${csv%.csv}.txt"
  mv "$csv.partial" "$csv"
  echo "== $objective"; cat "${csv%.csv}.txt"
done
