"""Fixtures for compare: the tiny random Llama of tests/models (reused, not copied) and an
untrained-but-nonzero LoRA adapter for it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_MODELS_CONFTEST = Path(__file__).resolve().parents[1] / "models" / "conftest.py"


def _models_conftest():
    spec = importlib.util.spec_from_file_location("_models_conftest", _MODELS_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (safetensors + tokenizer with a chat template) on disk."""
    return _models_conftest().build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on q_proj/v_proj with random (non-zero) B, so it changes the outputs,
    plus the manifest ``finetune train`` writes (base model and chat prompt format)."""
    return _models_conftest().build_tiny_adapter(tiny_llama_dir,
                                                 tmp_path_factory.mktemp("tiny-adapter"))
