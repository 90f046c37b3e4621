"""Fine-tuning throughput: training tokens/s with packing vs without, and peak RSS, in ONE run.

Three passes train the same pairs with the same preset (``cpu-demo`` by default: the default
model, LoRA on 2 cores) for the same number of optimizer steps, one after the other in this
process: without packing as the preset runs (batches grouped by length), without packing in
random batches (more padding), and with packing (trl's best-fit packing into ``max_seq_length``
rows, padding-free). A callback times the training loop only (model loading and tokenization
excluded) and counts the real (non-padding) tokens trl reports as ``num_tokens``. Throughput is
given per wall second and per CPU second (the latter holds up when other jobs share the cores).
Peak RSS of each pass is sampled from /proc/self/status every 50 ms.

    .venv/bin/python bench/finetune_speed.py --pairs pairs.jsonl            # cpu-demo, 4 steps each
    .venv/bin/python bench/finetune_speed.py --pairs pairs.jsonl --steps 8 --config cpu-demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune.config import train_config
from finetune.records import Pair, read_pairs, write_pairs
from finetune.train import train


class LoopTimer(TrainerCallback):
    """Wall and CPU seconds of the training loop, and the real tokens it consumed."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        tokens = [h["num_tokens"] for h in state.log_history if "num_tokens" in h]
        self.tokens = int(tokens[-1]) if tokens else 0


class PeakRss:
    """Samples this process's resident set size in a thread; ``peak_mb`` after ``stop``."""

    def __enter__(self) -> PeakRss:
        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb())
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = round(self.peak_kb / 1024, 1)


def rss_kb() -> int:
    """Current VmRSS of this process in KiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


PASSES = {"grouped": {"packing": False, "group_by_length": True},
          "random": {"packing": False, "group_by_length": False},
          "packed": {"packing": True, "group_by_length": True}}


def one_pass(args: argparse.Namespace, pairs: Path, name: str, tmp: Path) -> dict[str, Any]:
    """Train ``args.steps`` steps in one of the ``PASSES`` settings; the loop's figures."""
    config = train_config(args.config, max_steps=args.steps, logging_steps=1, save_steps=10_000,
                          **PASSES[name])
    if args.model:
        config = dataclasses.replace(config, model=args.model)
    timer = LoopTimer()
    with PeakRss() as rss:
        manifest = train(config, pairs, tmp / name, progress=False, callbacks=[timer])
    return {**PASSES[name], "steps": manifest["training"]["global_step"],
            "tokens": timer.tokens, "loop_wall_s": round(timer.wall, 1),
            "loop_cpu_s": round(timer.cpu, 1),
            "tokens_per_s": round(timer.tokens / timer.wall, 1),
            "tokens_per_cpu_s": round(timer.tokens / timer.cpu, 1),
            "first_loss": manifest["training"]["first_loss"],
            "last_loss": manifest["training"]["last_loss"], "peak_rss_mb": rss.peak_mb}


def train_only(pairs: list[Pair], limit: int, out: Path) -> Path:
    """The training rows (no eval passes in the timed loop), at most ``limit``."""
    rows = [p for p in pairs if p.split == "train"][:limit]
    write_pairs(rows, out)
    return out


def main() -> None:
    """Run both passes and print one JSON record with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="pairs JSONL (finetune pairs)")
    parser.add_argument("--config", default="cpu-demo", help="preset or YAML (default cpu-demo)")
    parser.add_argument("--model", help="override the preset's model")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per pass")
    parser.add_argument("--max-pairs", type=int, default=400, help="training rows used")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp_name:
        tmp = Path(tmp_name)
        pairs = train_only(read_pairs(args.pairs), args.max_pairs, tmp / "train.jsonl")
        load_before = os.getloadavg()[0]
        runs = {name: one_pass(args, pairs, name, tmp) for name in PASSES}
    packed = runs["packed"]
    print(json.dumps({
        "config": args.config, "steps": args.steps, "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_avg_before_after": [load_before, os.getloadavg()[0]],
        "passes": runs,
        "packing_speedup": {
            f"vs_{name}": {"tokens_per_s": _ratio(packed, runs[name], "tokens_per_s"),
                           "tokens_per_cpu_s": _ratio(packed, runs[name], "tokens_per_cpu_s")}
            for name in ("grouped", "random")},
    }, indent=2))


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    return round(a[key] / b[key], 2)


if __name__ == "__main__":
    main()
