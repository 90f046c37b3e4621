"""Glue for ``compare``: run an experiment with real systems, the semantic and judge passes,
and the rating round trip on a finished run."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compare.config import ExperimentConfig
from compare.judge import judge_samples
from compare.rating import KEY_FILE, agreement, export_sheet, fold_ratings, read_sheet
from compare.report import render
from compare.rundir import Sample, read_samples, require_finished, update_results
from compare.runner import refresh_results, run_experiment
from compare.systems import SystemFactory
from core.errors import UserError
from core.questions import read_questions
from models.generation import Generator

log = logging.getLogger(__name__)


def semantic_scorer(embedder_name: str) -> Callable[[list[Sample]], None]:
    """A pass adding ``semantic_sim`` (max cosine to a reference) to every open answer."""

    def score(samples: list[Sample]) -> None:
        from ingest.embedding import get_embedder

        todo = [s for s in samples if s.choice is None and s.output.strip()]
        if not todo:
            return
        embedder = get_embedder(embedder_name)
        refs = sorted({r for s in todo for r in s.references})
        # symmetric similarity: both sides get the query prompt (e5's advice for such tasks)
        ref_vecs = dict(zip(refs, embedder.embed_queries(refs), strict=True))
        outs = embedder.embed_queries([s.output for s in todo])
        for s, vec in zip(todo, outs, strict=True):
            s.scores["semantic_sim"] = float(max(np.dot(vec, ref_vecs[r]) for r in s.references))

    return score


def judge_scorer(judge: Generator, label: str, columns: list[str],
                 results_extra: dict[str, Any], same_as: list[str] | None = None,
                 pairwise: bool = True) -> Callable[[list[Sample]], None]:
    """A pass adding the rubric scores, pairwise A/B verdicts for every column pair, and the
    judge's agreement with the reference-based answer accuracy (``results["judge"]``)."""

    def score(samples: list[Sample]) -> None:
        results_extra["judge"] = judge_samples(samples, judge, label, columns,
                                               same_as=same_as or (), pairwise=pairwise)

    return score


def run(cfg: ExperimentConfig, out: Path, progress: bool = True) -> Path:
    """Run the experiment with the real systems; returns the run dir."""
    read_questions(cfg.questions, require_answers=True)  # every bad line, before any work
    factory = SystemFactory(cfg, progress=progress)
    extra: dict[str, Any] = {}
    scorers = [semantic_scorer(factory.embedder_name())]
    if cfg.judge:
        from compare.runner import columns_for

        columns = [c.label for c in columns_for(cfg)]
        judge = factory.judge_generator(cfg.judge)
        scorers.append(judge_scorer(judge, cfg.judge, columns, extra, factory.judge_same_as,
                                    cfg.judge_pairwise))
    try:
        run_dir = run_experiment(cfg, out, factory.build, scorers, progress=progress,
                                 answered=lambda: factory.release_models(keep=cfg.judge),
                                 before_answers=factory.prefetch_retrieval)
    finally:
        factory.close()
    if extra:
        _merge_results(run_dir, extra)
    return run_dir


def _merge_results(run_dir: Path, extra: dict[str, Any]) -> None:
    update_results(run_dir, extra)
    render(run_dir)


def export_ratings(run_dir: Path, sheet: Path) -> int:
    """Write the blind rating sheet for a finished run."""
    require_finished(run_dir)
    return export_sheet(read_samples(run_dir), run_dir, sheet)


def import_ratings(run_dir: Path, sheet: Path) -> str:
    """Fold a filled sheet into the run's samples and results; returns a one-line summary."""
    require_finished(run_dir)
    key_path = run_dir / KEY_FILE
    if not key_path.is_file():
        raise UserError(f"{run_dir} has no {KEY_FILE}: export a sheet first (--export)")
    key = json.loads(key_path.read_text(encoding="utf-8"))
    samples = read_samples(run_dir)
    n = fold_ratings(samples, read_sheet(sheet, key), key)
    agree = agreement(samples)
    refresh_results(run_dir, samples)
    summary = (f"{n} rated answers folded in; agreement with the judge: "
               + (", ".join(f"{c}: rho={a['spearman']:.2f}, kappa={a['kappa_quadratic']:.2f}"
                            for c, a in agree.items()) or "no judge scores to compare"))
    _merge_results(run_dir, {"human": {"n": n, "agreement": agree, "summary": summary}})
    return summary
