# Evergreen: `make run` trains on the embedded default, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
# The pinned CPU build (a multi-GB CUDA build comes with an unpinned torch).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/evergreen run

test: setup
	$(BIN)/python -m pytest -m "not gpu"

test-fast: setup
	$(BIN)/python -m pytest -m "not gpu and not slow and not e2e"

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
