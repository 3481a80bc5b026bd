# Both targets create .venv when it is missing and install voltrain into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/voltrain: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "voltrain needs Python >= 3.12 (see .python-version), found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(BIN)/voltrain

demo: $(BIN)/voltrain
	$(BIN)/voltrain demo --out runs/demo

test: $(BIN)/voltrain
	$(BIN)/python -m pytest -q

lint: $(BIN)/voltrain
	$(BIN)/ruff check voltrain tests benchmarks
	$(BIN)/ruff format --check voltrain tests benchmarks

bench: $(BIN)/voltrain
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf runs .pytest_cache
