"""The whole pipeline on the embedded default, each step skipped when its output is up to date.

    python -m demo            # what `make demo` runs
    python -m demo --quiet    # no progress bars

1. models: materialize the default generator and embedder (once, into the model cache);
2. ingest the sample dump into the default store (skipped when the store holds this dump);
3. short-answer instruction pairs from the store, checked for overlap with every question file
   of the experiment (kept and reported: the report splits results into questions with and
   without an overlapping pair); skipped when store, questions and settings are unchanged
   (sha256s recorded beside the pairs);
4. train the ``cpu-demo`` adapter (skipped when it was trained on these pairs with this preset;
   an interrupted training resumes from its last checkpoint);
5. ``compare run`` the default experiment (``compare/experiments/default.yaml``: the default
   questions and the multiple-choice set, all four systems) into ``runs/demo``. Runs are never
   overwritten: a re-run lands in ``runs/demo-2`` …, with every generation from the cache, so
   no generator weights are even loaded.

It prints each step's wall time and, at the end, where the report is, how much training the
adapter had (steps, epochs, tokens) and the headline: each system's primary metric with its 95%
interval and the multiplicity-adjusted verdicts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compare.config import ExperimentConfig
from compare.rundir import read_results, run_dir_for
from core.cli import add_common_flags, run_cli, setup_logging
from core.config import config_dict
from core.errors import UserError
from core.hashing import sha256_file
from core.paths import (
    REPO_ROOT,
    cache_dir,
    default_adapter_dir,
    default_store_dir,
    sample_dump,
)

log = logging.getLogger(__name__)

TRAIN_PRESET = "cpu-demo"
DEMO_TEMPLATES = ("short",)  # the pairs' mix (finetune.templates): see demo_pairs_config
# What opening an unfinished or damaged store raises: ``UserError`` (no or corrupt manifest,
# missing files, a corrupt or short chunks.sqlite), sqlite3 errors the store does not wrap
# (opening the database), OSError (unreadable files), ValueError (a malformed manifest value).
# Anything else is a bug and propagates.
STORE_ERRORS = (UserError, sqlite3.DatabaseError, OSError, ValueError)


def pairs_path() -> Path:
    """Where the demo keeps its instruction pairs."""
    return cache_dir() / "pairs" / "sample.jsonl"


def step(name: str, fn: Callable[[], str], timings: dict[str, float]) -> None:
    """Run one step, print what it did and how long it took."""
    print(f"[{len(timings) + 1}/5] {name} ...", flush=True)
    start = time.perf_counter()
    outcome = fn()
    timings[name] = time.perf_counter() - start
    print(f"      {outcome} ({timings[name]:.1f} s)", flush=True)


def ensure_models(cfg: ExperimentConfig) -> str:
    """Materialize the experiment's generator(s) and the default embedder."""
    from models.embedders import resolve_embedder
    from models.loading import resolve
    from models.sources import DEFAULT_EMBEDDER

    for model in cfg.models:
        resolve(model)
    resolve_embedder(DEFAULT_EMBEDDER)
    return f"{', '.join(cfg.models)} and {DEFAULT_EMBEDDER} ready in {cache_dir() / 'models'}"


def store_is_current(store_dir: Path, dump: Path) -> bool:
    """True when ``store_dir`` is a finished store built from exactly ``dump``."""
    if not (store_dir / "manifest.json").is_file():
        return False
    from ingest.store import Store

    try:
        store = Store.open(store_dir)
    except STORE_ERRORS as exc:
        log.warning("the store %s cannot be opened (%s: %s); it will be rebuilt", store_dir,
                    type(exc).__name__, exc)
        return False
    try:
        return (store.manifest.get("source") or {}).get("sha256") == sha256_file(dump)
    finally:
        store.close()


def ensure_store(progress: bool) -> str:
    """Ingest the sample dump into the default store unless it is already there; an interrupted
    build resumes, a store of another dump is rebuilt."""
    from ingest.build import build_store
    from ingest.writer import store_state

    store_dir, dump = default_store_dir(), sample_dump()
    if store_is_current(store_dir, dump):
        return f"store {store_dir} is up to date (skipped)"
    state = store_state(store_dir)
    build_store(dump, store_dir, resume=state == "unfinished", overwrite=state == "finished",
                progress=progress)
    return f"ingested {dump.name} into {store_dir}"


def _pairs_inputs() -> dict[str, Any]:
    from ingest.store import Store

    store = Store.open(default_store_dir())
    try:
        store_sha = store.sha256()
    finally:
        store.close()
    return {"store_sha256": store_sha,
            "questions_sha256": {p.name: sha256_file(p) for p in demo_question_files()},
            "config": config_dict(demo_pairs_config())}


def demo_question_files() -> list[Path]:
    """Every question file the demo's experiment evaluates (open and multiple-choice): the
    training pairs are checked against all of them."""
    return [Path(q) for q in ExperimentConfig().questions]


def demo_pairs_config() -> Any:
    """The demo adapter's pairs: short answers (the bare value of a fact, 3 phrasings each),
    the shape the questions are asked in; overlapping pairs kept and reported."""
    from finetune.pairs import PairsConfig

    return PairsConfig(templates=DEMO_TEMPLATES)


def ensure_pairs(progress: bool) -> str:
    """Instruction pairs with the leakage filter, unless made from these very inputs."""
    from finetune.pairs import make_pairs

    out, inputs = pairs_path(), _pairs_inputs()
    stamp = out.with_suffix(".inputs.json")
    if out.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == inputs:
        return f"pairs {out} are up to date (skipped)"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = make_pairs(default_store_dir(), out, demo_pairs_config(),
                      questions=demo_question_files(), progress=progress)
    stamp.write_text(json.dumps(inputs, indent=1), encoding="utf-8")
    counts, leak = meta["counts"], meta.get("leakage") or {}
    kinds = ", ".join(f"{n} {k}" for k, n in (counts.get("by_kind") or {}).items())
    return (f"{counts['pairs']} pairs ({kinds}; {counts['train']} train, "
            f"{counts['validation']} validation); {leak.get('overlapping', 0)} overlap "
            f"{len(leak.get('by_question') or {})} evaluation questions ({leak.get('mode')} "
            f"mode: kept, reported apart) -> {out}")


def ensure_adapter(progress: bool) -> str:
    """Train the cpu-demo adapter unless it was trained on these pairs with this preset (in a
    child process, so the training's memory is not counted in the comparison's peaks)."""
    from finetune.config import train_config
    from models.adapters import read_manifest

    out, pairs, config = default_adapter_dir(), pairs_path(), train_config(TRAIN_PRESET)
    if (out / "manifest.json").is_file():
        manifest = read_manifest(out)
        if ((manifest.get("pairs") or {}).get("sha256") == sha256_file(pairs)
                and current_names(manifest.get("config")) == config_dict(config)):
            return f"adapter {out} is up to date (skipped)"
    from finetune.train import resumable

    resume = resumable(out)
    child("finetune.cli", ["train", "--config", TRAIN_PRESET, "--pairs", str(pairs), "--out",
                           str(out), "--resume" if resume else "--overwrite"], progress)
    t = read_manifest(out).get("training") or {}
    return (f"trained {t.get('global_step')} steps, loss {_num(t.get('first_loss'))} -> "
            f"{_num(t.get('last_loss'))} -> {out}")


def current_names(config: Any) -> Any:
    """A recorded training config with a bundled model's former name read as its current one
    (an adapter trained before the rename is still up to date: same weights)."""
    from models.bundled import BUNDLED

    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        return config
    return {**config, "model": BUNDLED.aliases.get(config["model"], config["model"])}


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def child(module: str, argv: list[str], progress: bool) -> None:
    """Run a stage's CLI in a child process (its output shows; a failure stops the demo)."""
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code, *argv, *([] if progress else ["--quiet"])]
    if subprocess.run(args, check=False).returncode != 0:
        raise UserError(f"`{module.split('.')[0]} {' '.join(argv)}` failed (see above); fix it "
                        "and re-run the demo: finished steps are skipped")


def run_compare(progress: bool, out: Path, holder: dict[str, Any]) -> str:
    """``compare run`` of the default experiment in a child process (clean memory figures);
    remembers the run dir in ``holder``."""
    run_dir = run_dir_for(out)
    child("compare.cli", ["run", "--out", str(run_dir)], progress)
    holder["run_dir"] = run_dir
    results = read_results(run_dir)
    cost = results["latency"]
    cached = sum(c["cached"] for c in cost.values())
    total = sum(c["n"] for c in cost.values())
    return f"{total} answers ({cached} from the generation cache) -> {run_dir}"


def summary(run_dir: Path) -> list[str]:
    """The headline: how much training the adapter had, each system's primary metric with its
    95% interval, and the adjusted verdicts (against base, and RAG against fine-tuning)."""
    results = read_results(run_dir)
    lines = [training_line(default_adapter_dir())]
    headline = results.get("headline") or {}
    for metric in headline.get("metrics") or []:
        for col, ci in (headline.get("rows") or {}).get(metric, {}).items():
            lines.append(f"{col:>14}: {metric} {ci['mean']:.3f} [{ci['low']:.3f}, "
                         f"{ci['high']:.3f}] (n={ci['n']}, {ci.get('interval', 'CI')})")
    lines += [f"- {v}" for v in headline.get("verdicts") or results.get("verdicts") or []]
    return lines


def training_line(adapter: Path) -> str:
    """"adapter: 40 steps, 0.26 epochs, 19,145 tokens of 560 pairs" from its manifest and log."""
    from compare.validity import training_amount
    from finetune.records import read_log
    from models.adapters import read_manifest

    if not (adapter / "manifest.json").is_file():
        return f"adapter {adapter}: no manifest"
    manifest = read_manifest(adapter)
    amount = training_amount(manifest, read_log(adapter / "training_log.jsonl"))
    epochs = amount.get("epochs")
    tokens = amount.get("tokens")
    return (f"adapter: {amount.get('steps')} steps"
            + (f", {epochs:.2f} epochs" if isinstance(epochs, (int, float)) else "")
            + (f", {tokens:,} tokens" if isinstance(tokens, int) else "")
            + f" of {amount.get('train_pairs')} training pairs "
            f"({', '.join(f'{n} {k}' for k, n in _pair_kinds(manifest).items())})")


def _pair_kinds(manifest: dict[str, Any]) -> dict[str, int]:
    meta = (manifest.get("pairs") or {}).get("meta") or {}
    return dict((meta.get("counts") or {}).get("by_kind") or {})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "demo",
                   help="run dir (a finished one is never overwritten: -2, -3 … are used)")
    add_common_flags(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(quiet=True, verbose=args.verbose)  # the steps print; library logs stay quiet
    progress = not args.quiet
    timings: dict[str, float] = {}
    holder: dict[str, Any] = {}
    cfg = ExperimentConfig()
    started = time.perf_counter()
    step("models", lambda: ensure_models(cfg), timings)
    step("ingest the sample dump", lambda: ensure_store(progress), timings)
    step("short-answer pairs (overlap checked)", lambda: ensure_pairs(progress), timings)
    step(f"train the {TRAIN_PRESET} adapter", lambda: ensure_adapter(progress), timings)
    step("compare base / rag / finetuned / rag+finetuned",
         lambda: run_compare(progress, args.out, holder), timings)
    run_dir, total = holder["run_dir"], time.perf_counter() - started
    (run_dir / "demo_timings.json").write_text(json.dumps(
        {"total_s": round(total, 1), **{k: round(v, 1) for k, v in timings.items()}}, indent=1))
    print(f"\ndone in {total:.0f} s. Report: {run_dir / 'report.html'} "
          f"(markdown: {run_dir / 'report.md'})")
    print("\n".join(summary(run_dir)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m demo``."""
    return run_cli(_main, argv)
