"""Training log: every Trainer log event as one JSONL record, then loss and learning-rate plots.

``training_log.jsonl`` is appended to (a resumed run continues it); ``plot_training_log`` keeps
the last record per step, so steps replayed after an interruption are drawn once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger(__name__)

LOG_NAME = "training_log.jsonl"
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


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a training log (empty when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
