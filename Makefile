# flowvar: `make reproduce` runs the main job, `make test` the whole test suite.
# Both create .venv on first use (torch 2.13.0 CPU first, see constraints.txt) and skip setup afterwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flowvar-installed
OUT ?= runs
JOBS ?= 2
# Where pip finds the CPU build of torch 2.13.0. Empty: pip's own configuration (the project's machines offer the
# CPU wheel locally); elsewhere PyPI's Linux wheel is the CUDA build, so give e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# 0: `make test` leaves chromium alone (tests/test_browser.py then skips)
BROWSER ?= 1
# pytest-xdist workers for `make test` (auto: one per core). Each test runs on one torch thread (tests/conftest.py),
# so a single process leaves every other core idle: on a 2-core machine the suite takes 24 min in one process and
# 14 min in two. Whole files go to one worker (--dist loadfile): a module's shared fixtures (the benchmark scripts'
# quick runs, one trained model) run once, not once per worker. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto

.PHONY: setup test lint browser reproduce clean gpu-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	# The engine's cross-checks against BackPACK and Opacus, and the benchmarks' smoke tests (torchcfm), run here
	# too, not only where someone installed them. BackPACK and torchcfm without their declared dependencies:
	# those pull torchvision (PyPI's fails to import beside the CPU torch) and, for torchcfm, ~80 packages, while
	# the modules used here import only torch, numpy, POT, einops and unfoldNd.
	$(BIN)/python -m pip install -q -c constraints.txt opacus einops unfoldNd
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps backpack-for-pytorch torchcfm
	# `flowvar audit`'s adapter tests train a diffusers UNet2DModel and a Meta flow_matching model, and
	# tests/test_integrations.py trains a LightningModule with flowvar.integrations.lightning: all three install
	# with their own dependencies (huggingface_hub, safetensors, torchmetrics, aiohttp, ...; no torchvision, torch
	# stays pinned).
	$(BIN)/python -m pip install -q -c constraints.txt diffusers flow_matching lightning
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

test: setup lint browser
	$(BIN)/pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Chromium for tests/test_browser.py (report.html in a real browser): the distribution's package, installed only
# where that needs no password (root, or password-less sudo) and apt-get exists. Never fails: elsewhere the test
# skips and says why.
browser:
	@if [ "$(BROWSER)" = 0 ]; then echo "make browser: BROWSER=0: chromium not installed; tests/test_browser.py will skip"; \
	  exit 0; fi; \
	if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo="sudo -n"; else sudo=none; fi; \
	if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser: no root or no apt-get: chromium not installed; tests/test_browser.py will skip"; exit 0; fi; \
	echo "make browser: installing the distribution's chromium for tests/test_browser.py"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	  --no-install-recommends chromium >/dev/null \
	  || echo "make browser: could not install chromium; tests/test_browser.py will skip"

# OUT is quoted (a folder with a space is one argument); an empty OUT= would mean the current folder: refused.
reproduce: setup
	@test -n "$(OUT)" || { echo "make reproduce: OUT is empty; give the output folder, e.g. OUT=runs" >&2; exit 2; }
	$(BIN)/flowvar reproduce --quick --out "$(OUT)" --jobs $(JOBS)

# The lent GPU machines have PyTorch (Python 3.12) but no network and no POT or torchcfm: their wheels, fetched here
# into the git-ignored .whl/, travel with the device tool's `carry` (benchmarks/gpu_session.sh installs them there).
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl -c constraints.txt POT torchcfm

clean:
	rm -rf $(VENV) "$(OUT)" .pytest_cache .ruff_cache
