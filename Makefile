# Evergreen: `make run` trains on the embedded default, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
# The pinned CPU build (a multi-GB CUDA build comes with an unpinned torch).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/evergreen run

test: setup chromium
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not gpu"

# Debian's chromium for the browser test (tests/app/test_browser.py); it skips, saying why, without it.
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "chromium: not installed (apt-get needs root or passwordless sudo); the browser test will skip"; exit 0; fi; \
	  command -v apt-get >/dev/null || { echo "chromium: no apt-get here; the browser test will skip"; exit 0; }; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "chromium: apt-get install failed; the browser test will skip"; }

test-fast: setup
	$(BIN)/python -m pytest -m "not gpu and not slow and not e2e"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV)
