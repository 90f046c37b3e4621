"""QLoRA (or full) supervised fine-tuning with trl's ``SFTTrainer``, peft and bitsandbytes.

``train`` reads a pairs JSONL (rows with ``split: validation`` become the eval set), loads the
base through ``models.loading`` (4-bit nf4 when asked), tokenizes with response-only labels and
EOS (``finetune.dataset``), trains, and writes the adapter dir: peft's safetensors,
``manifest.json``, ``training_log.jsonl``, ``loss.png``, ``lr.png``. The eval loss is taken
on the untouched base (step 0), every ``eval_steps`` and at the end. Packing uses trl's
padding-free best-fit packing; transformers keeps packed examples apart from ``position_ids``
because the KV cache is off. Checkpoints go to ``<out>/checkpoints`` so an interrupted run
continues with ``resume=True`` (replaying the same batches); they are deleted once it completes.

CPU notes: compute dtype "auto" is float32 on CPU (fp16 matmuls there are slow or missing);
bitsandbytes runs its paged optimizers unpaged on CPU (it warns); trl casts LoRA weights of a
4-bit model to bf16, which is undone here unless training in bf16 mixed precision; and
bitsandbytes repacks 4-bit weights for fast CPU inference the first time a layer runs in eval
mode on an AVX512-BF16 CPU, after which no gradient flows through it, so that repacking is
switched off while training (``keep_4bit_trainable_on_cpu``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from finetune.adapter import build_manifest, finalize_snapshots, write_manifest
from finetune.config import TrainConfig
from finetune.dataset import TruncationStats, build_split
from finetune.prompting import TrainingPrompt
from finetune.records import Pair, read_pairs
from models.formats import Format, get_format
from models.loading import LoadOptions, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
OWNED = ("manifest.json", "training_log.jsonl", "loss.png", "lr.png", "adapter_config.json",
         "adapter_model.safetensors", "README.md", CHECKPOINTS, "snapshots")


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


def resolve_precision(precision: str, load_in_4bit: bool = False) -> str:
    """``auto`` -> ``bf16`` mixed precision where the hardware does bf16 natively, else ``no``.

    Native means a CUDA GPU with bf16, or a CPU whose oneDNN has bf16 kernels (AVX512-BF16 or
    AMX), where bf16 autocast took 2.4x less CPU time per step than fp32 on the default model;
    4-bit models on a CPU stay in fp32 (bitsandbytes' CPU kernels compute in fp32 there).
    """
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if not load_in_4bit and cpu_has_native_bf16() else "no"


def cpu_has_native_bf16() -> bool:
    """Whether torch's CPU kernels run bf16 natively here (False when torch cannot tell)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_for_training(config: TrainConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (4-bit prepared for k-bit training when asked) and its tokenizer."""
    if config.load_in_4bit and not config.use_lora:
        raise UserError("a 4-bit model cannot be fully fine-tuned; set use_lora: true or "
                        "load_in_4bit: false")
    options = LoadOptions(dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                          quant_type=config.quant_type, double_quant=config.double_quant,
                          compute_dtype=config.compute_dtype, quant_storage=quant_storage(config))
    model, tokenizer = load_model(config.model, options)
    if config.load_in_4bit and under_fsdp():
        # FSDP flattens parameters of one dtype: no fp32 upcast of the non-4-bit layers here
        model.enable_input_require_grads()
    elif config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        keep_4bit_trainable_on_cpu(model)
    model.config.use_cache = False  # also what makes transformers keep packed examples apart
    tokenizer.padding_side = "right"
    return model, tokenizer


def under_fsdp() -> bool:
    """True inside ``accelerate launch --config_file finetune/accelerate/fsdp_qlora.yaml``."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (torchrun/accelerate set RANK), or a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def quant_storage(config: TrainConfig) -> str | None:
    """The 4-bit storage dtype: FSDP shards 4-bit weights only when stored in the compute dtype."""
    if config.quant_storage != "auto":
        return config.quant_storage
    return config.compute_dtype if under_fsdp() and config.load_in_4bit else None


def keep_4bit_trainable_on_cpu(model: Any) -> int:
    """Stop bitsandbytes repacking 4-bit CPU weights during eval; returns the layers changed.

    ``Linear4bit.forward`` converts its weight to an AVX512-BF16 inference layout when it runs
    in eval mode on such a CPU; the op that then serves the layer has no backward, so after
    the first evaluation every gradient is zero and training silently stops learning.
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # pragma: no cover - 4-bit loading already needed it
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def prepare(config: TrainConfig, pairs: list[Pair]) -> Prepared:
    """Load the model and tokenize both splits; UserError when nothing is left to train on."""
    train_pairs, val_pairs = split_pairs(pairs)
    if not train_pairs:
        raise UserError("the pairs file has no training rows (all are split 'validation', or it "
                        "is empty); make pairs with `finetune pairs` or `finetune import`")
    fmt = get_format(config.format)
    model, tokenizer = load_for_training(config)
    prompt = TrainingPrompt.of(config.prompt_template)
    train_ds, train_stats = build_split(train_pairs, fmt, tokenizer, config.max_seq_length,
                                        "train", prompt)
    if train_ds is None:
        raise UserError(f"every training example's prompt is longer than max_seq_length="
                        f"{config.max_seq_length}; raise max_seq_length or shorten the inputs")
    counts = {"train": len(train_pairs), "validation": len(val_pairs)}
    if config.max_eval_examples and len(val_pairs) > config.max_eval_examples:
        log.info("validation capped at %d of %d pairs (max_eval_examples)",
                 config.max_eval_examples, len(val_pairs))
        val_pairs = val_pairs[:config.max_eval_examples]
    val_ds, val_stats = build_split(val_pairs, fmt, tokenizer, config.max_seq_length,
                                    "validation", prompt)
    if val_ds is None:
        log.warning("no validation rows: training without eval loss")
    truncation = {"max_seq_length": config.max_seq_length, "train": train_stats.to_dict(),
                  "validation": (val_stats or TruncationStats()).to_dict()}
    return Prepared(model, tokenizer, fmt, train_ds, val_ds, truncation,
                    {**counts, "validation_evaluated": len(val_pairs)})


def sft_args(config: TrainConfig, out_dir: Path, has_eval: bool, progress: bool) -> Any:
    """The ``SFTConfig`` for this run (warmup as a ratio: transformers takes a float < 1)."""
    from trl import SFTConfig

    precision = resolve_precision(config.precision, config.load_in_4bit)
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
        use_cpu=precision == "bf16" and not _cuda(),  # transformers' condition for CPU bf16
        max_length=config.max_seq_length, packing=config.packing,
        report_to=[], disable_tqdm=not progress, dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
    """An ``SFTTrainer`` over the pre-tokenized datasets, LoRA attached by trl; under bf16
    autocast its frozen linear weights are stored in bf16 (``frozen_linear_weights_to``), and
    with ``loss_positions_only`` the LM head runs only where the loss is taken
    (``finetune.loss``)."""
    from trl import SFTTrainer

    from finetune.adapter import snapshot_callbacks
    from finetune.callbacks import JsonlLogCallback

    args = sft_args(config, out_dir, prep.validation is not None, progress)
    trainer = SFTTrainer(model=prep.model, args=args, train_dataset=prep.train,
                         eval_dataset=prep.validation, processing_class=prep.tokenizer,
                         peft_config=lora_config(config),
                         callbacks=[JsonlLogCallback(out_dir / "training_log.jsonl"),
                                    *snapshot_callbacks(config, prep.fmt, out_dir), *callbacks])
    if resolve_precision(config.precision, config.load_in_4bit) != "bf16":
        _trainable_to_fp32(trainer.model)
    elif not under_fsdp():  # FSDP flattens parameters of one dtype
        import torch

        frozen_linear_weights_to(trainer.model, torch.bfloat16)
    if config.loss_positions_only:  # the LM head only where the loss is taken (finetune.loss)
        from finetune.loss import add_positions_only_head

        add_positions_only_head(trainer.model)
    return trainer


def _trainable_to_fp32(model: Any) -> None:
    """Keep trainable (LoRA) weights in fp32 unless training in bf16 (trl casts them to bf16)."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def frozen_linear_weights_to(model: Any, dtype: Any, source: Any = None) -> int:
    """Store the frozen weights of plain ``nn.Linear`` layers in ``dtype``; returns how many.

    Under bf16 autocast every linear layer multiplies in bf16, and autocast casts an fp32
    weight to bf16 on every call (frozen weights are not in its cast cache): 358M values, in
    fresh memory, per forward of the default model. A weight stored in bf16 is used as is, so
    the products are bit-identical and the casts go. Only weights of ``source`` dtype (fp32
    by default) change; trainable weights (LoRA, a full fine-tune), quantized layers (not
    plain ``nn.Linear``) and an LM head tied to the input embedding (whose output would change
    dtype) are left alone.
    """
    import torch

    source = torch.float32 if source is None else source
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = embeddings.weight if embeddings is not None else None
    changed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or weight is None or weight.requires_grad \
                or weight.dtype != source or weight is tied:
            continue
        weight.data = weight.data.to(dtype)
        changed += 1
    return changed


def resumable(out_dir: Path) -> bool:
    """Whether an unfinished training in ``out_dir`` left a checkpoint to resume from (a run
    stopped before its first save leaves an empty ``checkpoints`` folder: it starts over)."""
    from transformers.trainer_utils import get_last_checkpoint

    from models.adapters import MANIFEST

    folder = out_dir / CHECKPOINTS
    return (folder.is_dir() and not (out_dir / MANIFEST).is_file()
            and bool(get_last_checkpoint(str(folder))))


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
          overwrite: bool = False, progress: bool = True, stop_after: int | None = None,
          callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train and write the adapter dir; returns the manifest.

    ``stop_after`` ends training after that many steps with a checkpoint, as an interruption
    would (used by tests and to split a long CPU run in parts); ``resume=True`` continues it.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (benchmarks, tests).
    """
    out_dir = Path(out_dir)
    pairs = read_pairs(pairs_path)  # bad lines fail before anything slow starts
    if is_main_process():  # the other ranks of a launch never clear the folder
        check_out_dir(out_dir, resume, overwrite)
    checkpoint = last_checkpoint(out_dir) if resume else None
    _set_threads(config)
    from transformers import set_seed

    set_seed(config.seed)  # before peft creates the LoRA weights inside SFTTrainer
    prep = prepare(config, pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    from finetune.callbacks import StopAfterCallback

    extra = [*callbacks, *([StopAfterCallback(stop_after)] if stop_after else [])]
    trainer = make_trainer(config, prep, out_dir, progress, extra)
    if prep.validation is not None and config.eval_on_start and not resume:
        evaluate_untouched(trainer)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    return finish(config, prep, trainer, result, Path(pairs_path), out_dir, checkpoint)


def finish(config: TrainConfig, prep: Prepared, trainer: Any, result: Any, pairs_path: Path,
           out_dir: Path, checkpoint: str | None) -> dict[str, Any]:
    """After the loop: a last eval, the weights, plots, manifest; checkpoints go when done."""
    from finetune.callbacks import plot_training_log

    completed = trainer.state.global_step >= trainer.state.max_steps
    if prep.validation is not None and completed and \
            _last_eval_step(trainer) != trainer.state.global_step:
        trainer.evaluate()  # the run always ends with an eval loss on the final weights
    if not save_weights(trainer, out_dir):
        return {}  # not the main process of a distributed launch: rank 0 writes the rest
    if not config.use_lora:
        prep.tokenizer.save_pretrained(str(out_dir))
    plot_training_log(out_dir / "training_log.jsonl", out_dir)
    precision = resolve_precision(config.precision, config.load_in_4bit)
    manifest = build_manifest(config, prep.fmt, pairs_path, prep.counts, prep.truncation,
                              trainer, result, checkpoint, precision,
                              out_dir / "training_log.jsonl")
    manifest["training"]["completed"] = completed
    write_manifest(out_dir, manifest)
    finalize_snapshots(out_dir)  # the records a snapshot could not know while training
    if completed and not config.keep_checkpoints:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    return manifest


def save_weights(trainer: Any, out_dir: Path) -> bool:
    """Write the trained weights (safetensors, no pickled training_args.bin) from the main
    process; under FSDP every rank first joins in gathering the full state dict. Returns
    whether this process is the one that wrote them."""
    acc = trainer.accelerator
    acc.wait_for_everyone()
    if under_fsdp():
        acc.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    state = acc.get_state_dict(trainer.model)  # a collective under FSDP: every rank calls it
    if acc.is_main_process:
        acc.unwrap_model(trainer.model).save_pretrained(str(out_dir), state_dict=state)
    acc.wait_for_everyone()
    return bool(acc.is_main_process)


def evaluate_untouched(trainer: Any) -> None:
    """Eval loss of the base before any step (logged at step 0), leaving the RNG as it was.

    Every DataLoader iterator draws its seed from torch's global generator, so an evaluation
    here would shift the training order, and a run resumed from a checkpoint (which skips
    this evaluation) would no longer replay the uninterrupted run's batches.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        trainer.evaluate()


def _last_eval_step(trainer: Any) -> int | None:
    steps = [h["step"] for h in trainer.state.log_history if "eval_loss" in h]
    return steps[-1] if steps else None


def _set_threads(config: TrainConfig) -> None:
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
