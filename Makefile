# delt_cli: two commands on a fresh clone.
#   make demo   creates .venv, installs, fetches the offline assets, runs the pipeline end to end
#   make test   creates .venv if needed and runs the whole test suite
# Reproductions of the papers (hours on CPU): make reproduce-delt, make reproduce-gotd.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DELT   := $(BIN)/delt
export PYTHONUNBUFFERED := 1

.PHONY: install assets test test-fast demo clean-demo bench help

help:
	@sed -n '1,4p' Makefile

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch first: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

assets: $(STAMP)
	$(DELT) assets >/dev/null

test: $(STAMP) assets
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow"

demo: $(STAMP) assets
	bash scripts/demo.sh

clean-demo:
	rm -rf data/demo

bench: $(STAMP)
	$(BIN)/python scripts/bench_select_order.py
