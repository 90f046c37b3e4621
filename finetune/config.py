"""The training config: defaults are the published Llama-2 QLoRA recipe; presets are YAML files.

Defaults (the recipe of the Llama-2 guanaco QLoRA notebooks): 4-bit nf4, compute dtype "auto"
(bf16 on a GPU that has it, float16 on other GPUs, float32 on CPU, where fp16 matmuls are slow
or missing), LoRA r=64 / alpha=16 / dropout 0.1 on q_proj,v_proj, 1 epoch, batch 4, gradient
accumulation 1, gradient checkpointing, max_grad_norm 0.3, lr 2e-4, weight decay 0.001,
paged_adamw_32bit, cosine, 3% warmup, group_by_length, logging every 25 steps.

``--config`` takes a preset name (``finetune/presets/<name>.yaml``) or a YAML path.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import load_config
from core.errors import UserError
from models.sources import DEFAULT_GENERATOR, canonical_model_name

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (written back resolved into the manifest)."""

    model: str = DEFAULT_GENERATOR
    format: str = "llama2"
    # loading
    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = False
    compute_dtype: str = "auto"  # auto: bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU
    quant_storage: str = "auto"  # 4-bit storage; auto: the compute dtype under FSDP, else uint8
    dtype: str = "auto"  # weights of a non-quantized model
    precision: str = "auto"  # mixed precision: auto (bf16 where native) | no | bf16 | fp16
    # LoRA (use_lora: false means a full fine-tune)
    use_lora: bool = True
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: str = "q_proj,v_proj"  # comma list, or "all-linear"
    # optimisation
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = True
    max_grad_norm: float = 0.3
    learning_rate: float = 2e-4
    weight_decay: float = 0.001
    optim: str = "paged_adamw_32bit"
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    group_by_length: bool = True
    # data
    max_seq_length: int = 512
    prompt_template: str | None = "short"  # the rag template pairs are rendered with (the one
    # compare evaluates with: prompt parity); "none": the bare instruction as one user turn
    packing: bool = False
    loss_positions_only: bool = True  # the 151k-wide LM head only at positions whose next-token
    # label is not -100 (finetune.loss; trl does it itself on CUDA/XPU, not on a CPU)
    max_eval_examples: int | None = None  # cap the validation split (eval costs time on a CPU)
    # bookkeeping
    logging_steps: int = 25
    eval_steps: int | None = None  # default: logging_steps; a last eval always ends the run
    eval_on_start: bool = True  # eval loss of the untouched base: the baseline the curve falls from
    save_steps: int = 100
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # delete <out>/checkpoints once training has completed
    snapshot_epochs: tuple[float, ...] = ()  # save the adapter at the optimizer step closest
    # to each of these epochs into <out>/snapshots/epoch-<e>/ (the knowledge-injection curve)
    seed: int = 42
    torch_threads: int | None = None  # CPU threads for training; None keeps torch's default

    def __post_init__(self) -> None:
        # a bundled model's former name becomes its current one (manifests carry the true name)
        object.__setattr__(self, "model", canonical_model_name(self.model))
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, "
                            f"not {self.precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.max_seq_length < 8:
            raise UserError(f"max_seq_length must be at least 8, not {self.max_seq_length}")
        object.__setattr__(self, "snapshot_epochs", snapshot_epochs(self.snapshot_epochs))
        positive = ("per_device_train_batch_size", "per_device_eval_batch_size",
                    "gradient_accumulation_steps", "logging_steps", "save_steps", "lora_r",
                    "max_eval_examples", "eval_steps")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")

    def lora_targets(self) -> str | list[str]:
        """``"all-linear"`` or the list of module names."""
        if self.target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


def snapshot_epochs(value: Any) -> tuple[float, ...]:
    """``snapshot_epochs`` as a sorted tuple of distinct epochs (a YAML list, one number, or
    empty); UserError for a negative or non-numeric entry."""
    items = value if isinstance(value, (list, tuple)) else () if value is None else (value,)
    try:
        epochs = sorted({float(e) for e in items})
    except (TypeError, ValueError):
        raise UserError(f"snapshot_epochs must be numbers of epochs, not {value!r}") from None
    if any(e < 0 for e in epochs):
        raise UserError(f"snapshot_epochs must not be negative: {value!r}")
    return tuple(epochs)


def preset_names() -> list[str]:
    """The bundled presets (file stems under ``finetune/presets``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name or a YAML path -> the YAML path (UserError with close preset names)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    close = difflib.get_close_matches(str(name_or_path), preset_names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UserError(f"--config {name_or_path!r} is neither a file nor a preset.{hint} "
                    f"Presets: {', '.join(preset_names())}.")


def train_config(config: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults < preset/YAML < non-None overrides (CLI flags)."""
    path = resolve_config_path(config) if config else None
    return load_config(TrainConfig, path, **overrides)
