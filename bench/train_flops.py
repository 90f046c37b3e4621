"""Training FLOP/s against this machine's own matmul peak, in ONE run (issue 13, item 5).

Measures, in this process:

* the **matmul peak**: ``torch.mm`` of two ``--matmul-size`` square matrices (2048) repeated for
  ``--peak-seconds``, in bf16 and in fp32, on ``--threads`` threads; GFLOP/s = 2 n^3 x repeats /
  seconds, per wall second and per CPU second of this process. Measured at the start and the end,
  and the bf16 peak again (``--step-peak-seconds``) right before every timed training step, so
  that each step is set against the peak the machine gave at that moment (it is shared).
* the **training step** of a preset (``cpu-demo`` by default: the default model, LoRA r=16 on
  every linear layer, bf16 autocast, packing into 2 rows of 256 tokens) through the project's own
  ``finetune.train.train``, on real pairs (made by ``finetune.pairs.make_pairs`` from the default
  store with the default templates, or ``--pairs``), one run per kind: ``long`` = today's
  long-form kinds (lead, summary, dates, facts, sections), ``short`` = the bare-value ``short``
  pairs. Within a run the paths **alternate step by step**, so all see the same machine load:
  ``full`` is today's path (trl's fused LM head, which on a CPU projects every position; frozen
  weights stored in fp32 and cast to bf16 by autocast at every call); ``positions`` adds the
  lever ``loss_positions_only`` (the head only at the loss positions, ``finetune.loss``);
  ``positions-bf16w`` also stores the frozen linear weights in bf16
  (``finetune.train.frozen_linear_weights_to``: bit-identical products, no per-call casts), which
  is what ``finetune train`` now does under bf16 autocast. The storage is switched (exactly, both
  ways) before each step's timer starts. ``--warmup`` steps per path run untimed, then
  ``--steps`` timed steps per path (wall and CPU seconds from ``on_step_begin`` to
  ``on_step_end``: forward, backward, optimizer), then one step per path under
  ``torch.utils.flop_counter.FlopCounterMode`` (not timed) to check the FLOP formula. A forward
  pre-hook counts each step's tokens, loss positions (labels shifted by one that are not -100)
  and packed examples' lengths.
* the **loss curves** (``--loss-steps``, 0 to skip): per kind, two more runs of that many steps
  from the same seed on the same batches, with and without ``loss_positions_only``, and their
  largest loss difference.

FLOPs of one step, N tokens, M loss positions, frozen decoder weights P_body (every 2-D weight of
the decoder layers), LoRA weights P_lora, LM head P_head = vocabulary x hidden (frozen), L layers,
attention width d_q = heads x head_dim, packed examples of s_i tokens:

* frozen decoder weights: forward 2 P_body N + backward activation gradients 2 P_body N = 4 P_body N
  (no weight gradients: they are frozen; layer 0's q/k/v input gradients, ~0.6%, are not needed
  and are counted anyway);
* LoRA: 6 P_lora N (forward, activation and weight gradients; ~2% of the body here);
* attention scores (QK^T and AV, causal within each packed example): forward
  L x 2 d_q x sum s_i (s_i + 1), backward twice that: 3 x that in all;
* LM head, **executed**: today's path on a CPU projects all B (T - 1) positions of the batch's
  B x T rows three times (forward, the backward's recomputation, the hidden-state gradient):
  3 x 2 P_head B (T - 1); the lever projects the M loss positions twice (forward, gradient):
  2 x 2 P_head M (both ``positions`` paths);
* LM head, **useful**: 2 x 2 P_head M whichever path ran (what the loss needs).

``useful`` FLOP/s counts the work the loss needs, so it is the one to set against the peak
(model FLOPs utilisation); ``executed`` is what the hardware was made to do; ``6PN`` is the issue's
convention (6 x all parameters x tokens, as if every weight were trained and the head ran at
every position: it overstates the work of a LoRA run by ~1.7x).

    .venv/bin/python bench/train_flops.py                      # long and short, 3 steps per path
    .venv/bin/python bench/train_flops.py --steps 4 --threads 2 --variants full-long,positions-long
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from finetune.config import TrainConfig, train_config
from finetune.loss import causal_lm
from finetune.records import Pair, read_pairs, write_pairs
from finetune.train import frozen_linear_weights_to, train

LONG_KINDS = ("lead", "summary", "dates", "facts", "sections")
PATHS = ("full", "positions", "positions-bf16w")
VARIANTS = tuple(f"{path}-{kind}" for kind in ("long", "short") for path in PATHS)


def matmul_peak(dtype: torch.dtype, size: int = 2048, seconds: float = 1.5) -> dict[str, float]:
    """GFLOP/s of repeated ``size``-square ``torch.mm`` in ``dtype``, per wall and CPU second."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    reps, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        torch.mm(a, b, out=out)
        reps += 1
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    cpu = time.process_time() - cpu0
    flops = 2.0 * size ** 3 * reps
    return {"gflops_wall": round(flops / wall / 1e9, 1), "gflops_cpu": round(flops / cpu / 1e9, 1),
            "reps": reps}


@dataclasses.dataclass
class StepCounts:
    """What one optimizer step pushed through the model."""

    tokens: int = 0  # real (non-padding) tokens
    positions: int = 0  # B x (T - 1): every position the full-logits head projects
    loss_positions: int = 0  # next-token labels that are not -100
    attention_pairs: int = 0  # sum of s_i (s_i + 1) over packed examples / unpadded rows

    def add(self, kwargs: dict[str, Any]) -> None:
        """Count one forward's inputs (as trl's compute_loss passes them)."""
        ids, labels = kwargs.get("input_ids"), kwargs.get("labels")
        if ids is None or labels is None:
            return
        mask = kwargs.get("attention_mask")
        self.positions += ids.shape[0] * (ids.shape[1] - 1)
        self.loss_positions += int((labels[:, 1:] != -100).sum())
        if mask is not None:
            lengths = [int(x) for x in mask.sum(dim=1).tolist()]
        elif "position_ids" in kwargs:
            lengths = example_lengths(kwargs["position_ids"])
        else:
            lengths = [ids.shape[1]] * ids.shape[0]
        self.tokens += sum(lengths)
        self.attention_pairs += sum(s * (s + 1) for s in lengths)


def example_lengths(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the examples packed in padding-free rows (positions restart at 0)."""
    out: list[int] = []
    for row in position_ids.tolist():
        for pos in row:
            if pos == 0 or not out:
                out.append(0)
            out[-1] += 1
    return out


class Alternate(TrainerCallback):
    """Runs the steps of ``paths`` in turn; times them, counts their inputs and FLOPs.

    Steps: ``warmup`` rounds untimed, ``timed`` rounds timed (each after a short bf16 matmul
    peak), then one round under ``FlopCounterMode``; a round is one step of each path.
    """

    def __init__(self, paths: list[str], warmup: int, timed: int, peak_seconds: float,
                 matmul_size: int) -> None:
        self.paths, self.warmup, self.timed = paths, warmup, timed
        self.peak_seconds, self.matmul_size = peak_seconds, matmul_size
        self.steps: list[dict[str, Any]] = []
        self.counted: dict[str, dict[str, Any]] = {}
        self.current = StepCounts()
        self._counter: Any = None

    def total_steps(self) -> int:
        """Optimizer steps the run needs."""
        return len(self.paths) * (self.warmup + self.timed + 1)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        def hook(module: Any, _args: Any, inputs: dict[str, Any]) -> None:
            if module.training:
                self.current.add(inputs)

        model.register_forward_pre_hook(hook, with_kwargs=True)

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                      **kwargs: Any) -> None:
        rnd, index = divmod(state.global_step, len(self.paths))
        self.path = self.paths[index]
        causal_lm(model).loss_positions_only = self.path != "full"
        # today's storage (fp32 frozen weights, cast by autocast at every call) or bf16 storage;
        # both conversions are exact (bf16 values are fp32 values), done before the timer
        if self.path == "positions-bf16w":
            frozen_linear_weights_to(model, torch.bfloat16)
        else:
            frozen_linear_weights_to(model, torch.float32, source=torch.bfloat16)
        self.phase = ("warmup" if rnd < self.warmup else
                      "timed" if rnd < self.warmup + self.timed else "counted")
        self.peak = (matmul_peak(torch.bfloat16, self.matmul_size, self.peak_seconds)
                     if self.phase == "timed" and self.peak_seconds > 0 else None)
        if self.phase == "counted":
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self.current = StepCounts()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        record = {"step": state.global_step, "path": self.path, "wall_s": wall, "cpu_s": cpu,
                  **dataclasses.asdict(self.current)}
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.counted[self.path] = {**record,
                                       "counted_flops": int(self._counter.get_total_flops())}
            self._counter = None
        elif self.phase == "timed":
            self.steps.append({**record, "peak_bf16": self.peak})


@dataclasses.dataclass(frozen=True)
class Shape:
    """The parameter counts the FLOP formula needs."""

    body: int
    lora: int
    head: int
    total: int
    layers: int
    d_q: int

    @classmethod
    def of(cls, config: TrainConfig) -> Shape:
        """From the model's config.json and the LoRA settings (no weights loaded)."""
        from models.loading import model_config

        cfg = model_config(config.model).get_text_config()
        h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
        head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
        d_q, d_kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
        shapes = {"q_proj": (h, d_q), "k_proj": (h, d_kv), "v_proj": (h, d_kv),
                  "o_proj": (d_q, h), "gate_proj": (h, inter), "up_proj": (h, inter),
                  "down_proj": (inter, h)}
        body = layers * sum(i * o for i, o in shapes.values())
        targets = config.lora_targets()
        chosen = shapes if targets == "all-linear" else {k: v for k, v in shapes.items()
                                                          if k in targets}
        lora = layers * sum(config.lora_r * (i + o) for i, o in chosen.values())
        head = cfg.vocab_size * h
        embeddings = 0 if cfg.tie_word_embeddings else head
        return cls(body=body, lora=lora if config.use_lora else 0, head=head,
                   total=body + head + embeddings + (2 * layers + 1) * h, layers=layers, d_q=d_q)

    def attention(self, counts: dict[str, Any]) -> int:
        """Attention-score FLOPs of a step (forward and backward)."""
        return 3 * self.layers * 2 * self.d_q * int(counts["attention_pairs"])

    def flops(self, counts: dict[str, Any], path: str) -> dict[str, int]:
        """Executed, useful and 6PN FLOPs of a step (see the module docstring)."""
        n, m = int(counts["tokens"]), int(counts["loss_positions"])
        common = 4 * self.body * n + 6 * self.lora * n + self.attention(counts)
        head_executed = (3 * 2 * self.head * int(counts["positions"]) if path == "full"
                         else 2 * 2 * self.head * m)
        return {"useful": common + 2 * 2 * self.head * m, "executed": common + head_executed,
                "6PN": 6 * self.total * n}


def counter_check(counted: dict[str, Any], shape: Shape, path: str) -> dict[str, float]:
    """The FLOP counter's total for one step beside the formula's matmuls it can see.

    ``FlopCounterMode`` counts ``mm``/``addmm``/``bmm`` but not the CPU flash-attention kernel
    nor the in-place ``addmm_`` with which trl's CPU backward accumulates the head's
    hidden-state gradient (2 P_head per projected position), so those are taken out of the
    formula before comparing.
    """
    if not counted:
        return {}
    executed = shape.flops(counted, path)["executed"]
    unseen = shape.attention(counted) + (
        2 * shape.head * int(counted["positions"]) if path == "full" else 0)
    return {"counted_gflop": round(counted["counted_flops"] / 1e9, 2),
            "formula_visible_gflop": round((executed - unseen) / 1e9, 2),
            "formula_executed_gflop": round(executed / 1e9, 2)}


def summarize(steps: list[dict[str, Any]], shape: Shape, path: str) -> dict[str, Any]:
    """One path's timed steps: throughput, GFLOP/s and the share of the contemporaneous peak."""
    mine = [s for s in steps if s["path"] == path]
    if not mine:
        return {"steps": 0}
    total = {k: sum(s[k] for s in mine) for k in ("wall_s", "cpu_s", "tokens", "positions",
                                                 "loss_positions", "attention_pairs")}
    flops = shape.flops(total, path)
    wall, cpu = total["wall_s"], total["cpu_s"]
    # sum of flops over sum of (peak x seconds): each step against the peak measured before it
    peak_wall = sum(s["peak_bf16"]["gflops_wall"] * s["wall_s"] for s in mine) * 1e9
    peak_cpu = sum(s["peak_bf16"]["gflops_cpu"] * s["cpu_s"] for s in mine) * 1e9
    per_step = [shape.flops(s, path)["useful"] / s["wall_s"] / 1e9 / s["peak_bf16"]["gflops_wall"]
                for s in mine]
    return {
        "steps": len(mine), "tokens": total["tokens"], "loss_positions": total["loss_positions"],
        "loss_share": round(total["loss_positions"] / max(total["tokens"], 1), 3),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "tokens_per_s": round(total["tokens"] / wall, 1),
        "tokens_per_cpu_s": round(total["tokens"] / cpu, 1),
        "gflops_per_s": {k: round(v / wall / 1e9, 1) for k, v in flops.items()},
        "of_bf16_peak_wall": {k: round(v / peak_wall, 3) for k, v in flops.items()},
        "of_bf16_peak_cpu": {k: round(v / peak_cpu, 3) for k, v in flops.items()},
        "useful_of_peak_per_step": [round(x, 3) for x in per_step],
        "bf16_peak_during": [s["peak_bf16"]["gflops_wall"] for s in mine],
    }


def pairs_by_kind(path: Path | None, tmp: Path) -> dict[str, list[Pair]]:
    """Training pairs split into ``long`` and ``short`` (made from the default store if needed)."""
    if path is None:
        from core.paths import default_store_dir
        from finetune.pairs import PairsConfig, make_pairs

        path = tmp / "pairs.jsonl"
        make_pairs(default_store_dir(), path, PairsConfig(), progress=False)
    rows = [p for p in read_pairs(path) if p.split == "train" and not p.context]
    return {"long": [p for p in rows if p.kind in LONG_KINDS],
            "short": [p for p in rows if p.kind == "short"]}


def config_for(args: argparse.Namespace, **over: Any) -> TrainConfig:
    """The preset with the bench's settings and ``--set`` overrides."""
    settings: dict[str, Any] = {"logging_steps": 1, "save_steps": 10_000, "eval_on_start": False,
                                **over}
    if args.seq_len:
        settings["max_seq_length"] = args.seq_len
    if args.threads:
        settings["torch_threads"] = args.threads
    config = train_config(args.config, **settings)
    return dataclasses.replace(config, **parse_sets(args.set))


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["lora_dropout=0"]`` -> ``{"lora_dropout": 0.0}`` (typed like the TrainConfig field)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig()
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise ValueError(f"--set {item!r}: {key!r} is not a TrainConfig field")
        default = getattr(defaults, key)
        out[key] = (value.lower() in ("1", "true", "yes") if isinstance(default, bool)
                    else type(default)(value) if default is not None else value)
    return out


def run_kind(args: argparse.Namespace, kind: str, paths: list[str], pairs: Path,
             tmp: Path) -> dict[str, Any]:
    """One training run alternating ``paths`` on ``kind`` pairs; each path's figures."""
    meter = Alternate(paths, args.warmup, args.steps, args.step_peak_seconds, args.matmul_size)
    config = config_for(args, max_steps=meter.total_steps(), loss_positions_only=True)
    shape = Shape.of(config)
    train(config, pairs, tmp / f"{kind}-{time.monotonic_ns()}", progress=False,
          callbacks=[meter])
    out: dict[str, Any] = {"paths": {}}
    for path in paths:
        out["paths"][path] = {**summarize(meter.steps, shape, path),
                              "flop_counter_step": counter_check(meter.counted.get(path, {}),
                                                                 shape, path)}
    if "full" in paths:
        full = out["paths"]["full"]
        out["speedup_vs_full"] = {
            path: {**{k: round(out["paths"][path][k] / full[k], 2)
                      for k in ("tokens_per_s", "tokens_per_cpu_s")},
                   "per_round_median": paired_speedup(meter.steps, path)}
            for path in paths if path != "full"}
    return out


def paired_speedup(steps: list[dict[str, Any]], path: str) -> float:
    """Median over rounds of (``path`` tokens/s) / (``full`` tokens/s), steps of one round."""
    full = [s for s in steps if s["path"] == "full"]
    lever = [s for s in steps if s["path"] == path]
    ratios = [(b["tokens"] / b["wall_s"]) / (a["tokens"] / a["wall_s"])
              for a, b in zip(full, lever, strict=False)]
    return round(statistics.median(ratios), 2) if ratios else float("nan")


def loss_curves(args: argparse.Namespace, kind: str, pairs: Path, tmp: Path) -> dict[str, Any]:
    """The same ``--loss-steps`` steps from the same seed with each path; their losses."""
    from finetune.callbacks import read_log, series

    losses = {}
    for path in ("full", "positions"):
        config = config_for(args, max_steps=args.loss_steps,
                            loss_positions_only=path == "positions")
        out = tmp / f"loss-{kind}-{path}-{time.monotonic_ns()}"
        train(config, pairs, out, progress=False)
        losses[path] = series(read_log(out / "training_log.jsonl"), "loss")[1]
    diffs = [abs(a - b) for a, b in zip(losses["full"], losses["positions"], strict=True)]
    return {"full": [round(x, 4) for x in losses["full"]],
            "positions": [round(x, 4) for x in losses["positions"]],
            "max_abs_diff": round(max(diffs), 4),
            "max_rel_diff": round(max(d / abs(a) for d, a in zip(diffs, losses["full"],
                                                                   strict=True)), 4)}


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compile_training() -> None:
    """Make ``finetune.train.train`` build its trainer with ``torch_compile=True`` (a probe of
    the lever, not a project setting)."""
    import finetune.train

    plain = finetune.train.sft_args

    def compiled(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(plain(*args, **kwargs), torch_compile=True)

    finetune.train.sft_args = compiled


def main() -> None:
    """Peaks, then per pair kind one alternating run (and the loss curves); one JSON record."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, help="pairs JSONL (default: made from the store)")
    parser.add_argument("--config", default="cpu-demo", help="preset or YAML (default cpu-demo)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per path first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the preset's, else torch's)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="max_seq_length (default: the preset's)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list of {', '.join(VARIANTS)}; the paths chosen for one "
                             "kind alternate step by step in one run")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig override for every run (repeatable)")
    parser.add_argument("--loss-steps", type=int, default=4,
                        help="steps of the two loss-curve runs per kind (0: skip)")
    parser.add_argument("--max-pairs", type=int, default=400, help="training rows per kind")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--peak-seconds", type=float, default=2.0,
                        help="matmul peak at the start and the end, per dtype")
    parser.add_argument("--step-peak-seconds", type=float, default=0.5,
                        help="bf16 matmul peak before every timed step")
    parser.add_argument("--out", type=Path, help="also write the JSON record here")
    parser.add_argument("--compile", action="store_true",
                        help="train under torch.compile (the trainer's torch_compile, inductor); "
                             "give --warmup steps enough to absorb the compilation")
    args = parser.parse_args()
    if args.compile:
        compile_training()
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not chosen or set(chosen) - set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    try:
        config = config_for(args)
    except ValueError as exc:
        parser.error(str(exc))
    thread_count = args.threads or config.torch_threads
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-train-flops-") as tmp_name, \
            threads(thread_count):
        tmp = Path(tmp_name)
        kinds = pairs_by_kind(args.pairs, tmp)
        first = {"bf16": matmul_peak(torch.bfloat16, args.matmul_size, args.peak_seconds),
                 "fp32": matmul_peak(torch.float32, args.matmul_size, args.peak_seconds)}
        runs, curves = {}, {}
        for kind in ("long", "short"):
            paths = [p for p in PATHS if f"{p}-{kind}" in chosen]
            if not paths:
                continue
            pairs = tmp / f"{kind}.jsonl"
            write_pairs(kinds[kind][:args.max_pairs], pairs)
            runs[kind] = run_kind(args, kind, paths, pairs, tmp)
            if args.loss_steps and {"full", "positions"} <= set(paths):
                curves[kind] = loss_curves(args, kind, pairs, tmp)
        last = {"bf16": matmul_peak(torch.bfloat16, args.matmul_size, args.peak_seconds),
                "fp32": matmul_peak(torch.float32, args.matmul_size, args.peak_seconds)}
    record = {
        "config": args.config, "model": config.model, "overrides": parse_sets(args.set),
        "torch_compile": args.compile,
        "threads": thread_count or torch.get_num_threads(), "steps": args.steps,
        "warmup": args.warmup, "max_seq_length": config.max_seq_length,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_avg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "params": dataclasses.asdict(Shape.of(config)),
        "pairs": {kind: min(len(rows), args.max_pairs) for kind, rows in kinds.items()},
        "peak_first": first, "peak_last": last, "runs": runs, "loss_curves": curves,
    }
    text = json.dumps(record, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
