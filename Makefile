# Two commands do all set-up on a fresh machine:
#   make verify   - create .venv, install, run `gradcheck-lab verify quadratic`
#   make test     - create .venv, install, run the whole test suite
# torch: TORCH_SPEC picks the version, TORCH_INDEX an index URL for the CPU or
# CUDA build (see README, "Choosing the torch build").

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: verify test lint typecheck bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null)) \
	      || echo "warning: could not install Graphviz; 'graph' will write .dot files only"; \
	  else echo "note: Graphviz 'dot' not found; install it for 'graph --out FILE.svg/.png' (apt install graphviz, brew install graphviz)"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)) \
	      || echo "warning: could not install Chromium; the browser tests of the HTML pages will skip"; \
	  else echo "note: Chromium not found; the browser tests of the HTML pages skip (apt install chromium)"; fi; }
	touch $(STAMP)

verify: $(STAMP)
	$(PY) -m gradcheck_lab verify quadratic

# ruff, then mypy ([tool.mypy] in pyproject.toml); `make test` runs both first.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(PY) -m mypy src/gradcheck_lab

typecheck: $(STAMP)
	$(PY) -m mypy src/gradcheck_lab

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache
