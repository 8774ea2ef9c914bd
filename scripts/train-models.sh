#!/usr/bin/env bash
# Trains the shipped models, in order, on ../shared/data/train (validation on Kodak). Every step is
# resumable: run the script again after an interruption and each run continues from its checkpoint
# in runs/<name>/ (finished models are skipped). Usage: scripts/train-models.sh [NAME...]
# THREADS (default 2) sets the threads of each run: two runs with THREADS=1 side by side share
# the two cores of the build machine.
#
# The first rate point trains from scratch; the others start from a neighbour (--init), which buys
# far more quality per CPU-second than training each from scratch.
set -euo pipefail
# All work happens in main, called on the last line with `exit`: bash reads a script while it runs,
# so editing this file during a long run must not change what that run does.
main() {
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
scripts/setup-libtorch.sh
# OCULAR names a prebuilt binary, so that rebuilding the tree cannot disturb a long run.
ocular=${OCULAR:-}
if [ -z "$ocular" ]; then cargo build --quiet -p ocular-cli --features torch; ocular=target/debug/ocular; fi
data=${DATA:-../shared/data/train}
validation=${VALIDATION:-../shared/data/kodak}

# name | init from | distortion (mse, ms-ssim, observer:ALPHA) | lambda | quality | minutes | crop
plan=(
  "mse-q3|-|mse|0.0067|3|65|128"
  "mse-q2|mse-q3|mse|0.0035|2|20|128"
  "mse-q4|mse-q3|mse|0.0130|4|20|128"
  # MS-SSIM is also the human observer: alpha 0 with w_ms = 1 is exactly this loss.
  "msssim-q2|mse-q2|ms-ssim|4.58|2|25|192"
  "msssim-q1|msssim-q2|ms-ssim|2.40|1|25|192"
  "mse-q1|mse-q2|mse|0.0009|1|25|128"
  "mse-q5|mse-q4|mse|0.0350|5|25|128"
  "msssim-q3|mse-q3|ms-ssim|8.73|3|25|192"
  "machine-q2|mse-q2|observer:1|13|2|15|128"
  "machine-q1|machine-q2|observer:1|7|1|30|128"
  "mixed-q2|msssim-q2|observer:0.5|9|2|35|192"
  # The shipped mixed-q1 then had 22 more minutes at lambda 3 (its 224x224 ImageNet crops were
  # above 0.25 bpp): ocular train --init models/trained/mixed-q1.safetensors --lambda 3
  # --distortion observer --alpha 0.5 --learning-rate 1e-4 --crop-size 192 --minutes 22 ...
  "mixed-q1|mixed-q2|observer:0.5|4.5|1|20|192"
)

wanted=("$@")
for entry in "${plan[@]}"; do
  IFS='|' read -r name init distortion lambda quality minutes crop <<<"$entry"
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then continue; fi
  output=models/trained/$name.safetensors
  if [ -f "$output" ]; then echo "$name: done ($output)"; continue; fi
  extra_args=()
  # Fine-tuning onto a new objective from a human model: a gentler rate keeps it from collapsing.
  if [[ $distortion == observer:* ]]; then extra_args=(--learning-rate 1e-4); fi
  init_args=()
  if [ "$init" != "-" ]; then init_args=(--init "models/trained/$init.safetensors"); fi
  distortion_args=(--distortion "$distortion")
  if [[ $distortion == observer:* ]]; then distortion_args=(--distortion observer --alpha "${distortion#observer:}"); fi
  echo "$name: training (lambda $lambda, $distortion, $minutes min)"
  "$ocular" train --data "$data" --validation "$validation" --output "$output" --run-dir "runs/$name" \
    --name "$name" --quality "$quality" "${distortion_args[@]}" --lambda "$lambda" \
    --steps 100000 --minutes "$minutes" --crop-size "$crop" --validate-every 3000 --threads "${THREADS:-2}" --resume "${init_args[@]}" "${extra_args[@]}"
done
}

main "$@"; exit
