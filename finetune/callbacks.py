"""Training log: every Trainer log event as one JSONL record, then loss and learning-rate plots.

``training_log.jsonl`` is appended to (a resumed run continues it); ``plot_training_log`` keeps
the last record per step, so steps replayed after an interruption are drawn once.

``SnapshotCallback`` (``TrainConfig.snapshot_epochs``) saves the model at the optimizer step
closest to each requested epoch, with what it had cost so far: the non-padding input tokens and
the loss tokens actually trained on (counted on every training forward pass), and the wall and
process-CPU seconds spent inside optimizer steps (forward, backward, clipping, the update; not
evaluation, logging or checkpoint saves). The counts are kept in each checkpoint, so a resumed
run carries on counting.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune.records import TRAINING_LOG, read_log

log = logging.getLogger(__name__)

LOG_NAME = TRAINING_LOG
SMOOTH = 5  # logs averaged in the dashed training-loss line (small batches are noisy)


class JsonlLogCallback(TrainerCallback):
    """Appends ``{"step", "epoch", "time", <logged values>}`` for each ``on_log`` event."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.start = time.time()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": state.epoch,
                  "elapsed_s": round(time.time() - self.start, 3)}
        record.update({k: _plain(v) for k, v in logs.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class StopAfterCallback(TrainerCallback):
    """Stops training (as an interruption would) once ``global_step`` reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True


SNAPSHOTS = "snapshots"  # <adapter dir>/snapshots/epoch-<e>/
SNAPSHOT_STATE = "snapshot_state.json"  # the counters, kept in each checkpoint
IGNORE_INDEX = -100
# write(model, folder, snapshot record, tokenizer): saves one snapshot (finetune.adapter's)
SnapshotWriter = Callable[[Any, Path, dict[str, Any], Any], Any]


def snapshot_name(epoch: float) -> str:
    """The folder name of the snapshot at ``epoch``: ``epoch-0.25``, ``epoch-1``, ``epoch-3``."""
    return f"epoch-{epoch:g}"


def steps_per_epoch(batches: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in one pass over ``batches`` micro-batches (transformers' own count: a
    last, shorter accumulation still makes a step)."""
    return max(math.ceil(batches / max(gradient_accumulation_steps, 1)), 1)


def plan_snapshots(epochs: Iterable[float], per_epoch: int, max_steps: int
                   ) -> tuple[dict[int, float], list[float]]:
    """(optimizer step -> requested epoch, epochs left out) for the snapshots of a run.

    Each epoch ``e > 0`` gets the step closest to ``e * per_epoch`` (halves round up, at least
    step 1); an epoch beyond the run's ``max_steps``, or one whose step an earlier (smaller)
    epoch already took, is left out. Epoch 0 is the base model: it needs no snapshot.
    """
    plan: dict[int, float] = {}
    skipped: list[float] = []
    for epoch in sorted({float(e) for e in epochs}):
        if epoch <= 0:
            continue
        step = max(1, math.floor(epoch * per_epoch + 0.5))
        if step > max_steps or step in plan:
            skipped.append(epoch)
        else:
            plan[step] = epoch
    return plan, skipped


def count_tokens(inputs: dict[str, Any]) -> tuple[int, int]:
    """(non-padding input tokens, loss tokens) of one training batch as the model receives it.

    Input tokens: the attention mask's ones, or every input id when there is no mask
    (padding-free packing). Loss tokens: positions whose next-token label is not -100
    (``labels[..., 1:]``; pre-shifted ``shift_labels`` as they are).
    """
    mask, ids = inputs.get("attention_mask"), inputs.get("input_ids")
    tokens = int(mask.sum()) if mask is not None else int(ids.numel()) if ids is not None else 0
    shifted = inputs.get("shift_labels")
    labels = inputs.get("labels")
    if shifted is not None:
        loss = int((shifted != IGNORE_INDEX).sum())
    elif labels is not None:
        loss = int((labels[..., 1:] != IGNORE_INDEX).sum())
    else:
        loss = 0
    return tokens, loss


class SnapshotCallback(TrainerCallback):
    """Saves the model at the optimizer step closest to each of ``epochs`` (see the module
    docstring) into ``<out>/snapshots/epoch-<e>/`` through ``write``."""

    def __init__(self, out_dir: Path, epochs: Iterable[float], write: SnapshotWriter) -> None:
        self.root = Path(out_dir) / SNAPSHOTS
        self.epochs = tuple(sorted({float(e) for e in epochs if float(e) > 0}))
        self.write = write
        self.counters: dict[str, float] = {"tokens_seen": 0, "loss_tokens": 0,
                                           "train_seconds": 0.0, "cpu_seconds": 0.0}
        self.plan: dict[int, float] = {}
        self.per_epoch = 0
        self.written: list[Path] = []
        self._hook: Any = None
        self._started: tuple[float, float] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        batches = len(train_dataloader) if train_dataloader is not None else state.max_steps
        self.per_epoch = steps_per_epoch(batches, args.gradient_accumulation_steps)
        self.plan, skipped = plan_snapshots(self.epochs, self.per_epoch, state.max_steps)
        if skipped:
            log.warning("no snapshot at epoch(s) %s: the run has %d optimizer steps, %d per "
                        "epoch (an epoch past the end, or one sharing its step with a smaller "
                        "one)", ", ".join(f"{e:g}" for e in skipped), state.max_steps,
                        self.per_epoch)
        if state.global_step == 0:
            if self.root.is_dir() and state.is_world_process_zero:
                shutil.rmtree(self.root)  # an earlier run's snapshots (a fresh start)
        else:
            self.counters = self._restored(args, state.global_step)
        if model is not None:
            self._hook = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _restored(self, args: Any, step: int) -> dict[str, float]:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        path = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}" / SNAPSHOT_STATE
        if not path.is_file():
            log.warning("resuming at step %d without snapshot counters (%s): tokens and seconds "
                        "of the snapshots count from here", step, path)
            return dict(self.counters)
        return {**self.counters, **json.loads(path.read_text(encoding="utf-8"))}

    def _count(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        if module.training and torch.is_grad_enabled():  # training passes, not evaluation
            tokens, loss = count_tokens(kwargs)
            self.counters["tokens_seen"] += tokens
            self.counters["loss_tokens"] += loss

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _sync()
        self._started = (time.perf_counter(), time.process_time())

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    processing_class: Any = None, **kwargs: Any) -> None:
        if self._started is not None:
            _sync()
            wall, cpu = self._started
            self.counters["train_seconds"] += time.perf_counter() - wall
            self.counters["cpu_seconds"] += time.process_time() - cpu
            self._started = None
        epoch = self.plan.get(state.global_step)
        if epoch is None or not state.is_world_process_zero or model is None:
            return
        folder = self.root / snapshot_name(epoch)
        record = {"requested_epoch": epoch, "epoch": state.epoch, "step": state.global_step,
                  "steps_per_epoch": self.per_epoch, "max_steps": state.max_steps,
                  "tokens_seen": int(self.counters["tokens_seen"]),
                  "loss_tokens": int(self.counters["loss_tokens"]),
                  "train_seconds": round(self.counters["train_seconds"], 3),
                  "cpu_seconds": round(self.counters["cpu_seconds"], 3), "device": _device()}
        self.write(model, folder, record, processing_class)
        self.written.append(folder)
        log.info("snapshot at epoch %g (step %d, %d tokens) -> %s", epoch, state.global_step,
                 record["tokens_seen"], folder)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            (folder / SNAPSHOT_STATE).write_text(json.dumps(self.counters), encoding="utf-8")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _sync() -> None:
    """Wait for queued GPU work, so that a step's seconds are the step's."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key``, last record per step winning, sorted by step."""
    by_step: dict[int, float] = {}
    for rec in records:
        value = rec.get(key)
        if isinstance(value, (int, float)):
            by_step[int(rec["step"])] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
            for i in range(len(values))]


def plot_training_log(log_path: Path, out_dir: Path) -> list[Path]:
    """Write ``loss.png`` (train + eval loss vs step) and ``lr.png`` (learning rate vs step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    written = []
    for name, keys, ylabel in (("loss.png", ("loss", "eval_loss"), "loss"),
                               ("lr.png", ("learning_rate",), "learning rate")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            steps, values = series(records, key)
            ax.plot(steps, values, marker="o", markersize=3, label=key)
            if key == "loss" and len(values) > SMOOTH:
                ax.plot(steps, moving_average(values, SMOOTH), linestyle="--",
                        label=f"loss, mean of last {SMOOTH} logs")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(out_dir) / name, dpi=100)
        plt.close(fig)
        written.append(Path(out_dir) / name)
    return written
