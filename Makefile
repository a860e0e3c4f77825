# Quick start: `make demo` (install into .venv/ and run the main job), `make test` (install and run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: demo test lint bench vs-pymgrit scaling reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,torch,mpi]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/pintrain train

test: lint
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Regenerate the paper's Tables 1-16 and Figures 6-7 (docs/reproduction.md shows them; about 45 min on 2 cores).
reproduce: $(VENV)/.installed
	$(BIN)/pintrain reproduce --jobs 2 --out docs/reproduction

# Serial training vs MGRIT, and pintrain vs PyMGRIT 1.0.6 (makes .venv-pymgrit/): tables, JSON, PNG.
bench: $(VENV)/.installed
	$(BIN)/pintrain bench --out benchmarks/results

# Cross-check against PyMGRIT 1.0.6 (makes .venv-pymgrit/ with numpy<2) and rewrite the record.
vs-pymgrit: $(VENV)/.installed-test
	$(BIN)/python benchmarks/vs_pymgrit.py

# Serial training against MGRIT on 1 and 2 MPI ranks, and the cost model's predicted speedup.
scaling: $(VENV)/.installed-test
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) .venv-pymgrit .pytest_cache .ruff_cache src/*.egg-info
