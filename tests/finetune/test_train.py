"""The real QLoRA path on a tiny Llama: 4-bit nf4 + LoRA + paged_adamw_32bit through SFTTrainer.

One adapter is trained per module (a few seconds) and shared by the manifest, info, merge,
inference and base-mismatch tests; resume trains twice more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from core.errors import UserError
from core.hashing import sha256_file
from finetune.adapter import adapter_info, merge_adapter
from finetune.callbacks import read_log, series
from finetune.config import TrainConfig
from finetune.records import write_pairs
from finetune.train import train
from models.adapters import adapter_format, load_adapter, read_manifest, training_load_options
from models.loading import LoadOptions, load_model, model_fingerprint


def tiny_config(model: Path, **over) -> TrainConfig:
    """The published recipe (4-bit nf4, paged_adamw_32bit, checkpointing) for the tiny model."""
    base = dict(model=str(model), format="llama2", lora_r=8, lora_alpha=16, max_steps=8,
                learning_rate=1e-2, warmup_ratio=0.0, logging_steps=2, eval_steps=4,
                save_steps=4, max_seq_length=64, precision="no",
                prompt_template="none")  # the mechanics; prompt parity: test_prompting.py
    return TrainConfig(**{**base, **over})


class Inspect(TrainerCallback):
    """Records what the trainer really runs with."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        from bitsandbytes.nn import Linear4bit

        self.linear4bit = sum(isinstance(m, Linear4bit) for m in model.modules())
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        self.optimizer = (type(inner).__module__.split(".")[0], type(inner).__name__,
                          getattr(inner, "is_paged", None), inner.args.optim_bits)
        self.trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def trained(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(adapter dir, pairs file, manifest, Inspect) of one QLoRA run."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_ft_conftest",
                                                  Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("trained")
    pairs = root / "pairs.jsonl"
    write_pairs(module.sample_pairs(), pairs)
    inspect = Inspect()
    manifest = train(tiny_config(tiny_llama_dir), pairs, root / "adapter", progress=False,
                     callbacks=[inspect])
    return root / "adapter", pairs, manifest, inspect


def test_qlora_really_runs_4bit_lora_paged(trained) -> None:
    _, _, manifest, inspect = trained
    assert inspect.linear4bit == 14  # 2 layers x 7 projections (lm_head stays full precision)
    assert inspect.optimizer == ("bitsandbytes", "AdamW", True, 32)  # paged_adamw_32bit
    assert inspect.trainable and all("lora_" in n for n in inspect.trainable)
    assert all(dt == torch.float32 for dt in inspect.trainable.values())
    training = manifest["training"]
    assert training["global_step"] == 8 and training["completed"]
    assert all(torch.isfinite(torch.tensor(v)) for v in (training["first_loss"],
                                                         training["last_loss"]))


def test_the_model_learns_even_after_an_eval(trained) -> None:
    """Eval must not switch 4-bit layers to bitsandbytes' CPU inference kernel (no backward)."""
    adapter, _, manifest, _ = trained
    records = read_log(adapter / "training_log.jsonl")
    steps, norms = series(records, "grad_norm")
    eval_steps, evals = series(records, "eval_loss")
    assert eval_steps == [0, 4, 8]  # the untouched base first, then during training
    assert norms and all(n > 0 for n in norms)
    assert evals[-1] < evals[0]  # the loss falls on held-out articles of the same pattern
    curve = manifest["training"]["eval_curve"]
    assert curve == [[s, v] for s, v in zip(eval_steps, evals, strict=True)]
    t = manifest["training"]
    assert t["last_eval_loss"] == evals[-1] and t["last_loss"] < t["first_loss"]


def test_adapter_dir_contents(trained, tiny_llama_dir: Path) -> None:
    adapter, pairs, manifest, _ = trained
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "manifest.json",
            "training_log.jsonl", "loss.png", "lr.png"} <= names
    assert "checkpoints" not in names and not any(n.endswith((".bin", ".pt")) for n in names)
    assert read_manifest(adapter) == json.loads(json.dumps(manifest, default=str))
    assert manifest["base_model"]["name"] == str(tiny_llama_dir)
    assert manifest["base_model"]["fingerprint"] == model_fingerprint(str(tiny_llama_dir))
    assert manifest["prompt_format"]["name"] == "llama2"
    assert manifest["config"]["lora_r"] == 8 and manifest["config"]["optim"] == "paged_adamw_32bit"
    assert manifest["pairs"]["sha256"] == sha256_file(pairs)
    assert manifest["pairs"]["train"] == 20 and manifest["pairs"]["validation"] == 4
    assert manifest["leakage"]["enabled"] is False  # no sidecar: said so, not assumed
    assert manifest["truncation"]["train"]["examples"] == 20
    for package in ("torch", "transformers", "peft", "trl", "bitsandbytes"):
        assert manifest["versions"][package] not in ("", "missing")
    assert adapter_format(adapter).name == "llama2"


def test_info_summarises_the_manifest(trained) -> None:
    adapter, _, manifest, _ = trained
    info = adapter_info(adapter)
    assert info["prompt_format"] == "llama2" and info["steps"] == 8 and info["completed"]
    assert info["precision"] == "no"
    options = training_load_options(adapter)
    assert options.load_in_4bit and options.quant_type == "nf4"
    assert info["leakage_filter"] == "off"
    assert info["last_eval_loss"] == manifest["training"]["last_eval_loss"]


def test_adapter_on_another_base_is_refused(trained, other_llama_dir: Path) -> None:
    adapter, *_ = trained
    with pytest.raises(UserError, match="was trained on .* not on"):
        load_adapter(adapter, model=str(other_llama_dir))


def test_adapter_loads_and_changes_the_output(trained, tiny_llama_dir: Path) -> None:
    adapter, *_ = trained
    base, tok = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    tuned, _ = load_adapter(adapter, options=LoadOptions(dtype="float32"))
    ids = tok(["[INST] Quem foi Pedro 1? [/INST]"], return_tensors="pt")
    with torch.no_grad():
        a, b = base(**ids).logits, tuned(**ids).logits
    assert not torch.allclose(a, b, atol=1e-3)


def test_merge_into_full_precision(trained, tmp_path: Path, tiny_llama_dir: Path) -> None:
    adapter, *_ = trained
    out = merge_adapter(adapter, tmp_path / "merged")
    merged, tok = load_model(str(out), LoadOptions(dtype="float32"))
    assert merged.dtype == torch.float32
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tuned, _ = load_adapter(adapter, options=LoadOptions(dtype="float32"))
    ids = tok(["[INST] Quem foi Vargas 3? [/INST]"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**ids).logits, tuned(**ids).logits, atol=1e-4)
    manifest = read_manifest(out)
    assert manifest["kind"] == "merged" and manifest["merge_dtype"] == "float32"
    assert adapter_format(out).name == "llama2"
    with pytest.raises(UserError, match="not empty"):
        merge_adapter(adapter, out)
    with pytest.raises(UserError, match="complete model"):
        load_adapter(out, model=str(tiny_llama_dir))
    assert "never" in merge_adapter.__doc__ and "4-bit" in merge_adapter.__doc__


def test_resume_after_an_interruption_matches_an_uninterrupted_run(
        tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_llama_dir, max_steps=6, logging_steps=1, eval_steps=3,
                         save_steps=100)
    straight = train(config, pairs_file, tmp_path / "straight", progress=False)
    part = train(config, pairs_file, tmp_path / "split", progress=False, stop_after=3)
    assert part["training"]["global_step"] == 3 and not part["training"]["completed"]
    assert (tmp_path / "split" / "checkpoints" / "checkpoint-3").is_dir()
    with pytest.raises(UserError, match="already holds"):
        train(config, pairs_file, tmp_path / "split", progress=False)
    resumed = train(config, pairs_file, tmp_path / "split", resume=True, progress=False)
    assert resumed["training"]["resumed_from"].endswith("checkpoint-3")
    assert resumed["training"]["global_step"] == 6 and resumed["training"]["completed"]
    a = read_log(tmp_path / "straight" / "training_log.jsonl")
    b = read_log(tmp_path / "split" / "training_log.jsonl")
    for key in ("loss", "eval_loss", "learning_rate"):
        steps_a, values_a = series(a, key)
        steps_b, values_b = series(b, key)
        assert steps_a == steps_b
        assert values_a == pytest.approx(values_b, rel=1e-4), key
    assert resumed["training"]["last_eval_loss"] == pytest.approx(
        straight["training"]["last_eval_loss"], rel=1e-4)


def test_bad_training_inputs(tiny_llama_dir: Path, tmp_path: Path, pairs_file: Path) -> None:
    config = tiny_config(tiny_llama_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\nnope\n{"instruction": "a"}\n')
    with pytest.raises(UserError, match=r"2 bad lines \(lines 2-3\)"):
        train(config, bad, tmp_path / "a", progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="no training rows"):
        train(config, empty, tmp_path / "b", progress=False)
    with pytest.raises(UserError, match="no checkpoint"):
        train(config, pairs_file, tmp_path / "c", resume=True, progress=False)
    with pytest.raises(UserError, match="cannot be fully fine-tuned"):
        train(tiny_config(tiny_llama_dir, use_lora=False), pairs_file, tmp_path / "d",
              progress=False)
    with pytest.raises(UserError, match="prompt is longer than max_seq_length=8"):
        train(tiny_config(tiny_llama_dir, max_seq_length=8), pairs_file, tmp_path / "e",
              progress=False)


def test_bf16_autocast_on_cpu(tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    """The cpu-demo path: fp32 weights, LoRA in fp32, bf16 autocast (use_cpu set for trl)."""
    from finetune.train import cpu_has_native_bf16, resolve_precision

    assert resolve_precision("auto", load_in_4bit=True) == "no"  # 4-bit on a CPU stays fp32
    assert resolve_precision("auto") == ("bf16" if cpu_has_native_bf16() else "no")
    inspect = Inspect()
    config = tiny_config(tiny_llama_dir, load_in_4bit=False, precision="bf16", max_steps=3,
                         eval_steps=3, gradient_checkpointing=False)
    manifest = train(config, pairs_file, tmp_path / "bf16", progress=False, callbacks=[inspect])
    assert manifest["resolved"]["precision"] == "bf16" and inspect.linear4bit == 0
    assert all(dt == torch.float32 for dt in inspect.trainable.values())
    assert torch.isfinite(torch.tensor(manifest["training"]["last_eval_loss"]))


def test_packing_keeps_examples_apart(tiny_llama_dir: Path) -> None:
    """A padding-free packed row (trl's collator) gives each example its own logits.

    transformers builds the block-diagonal mask from ``position_ids`` only without a KV cache;
    ``load_for_training`` turns the cache off, without which packed examples would see each
    other.
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune.dataset import encode_pair
    from finetune.records import Pair
    from finetune.train import load_for_training
    from models.formats import get_format

    model, tok = load_for_training(tiny_config(tiny_llama_dir, load_in_4bit=False))
    assert model.config.use_cache is False
    fmt = get_format("llama2")
    encoded = [encode_pair(Pair(q, "", a), fmt, tok, 64) for q, a in
               [("Quem foi Pedro?", "Um imperador do Brasil."), ("E Vargas?", "Um presidente.")]]
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # as the trainer passes them
    with torch.no_grad():
        packed = model(**inputs).logits[0]
        start = 0
        for e in encoded:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            part = packed[start:start + len(e.input_ids)]
            assert torch.allclose(part, alone, atol=1e-4)
            start += len(e.input_ids)


def test_full_fine_tune_writes_a_complete_model(tiny_llama_dir: Path, pairs_file: Path,
                                                tmp_path: Path) -> None:
    """The ptwiki-full path: no LoRA, Adafactor; the output folder is a model of its own."""
    from finetune.config import train_config

    preset = train_config("ptwiki-full")
    config = tiny_config(tiny_llama_dir, use_lora=False, load_in_4bit=False, dtype="float32",
                         optim=preset.optim, lr_scheduler_type=preset.lr_scheduler_type,
                         learning_rate=1e-3, max_steps=2, eval_steps=2,
                         gradient_checkpointing=True)
    manifest = train(config, pairs_file, tmp_path / "full", progress=False)
    assert manifest["kind"] == "full" and manifest["config"]["optim"] == "adafactor"
    model, tok = load_adapter(tmp_path / "full", options=LoadOptions(dtype="float32"))
    assert not any("lora" in n for n, _ in model.named_parameters())
    base, _ = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    ids = tok(["[INST] Quem foi Isabel 3? [/INST]"], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**ids).logits, base(**ids).logits, atol=1e-4)
    assert adapter_format(tmp_path / "full").name == "llama2"
