"""Loading a local checkpoint: dtype, padding, 4-bit nf4 + LoRA training step, adapters, hashes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.errors import UserError
from models.loading import (
    FINGERPRINT_CACHE,
    LoadOptions,
    load_model,
    load_tokenizer,
    model_fingerprint,
    model_fingerprint_of,
)


def test_local_folder_loads_for_generation(tiny_llama_dir: Path) -> None:
    model, tok = load_model(str(tiny_llama_dir))
    assert not model.training
    assert model.dtype == torch.float32  # auto on CPU
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.padding_side == "left"
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert load_tokenizer(str(tiny_llama_dir)).padding_side == "left"


def test_hub_models_load_offline_without_the_cli_environment(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Library calls stay offline on their own: ``local_files_only`` unless the user sets
    HF_HUB_OFFLINE=0 on purpose (the CLI's offline environment is not needed for that)."""
    from models.loading import _local_kwargs
    from models.sources import ModelRef

    hub = ModelRef(name="org/model", kind="hub", location="org/model")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert _local_kwargs(hub) == {"local_files_only": True}
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert _local_kwargs(hub) == {}
    assert _local_kwargs(ModelRef("x", "local", "/x")) == {"local_files_only": True}


def test_dtype_choice(tiny_llama_dir: Path) -> None:
    model, _ = load_model(str(tiny_llama_dir), LoadOptions(dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        load_model(str(tiny_llama_dir), LoadOptions(dtype="fp8"))


def test_missing_weights_is_a_user_error(tmp_path: Path, tiny_llama_dir: Path) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama_dir / name, tmp_path / name)
    with pytest.raises(UserError, match="cannot load the model"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(UserError, match="not a model folder"):
        load_model(str(tmp_path))


def test_nf4_lora_forward_backward(tiny_llama_dir: Path) -> None:
    from bitsandbytes.nn import Linear4bit
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model, tok = load_model(str(tiny_llama_dir), LoadOptions(load_in_4bit=True))
    assert isinstance(model.model.layers[0].self_attn.q_proj, Linear4bit)
    assert model.config.quantization_config.bnb_4bit_use_double_quant
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    model.train()
    batch = tok(["A capital do Brasil é Brasília."], return_tensors="pt")
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # B starts at zero, so A's gradient is non-zero from the second step
        optim.zero_grad()
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optim.step()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def _save_adapter(base_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_adapter(tiny_llama_dir, tmp_path_factory.mktemp("adapter"))


def _copy(adapter: Path, dest: Path, config: dict | None = None,
          manifest: dict | None = None) -> Path:
    shutil.copytree(adapter, dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg.update(config or {})
    (dest / "adapter_config.json").write_text(json.dumps(cfg))
    if manifest is not None:
        (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_adapter_attaches_and_changes_outputs(tiny_llama_dir: Path, adapter_dir: Path) -> None:
    from peft import PeftModel

    base, tok = load_model(str(tiny_llama_dir))
    tuned, _ = load_model(str(tiny_llama_dir), adapter=adapter_dir)
    assert isinstance(tuned, PeftModel) and not tuned.training
    ids = tok(["Dom Pedro"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)


def test_adapter_for_another_base_is_refused(tiny_llama_dir: Path, adapter_dir: Path,
                                             tmp_path: Path) -> None:
    other = _copy(adapter_dir, tmp_path / "a1", {"base_model_name_or_path": "org/other-model"})
    with pytest.raises(UserError, match="trained on 'org/other-model'"):
        load_model(str(tiny_llama_dir), adapter=other)
    by_manifest = _copy(adapter_dir, tmp_path / "a2", manifest={"base_model": "qwen2.5-1.5b"})
    with pytest.raises(UserError, match="qwen2.5-1.5b"):
        load_model(str(tiny_llama_dir), adapter=by_manifest)
    with pytest.raises(UserError, match="not a LoRA adapter folder"):
        load_model(str(tiny_llama_dir), adapter=tmp_path)


def test_adapter_trained_under_a_former_bundled_name_fits_the_current_one(
        adapter_dir: Path, tmp_path: Path) -> None:
    """Adapters trained before the rename name the base qwen2.5-0.5b-instruct (manifest) and
    its old cache folder (peft); the current name resolves to the same weights."""
    from models.loading import check_adapter_base
    from models.sources import ModelRef

    old = _copy(adapter_dir, tmp_path / "old",
                {"base_model_name_or_path": "/cache/models/qwen2.5-0.5b-instruct"},
                {"base_model": {"name": "qwen2.5-0.5b-instruct", "kind": "bundled"}})
    ref = ModelRef("qwen2.5-coder-0.5b-instruct", "bundled",
                   str(tmp_path / "models" / "qwen2.5-coder-0.5b-instruct"))
    check_adapter_base(old, ref)
    other = ModelRef("smollm2-135m-instruct", "bundled", str(tmp_path / "smollm2-135m-instruct"))
    with pytest.raises(UserError, match="trained on"):
        check_adapter_base(old, other)


def test_adapter_tolerance(tiny_llama_dir: Path, adapter_dir: Path, tmp_path: Path) -> None:
    silent = _copy(adapter_dir, tmp_path / "a1", {"base_model_name_or_path": None})
    load_model(str(tiny_llama_dir), adapter=silent)
    moved = _copy(adapter_dir, tmp_path / "a2",
                  {"base_model_name_or_path": f"/elsewhere/{tiny_llama_dir.name}"})
    load_model(str(tiny_llama_dir), adapter=moved)  # same folder name, another cache root
    renamed = _copy(adapter_dir, tmp_path / "a3", {"base_model_name_or_path": "x/renamed"},
                    {"base_model": {"name": "renamed",
                                    "fingerprint": model_fingerprint(str(tiny_llama_dir))}})
    load_model(str(tiny_llama_dir), adapter=renamed)  # same weights hash wins over the name


def test_fingerprint_is_stable_cached_and_content_bound(tiny_llama_dir: Path,
                                                       tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "m")
    first = model_fingerprint(str(folder))
    assert (folder / FINGERPRINT_CACHE).is_file() and len(first) == 64
    assert model_fingerprint(str(folder)) == first
    os.utime(folder / "model.safetensors")  # new mtime, same bytes: re-hashed, same value
    assert model_fingerprint(str(folder)) == first
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-5}))
    assert model_fingerprint(str(folder)) != first


def test_fingerprint_of_a_hub_id_not_on_disk() -> None:
    ref = SimpleNamespace(name="org/never-downloaded", kind="hub", location="org/never-downloaded")
    assert model_fingerprint_of(ref) == "hub:org/never-downloaded@unknown"


def test_embedder_name_as_generator_is_refused() -> None:
    import models.sources  # noqa: F401  (registers the bundled embedders)

    with pytest.raises(UserError, match="not a generator"):
        load_model("multilingual-e5-small")


def test_default_device_map_follows_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.loading import default_device_map

    for key in ("ACCELERATE_USE_FSDP", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert default_device_map() == "auto"  # one process: spread over every GPU
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device_map() == {"": 1}  # a DDP rank takes its own GPU
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert default_device_map() is None  # FSDP places the shards itself


def test_quant_storage_reaches_bitsandbytes() -> None:
    import torch

    from models.loading import LoadOptions, quantization_config

    plain = quantization_config(LoadOptions(load_in_4bit=True, compute_dtype="float32"))
    fsdp = quantization_config(LoadOptions(load_in_4bit=True, compute_dtype="bfloat16",
                                           quant_storage="bfloat16"))
    assert plain.bnb_4bit_quant_storage == torch.uint8
    assert fsdp.bnb_4bit_quant_storage == torch.bfloat16
