# The two Quick start commands: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
export OMP_WAIT_POLICY := PASSIVE
CARGO ?= cargo
# The `ocular` binary is the ocular-cli package; its `torch` feature adds training, refinement,
# MS-SSIM and the harness (libtorch). The `ocular` library's default features are the pure-Rust codec.
OCULAR := $(CARGO) run --quiet -p ocular-cli --features torch --
DEMO_IMAGE ?= assets/ladybird.png

.PHONY: setup build demo test test-browser lint bench ci embeddable

## Installs libtorch once per machine (cache in ~/.cache/ocular) and links it as .libtorch.
setup:
	@scripts/setup-libtorch.sh
	@scripts/setup-observer.sh

build: setup
	$(CARGO) build --workspace --all-features

## Encodes and decodes the sample image with the built-in default model; prints bpp, PSNR, MS-SSIM, times.
demo: setup
	$(OCULAR) roundtrip $(DEMO_IMAGE) --output target/demo-decoded.png

## Every test of the workspace (debug) with every feature, so no test target is skipped by its
## `required-features`; then the embeddable builds again on their own: `ocular-models` and
## `ocular` with their default features (pure Rust, no libtorch), the container alone, and the
## pure-Rust `ocular` command (ocular-cli without libtorch).
test: setup
	$(CARGO) test --workspace --all-features
	$(CARGO) test -p ocular-models --lib
	$(CARGO) test -p ocular --lib --test embedded --test container --test fuzz_inputs
	$(CARGO) test -p ocular --no-default-features --lib --test container --test fuzz_inputs
	$(CARGO) test -p ocular-cli --test cli_pure

## The visual report in a real browser: installs Debian's chromium and chromium-driver if missing,
## writes `eval --html` of the built-in mse-vr at three rate points on two generated images,
## opens it in headless Chromium through WebDriver, checks that every picture loaded, moves the
## slider by a key press and checks that the pictures changed; screenshot in target/browser/.
BROWSER_DIR := target/browser
test-browser: setup
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi
	rm -rf $(BROWSER_DIR) && mkdir -p $(BROWSER_DIR)
	python3 scripts/test-browser.py images $(BROWSER_DIR)/images
	$(OCULAR) eval --data $(BROWSER_DIR)/images --model mse-vr --at-quality 1,5,9 --threads 1 \
		--quiet --html $(BROWSER_DIR)/report.html
	python3 scripts/test-browser.py check $(BROWSER_DIR)/report.html $(BROWSER_DIR)/screenshot.png

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) clippy -p ocular-models --all-targets -- -D warnings
	$(CARGO) clippy -p ocular --all-targets -- -D warnings
	$(CARGO) clippy -p ocular-cli --all-targets -- -D warnings
	$(CARGO) clippy -p ocular --no-default-features --all-targets -- -D warnings
	# The embeddable crates' documentation, as a user of the default features reads it: no
	# broken links.
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p ocular -p ocular-models -p ocular-entropy

## The embeddable library: with its default features `ocular` must not depend on libtorch, the
## harness's native libraries, progress bars or argument parsing.
embeddable:
	@tree="$$($(CARGO) tree -p ocular -e normal --prefix none)"; \
	bad="$$(grep -E '^(tch|torch-sys|libwebp-sys|plotters|indicatif|clap) ' <<< "$$tree" | sort -u)"; \
	if [ -n "$$bad" ]; then echo "ocular's default features depend on:"; echo "$$bad"; exit 1; fi; \
	echo "ocular (default features): no tch, torch-sys, libwebp-sys, plotters, indicatif, clap"

bench: setup
	$(CARGO) bench -p ocular-entropy --bench entropy

ci: lint embeddable test
