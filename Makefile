# fluxrig — two commands: `make run` and `make test` (see README).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SCENARIO ?= examples/scenarios/echo.yaml

.PHONY: run test lint typecheck pytest docs proto bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or PYTHON=python3 make ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,mixer]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/fluxrig run $(SCENARIO)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

test: lint typecheck pytest

docs: $(VENV)/.installed-dev
	$(BIN)/fluxrig docs --write docs
	$(BIN)/python -m mixer.docs docs/mixer-settings.md

proto: $(VENV)/.installed-dev
	$(BIN)/python proto/generate.py

bench: $(VENV)/.installed
	$(BIN)/python bench/tcp_hotpath.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
