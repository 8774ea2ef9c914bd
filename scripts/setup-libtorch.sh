#!/usr/bin/env bash
# Installs libtorch for tch once per machine, from PyPI, into a cache outside the clone,
# and links it into the clone as .libtorch (which .cargo/config.toml points the build at).
#
# Why PyPI: there is no CPU-only torch wheel there, but libtorch_cpu.so needs only the two small
# CUDA runtime libraries to load (CUDA itself is never used). See ../shared/DESIGN.md.
set -euo pipefail

TORCH_VERSION=2.13.0
CUDA_RUNTIME_VERSION=13.0.96
CUPTI_VERSION=13.0.85

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${OCULAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocular}
dir="$cache/libtorch-$TORCH_VERSION"
stamp="$dir/.complete"

if [ ! -f "$stamp" ]; then
  echo "ocular setup: installing libtorch $TORCH_VERSION from PyPI into $dir (once per machine, ~530 MB)" >&2
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir.partial" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"
  # The directory is renamed into place only when complete, so an interrupted install is retried.
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  touch "$stamp"
fi

# libtorch_cpu.so resolves libcudart / libcupti through its own rpath into ../../nvidia/*/lib.
ln -sfn "$dir" "$repo/.libtorch"
