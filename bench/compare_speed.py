"""compare's two benchmarks, each measured in one run of this script.

1. Cached re-run vs first run: ``compare run`` of the default questions (open + multiple choice)
   with a fresh generation cache, then the same experiment again (a new run dir, every
   generation from the cache). Goal: the re-run takes <= 5% of the first run's wall time.
2. Batched vs one-at-a-time answering: the same questions answered by one system (``rag`` when
   the default store exists, else ``base``) with batch size 8 and with batch size 1, on one
   loaded model, each pass with an empty cache. Reported as answers/s and generated tokens/s.

    .venv/bin/python bench/compare_speed.py                       # default model, systems base,rag
    .venv/bin/python bench/compare_speed.py --systems base --limit 16 --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compare.config import ExperimentConfig
from core.paths import default_questions, default_store_dir

MC_QUESTIONS = default_questions().with_name("multiple_choice.jsonl")


def experiment(args: argparse.Namespace, cache: Path, **over: Any) -> ExperimentConfig:
    """The default experiment restricted to the benchmark's systems and model."""
    fields = {"questions": (str(default_questions()), str(MC_QUESTIONS)),
              "systems": tuple(args.systems.split(",")), "models": (args.model,),
              "max_new_tokens": args.max_new_tokens, "limit": args.limit, "cache": str(cache)}
    return ExperimentConfig(**{**fields, **over})


def cached_rerun(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Wall time of a first run and of the same run again (served from the cache)."""
    from compare.experiment import run

    cfg = experiment(args, tmp / "generations.sqlite")
    times, dirs = [], []
    for _ in range(2):
        start = time.perf_counter()
        dirs.append(run(cfg, tmp / "runs" / "bench", progress=False))
        times.append(time.perf_counter() - start)
    results = [json.loads((d / "results.json").read_text()) for d in dirs]
    cached = [sum(c["cached"] for c in r["latency"].values()) for r in results]
    answers = sum(c["n"] for c in results[0]["latency"].values())
    return {"answers": answers, "first_s": round(times[0], 1), "rerun_s": round(times[1], 1),
            "cached_answers": cached, "ratio": round(times[1] / times[0], 4),
            "same_outputs": _outputs(dirs[0]) == _outputs(dirs[1])}


def _outputs(run_dir: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted((r["column"], r["question_id"], r["output"]) for r in rows)


def answering_pass(system: Any, questions: list[Any], batch_size: int) -> dict[str, Any]:
    """Answer every question ``batch_size`` at a time, as the runner does."""
    system.generator.batch_size = batch_size
    system.generator.inner.slot.set_batch_size(batch_size)
    start = time.perf_counter()
    answers = []
    for i in range(0, len(questions), batch_size):
        answers += system.answer(questions[i:i + batch_size])
    seconds = time.perf_counter() - start
    tokens = sum(a.completion_tokens for a in answers)
    return {"batch_size": batch_size, "answers": len(answers), "seconds": round(seconds, 1),
            "answers_per_s": round(len(answers) / seconds, 3),
            "tokens_per_s": round(tokens / seconds, 2), "outputs": [a.output for a in answers]}


def batched_vs_single(args: argparse.Namespace, tmp: Path, n: int) -> dict[str, Any]:
    """One loaded model, an empty cache per pass, batch 8 then batch 1."""
    from compare.cache import GenerationCache
    from compare.runner import columns_for
    from compare.systems import SystemFactory
    from core.questions import read_questions

    name = "rag" if (default_store_dir() / "manifest.json").is_file() else "base"
    questions = [q for q in read_questions(default_questions(), require_answers=True)
                 if not q.is_multiple_choice][:n]
    cfg = experiment(args, tmp / "unused.sqlite", systems=(name,))
    passes = []
    factory = SystemFactory(cfg, progress=False)
    try:
        for batch_size, cache in ((8, "b8.sqlite"), (1, "b1.sqlite")):
            factory.cache = GenerationCache(tmp / cache)
            factory.forget_retrievals()
            system = factory.build(columns_for(cfg)[0], cfg)
            system.generator.inner.slot.load()
            passes.append(answering_pass(system, questions, batch_size))
    finally:
        factory.close()
    same = passes[0].pop("outputs") == passes[1].pop("outputs")
    return {"system": name, "questions": len(questions), "batched": passes[0],
            "one_at_a_time": passes[1], "same_outputs": same,
            "ratio": round(passes[0]["answers_per_s"] / passes[1]["answers_per_s"], 2)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--systems", default="base,rag")
    p.add_argument("--limit", type=int, default=None, help="first N questions (cached re-run)")
    p.add_argument("--batch-questions", type=int, default=16,
                   help="questions in the batched vs one-at-a-time passes")
    p.add_argument("--max-new-tokens", type=int, default=96)
    args = p.parse_args(argv)
    if "rag" in args.systems and not (default_store_dir() / "manifest.json").is_file():
        print("no default store: run `python -m demo` first, or --systems base",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = {"machine": f"{platform.machine()}, {platform.python_version()}",
                  "model": args.model, "systems": args.systems,
                  "cached_rerun": cached_rerun(args, Path(tmp)),
                  "batched_vs_single": batched_vs_single(args, Path(tmp), args.batch_questions)}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
