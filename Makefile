# Two commands on a fresh machine: `make serve` (set up, build and serve the site) and
# `make test` (set up and run every test). `.ci/run` calls `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned: this is the local CPU wheel; an unpinned torch pulls gigabytes of CUDA packages.
TORCH := torch==2.13.0
# The torchvision built for that torch: lmms-eval (the `eval` extra, in `dev`) needs one, and an
# unpinned one pulls a newer torch.
TORCHVISION := torchvision==0.28.0
# Where to take it from elsewhere (GitHub runners): e.g. the PyTorch CPU wheel index.
TORCH_INDEX ?=
# The browser tests read the same variable.
export CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Silence the MkDocs 2 banners that mkdocs-material and mkdocs-gen-files print on every build.
export NO_MKDOCS_2_WARNING := 1
export DISABLE_MKDOCS_2_WARNING := true

.PHONY: setup chromium latex serve site test lint catalog bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" "$(TORCHVISION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	@# PyPI's torchvision is a CUDA build: beside a CPU torch it fails to import, and then so does
	@# every transformers model. Removed there; a TORCH_INDEX of CPU wheels gives a working one.
	@$(PY) -c "import torchvision" 2>/dev/null || $(PY) -m pip uninstall --quiet -y torchvision
	touch $@

chromium:
	@[ -x "$(CHROMIUM)" ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# pdflatex and bibtex: the test that compiles a document citing every catalog.bib entry.
latex:
	@command -v pdflatex >/dev/null && command -v bibtex >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq texlive-latex-base texlive-binaries; }

catalog: setup
	$(PY) -m tools validate

# Not strict: a catalog error shows as a page (tools/site.py) instead of stopping the server;
# `make site` and CI build strictly.
serve: setup
	$(PY) -m mkdocs serve --no-strict --dev-addr localhost:8000

site: setup
	$(PY) -m mkdocs build --strict --site-dir public

test: setup chromium latex
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) public test-artifacts
