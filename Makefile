# Two commands do all the set-up on a fresh machine (Python 3.10+ with venv):
#   make demo   # the offline demo on the bundled model
#   make test   # lint (ruff), the import-cycle check, the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/python -m pip install -q -e ".[test]" -c constraints.txt
	touch $(STAMP)

.PHONY: install test demo clean
install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests tools bench
	$(BIN)/python tools/check_imports.py src/gcpl
	$(BIN)/python tools/check_copies.py
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/gcpl demo --out runs/demo

clean:
	rm -rf $(VENV) runs
