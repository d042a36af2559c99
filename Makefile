# fluxrig — two commands: `make run` and `make test` (see README).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SCENARIO ?= examples/scenarios/echo.yaml

.PHONY: run rack test lint typecheck pytest docs proto bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or PYTHON=python3 make ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-mixer: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[mixer]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,mixer]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-mixer

# The standard tier: the mixer (NATS hub, DuckDB, REST :8090, gRPC :8091) with a local rack that
# enrolls, is adopted and runs $(SCENARIO). Without FLUXRIG_API_TOKEN the APIs run without
# authentication, on 127.0.0.1 only.
run: $(VENV)/.installed-mixer
	$(BIN)/fluxrig-mixer --state-dir .fluxrig-mixer -s $(SCENARIO) --local-rack local \
		$(if $(FLUXRIG_API_TOKEN),,--insecure)

# A standalone rack on $(SCENARIO), no mixer.
rack: $(VENV)/.installed
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
