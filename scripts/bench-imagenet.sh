#!/usr/bin/env bash
# Runs `ocular bench imagenet` in SHARDS processes side by side (one libtorch thread each) and
# merges their CSVs into one report: OUT.csv, OUT.json, OUT.svg.
#
# Usage: scripts/bench-imagenet.sh OUT [extra `ocular bench imagenet` options...]
#   SHARDS   processes (default: the number of cores)
#   DATA     ImageNet-style folder (default ../shared/data/imagenet-dev)
#   OCULAR   a prebuilt ocular binary (default: build target/debug/ocular)
# Example: scripts/bench-imagenet.sh docs/results/imagenet-dev --bpp 0.1,0.25,0.5 \
#            --codecs ocular:human,ocular:0.5,ocular:machine,jpeg,webp
set -euo pipefail
main() {
  cd "$(dirname "$0")/.."
  export OMP_WAIT_POLICY=PASSIVE
  if [ $# -lt 1 ]; then
    echo "usage: $0 OUT [ocular bench imagenet options...]" >&2
    exit 2
  fi
  local out=$1
  shift
  local shards=${SHARDS:-$(nproc)}
  local data=${DATA:-../shared/data/imagenet-dev}
  local ocular=${OCULAR:-}
  if [ -z "$ocular" ]; then cargo build --quiet -p ocular-cli --features torch; ocular=target/debug/ocular; fi
  # Global, not local: the EXIT trap runs after main has returned.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  local pids=() csvs=()
  for ((k = 0; k < shards; k++)); do
    csvs+=("$work/shard$k.csv")
    # Only shard 0 shows progress; the others would draw over it.
    local quiet=()
    if [ "$k" -gt 0 ]; then quiet=(--quiet); fi
    "$ocular" bench imagenet --data "$data" --shard "$k/$shards" --threads 1 "${quiet[@]}" \
      --csv "$work/shard$k.csv" "$@" >"$work/shard$k.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for k in "${!pids[@]}"; do
    if ! wait "${pids[$k]}"; then
      echo "shard $k/$shards failed:" >&2
      cat "$work/shard$k.log" >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ]
  mkdir -p "$(dirname "$out")"
  "$ocular" bench merge "${csvs[@]}" --csv "$out.csv" --json "$out.json" --plot "$out.svg"
}

main "$@"; exit
