"""Report figures (matplotlib, Agg): the headline forest plot, metric bars with CIs, per-question
heatmap, latency.

Figures are ``matplotlib.figure.Figure`` objects saved straight to PNG (the Agg renderer), never
pyplot's: nothing here picks a global backend, at import or later, so a caller's own pyplot set-up
(a notebook's inline backend) is left as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from compare.rundir import Sample

BAR_METRICS = ("answer_accuracy", "exact_match", "f1", "contains", "rougeL",
               "language_fidelity", "refusal", "hit@k", "mc_accuracy")


def headline_cis(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """metric -> column -> CI of the headline metrics (``results["headline"]``; a run from
    before the headline: its primary metric's row of ``results["metrics"]``)."""
    head = results.get("headline") or {}
    if head.get("rows"):
        return {m: head["rows"][m] for m in head.get("metrics", head["rows"])
                if m in head["rows"]}
    primary = str(results.get("primary_metric"))
    return {primary: results["metrics"][primary]} if primary in results.get("metrics", {}) \
        else {}


def forest_plot(results: dict[str, Any], out: Path) -> Path | None:
    """The headline figure: each headline metric's mean per column with its 95% CI as a
    horizontal bar (one panel per metric, columns top to bottom in report order)."""
    rows = headline_cis(results)
    rows = {m: by_col for m, by_col in rows.items() if any(_finite(c) for c in by_col.values())}
    if not rows:
        return None
    columns = [c for c in results["columns"] if any(c in by_col for by_col in rows.values())]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(rows) + 1.2, 0.55 * len(columns) + 1.4))
    axes = fig.subplots(1, len(rows), sharey=True, squeeze=False)[0]
    y = np.arange(len(columns))[::-1]
    for ax, (metric, by_col) in zip(axes, rows.items(), strict=True):
        cis = {c: ci for c, ci in by_col.items() if _finite(ci)}
        for yi, col in zip(y, columns, strict=True):
            ci = cis.get(col)
            if ci is None:
                ax.text(0.02, yi, "n/a", va="center", transform=ax.get_yaxis_transform())
                continue
            err = [[max(ci["mean"] - ci["low"], 0.0)], [max(ci["high"] - ci["mean"], 0.0)]]
            ax.errorbar(ci["mean"], yi, xerr=err, fmt="o", color="#1f4e79", capsize=4)
            ax.annotate(f"{ci['mean']:.3f} (n={ci['n']})", (ci["mean"], yi),
                        textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        intervals = sorted({str(c["interval"]) for c in cis.values() if c.get("interval")})
        ax.set_title(f"{metric}" + (f" ({', '.join(intervals)} 95% CI)" if intervals else
                                    " (95% CI)"), fontsize=9)
        if all(c["low"] >= 0.0 and c["high"] <= 1.0 for c in cis.values()):
            ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.7, len(columns) - 0.3)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, columns)
    return _save(fig, out)


def _finite(ci: dict[str, Any] | None) -> bool:
    """Whether a CI cell has finite mean and bounds (an empty cell has none)."""
    if not ci:
        return False
    return all(isinstance(ci.get(k), (int, float)) and bool(np.isfinite(ci[k]))
               for k in ("mean", "low", "high"))


def metric_bars(results: dict[str, Any], out: Path) -> Path | None:
    """Grouped bars: one group per metric, one bar per column, 95% CI whiskers."""
    metrics = [m for m in BAR_METRICS if m in results["metrics"]]
    columns = results["columns"]
    if not metrics:
        return None
    fig, ax = _figure(max(6, 1.6 * len(metrics)), 4)
    width = 0.8 / max(len(columns), 1)
    for i, col in enumerate(columns):
        cis = [results["metrics"][m].get(col) for m in metrics]
        means = [c["mean"] if _finite(c) else np.nan for c in cis]
        errs = np.array([[max(c["mean"] - c["low"], 0), max(c["high"] - c["mean"], 0)]
                         if _finite(c) else [0, 0] for c in cis]).T
        ax.bar(np.arange(len(metrics)) + i * width, means, width, yerr=errs, capsize=3, label=col)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(columns) - 1) / 2, metrics, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean (95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, out)


def question_heatmap(samples: list[Sample], columns: list[str], metric: str,
                     out: Path) -> Path | None:
    """Questions × columns, coloured by one metric."""
    qids = sorted({s.question_id for s in samples if metric in s.scores})
    if not qids:
        return None
    grid = np.full((len(qids), len(columns)), np.nan)
    for s in samples:
        if metric in s.scores and s.column in columns:
            grid[qids.index(s.question_id), columns.index(s.column)] = s.scores[metric]
    fig, ax = _figure(2 + 1.2 * len(columns), 1 + 0.22 * len(qids))
    im = ax.imshow(grid, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=20)
    ax.set_yticks(range(len(qids)), qids, fontsize=6)
    ax.set_title(f"{metric} per question")
    fig.colorbar(im, ax=ax)
    return _save(fig, out)


def latency_bars(results: dict[str, Any], out: Path) -> Path | None:
    """Mean latency per answer for each column."""
    lat = results.get("latency", {})
    columns = [c for c in results["columns"] if c in lat]
    if not columns:
        return None
    fig, ax = _figure(max(4, 1.3 * len(columns)), 3)
    ax.bar(columns, [lat[c]["mean_s"] for c in columns], color="#4c72b0")
    ax.set_ylabel("seconds per answer (generation)")
    ax.tick_params(axis="x", rotation=20)
    return _save(fig, out)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure with one axes, outside pyplot (no backend chosen, nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)  # a PNG: rendered by Agg whatever pyplot's backend is
    return out


def make_plots(results: dict[str, Any], samples: list[Sample], plots_dir: Path
               ) -> dict[str, str]:
    """Write every figure into ``plots_dir``; returns ``name -> file name``."""
    primary = results.get("primary_metric")
    heat = primary if primary and any(primary in s.scores for s in samples) else "f1"
    made = {
        "headline": forest_plot(results, plots_dir / "headline.png"),
        "metrics": metric_bars(results, plots_dir / "metrics.png"),
        "heatmap": question_heatmap(samples, results["columns"], heat, plots_dir / "heatmap.png"),
        "latency": latency_bars(results, plots_dir / "latency.png"),
    }
    return {k: v.name for k, v in made.items() if v is not None}
