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

.PHONY: install assets test test-fast demo clean-demo bench help corpus reproduce-delt reproduce-gotd

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
	$(DELT) tasks build >/dev/null

test: $(STAMP) assets
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

demo: $(STAMP) assets
	bash scripts/demo.sh

clean-demo:
	rm -rf data/demo

bench: $(STAMP)
	$(BIN)/python scripts/bench_select_order.py

# The demo corpus (docs/corpus.md): CORPUS_PRESET=demo (default) or full; data/corpus/<preset>/
CORPUS_PRESET ?= demo
corpus: $(STAMP)
	$(BIN)/python scripts/build_corpus.py --preset $(CORPUS_PRESET) >/dev/null
	$(BIN)/python scripts/train_tokenizer.py data/corpus/$(CORPUS_PRESET)/train -o data/corpus/$(CORPUS_PRESET)/tokenizer-8k \
		--vocab-size 8192 --eval data/corpus/$(CORPUS_PRESET)/heldout >/dev/null

# The papers' experiments at CPU scale (docs/reproduction.md): every step is a delt command listed
# in the config; a rerun skips finished steps. Prints a time estimate first; takes hours on 2 cores.
reproduce-delt: $(STAMP) assets
	$(BIN)/python scripts/reproduce.py configs/experiments/delt.yaml

reproduce-gotd: $(STAMP) assets
	$(BIN)/python scripts/reproduce.py configs/experiments/gotd.yaml
