# flowvar: `make reproduce` runs the main job, `make test` the whole test suite.
# Both create .venv on first use (torch 2.13.0 CPU first, see constraints.txt) and skip setup afterwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flowvar-installed
OUT ?= runs
JOBS ?= 2

.PHONY: setup test lint reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	# The engine's cross-checks against BackPACK and Opacus, and the benchmarks' smoke tests (torchcfm), run here
	# too, not only where someone installed them. BackPACK and torchcfm without their declared dependencies:
	# those pull torchvision (PyPI's fails to import beside the CPU torch) and, for torchcfm, ~80 packages, while
	# the modules used here import only torch, numpy, POT, einops and unfoldNd.
	$(BIN)/python -m pip install -q -c constraints.txt opacus einops unfoldNd
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps backpack-for-pytorch torchcfm
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup lint
	$(BIN)/pytest -q

reproduce: setup
	$(BIN)/flowvar reproduce --quick --out $(OUT) --jobs $(JOBS)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
