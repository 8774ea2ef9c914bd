# The two Quick start commands: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
export OMP_WAIT_POLICY := PASSIVE
CARGO ?= cargo
OCULAR := $(CARGO) run --quiet -p ocular --
DEMO_IMAGE ?= assets/ladybird.png

.PHONY: setup build demo test lint bench ci

## Installs libtorch once per machine (cache in ~/.cache/ocular) and links it as .libtorch.
setup:
	@scripts/setup-libtorch.sh
	@scripts/setup-observer.sh

build: setup
	$(CARGO) build --workspace

## Encodes and decodes the sample image with the built-in default model; prints bpp, PSNR, MS-SSIM, times.
demo: setup
	$(OCULAR) roundtrip $(DEMO_IMAGE) --output target/demo-decoded.png

## Every test of the workspace (debug), the container tests once more without libtorch.
test: setup
	$(CARGO) test --workspace
	$(CARGO) test -p ocular --no-default-features --lib --test container --test fuzz_inputs

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p ocular --no-default-features --all-targets -- -D warnings

bench: setup
	$(CARGO) bench -p ocular-entropy --bench entropy

ci: lint test
