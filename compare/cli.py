"""``compare``: base vs RAG vs fine-tuned vs both, on the same questions, with paired statistics.

    compare run data/questions/brazil_history.jsonl                 # the embedded default
    compare run q.jsonl --systems base,rag --model smollm2-135m-instruct --out runs/quick
    compare run q.jsonl --config compare/experiments/two-models-two-decodings.yaml --out runs/grid
    compare run q.jsonl --judge qwen2.5-coder-1.5b-instruct    # or --judge NAME@http://host:8000/v1
    compare report runs/demo            # re-render report.md / report.html
    compare diff runs/demo runs/demo-2
    compare rate runs/demo --export sheet.csv    # blind sheet for human raters
    compare rate runs/demo --import sheet.csv    # fold scores back, agreement with the judge
    compare curve compare/experiments/curve-demo.yaml --out runs/curve   # accuracy vs training
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from compare.config import ExperimentConfig
from compare.rundir import read_results, require_finished
from core.cli import add_common_flags, run_cli, setup_logging
from core.config import load_config

log = logging.getLogger("compare")


def build_parser() -> argparse.ArgumentParser:
    """The command line's argument parser (the README test parses its examples with it)."""
    p = argparse.ArgumentParser(prog="compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="answer, score and report")
    run.add_argument("questions", nargs="*", type=Path, help="questions JSONL file(s)")
    run.add_argument("--config", type=Path, help="experiment YAML")
    run.add_argument("--systems", help="comma list of base,rag,finetuned,rag+finetuned")
    run.add_argument("--model", help="model name (bundled, local dir or hub id)")
    run.add_argument("--store", help="store dir for the RAG systems")
    run.add_argument("--adapter", help="adapter dir for the finetuned systems")
    run.add_argument("--retriever", choices=["dense", "bm25", "hybrid"])
    run.add_argument("-k", type=int, help="passages retrieved")
    run.add_argument("--dedup", choices=["page", "merge", "none"],
                     help="chunks of one page: best one (page), merged, or all (none)")
    run.add_argument("--rrf-k", type=int, help="hybrid: reciprocal rank fusion constant (60)")
    run.add_argument("--title-boost", action=argparse.BooleanOptionalAction, default=None,
                     help="hybrid: boost the pages a question names (default on)")
    run.add_argument("--reranker", help="local cross-encoder folder reranking the passages")
    run.add_argument("--context-tokens", type=int,
                     help="at most this many tokens of passages in a RAG prompt")
    run.add_argument("--out", type=Path, help="run dir (default runs/<timestamp>)")
    run.add_argument("--limit", type=int, help="only the first N questions")
    run.add_argument("--batch-size", type=int)
    run.add_argument("--reproducible", choices=("run", "prompt", "off"),
                     help="llama.cpp: what answering again reproduces. run (default): one "
                     "answer at a time, a fresh re-run answers the same; prompt: every prompt "
                     "read whole, an answer depends on its prompt alone (slower); off: "
                     "--batch-size answers in flight, greedy answers vary between runs")
    run.add_argument("--max-new-tokens", type=int)
    run.add_argument("--mc-mode", choices=["loglikelihood", "cloze", "generate"],
                     help="multiple choice: letter log-likelihood (lm-eval Belebele style, "
                          "default), option-text cloze (acc_norm), or a generated letter")
    run.add_argument("--mc-prompt", choices=["auto", "chat", "plain"],
                     help="multiple-choice contexts: the system's own chat prompt (auto, for a "
                          "chat model) or lm-eval's plain text")
    run.add_argument("--judge", help="LLM judge: a model name, NAME@URL on an OpenAI-compatible "
                     "server, or a bare URL (the one model it serves); cached by the model the "
                     "server reports; the report warns when it is a compared model and gives its "
                     "agreement with answer_accuracy (Spearman, Cohen's kappa)")
    run.add_argument("--judge-pairwise", action=argparse.BooleanOptionalAction, default=None,
                     help="with --judge: also A/B verdicts for every column pair (default on)")
    run.add_argument("--primary-metric", help="metric the verdicts are stated on (default auto: "
                     "answer_accuracy, or judge_correct with --judge)")
    run.add_argument("--multiplicity", choices=("holm", "bh"),
                     help="correction across the report's paired tests (default holm)")
    run.add_argument("--template", help="rag prompt template: short (default: short answers), "
                     "default, another name in rag/templates, or a YAML path")
    run.add_argument("--lang", help="answer language: auto (each question's own) or pt, en")
    run.add_argument("--cache", help="generation cache file (default: in the model cache dir)")
    run.add_argument("--base-url", help="OpenAI-compatible server answering for every system")
    run.add_argument("--load-in-4bit", action="store_true", default=None)
    run.add_argument("--backend", choices=("auto", "transformers", "llamacpp"),
                     help="what generates and scores multiple choice (default auto: llama.cpp "
                     "for a model that ships as GGUF, on a CPU; transformers elsewhere)")
    run.add_argument("--seed", type=int)
    rep = sub.add_parser("report", help="re-render a run's report")
    rep.add_argument("run", type=Path)
    diff = sub.add_parser("diff", help="compare two runs")
    diff.add_argument("run_a", type=Path)
    diff.add_argument("run_b", type=Path)
    rate = sub.add_parser("rate", help="human rating round trip")
    rate.add_argument("run", type=Path)
    group = rate.add_mutually_exclusive_group(required=True)
    group.add_argument("--export", type=Path, help="write a blind, shuffled CSV sheet")
    group.add_argument("--import", dest="import_", type=Path, help="read a filled sheet")
    for sp in (run, rep, diff, rate):
        add_common_flags(sp)
    _curve_parser(sub)
    return p


def _curve_parser(sub: argparse._SubParsersAction) -> None:
    curve = sub.add_parser(
        "curve", help="the knowledge-injection curve: the fine-tuned model at several epochs "
        "of one training run beside RAG at k=1..5, against training tokens and seconds",
        description="Train (or reuse) an adapter with snapshots, run one compare experiment per "
        "point (base, each snapshot, RAG at each k) and write curve.json, curve.md and "
        "curve.png with 95% CIs and paired tests. Re-run the same command to continue an "
        "interrupted curve: finished points are kept.")
    curve.add_argument("config", type=Path, help="curve YAML (compare/experiments/"
                       "curve-demo.yaml shows every setting)")
    curve.add_argument("--out", type=Path, required=True,
                       help="curve dir (the adapter, pairs, runs/ and curve.* go there)")
    curve.add_argument("--limit", type=int, help="only the first N questions (a quick look)")
    add_common_flags(curve)


def _config(args: argparse.Namespace) -> ExperimentConfig:
    overrides = {
        "questions": tuple(str(q) for q in args.questions) or None,
        "systems": tuple(args.systems.split(",")) if args.systems else None,
        "models": (args.model,) if args.model else None, "store": args.store,
        "adapters": {args.model or "*": args.adapter} if args.adapter else None,
        "retriever": args.retriever, "k": args.k, "limit": args.limit, "dedup": args.dedup,
        "rrf_k": args.rrf_k, "title_boost": args.title_boost, "reranker": args.reranker,
        "context_tokens": args.context_tokens,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "reproducible": args.reproducible,
        "mc_mode": args.mc_mode, "mc_prompt": args.mc_prompt, "judge": args.judge,
        "judge_pairwise": args.judge_pairwise,
        "base_url": args.base_url,
        "load_in_4bit": args.load_in_4bit, "backend": args.backend, "seed": args.seed,
        "template": args.template, "primary_metric": args.primary_metric,
        "multiplicity": args.multiplicity,
        "lang": args.lang, "cache": args.cache,
    }
    return canonical_models(load_config(ExperimentConfig, args.config, **overrides))


def canonical_models(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with bundled models' former names replaced by their current ones (a deprecation
    warning each), so that results, samples and provenance carry the true names."""
    from models.sources import canonical_model_name

    models = tuple(canonical_model_name(m) for m in cfg.models)
    adapters = {canonical_model_name(k): v for k, v in cfg.adapters.items()}
    if models == tuple(cfg.models) and adapters == dict(cfg.adapters):
        return cfg
    return dataclasses.replace(cfg, models=models, adapters=adapters)


def _run(args: argparse.Namespace) -> int:
    from compare.experiment import run

    cfg = _config(args)
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run(cfg, out, progress=not args.quiet)
    results = read_results(run_dir)
    for verdict in results["verdicts"]:
        print(f"- {verdict}")
    print(f"report: {run_dir / 'report.html'}  (markdown: {run_dir / 'report.md'})")
    return 0


def _curve(args: argparse.Namespace) -> int:
    from compare.curve import CURVE_JSON, CURVE_MD, CURVE_PNG, load_curve_config, run_curve
    from core.config import read_yaml

    experiment = None
    if args.limit is not None:
        experiment = {**(read_yaml(args.config).get("experiment") or {}), "limit": args.limit}
    cfg = load_curve_config(args.config, experiment=experiment)
    record = run_curve(cfg, args.out, say=None if args.quiet else print,
                       progress=not args.quiet)
    for test in record["tests"]:
        print(f"- {test['verdict']}")
    print(f"curve: {args.out / CURVE_MD}  (table and tests; figure {args.out / CURVE_PNG}, "
          f"data {args.out / CURVE_JSON})")
    return 0


def _rate(args: argparse.Namespace) -> int:
    from compare.experiment import export_ratings, import_ratings

    if args.export:
        n = export_ratings(args.run, args.export)
        print(f"wrote {n} blind rows to {args.export}; fill the 1–5 columns, then "
              f"`compare rate {args.run} --import {args.export}`")
        return 0
    summary = import_ratings(args.run, args.import_)
    print(summary)
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if args.cmd == "run":
        return _run(args)
    if args.cmd == "rate":
        return _rate(args)
    if args.cmd == "curve":
        return _curve(args)
    from compare.report import diff_runs, render

    for run in (args.run,) if args.cmd == "report" else (args.run_a, args.run_b):
        require_finished(run)
    if args.cmd == "report":
        md, html = render(args.run)
        print(f"report: {html}  (markdown: {md})")
    else:
        print(diff_runs(args.run_a, args.run_b))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
