"""Fixtures for compare: the tiny random Llama of tests/models (reused, not copied) and an
untrained-but-nonzero LoRA adapter for it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_MODELS_CONFTEST = Path(__file__).resolve().parents[1] / "models" / "conftest.py"


def _tiny_builder():
    spec = importlib.util.spec_from_file_location("_models_conftest", _MODELS_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (safetensors + tokenizer with a chat template) on disk."""
    return _tiny_builder()(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on q_proj/v_proj with random (non-zero) B, so it changes the outputs,
    plus the manifest ``finetune train`` writes (base model and chat prompt format)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from models.loading import LoadOptions, load_model

    model, _ = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    torch.manual_seed(7)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(str(out))
    manifest = {"kind": "lora", "base_model": {"name": str(tiny_llama_dir)},
                "prompt_format": {"name": "chat"}}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out
