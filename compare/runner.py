"""``compare run``: every column answers every question, samples are scored, results aggregated.

Runs are never overwritten: an existing finished run dir gets a ``-2``, ``-3`` … sibling; an
unfinished one (no ``results.json``, e.g. after Ctrl-C) is continued, and the generation cache
makes the continued run regenerate nothing it had already generated. The run dir's files are
read and written through ``compare.rundir``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from compare import provenance
from compare.aggregate import summarize
from compare.cache import COMMIT_BATCHES
from compare.config import ExperimentConfig
from compare.memory import PeakRSS
from compare.metrics import MetricInput, score_sample
from compare.protocol import System, SystemAnswer
from compare.report import render
from compare.rundir import (
    Sample,
    answered,
    append_samples,
    read_results,
    read_samples,
    run_dir_for,
    write_results,
    write_samples,
)
from core.config import config_dict, write_config
from core.errors import UserError
from core.questions import Question, read_questions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    """One report column: a system under one model and one decoding."""

    label: str
    system: str
    model: str
    decoding: dict[str, Any]


def columns_for(cfg: ExperimentConfig) -> list[Column]:
    """model × decoding × system, labelled as briefly as stays unambiguous."""
    cols = []
    for model in cfg.models:
        for dec in cfg.decodings:
            for system in cfg.systems:
                parts = [model] if len(cfg.models) > 1 else []
                if len(cfg.decodings) > 1:
                    parts.append(dec.get("name", dec.get("strategy", "greedy")))
                cols.append(Column("/".join([*parts, system]), system, model, dict(dec)))
    return cols


def check_resumable(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuse to continue an unfinished run that was started with another config."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    before = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    now = config_dict(cfg)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise UserError(f"{run_dir} is an unfinished run started with other settings "
                        f"({', '.join(changed)}); re-run with the same settings to continue "
                        "it, or pass another --out")


def score(answer: SystemAnswer, question: Question, uses_retrieval: bool) -> dict[str, float]:
    """All applicable metrics for one answer. Every multiple-choice answer passes its choice,
    None (a generated reply no option could be read from) included: it is scored wrong
    (``mc_accuracy`` 0) and counted (``mc_unparsed`` 1), not dropped."""
    extra = {"choice": answer.choice} if question.is_multiple_choice else {}
    titles = tuple(r.get("title", "") for r in answer.retrieved)
    return score_sample(MetricInput(answer.output, question, titles, uses_retrieval, extra))


def sample_record(col: Column, q: Question, ans: SystemAnswer, uses_retrieval: bool) -> Sample:
    """One line of samples.jsonl."""
    return Sample(
        column=col.label, system=col.system, model=col.model, decoding=col.decoding,
        question_id=q.id, question=q.question, references=list(q.answers), tags=list(q.tags),
        lang=q.lang, prompt=ans.prompt, retrieved=ans.retrieved, output=ans.output,
        choice=ans.choice, choice_scores=ans.choice_scores,
        scores=score(ans, q, uses_retrieval), latency_s=ans.latency_s,
        prompt_tokens=ans.prompt_tokens, completion_tokens=ans.completion_tokens,
        cached=ans.cached,
    )


def run_column(system: System, col: Column, questions: Sequence[Question], run_dir: Path,
               batch_size: int, progress: bool = True) -> dict[str, float | None]:
    """Answer the questions this column has not answered yet; append and flush the samples
    after every batch (Ctrl-C loses at most one batch); return the peak RSS and GPU MB."""
    done = answered(run_dir)
    todo = [q for q in questions if (col.label, q.id) not in done]
    bar = tqdm(total=len(todo), desc=col.label, unit="q", disable=not progress or not todo)
    with bar, PeakRSS() as peak:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            open_qs = [q for q in batch if not q.is_multiple_choice]
            mc_qs = [q for q in batch if q.is_multiple_choice]
            answers = (system.answer(open_qs) if open_qs else []) + (
                system.choose(mc_qs) if mc_qs else [])
            append_samples(run_dir, [sample_record(col, q, ans, system.uses_retrieval)
                                     for q, ans in zip(open_qs + mc_qs, answers, strict=True)])
            bar.update(len(batch))
    return {"rss_mb": peak.mb, "gpu_mb": peak.gpu_mb}


OVERLAP_TAGS = ("overlap:trained", "overlap:unseen")  # a training pair asks it with its answer


def overlap_tags(cfg: ExperimentConfig) -> dict[str, str]:
    """Question id -> ``overlap:trained`` when a training pair of the experiment's adapter(s)
    asks that question (a paraphrase, with its answer: ``finetune.leakage``), else
    ``overlap:unseen``; empty when no adapter is used or its pairs were not checked. Every
    column's samples carry the tag, so each system is reported on both subsets."""
    if not cfg.needs_adapter():
        return {}
    from finetune.leakage import overlapping_question_ids
    from models.adapters import read_manifest

    flagged: set[str] = set()
    checked = False
    for model in cfg.models:
        try:
            path = Path(cfg.adapter_for(model)).expanduser()
        except UserError:
            continue
        if not (path / "manifest.json").is_file():
            continue
        manifest = read_manifest(path)
        record = manifest.get("leakage") or {}
        checked = checked or bool(record.get("enabled") and "overlaps" in record)
        flagged |= set(overlapping_question_ids(manifest))
    if not checked:
        return {}
    questions = read_questions(cfg.questions, require_answers=True)
    return {q.id: OVERLAP_TAGS[0] if q.id in flagged else OVERLAP_TAGS[1] for q in questions}


def with_tags(questions: Sequence[Question], tags: dict[str, str]) -> list[Question]:
    """``questions`` with the tag each id maps to appended (others unchanged)."""
    return [dataclasses.replace(q, tags=(*q.tags, tags[q.id])) if q.id in tags else q
            for q in questions]


def run_experiment(cfg: ExperimentConfig, out: Path,
                   build_system: Callable[[Column, ExperimentConfig], System],
                   extra_scorers: Sequence[Callable[[list[Sample]], None]] = (),
                   progress: bool = True, answered: Callable[[], None] | None = None,
                   before_answers: Callable[[list[Question]], None] | None = None) -> Path:
    """Run every column, write samples/results/report into a run dir; return the dir.
    ``before_answers`` is called with the questions once every system is built, before the
    first answer (the factory retrieves every question's passages there); ``answered`` once
    every column is answered, before the scoring passes (the factory releases the generators'
    weights there)."""
    questions = read_questions(cfg.questions, require_answers=True)[: cfg.limit or None]
    questions = with_tags(questions, overlap_tags(cfg))
    run_dir = run_dir_for(out)
    check_resumable(run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir / "config.yaml")
    peaks, fingerprints, started = {}, {}, time.time()
    # every system is built before any answers: a missing adapter or store fails before the
    # first column's minutes are spent, and a model slot knows its adapter before llama.cpp
    # starts (it loads its LoRAs at start: an adapter first met in the third column restarted
    # it there, a second model load)
    systems = [(col, build_system(col, cfg)) for col in columns_for(cfg)]
    if before_answers is not None:
        before_answers(questions)
    for col, system in systems:
        log.info("column %s: %d questions", col.label, len(questions))
        fingerprints[col.label] = system.fingerprint()
        peaks[col.label] = run_column(system, col, questions, run_dir,
                                      cfg.batch_size * COMMIT_BATCHES,
                                      progress)
    if answered is not None:
        answered()
    samples = read_samples(run_dir)
    for scorer in extra_scorers:
        scorer(samples)
    write_samples(run_dir, samples)  # with any scores the passes added
    write_results(run_dir, results_for(cfg, run_dir, samples, peaks, fingerprints,
                                       time.time() - started))
    render(run_dir)
    return run_dir


def results_for(cfg: ExperimentConfig, run_dir: Path, samples: list[Sample],
                peaks: dict[str, dict[str, float | None]], fingerprints: dict[str, Any],
                wall_s: float) -> dict[str, Any]:
    """The content of results.json: aggregates, provenance and the config."""
    labels = [c.label for c in columns_for(cfg)]
    return {
        "title": cfg.title, "run_name": run_dir.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": wall_s, **summarize(samples, labels, peaks, cfg.seed, primary=cfg.primary(),
                                      correction=cfg.multiplicity),
        "provenance": {
            "git": provenance.git_state(), "versions": provenance.package_versions(),
            "environment": provenance.environment(), "seed": cfg.seed,
            "questions": provenance.files_sha256(list(cfg.questions)),
            "systems": fingerprints, "adapters": _adapters(fingerprints),
        },
        "config": config_dict(cfg),
    }


def refresh_results(run_dir: Path, samples: list[Sample]) -> dict[str, Any]:
    """Re-aggregate a finished run after scores were added to its samples (human ratings),
    keeping its provenance, config, peaks and creation time; returns the new results."""
    results = read_results(run_dir)
    write_samples(run_dir, samples)
    peaks = {c: {"rss_mb": v.get("peak_rss_mb"), "gpu_mb": v.get("peak_gpu_mb")}
             for c, v in results["latency"].items()}
    seed = results.get("provenance", {}).get("seed", 0)
    config = results.get("config") or {}
    primary = results.get("primary_metric") or config.get("primary_metric") or "auto"
    correction = (results.get("multiplicity") or {}).get("method") \
        or config.get("multiplicity") or "holm"
    results.update(summarize(samples, results["columns"], peaks, seed, primary=primary,
                             correction=correction))
    results["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_results(run_dir, results)
    return results


def _adapters(fingerprints: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for fp in fingerprints.values():
        adapter = fp.get("adapter")
        if adapter:
            out[adapter.get("path") or adapter.get("served")] = adapter
    return out
