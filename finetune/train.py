"""QLoRA (or full) supervised fine-tuning with trl's ``SFTTrainer``, peft and bitsandbytes.

``train`` reads a pairs JSONL (rows with ``split: validation`` become the eval set), loads the
base through ``models.loading`` (4-bit nf4 when asked), tokenizes with response-only labels and
EOS (``finetune.dataset``), trains, and writes the adapter dir: peft's safetensors,
``manifest.json``, ``training_log.jsonl``, ``loss.png``, ``lr.png``. Checkpoints go to
``<out>/checkpoints`` so an interrupted run continues with ``resume=True``.

CPU notes: compute dtype "auto" is float32 on CPU (fp16 matmuls there are slow or missing);
bitsandbytes runs its paged optimizers unpaged on CPU (it warns); trl casts LoRA weights of a
4-bit model to bf16, which is undone here unless training in bf16 mixed precision.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.adapter import build_manifest, write_manifest
from finetune.config import TrainConfig
from finetune.dataset import TruncationStats, build_split
from finetune.formats import Format, get_format
from finetune.records import Pair, read_pairs
from models.errors import UserError
from models.loading import LoadOptions, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
OWNED = ("manifest.json", "training_log.jsonl", "loss.png", "lr.png", "adapter_config.json",
         "adapter_model.safetensors", "README.md", CHECKPOINTS)


@dataclass
class Prepared:
    """Everything the trainer needs, built before it starts."""

    model: Any
    tokenizer: Any
    fmt: Format
    train: Any
    validation: Any
    truncation: dict[str, Any]
    counts: dict[str, int]


def split_pairs(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(train, validation) by each pair's ``split`` field."""
    return ([p for p in pairs if p.split != "validation"],
            [p for p in pairs if p.split == "validation"])


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a GPU that has it, else ``no`` (fp32 weights + fp32 math)."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def load_for_training(config: TrainConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (4-bit prepared for k-bit training when asked) and its tokenizer."""
    if config.load_in_4bit and not config.use_lora:
        raise UserError("a 4-bit model cannot be fully fine-tuned; set use_lora: true or "
                        "load_in_4bit: false")
    options = LoadOptions(dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                          quant_type=config.quant_type, double_quant=config.double_quant,
                          compute_dtype=config.compute_dtype)
    model, tokenizer = load_model(config.model, options)
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.config.use_cache = False
    tokenizer.padding_side = "right"
    return model, tokenizer


def prepare(config: TrainConfig, pairs: list[Pair]) -> Prepared:
    """Load the model and tokenize both splits; UserError when nothing is left to train on."""
    train_pairs, val_pairs = split_pairs(pairs)
    if not train_pairs:
        raise UserError("the pairs file has no training rows (all are split 'validation', or it "
                        "is empty); make pairs with `finetune pairs` or `finetune import`")
    fmt = get_format(config.format)
    model, tokenizer = load_for_training(config)
    train_ds, train_stats = build_split(train_pairs, fmt, tokenizer, config.max_seq_length,
                                        "train")
    if train_ds is None:
        raise UserError(f"every training example's prompt is longer than max_seq_length="
                        f"{config.max_seq_length}; raise max_seq_length or shorten the inputs")
    val_ds, val_stats = build_split(val_pairs, fmt, tokenizer, config.max_seq_length,
                                    "validation")
    if val_ds is None:
        log.warning("no validation rows: training without eval loss")
    truncation = {"max_seq_length": config.max_seq_length, "train": train_stats.to_dict(),
                  "validation": (val_stats or TruncationStats()).to_dict()}
    return Prepared(model, tokenizer, fmt, train_ds, val_ds, truncation,
                    {"train": len(train_pairs), "validation": len(val_pairs)})


def sft_args(config: TrainConfig, out_dir: Path, has_eval: bool, progress: bool) -> Any:
    """The ``SFTConfig`` for this run (warmup as a ratio: transformers takes a float < 1)."""
    from trl import SFTConfig

    precision = resolve_precision(config.precision)
    return SFTConfig(
        output_dir=str(out_dir / CHECKPOINTS), seed=config.seed, data_seed=config.seed,
        num_train_epochs=config.num_train_epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        max_grad_norm=config.max_grad_norm, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, optim=config.optim,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_ratio,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        logging_steps=config.logging_steps, logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps or config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        bf16=precision == "bf16", fp16=precision == "fp16",
        max_length=config.max_seq_length, packing=config.packing,
        report_to=[], disable_tqdm=not progress, dataloader_num_workers=0,
    )


def lora_config(config: TrainConfig) -> Any:
    """peft ``LoraConfig`` from the training config (None for a full fine-tune)."""
    if not config.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_targets(),
                      bias="none", task_type="CAUSAL_LM")


def make_trainer(config: TrainConfig, prep: Prepared, out_dir: Path, progress: bool,
                 callbacks: list[Any]) -> Any:
    """An ``SFTTrainer`` over the pre-tokenized datasets, LoRA attached by trl."""
    from trl import SFTTrainer

    from finetune.callbacks import JsonlLogCallback

    args = sft_args(config, out_dir, prep.validation is not None, progress)
    trainer = SFTTrainer(model=prep.model, args=args, train_dataset=prep.train,
                         eval_dataset=prep.validation, processing_class=prep.tokenizer,
                         peft_config=lora_config(config),
                         callbacks=[JsonlLogCallback(out_dir / "training_log.jsonl"), *callbacks])
    if resolve_precision(config.precision) != "bf16":
        _trainable_to_fp32(trainer.model)
    return trainer


def _trainable_to_fp32(model: Any) -> None:
    """Keep trainable (LoRA) weights in fp32 unless training in bf16 (trl casts them to bf16)."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def last_checkpoint(out_dir: Path) -> str:
    """The newest ``checkpoint-N`` folder; UserError when there is none."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out_dir / CHECKPOINTS
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if not found:
        raise UserError(f"--resume: no checkpoint in {folder}; run without --resume to start")
    return found


def check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a finished or interrupted adapter dir needs --resume or --overwrite."""
    if resume or not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        state = "a finished adapter" if (out_dir / "manifest.json").exists() else "an earlier run"
        raise UserError(f"{out_dir} already holds {state}; pass --resume to continue it, "
                        "--overwrite to start over, or another --out")
    for name in OWNED:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def train(config: TrainConfig, pairs_path: Path, out_dir: Path, resume: bool = False,
          overwrite: bool = False, progress: bool = True, stop_after: int | None = None
          ) -> dict[str, Any]:
    """Train and write the adapter dir; returns the manifest.

    ``stop_after`` ends training after that many steps with a checkpoint, as an interruption
    would (used by tests and to split a long CPU run in parts).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume, overwrite)
    checkpoint = last_checkpoint(out_dir) if resume else None
    pairs = read_pairs(pairs_path)
    _set_threads(config)
    prep = prepare(config, pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    from finetune.callbacks import StopAfterCallback, plot_training_log

    extra = [StopAfterCallback(stop_after)] if stop_after else []
    trainer = make_trainer(config, prep, out_dir, progress, extra)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.model.save_pretrained(str(out_dir))  # safetensors; no pickled training_args.bin
    if not config.use_lora:
        prep.tokenizer.save_pretrained(str(out_dir))
    plot_training_log(out_dir / "training_log.jsonl", out_dir)
    manifest = build_manifest(config, prep.fmt, Path(pairs_path), prep.counts, prep.truncation,
                              trainer, result, checkpoint, resolve_precision(config.precision))
    write_manifest(out_dir, manifest)
    return manifest


def _set_threads(config: TrainConfig) -> None:
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
