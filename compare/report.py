"""Run reports: ``report.md`` and a self-contained ``report.html`` from results + samples.

Both lead with the answer: the headline table (the declared primary metric per column with its
CI, n and interval method, then the adjusted verdicts against base and between RAG and
fine-tuning) and one forest plot; the per-metric and per-pair detail, the multiple-choice
answer distribution, the judge, the computed threats to validity (``compare.validity``), the
per-tag breakdown (with the derived ``title:named`` / ``title:unnamed`` split), cost and the
answers side by side follow.

All model and Wikipedia text reaches the HTML through Jinja2 autoescaping and the Markdown
through ``_md_cell``; figures are embedded as base64 data URIs, so the file can be mailed or
attached to a paper's supplement as is.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from compare.plots import headline_cis, make_plots
from compare.rundir import Sample, read_results, read_samples
from compare.stats import format_p
from compare.validity import primary_metric, run_questions, threats_to_validity, title_split_tags
from core.questions import Question

TEMPLATES = Path(__file__).parent / "templates"
NA = "n/a"
ALPHA = 0.05
METHOD_NAMES = {"holm": "Holm–Bonferroni", "bh": "Benjamini–Hochberg"}
DIFF_METRICS = ("answer_accuracy", "judge_correct", "exact_match", "f1", "contains",
                "mc_accuracy", "semantic_sim")  # diff_runs' paired tests (besides the primary)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _has_ci(ci: dict[str, Any] | None) -> bool:
    return bool(ci) and isinstance(ci.get("mean"), (int, float)) and not math.isnan(  # type: ignore[union-attr]
        ci["mean"])  # type: ignore[index]


def _ci(ci: dict[str, Any] | None) -> str:
    """``mean [low, high]``; ``n/a`` where no sample had the metric."""
    if not _has_ci(ci):
        return NA
    assert ci is not None
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _ci_n(ci: dict[str, Any] | None, show_n: bool = True) -> str:
    """``_ci`` with the cell's n appended (where n differs across a row)."""
    return _ci(ci) + (f" (n={ci['n']})" if show_n and _has_ci(ci) and ci else "")


def _md_cell(text: Any) -> str:
    """One Markdown table cell: no pipes, newlines or raw HTML from model or wiki text."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _score(sample: Sample) -> str:
    """The side-by-side score cell: the primary metric (or F1) for an open answer, right/wrong
    (or unparsed) for a multiple choice."""
    scores = sample.scores
    if "mc_accuracy" in scores:
        if scores.get("mc_unparsed"):
            return "unparsed (wrong)"
        return "right" if scores["mc_accuracy"] else "wrong"
    if "answer_accuracy" in scores:
        return f"accuracy {_fmt(scores['answer_accuracy'], 0)} · F1 {_fmt(scores.get('f1'))}"
    return f"F1 {_fmt(scores.get('f1'))}"


def _tag_n(by_col: dict[str, Any]) -> str:
    ns = {ci["n"] for ci in by_col.values() if ci}
    return "/".join(str(n) for n in sorted(ns)) or "0"


def _p_raw(row: dict[str, Any]) -> str:
    """A paired row's raw p as printed (``compare.stats.format_p``: "≤ 1/(B+1)" at the floor)."""
    return format_p(row.get("p_value"), bool(row.get("p_floor")), row.get("n_resamples"))


def _p_adj(row: dict[str, Any]) -> str:
    """A paired row's adjusted p ("–" for a test outside the family, e.g. not testable); a
    bound ("≤") where the raw p was the test's floor, as in the verdicts."""
    p = row.get("p_adjusted")
    if p is None:
        return "–"
    return ("≤ " if row.get("p_floor") else "") + ("1" if p >= 1 else f"{p:.3g}")


def _significant(row: dict[str, Any], alpha: float = ALPHA) -> bool:
    """Significant on the adjusted p (the raw one for a run from before the adjustment)."""
    p = row.get("p_adjusted", row.get("p_value"))
    return p is not None and p < alpha


def by_metric_then_tag(by_tag: dict[str, dict[str, Any]], metrics: list[str]
                       ) -> dict[str, dict[str, Any]]:
    """``by_tag`` (tag -> metric -> column) regrouped as metric -> tag -> column."""
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        rows = {tag: per[metric] for tag, per in by_tag.items() if metric in per}
        if rows:
            out[metric] = rows
    return out


def title_split_table(samples: list[Sample], questions: Sequence[Question] | None,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """The derived tags ``title:named`` / ``title:unnamed`` (the question names its gold article
    or not) as ``by_tag`` rows: tag -> metric -> column -> CI, aggregated by
    ``compare.aggregate.tag_table`` like every other tag."""
    if not questions:
        return {}
    from compare.aggregate import tag_table

    split = title_split_tags(questions)
    tagged = [dataclasses.replace(s, tags=[split[s.question_id]]) for s in samples
              if s.question_id in split]
    return tag_table(tagged, seed=seed) if tagged else {}


def metric_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric for the detail table: its cells, the n when every cell shares it,
    each cell's n where they differ, and the interval method(s)."""
    rows = []
    for metric, by_col in results["metrics"].items():
        cis = [by_col.get(col) for col in results["columns"]]
        ns = {ci["n"] for ci in cis if ci is not None and _has_ci(ci)}
        uniform = len(ns) == 1
        intervals = sorted({str(ci["interval"]) for ci in cis if ci and ci.get("interval")})
        rows.append({"metric": metric,
                     "arrow": "↑" if results.get("higher_is_better", {}).get(metric, True)
                     else "↓",
                     "n": next(iter(ns)) if uniform else ("varies" if ns else NA),
                     "interval": ", ".join(intervals) or "bootstrap",
                     "cells": [_ci_n(ci, show_n=not uniform) for ci in cis]})
    return rows


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The headline block: metrics, CIs per column, the comparisons with their verdicts."""
    head = results.get("headline") or {}
    rows = headline_cis(results)
    return {"metrics": list(rows), "rows": rows, "note": head.get("note"),
            "comparisons": head.get("comparisons") or [],
            "verdicts": head.get("verdicts") or ([] if rows else results.get("verdicts", []))}


def multiplicity_line(results: dict[str, Any]) -> str:
    """One line: the declared primary metric and the multiplicity correction."""
    primary = primary_metric(results)
    mult = results.get("multiplicity")
    if isinstance(mult, dict):
        method = METHOD_NAMES.get(str(mult.get("method")), str(mult.get("method")))
        fix = (f"{method} over {mult.get('family_size')} paired tests, "
               f"α = {mult.get('alpha', ALPHA)}; verdicts use the adjusted p")
    else:
        fix = "none recorded (p-values unadjusted)"
    return f"Primary metric: {primary} (declared). Multiplicity correction: {fix}."


def choice_table(results: dict[str, Any], questions: Sequence[Question] | None
                 ) -> dict[str, Any] | None:
    """The multiple-choice answer distribution per column (letters, then unparsed), the most
    chosen letter's share, and the answer key's distribution when the questions are known."""
    dist = results.get("choice_distribution") or {}
    if not dist:
        return None
    letters = sorted({k for counts in dist.values() for k in counts if k != "unparsed"})
    key: dict[str, int] = {}
    for q in questions or ():
        if q.is_multiple_choice and q.answer_index is not None:
            letter = chr(ord("A") + q.answer_index)
            key[letter] = key.get(letter, 0) + 1
    letters = sorted(set(letters) | set(key))
    rows = []
    for col in [c for c in results["columns"] if c in dist] + [c for c in dist
                                                               if c not in results["columns"]]:
        counts = dist[col]
        total = sum(counts.values())
        top = max(letters, key=lambda k: counts.get(k, 0)) if letters else None
        rows.append({"column": col, "counts": [counts.get(k, 0) for k in letters],
                     "unparsed": counts.get("unparsed", 0), "n": total,
                     "top": f"{top} ({counts[top] / total:.0%})" if top and counts.get(top)
                     else "–"})
    key_row = None
    if key:
        total = sum(key.values())
        top = max(letters, key=lambda k: key.get(k, 0))
        key_row = {"column": "answer key", "counts": [key.get(k, 0) for k in letters],
                   "unparsed": "–", "n": total, "top": f"{top} ({key[top] / total:.0%})"}
    return {"letters": letters, "rows": rows, "key": key_row}


def judge_view(results: dict[str, Any]) -> dict[str, Any] | None:
    """The judge section's data, from ``results["judge"]`` (this shape or the former one)."""
    judge = results.get("judge")
    if not isinstance(judge, dict):
        return None
    pairwise = judge.get("pairwise") or []
    if isinstance(pairwise, dict):
        inner = pairwise.get("rows") or pairwise.get("pairs")
        pairwise = inner if isinstance(inner, list) else [
            v for v in pairwise.values() if isinstance(v, dict) and "a" in v]
    recorded = judge.get("rubric")
    rubric: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    identity = judge.get("identity")
    return {
        "model": str(judge.get("model") or "?"),
        "identity": json.dumps(identity, ensure_ascii=False, sort_keys=True)
        if isinstance(identity, (dict, list)) else (str(identity) if identity else ""),
        "same": list(judge.get("same_as_model_under_test") or []),
        "same_known": "same_as_model_under_test" in judge,
        "scored": rubric.get("scored"),
        "unparsed": rubric.get("unparsed", judge.get("failures")),
        "agreement": judge.get("agreement") if isinstance(judge.get("agreement"), dict) else {},
        "pairwise": [p for p in pairwise if isinstance(p, dict)],
    }


def per_question(samples: list[Sample]) -> list[dict[str, Any]]:
    """Samples grouped by question, in first-seen order, for the side-by-side table."""
    groups: dict[str, dict[str, Any]] = {}
    for s in samples:
        g = groups.setdefault(s.question_id, {"id": s.question_id, "question": s.question,
                                              "answers": s.references, "by_column": {}})
        g["by_column"][s.column] = s
    return list(groups.values())


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(ci=_ci, ci_n=_ci_n, fmt=_fmt, md=_md_cell, score=_score, tag_n=_tag_n,
                       p_raw=_p_raw, p_adj=_p_adj)
    env.tests.update(significant=_significant)
    return env


def _images(run_dir: Path, plots: dict[str, str], training: dict[str, str]) -> dict[str, str]:
    files = {k: run_dir / "plots" / v for k, v in plots.items()}
    files.update({k: Path(v) for k, v in training.items()})
    return {k: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
            for k, p in files.items() if p.is_file()}


def _training_curves(results: dict[str, Any]) -> dict[str, str]:
    curves = {}
    for adapter in results.get("provenance", {}).get("adapters", {}).values():
        for name in ("loss", "lr"):
            path = Path(adapter.get("path", "")) / f"{name}.png"
            if path.is_file():
                curves[f"train_{name}"] = str(path)
    return curves


def report_context(results: dict[str, Any], samples: list[Sample],
                   questions: list[Question] | None) -> dict[str, Any]:
    """Everything the two templates show, computed once (plots and images aside)."""
    metric_names = list(results["metrics"])
    seed = results.get("provenance", {}).get("seed", 0)
    by_tag = dict(results.get("by_tag", {}))
    for tag, per in title_split_table(samples, questions, seed).items():
        by_tag.setdefault(tag, per)
    alpha = (results.get("multiplicity") or {}).get("alpha", ALPHA)
    return {
        "r": results, "questions": per_question(samples), "metric_names": metric_names,
        "metric_rows": metric_rows(results), "headline": headline(results),
        "primary": primary_metric(results), "method_line": multiplicity_line(results),
        "alpha": alpha, "choices": choice_table(results, questions),
        "judge": judge_view(results), "human": results.get("human"),
        "threats": threats_to_validity(results, samples, questions),
        "gpu": any(v.get("peak_gpu_mb") for v in results.get("latency", {}).values()),
        "by_tag": by_metric_then_tag(by_tag, metric_names),
    }


def render(run_dir: Path) -> tuple[Path, Path]:
    """(Re-)render plots, ``report.md`` and ``report.html`` of a run dir."""
    results, samples = read_results(run_dir), read_samples(run_dir)
    plots = make_plots(results, samples, run_dir / "plots")
    curves = _training_curves(results)
    context = {**report_context(results, samples, run_questions(results)), "plots": plots,
               "curves": curves}
    md = _env(False).get_template("report.md.j2").render(**context)
    images = _images(run_dir, plots, curves)
    html = _env(True).get_template("report.html.j2").render(images=images, **context)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(html, encoding="utf-8")
    return md_path, html_path


def diff_runs(a: Path, b: Path) -> str:
    """A Markdown table of metric means in run A vs run B for the columns they share, with a
    paired test (run B vs run A, on the questions both answered) for the headline metrics.
    The p-values are raw (one test per row; not adjusted across the table)."""
    ra, sa, rb, sb = read_results(a), read_samples(a), read_results(b), read_samples(b)
    tested = {*DIFF_METRICS, primary_metric(ra), primary_metric(rb)}
    lines = [f"| column | metric | {a.name} | {b.name} | Δ (B−A) | paired test (B vs A) |",
             "|---|---|---|---|---|---|"]
    for metric, by_col in ra["metrics"].items():
        for col, ci in by_col.items():
            other = rb["metrics"].get(metric, {}).get(col)
            if other and _has_ci(ci) and _has_ci(other):
                test = _paired_across_runs(sa, sb, col, metric) if metric in tested else "–"
                lines.append(f"| {col} | {metric} | {ci['mean']:.3f} | {other['mean']:.3f} | "
                             f"{other['mean'] - ci['mean']:+.3f} | {test} |")
    if len(lines) == 2:
        return "The two runs share no (column, metric) pair."
    return "\n".join(lines)


def _paired_across_runs(sa: list[Sample], sb: list[Sample], col: str, metric: str) -> str:
    from compare.metrics import METRICS
    from compare.stats import paired_compare

    x = {s.question_id: s.scores[metric] for s in sa if s.column == col and metric in s.scores}
    y = {s.question_id: s.scores[metric] for s in sb if s.column == col and metric in s.scores}
    common = sorted(set(x) & set(y))
    if len(common) < 2:
        return "–"
    ya, xb = [y[q] for q in common], [x[q] for q in common]
    if metric in METRICS:
        binary, hib = METRICS.get(metric).binary, METRICS.get(metric).higher_is_better
    else:
        binary, hib = all(v in (0.0, 1.0) for v in (*ya, *xb)), True
    res = paired_compare(metric, "B", ya, "A", xb, binary, hib)
    p = format_p(res.p_value, res.p_floor, res.n_resamples)
    p = f"p {p}" if p[:1] in "≤<" else f"p={p}"
    return f"{res.test} {p} (n={res.n}, {res.wins}/{res.ties}/{res.losses})"
