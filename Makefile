# Two entry points: `make demo` and `make test`. Both create .venv when it is missing and
# install the project into it once; the stamp file makes a second run reinstall nothing
# (it is redone only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.usher2-installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/usher2 demo

test: $(STAMP)
	$(BIN)/ruff check usher2 tests train bench
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check usher2 tests train bench
	$(BIN)/ruff format --check usher2 tests train bench

bench: $(STAMP)
	$(BIN)/python bench/simulate.py
	$(BIN)/python bench/enhance.py
	$(BIN)/python bench/segment.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/fusion.py

clean:
	rm -rf $(VENV) usher2-demo .pytest_cache .ruff_cache
