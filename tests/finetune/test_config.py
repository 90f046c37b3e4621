"""Training config: the published defaults, every preset, and that each value reaches trl."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from finetune.config import PRESETS_DIR, TrainConfig, preset_names, train_config
from finetune.train import lora_config, sft_args

RECIPE = {"load_in_4bit": True, "quant_type": "nf4", "compute_dtype": "auto", "lora_r": 64,
          "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": "q_proj,v_proj",
          "num_train_epochs": 1.0, "per_device_train_batch_size": 4,
          "gradient_accumulation_steps": 1, "gradient_checkpointing": True,
          "max_grad_norm": 0.3, "learning_rate": 2e-4, "weight_decay": 0.001,
          "optim": "paged_adamw_32bit", "lr_scheduler_type": "cosine", "warmup_ratio": 0.03,
          "group_by_length": True, "logging_steps": 25}


def test_defaults_are_the_published_llama2_recipe() -> None:
    config = TrainConfig()
    assert {k: getattr(config, k) for k in RECIPE} == RECIPE
    assert train_config("llama2-qlora").model == "meta-llama/Llama-2-7b-hf"
    preset = train_config("llama2-qlora")
    assert {k: getattr(preset, k) for k in RECIPE} == RECIPE


def test_every_preset_loads_with_a_command_header() -> None:
    assert preset_names() == ["cpu-demo", "cpu-raft", "llama2-13b-qlora", "llama2-qlora",
                              "mistral-qlora", "ptwiki-full", "spanish-thesis-qlora"]
    for name in preset_names():
        text = (PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        assert text.startswith(f"# finetune train --config {name} "), name
        config = train_config(name)
        assert isinstance(config, TrainConfig)
        assert lora_config(config) is None or lora_config(config).r == config.lora_r


@pytest.mark.parametrize(("name", "expected"), [
    ("mistral-qlora", {"load_in_4bit": True, "learning_rate": 2e-4,
                       "per_device_train_batch_size": 12, "num_train_epochs": 3,
                       "target_modules": "q_proj,v_proj", "format": "mistral"}),
    ("spanish-thesis-qlora", {"load_in_4bit": True, "quant_type": "nf4", "double_quant": True,
                              "compute_dtype": "bfloat16", "lora_r": 256, "lora_alpha": 256,
                              "lora_dropout": 0.2, "num_train_epochs": 3,
                              "optim": "paged_adamw_8bit", "lr_scheduler_type": "cosine",
                              "weight_decay": 0.001, "warmup_ratio": 0.3}),
    ("ptwiki-full", {"use_lora": False, "load_in_4bit": False, "dtype": "bfloat16",
                     "precision": "bf16", "optim": "adafactor", "lr_scheduler_type": "cosine",
                     "learning_rate": 1e-5}),
    ("llama2-13b-qlora", {"model": "meta-llama/Llama-2-13b-hf", "load_in_4bit": True,
                          "double_quant": True, "per_device_train_batch_size": 1,
                          "gradient_checkpointing": True}),
    ("cpu-demo", {"model": "qwen2.5-coder-0.5b-instruct", "format": "chat",
                  "load_in_4bit": False}),
])
def test_presets_match_the_issue(name: str, expected: dict) -> None:
    config = train_config(name)
    assert {k: getattr(config, k) for k in expected} == expected


def test_a_former_model_name_is_recorded_under_the_current_one() -> None:
    """The adapter manifest copies the config: it must carry the true base model name."""
    from core.config import config_dict

    config = train_config("cpu-demo", model="qwen2.5-0.5b-instruct")
    assert config.model == "qwen2.5-coder-0.5b-instruct"
    assert config_dict(config)["model"] == "qwen2.5-coder-0.5b-instruct"
    assert train_config(model="meta-llama/Llama-2-7b-hf").model == "meta-llama/Llama-2-7b-hf"


def test_13b_preset_explains_its_memory() -> None:
    header = [line for line in (PRESETS_DIR / "llama2-13b-qlora.yaml").read_text().splitlines()
              if line.startswith("#")]
    text = "\n".join(header)
    assert "GB" in text and "LoRA" in text and "activations" in text.lower()


def test_overrides_and_errors(tmp_path: Path) -> None:
    config = train_config("cpu-demo", max_steps=3, seed=7, packing=None)
    assert (config.max_steps, config.seed, config.packing) == (3, 7, True)
    with pytest.raises(UserError, match="Did you mean 'cpu-demo'"):
        train_config("cpu-dem")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\n")
    with pytest.raises(UserError, match="unknown setting 'lora_rank'.*'lora_r'"):
        train_config(bad)
    with pytest.raises(UserError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(UserError, match="warmup_ratio"):
        TrainConfig(warmup_ratio=1.5)
    with pytest.raises(UserError, match="max_eval_examples"):
        TrainConfig(max_eval_examples=0)


def test_every_setting_reaches_the_trainer(tmp_path: Path) -> None:
    config = TrainConfig()
    args = sft_args(config, tmp_path, has_eval=True, progress=False)
    assert args.output_dir == str(tmp_path / "checkpoints")
    same = {"num_train_epochs": 1.0, "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1, "max_grad_norm": 0.3, "learning_rate": 2e-4,
            "weight_decay": 0.001, "logging_steps": 25, "seed": 42, "data_seed": 42,
            "max_length": 512, "packing": False, "warmup_steps": 0.03,
            "activation_checkpointing": True, "eval_steps": 25, "save_steps": 100}
    assert {k: getattr(args, k) for k in same} == same
    assert args.optim.value == "paged_adamw_32bit"
    assert args.lr_scheduler_type.value == "cosine"
    assert args.train_sampling_strategy == "group_by_length"
    assert args.get_warmup_steps(1000) == 30  # 3 % of the steps
    assert args.eval_strategy.value == "steps" and not args.bf16 and not args.fp16
    lora = lora_config(config)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 16, 0.1)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    assert lora_config(TrainConfig(target_modules="all-linear")).target_modules == "all-linear"
    no_eval = sft_args(TrainConfig(group_by_length=False, packing=True), tmp_path, False, False)
    assert no_eval.eval_strategy.value == "no" and no_eval.packing
    assert no_eval.train_sampling_strategy == "random"


def test_quant_storage_is_the_compute_dtype_only_under_fsdp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune.train import quant_storage

    config = TrainConfig(load_in_4bit=True, compute_dtype="bfloat16")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert quant_storage(config) is None  # bitsandbytes' uint8 default
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert quant_storage(config) == "bfloat16"
    assert quant_storage(TrainConfig(load_in_4bit=True, quant_storage="float16")) == "float16"
