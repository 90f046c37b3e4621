"""Run reports: ``report.md`` and a self-contained ``report.html`` from results + samples.

All model and Wikipedia text reaches the HTML through Jinja2 autoescaping; figures are embedded
as base64 data URIs, so the file can be mailed or attached to a paper's supplement as is.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jinja2

from compare.plots import make_plots
from compare.rundir import Sample, read_results, read_samples

TEMPLATES = Path(__file__).parent / "templates"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: dict[str, float] | None) -> str:
    if not ci:
        return "–"
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _md_cell(text: Any) -> str:
    """One Markdown table cell: no pipes, newlines or raw HTML from model or wiki text."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _score(sample: Sample) -> str:
    """The side-by-side score cell: F1 for an open answer, right/wrong for a multiple choice."""
    scores = sample.scores
    if "mc_accuracy" in scores:
        return "right" if scores["mc_accuracy"] else "wrong"
    return f"F1 {_fmt(scores.get('f1'))}"


def _tag_n(by_col: dict[str, Any]) -> str:
    ns = {ci["n"] for ci in by_col.values() if ci}
    return "/".join(str(n) for n in sorted(ns)) or "0"


def by_metric_then_tag(by_tag: dict[str, dict[str, Any]], metrics: list[str]
                       ) -> dict[str, dict[str, Any]]:
    """``by_tag`` (tag -> metric -> column) regrouped as metric -> tag -> column."""
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        rows = {tag: per[metric] for tag, per in by_tag.items() if metric in per}
        if rows:
            out[metric] = rows
    return out


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
    env.filters.update(ci=_ci, fmt=_fmt, md=_md_cell, score=_score, tag_n=_tag_n)
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


def render(run_dir: Path) -> tuple[Path, Path]:
    """(Re-)render plots, ``report.md`` and ``report.html`` of a run dir."""
    results, samples = read_results(run_dir), read_samples(run_dir)
    plots = make_plots(results, samples, run_dir / "plots")
    metric_names = list(results["metrics"])
    curves = _training_curves(results)
    context = {
        "r": results, "questions": per_question(samples), "plots": plots,
        "metric_names": metric_names, "curves": curves,
        "gpu": any(v.get("peak_gpu_mb") for v in results.get("latency", {}).values()),
        "by_tag": by_metric_then_tag(results.get("by_tag", {}), metric_names),
    }
    md = _env(False).get_template("report.md.j2").render(**context)
    images = _images(run_dir, plots, curves)
    html = _env(True).get_template("report.html.j2").render(images=images, **context)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(html, encoding="utf-8")
    return md_path, html_path


def diff_runs(a: Path, b: Path) -> str:
    """A Markdown table of metric means in run A vs run B for the columns they share, with a
    paired test (run B vs run A, on the questions both answered) for the headline metrics."""
    ra, sa, rb, sb = read_results(a), read_samples(a), read_results(b), read_samples(b)
    lines = [f"| column | metric | {a.name} | {b.name} | Δ (B−A) | paired test (B vs A) |",
             "|---|---|---|---|---|---|"]
    for metric, by_col in ra["metrics"].items():
        for col, ci in by_col.items():
            other = rb["metrics"].get(metric, {}).get(col)
            if other:
                test = _paired_across_runs(sa, sb, col, metric)
                lines.append(f"| {col} | {metric} | {ci['mean']:.3f} | {other['mean']:.3f} | "
                             f"{other['mean'] - ci['mean']:+.3f} | {test} |")
    if len(lines) == 2:
        return "The two runs share no (column, metric) pair."
    return "\n".join(lines)


def _paired_across_runs(sa: list[Sample], sb: list[Sample], col: str, metric: str) -> str:
    from compare.metrics import METRICS
    from compare.stats import paired_compare

    if metric not in ("exact_match", "f1", "contains", "mc_accuracy", "semantic_sim"):
        return "–"
    x = {s.question_id: s.scores[metric] for s in sa if s.column == col and metric in s.scores}
    y = {s.question_id: s.scores[metric] for s in sb if s.column == col and metric in s.scores}
    common = sorted(set(x) & set(y))
    if len(common) < 2:
        return "–"
    m = METRICS.get(metric)
    res = paired_compare(metric, "B", [y[q] for q in common], "A", [x[q] for q in common],
                         m.binary, m.higher_is_better)
    return f"{res.test} p={res.p_value:.3g} (n={res.n}, {res.wins}/{res.ties}/{res.losses})"
