# Cross-Modal Alignment, by Doing — the two commands that matter:
#   make book   install everything, execute every chapter, build the HTML site (_build/html)
#   make test   install everything, check style and types (make lint), run the unit tests,
#               check the rendered site in headless Chromium (no network), validate every
#               chapter with nbval, and run the chapters on Flickr8k and at full size (field)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard book/*.ipynb))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup assets book serve test lint format unit browser nbval field notebooks setup-cells bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Mermaid and MathJax at pinned, digest-checked versions for offline pages (npm pack; instant when current).
assets: setup
	$(PY) tools/fetch_web_assets.py

# Executed chapters are cached (see execute: in _config.yml): a second `make book` with no
# change rebuilds in seconds. The cache keys on the chapters' code cells only, so it is
# dropped whenever a file of the package changes; `make clean` drops it too.
PACKAGE_FILES := pyproject.toml $(shell find crossalign -name '*.py' -o -name '*.yaml')
BOOK_CACHE := _build/.jupyter_cache

_build/.package-stamp: $(PACKAGE_FILES)
	rm -rf $(BOOK_CACHE)
	mkdir -p _build
	touch $@

book: setup assets _build/.package-stamp
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --keep-going
	@echo "Open _build/html/index.html, or run make serve (diagrams need the site served over http)"

serve:
	@echo "Serving _build/html on http://127.0.0.1:8000 (Ctrl+C stops)"
	$(PYTHON) -m http.server --bind 127.0.0.1 --directory _build/html 8000

# Each part in turn, with its time; the first failure stops.
TEST_PARTS := lint unit browser nbval field
test:
	@for part in $(TEST_PARTS); do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$part || exit 1; \
	  echo "== make $$part: $$(( $$(date +%s) - start )) s"; \
	done

# Formatting, lint and types, as configured in pyproject.toml (the pre-commit hooks run the same).
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Rewrites the tree in the project's style (code, tests, tools and the chapters' code cells).
format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: setup
	$(PY) -m pytest -q tests -m "not site and not field"

# Builds the site from the committed notebook outputs (no execution) and opens every page in
# headless Chromium with no network; screenshots land in _build/screenshots/.
browser: setup assets
	CROSSALIGN_REQUIRE_BROWSER=1 $(PY) -m pytest -q -p no:cacheprovider tests -m site

# Trained numbers are bit-for-bit only on the same CPU kind and thread count; the first
# line says which this run had, so a glued number that differs can be traced to it.
nbval: setup
	@$(PY) -c "import platform, torch; print('nbval on', platform.machine(), 'torch', torch.__version__, 'CPU capability', torch.backends.cpu.get_cpu_capability(), 'threads', torch.get_num_threads())"
	$(PY) -m pytest -q -p no:cacheprovider --nbval $(CHAPTERS) --nbval-sanitize-with book/nbval_sanitize.cfg

# The chapters on the paths their saved outputs do not show: DATA = "flickr8k" on a
# generated Flickr8k with stand-in weights, and FAST = False with budgets cut by
# CROSSALIGN_SMOKE=1 (tests/test_field_paths.py).
field: setup
	$(PY) -m pytest -q -p no:cacheprovider tests -m field --durations=0

notebooks: setup
	$(PY) tools/run_notebooks.py $(CHAPTERS)

# Rewrites the Colab setup cell of every chapter from repository.url in _config.yml.
setup-cells: setup
	$(PY) tools/sync_setup_cell.py

bench: setup
	$(PY) benchmarks/bench_shapes.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_caption_metrics.py

clean:
	rm -rf _build runs .pytest_cache
