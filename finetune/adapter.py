"""Writing the adapter dir: its manifest, merging it into a full model, ``finetune info``.

``manifest.json`` records the base model (name + ``models.loading.model_fingerprint``), the
prompt format, the resolved training config, the pairs file's sha256 and its leakage report,
truncation counts, the training outcome, package versions and the creation time.
Reading it back is ``models.adapters``' (``read_manifest``, ``adapter_format``,
``adapter_base``, ``load_adapter``, ``load_adapter_generator``), so rag and compare use adapters
without finetune; ``models.loading.load_model(base, adapter=DIR)`` refuses an adapter whose
manifest names another base.

Snapshots (``TrainConfig.snapshot_epochs``): ``snapshot_callbacks`` gives the training loop a
``finetune.callbacks.SnapshotCallback`` that saves, at the step closest to each requested epoch,
a complete adapter dir ``<out>/snapshots/epoch-<e>/`` (``write_snapshot``: peft's safetensors,
a ``manifest.json`` that ``models.adapters`` reads like any other, with a ``snapshot`` record:
epoch, step, tokens and loss tokens trained on, wall and CPU seconds of the optimizer steps,
device; and the training log up to that step). ``finalize_snapshots`` copies the finished run's
pairs, leakage and truncation records into them; ``snapshot_dirs`` lists them by epoch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import config_dict
from core.errors import UserError
from core.hashing import sha256_file
from core.versions import package_versions
from finetune.prompting import TrainingPrompt
from finetune.records import read_meta
from models.adapters import MANIFEST, load_adapter, read_manifest
from models.loading import LoadOptions

if TYPE_CHECKING:
    from finetune.config import TrainConfig
    from models.formats import Format

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets",
            "ragvsft")


def base_model_record(name: str) -> dict[str, str]:
    """Name, source kind, location and weights fingerprint of the base model."""
    from models.loading import model_fingerprint_of, resolve

    ref = resolve(name)
    return {"name": name, "kind": ref.kind, "location": ref.location,
            "fingerprint": model_fingerprint_of(ref)}


def training_outcome(trainer: Any, result: Any, checkpoint: str | None,
                     log_path: Path | None = None) -> dict[str, Any]:
    """Steps, runtime, first/last train and eval loss, the eval curve, peak memory.

    Losses come from ``training_log.jsonl`` when given (it spans interrupted and resumed parts
    and the step-0 evaluation), else from the trainer's history.
    """
    from finetune.callbacks import read_log, series

    history = read_log(log_path) if log_path else trainer.state.log_history
    _, losses = series(history, "loss")
    eval_steps, evals = series(history, "eval_loss")
    out = {"global_step": trainer.state.global_step, "epoch": trainer.state.epoch,
           "train_runtime_s": result.metrics.get("train_runtime"),
           "train_loss": result.metrics.get("train_loss"),
           "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
           "first_eval_loss": evals[0] if evals else None,
           "last_eval_loss": evals[-1] if evals else None,
           "eval_curve": [[s, v] for s, v in zip(eval_steps, evals, strict=True)],
           "resumed_from": checkpoint, "peak_rss_mb": _peak_rss_mb()}
    out.update(_cuda_peak())
    return out


def _peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def _cuda_peak() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu"}
    return {"device": torch.cuda.get_device_name(0),
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def build_manifest(config: TrainConfig, fmt: Format, pairs_path: Path, counts: dict[str, int],
                   truncation: dict[str, Any], trainer: Any, result: Any,
                   checkpoint: str | None, precision: str,
                   log_path: Path | None = None) -> dict[str, Any]:
    """The adapter manifest (see the module docstring)."""
    meta = read_meta(pairs_path)
    leakage = meta.get("leakage") or {"enabled": False,
                                      "note": "the pairs file has no .meta.json sidecar"}
    return {
        "format_version": 1,
        "kind": "lora" if config.use_lora else "full",
        "base_model": base_model_record(config.model),
        "prompt_format": fmt.describe(),
        "prompt": TrainingPrompt.of(config.prompt_template).describe(
            int((meta.get("counts") or {}).get("with_context", 0))),
        "config": config_dict(config),
        "resolved": {"precision": precision},
        "pairs": {"path": str(pairs_path), "sha256": sha256_file(pairs_path), **counts,
                  "meta": meta},
        "leakage": leakage,
        "truncation": truncation,
        "training": training_outcome(trainer, result, checkpoint, log_path),
        "versions": package_versions(PACKAGES, python=True),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` in the adapter dir."""
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2, default=str) + "\n",
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ snapshots

SNAPSHOTS = "snapshots"  # = finetune.callbacks.SNAPSHOTS
FINAL_RECORDS = ("pairs", "leakage", "truncation", "resolved", "prompt")  # known once the
# run is done (``prompt``: how many pairs carried passages)


def snapshot_callbacks(config: TrainConfig, fmt: Format, out_dir: Path) -> list[Any]:
    """The training loop's snapshot callback for ``config.snapshot_epochs`` (none when it asks
    for no epoch after 0, or under FSDP, whose sharded weights a callback cannot gather)."""
    if not any(e > 0 for e in config.snapshot_epochs):
        return []
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        log.warning("snapshot_epochs is ignored under FSDP: only the final adapter is written")
        return []
    from finetune.callbacks import SnapshotCallback

    write = functools.partial(write_snapshot, config=config, fmt=fmt,
                              log_path=Path(out_dir) / "training_log.jsonl")
    return [SnapshotCallback(Path(out_dir), config.snapshot_epochs, write)]


def write_snapshot(model: Any, folder: Path, snapshot: dict[str, Any], tokenizer: Any = None,
                   *, config: TrainConfig, fmt: Format, log_path: Path | None = None) -> Path:
    """Save ``model`` (a peft model: its LoRA weights as safetensors; a full model with its
    tokenizer) as a complete adapter dir ``folder`` with its ``manifest.json`` and the training
    log up to the snapshot's step. ``snapshot`` is the ``SnapshotCallback`` record (``epoch``,
    ``step``, ``tokens_seen``, ``loss_tokens``, ``train_seconds``, ``cpu_seconds``, ``device``…).
    Written beside, then moved into place: a folder with a manifest is a whole snapshot."""
    from finetune.callbacks import read_log, series

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    for path in (tmp, folder):
        if path.exists():
            shutil.rmtree(path)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))  # safetensors (peft and transformers default)
    if not config.use_lora and tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    step = int(snapshot["step"])
    records = [r for r in (read_log(log_path) if log_path else []) if r.get("step", 0) <= step]
    records.append({"step": step, "epoch": snapshot.get("epoch"),
                    "num_tokens": snapshot.get("tokens_seen"), "snapshot": True})
    (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records),
                                            encoding="utf-8")
    _, losses = series(records, "loss")
    _, evals = series(records, "eval_loss")
    manifest = {
        "format_version": 1,
        "kind": "lora" if config.use_lora else "full",
        "base_model": _base_record(config.model),
        "prompt_format": fmt.describe(),
        "prompt": TrainingPrompt.of(config.prompt_template).describe(),
        "config": config_dict(config),
        "training": {"global_step": step, "epoch": snapshot.get("epoch"), "completed": True,
                     "snapshot": True, "first_loss": losses[0] if losses else None,
                     "last_loss": losses[-1] if losses else None,
                     "first_eval_loss": evals[0] if evals else None,
                     "last_eval_loss": evals[-1] if evals else None},
        "snapshot": dict(snapshot),
        "versions": package_versions(PACKAGES, python=True),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_manifest(tmp, manifest)
    os.replace(tmp, folder)
    return folder


@functools.lru_cache(maxsize=8)
def _base_record(name: str) -> dict[str, str]:
    return base_model_record(name)


def snapshot_dirs(adapter_dir: str | Path) -> list[tuple[float, Path]]:
    """(requested epoch, folder) of every whole snapshot of an adapter dir, by epoch."""
    root = Path(adapter_dir).expanduser() / SNAPSHOTS
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if not (folder / MANIFEST).is_file() or folder.name.endswith(".tmp"):
            continue
        record = read_manifest(folder).get("snapshot") or {}
        epoch = record.get("requested_epoch", record.get("epoch"))
        if isinstance(epoch, (int, float)):
            found.append((float(epoch), folder))
    return sorted(found)


def finalize_snapshots(adapter_dir: str | Path) -> list[Path]:
    """Copy the finished run's records that a snapshot cannot know while training (the pairs
    file and its leakage report, truncation counts, resolved precision) from the adapter's
    ``manifest.json`` into each snapshot's; returns the snapshot folders. Idempotent."""
    final = read_manifest(adapter_dir)
    done = []
    for _, folder in snapshot_dirs(adapter_dir):
        manifest = read_manifest(folder)
        manifest.update({k: final[k] for k in FINAL_RECORDS if k in final})
        manifest["snapshot"] = {**manifest.get("snapshot", {}),
                                "run": str(Path(adapter_dir).expanduser().resolve()),
                                "run_steps": (final.get("training") or {}).get("global_step")}
        write_manifest(folder, manifest)
        done.append(folder)
    return done


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Merge the LoRA weights into a FULL-PRECISION copy of the base and save it (safetensors).

    The base is reloaded in ``dtype`` (float32 or bfloat16), never 4-bit: merging into nf4
    weights would add the small LoRA delta to weights that are then re-quantized to 16 levels
    per block, so most of the delta rounds away (and the dequantize/requantize round trip adds
    its own error); the merged model would not reproduce base+adapter.
    """
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"merge dtype must be float32, bfloat16 or float16, not {dtype!r}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; merge into a new folder")
    model, tokenizer = load_adapter(adapter_dir, options=LoadOptions(dtype=dtype))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(out))
    manifest = read_manifest(adapter_dir)
    manifest.update({"kind": "merged", "merged_from": str(Path(adapter_dir).resolve()),
                     "merge_dtype": dtype,
                     "merged_at": datetime.now(UTC).isoformat(timespec="seconds")})
    write_manifest(out, manifest)
    log.info("merged %s into %s (%s)", adapter_dir, out, dtype)
    return out


def adapter_info(adapter_dir: str | Path) -> dict[str, Any]:
    """A short summary of the manifest for ``finetune info``."""
    m = read_manifest(adapter_dir)
    training, base = m.get("training") or {}, m.get("base_model") or {}
    leakage = m.get("leakage") or {}
    return {
        "adapter": str(adapter_dir), "kind": m.get("kind"),
        "base_model": base.get("name"), "base_fingerprint": base.get("fingerprint"),
        "prompt_format": (m.get("prompt_format") or {}).get("name"),
        "created_at": m.get("created_at"),
        "steps": training.get("global_step"), "completed": training.get("completed"),
        "precision": (m.get("resolved") or {}).get("precision"),
        "first_loss": training.get("first_loss"),
        "last_loss": training.get("last_loss"), "first_eval_loss": training.get("first_eval_loss"),
        "last_eval_loss": training.get("last_eval_loss"),
        "pairs_sha256": (m.get("pairs") or {}).get("sha256"),
        "pairs": {k: (m.get("pairs") or {}).get(k)
                  for k in ("train", "validation", "validation_evaluated")},
        "leakage_filter": ("on" if leakage.get("enabled") else "off")
        + (f" (threshold {leakage.get('threshold')}, dropped {leakage.get('dropped')})"
           if leakage.get("enabled") else ""),
        "truncated": {k: (m.get("truncation") or {}).get(k, {}).get("truncated")
                      for k in ("train", "validation")},
        "versions": m.get("versions"),
    }
