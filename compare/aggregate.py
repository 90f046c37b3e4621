"""From per-sample scores to the numbers of ``results.json``: intervals, paired tests adjusted
for multiplicity, the headline, the choice distribution, tags and cost.

A metric that does not apply to a sample (a metric function returned None) is absent from its
``scores``; a column with no applicable sample for a metric is absent from that metric's cells,
and no paired test is made where one of the two columns has none.
"""

from __future__ import annotations

import itertools
import string
from collections import defaultdict
from typing import Any

import numpy as np

from compare.metrics import DEFAULT_METRICS, METRICS
from compare.rundir import Sample
from compare.stats import CORRECTIONS, adjust_results, mean_ci, paired_compare, verdict

DEFAULT_PRIMARY = "answer_accuracy"
REPORT_ORDER = tuple(dict.fromkeys((
    "answer_accuracy", *DEFAULT_METRICS, "mc_unparsed", "semantic_sim", "judge_correct",
    *(f"{who}_{c}" for who in ("judge", "human")
      for c in ("overall", "accuracy", "relevance", "coherence", "contextual_understanding")))))
PAIRED_METRICS = ("answer_accuracy", "exact_match", "f1", "contains", "mc_accuracy",
                  "mc_unparsed", "refusal", "language_fidelity", "semantic_sim",
                  "judge_correct", "judge_overall", "human_overall")
# (higher_is_better, binary) of scores that are not registered metrics: none today (every
# score name is in compare.metrics.METRICS); unknown names are read as continuous, higher better
_UNREGISTERED: dict[str, tuple[bool, bool]] = {}
# systems of a model/decoding group, treatment first: paired rows are oriented this way
_SYSTEM_RANK = {"rag+finetuned": 0, "rag": 1, "finetuned": 2, "base": 3}
_HEADLINE_PAIRS = (("rag", "finetuned"), ("rag+finetuned", "rag"),
                   ("rag+finetuned", "finetuned"))


def _scores(samples: list[Sample], metric: str) -> dict[str, dict[str, float]]:
    """column -> question id -> score (samples where the metric does not apply left out).

    ``mc_unparsed`` is defined on every multiple-choice sample: a sample without the key
    counts 1 when no option was read (``choice`` None) and 0 otherwise."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for s in samples:
        value = s.scores.get(metric)
        if value is None and metric == "mc_unparsed" and _is_multiple_choice(s):
            value = float(s.choice is None)
        if value is not None:
            out[s.column][s.question_id] = float(value)
    return out


def _metric_names(samples: list[Sample]) -> list[str]:
    seen: dict[str, None] = {}
    for s in samples:
        seen.update(dict.fromkeys(k for k, v in s.scores.items() if v is not None))
    order = {name: i for i, name in enumerate(REPORT_ORDER)}
    return sorted(seen, key=lambda m: (order.get(m, len(order)), m))


def _direction(metric: str) -> tuple[bool, bool]:
    """(higher_is_better, binary) of a score name."""
    if metric in METRICS:
        m = METRICS.get(metric)
        return m.higher_is_better, m.binary
    return _UNREGISTERED.get(metric, (True, False))


def metric_table(samples: list[Sample], seed: int = 0) -> dict[str, dict[str, Any]]:
    """metric -> column -> mean with its 95% interval and the cell's own n (Wilson for binary
    metrics, bootstrap otherwise); columns without an applicable sample are absent."""
    table: dict[str, dict[str, Any]] = {}
    for metric in _metric_names(samples):
        binary = _direction(metric)[1]
        table[metric] = {col: mean_ci(list(v.values()), binary, seed).as_dict()
                         for col, v in _scores(samples, metric).items() if v}
    return table


def tag_table(samples: list[Sample], seed: int = 0) -> dict[str, dict[str, Any]]:
    """tag -> metric -> column -> mean with CI (every metric broken down per tag)."""
    tags = sorted({t for s in samples for t in s.tags})
    return {tag: metric_table([s for s in samples if tag in s.tags], seed)
            for tag in tags}


def _split(column: str) -> tuple[str, str]:
    """(model/decoding prefix, system) of a column label."""
    prefix, _, system = column.rpartition("/")
    return prefix, system


def _orient(a: str, b: str) -> tuple[str, str]:
    """The pair with the treatment first (rag+finetuned, rag, finetuned, base) when both are
    known systems of the same model/decoding; else in column order."""
    (pa, sa), (pb, sb) = _split(a), _split(b)
    if pa == pb and sa in _SYSTEM_RANK and sb in _SYSTEM_RANK \
            and _SYSTEM_RANK[sb] < _SYSTEM_RANK[sa]:
        return b, a
    return a, b


def _paired_metrics(primary: str) -> list[str]:
    return list(dict.fromkeys((primary, *PAIRED_METRICS)))


def paired_table(samples: list[Sample], columns: list[str], seed: int = 0,
                 primary: str = DEFAULT_PRIMARY, correction: str = "holm",
                 alpha: float = 0.05) -> list[dict[str, Any]]:
    """Every pair of columns on every paired metric, on the questions both answered; all the
    tests form one family, adjusted with ``correction``; verdicts use the adjusted p."""
    results = []
    for metric in _paired_metrics(primary):
        by_col = _scores(samples, metric)
        hib, binary = _direction(metric)
        present = [c for c in columns if by_col.get(c)]
        for a, b in (_orient(x, y) for x, y in itertools.combinations(present, 2)):
            common = sorted(set(by_col[a]) & set(by_col[b]))
            if len(common) < 2:
                continue
            results.append(paired_compare(metric, a, [by_col[a][q] for q in common], b,
                                          [by_col[b][q] for q in common], binary, hib, seed))
    return [{**res.as_dict(),
             "verdict": verdict(res, alpha=alpha, higher_is_better=_direction(res.metric)[0])}
            for res in adjust_results(results, correction)]


def headline_pairs(columns: list[str]) -> list[tuple[str, str]]:
    """The comparisons a report leads with, per model/decoding group: every other system vs
    base, rag vs finetuned, rag+finetuned vs rag, rag+finetuned vs finetuned (those present)."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for col in columns:
        prefix, system = _split(col)
        groups[prefix][system] = col
    pairs: list[tuple[str, str]] = []
    for systems in groups.values():
        if "base" in systems:
            pairs += [(col, systems["base"]) for s, col in systems.items() if s != "base"]
        pairs += [(systems[x], systems[y]) for x, y in _HEADLINE_PAIRS
                  if x in systems and y in systems]
    return list(dict.fromkeys(pairs))


def headline(metrics: dict[str, dict[str, Any]], paired: list[dict[str, Any]],
             columns: list[str], primary: str) -> dict[str, Any]:
    """The headline: the primary metric (and mc_accuracy) per column with intervals, and the
    headline comparisons with their verdicts (tests that were not testable state none)."""
    notes = []
    names = [m for m in dict.fromkeys((primary, "mc_accuracy")) if metrics.get(m)]
    if primary not in names:
        notes.append(f"The primary metric {primary} applies to no question of this run (e.g. "
                     "every reference is a sentence, or every question is multiple choice), "
                     "so no verdict is stated on it.")
    by_key = {(p["metric"], p["a"], p["b"]): p for p in paired}
    comparisons = []
    for metric in names:
        for a, b in headline_pairs(columns):
            row = by_key.get((metric, a, b)) or by_key.get((metric, b, a))
            if row is not None:
                comparisons.append(row)
    untestable = [p for p in comparisons if not p["testable"]]
    if untestable:
        notes.append(f"{len(untestable)} headline comparison(s) not testable: both systems "
                     "score the same constant on every question.")
    verdicts = [p["verdict"] for p in comparisons if p["testable"]]
    return {"metrics": names, "rows": {m: metrics[m] for m in names},
            "comparisons": comparisons, "verdicts": verdicts,
            "note": " ".join(notes) or None}


def _is_multiple_choice(s: Sample) -> bool:
    return "mc_accuracy" in s.scores or s.choice_scores is not None or "mc_unparsed" in s.scores


def choice_distribution(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """column -> option letter (A, B, … by index) -> how often it was picked on the multiple-
    choice questions, with "unparsed" for replies no option could be read from."""
    mc = [s for s in samples if _is_multiple_choice(s)]
    if not mc:
        return {}
    n_options = max([len(s.choice_scores or []) for s in mc]
                    + [s.choice + 1 for s in mc if s.choice is not None] + [0])
    letters = [_letter(i) for i in range(n_options)]
    out: dict[str, dict[str, int]] = {}
    for s in mc:
        counts = out.setdefault(s.column, {**dict.fromkeys(letters, 0), "unparsed": 0})
        counts["unparsed" if s.choice is None else _letter(s.choice)] += 1
    return out


def _letter(i: int) -> str:
    letters = string.ascii_uppercase
    return letters[i] if i < len(letters) else f"option {i + 1}"


def cost_table(samples: list[Sample], peaks: dict[str, dict[str, float | None]]
               ) -> dict[str, Any]:
    """Latency, tokens and peak memory per column."""
    out = {}
    for col in sorted({s.column for s in samples}):
        rows = [s for s in samples if s.column == col]
        lat = np.array([s.latency_s for s in rows], dtype=float)
        tokens = int(sum(s.completion_tokens or 0 for s in rows))
        fresh = float(sum(s.latency_s for s in rows if not s.cached))
        out[col] = {"n": len(rows), "mean_s": float(lat.mean()),
                    "p95_s": float(np.percentile(lat, 95)),
                    "completion_tokens": tokens, "cached": sum(bool(s.cached) for s in rows),
                    "tokens_per_s": tokens / fresh if fresh > 0 else None,
                    "peak_rss_mb": (peaks.get(col) or {}).get("rss_mb"),
                    "peak_gpu_mb": (peaks.get(col) or {}).get("gpu_mb")}
    return out


def resolve_primary(primary: str, samples: list[Sample]) -> str:
    """``"auto"`` -> judge_correct when the samples carry judge scores, else answer_accuracy."""
    if primary != "auto":
        return primary
    judged = any(s.scores.get("judge_correct") is not None for s in samples)
    return "judge_correct" if judged else DEFAULT_PRIMARY


def summarize(samples: list[Sample], columns: list[str],
              peaks: dict[str, dict[str, float | None]], seed: int = 0,
              primary: str = DEFAULT_PRIMARY, correction: str = "holm",
              alpha: float = 0.05) -> dict[str, Any]:
    """The statistical body of ``results.json`` (see the module doc and issue 11's contract):
    intervals per cell, every paired test adjusted as one family, the headline on the primary
    metric, the choice distribution, tags and cost."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown multiplicity correction {correction!r}; use one of "
                         f"{', '.join(CORRECTIONS)}")
    primary = resolve_primary(primary, samples)
    metrics = metric_table(samples, seed)
    paired = paired_table(samples, columns, seed, primary, correction, alpha)
    head = headline(metrics, paired, columns, primary)
    return {
        "columns": columns,
        "n_questions": len({s.question_id for s in samples}),
        "primary_metric": primary,
        "multiplicity": {"method": correction,
                         "family_size": sum(p["p_adjusted"] is not None for p in paired),
                         "alpha": alpha},
        "metrics": metrics,
        "higher_is_better": {m: _direction(m)[0] for m in metrics},
        "by_tag": tag_table(samples, seed),
        "paired": paired,
        "headline": head,
        "verdicts": head["verdicts"],
        "choice_distribution": choice_distribution(samples),
        "latency": cost_table(samples, peaks),
    }
