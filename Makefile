# Quick start: `make demo` (install into .venv/ and run the main job), `make test` (install and run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint vs-pymgrit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pintrain solve

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Cross-check against PyMGRIT 1.0.6 (makes .venv-pymgrit/ with numpy<2) and rewrite the record.
vs-pymgrit: $(STAMP)
	$(BIN)/python benchmarks/vs_pymgrit.py

clean:
	rm -rf $(VENV) .venv-pymgrit .pytest_cache .ruff_cache src/*.egg-info
