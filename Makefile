# Cross-Modal Alignment, by Doing — the two commands that matter:
#   make book   install everything, execute every chapter, build the HTML site (_build/html)
#   make test   install everything, run the unit tests and validate every chapter with nbval
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard book/*.ipynb))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup book test unit nbval notebooks bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

book: setup
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --keep-going
	@echo "Open _build/html/index.html"

test: unit nbval

unit: setup
	$(PY) -m pytest -q tests

nbval: setup
	$(PY) -m pytest -q -p no:cacheprovider --nbval $(CHAPTERS) --nbval-sanitize-with book/nbval_sanitize.cfg

notebooks: setup
	$(PY) tools/run_notebooks.py $(CHAPTERS)

bench: setup
	$(PY) benchmarks/bench_shapes.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_caption_metrics.py

clean:
	rm -rf _build runs .pytest_cache
