"""From per-sample scores to the numbers of ``results.json``: CIs, paired tests, tags, cost."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import numpy as np

from compare.metrics import DEFAULT_METRICS, METRICS
from compare.rundir import Sample
from compare.stats import bootstrap_ci, paired_compare, verdict

REPORT_ORDER = (*DEFAULT_METRICS, "semantic_sim",
                *(f"{who}_{c}" for who in ("judge", "human")
                  for c in ("overall", "accuracy", "relevance", "coherence",
                            "contextual_understanding")))
PAIRED_METRICS = ("exact_match", "f1", "contains", "mc_accuracy", "refusal",
                  "language_fidelity", "semantic_sim", "judge_overall", "human_overall")


def _scores(samples: list[Sample], metric: str) -> dict[str, dict[str, float]]:
    """column -> question id -> score."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for s in samples:
        if metric in s.scores:
            out[s.column][s.question_id] = float(s.scores[metric])
    return out


def _metric_names(samples: list[Sample]) -> list[str]:
    seen: dict[str, None] = {}
    for s in samples:
        seen.update(dict.fromkeys(s.scores))
    order = {name: i for i, name in enumerate(REPORT_ORDER)}
    return sorted(seen, key=lambda m: (order.get(m, len(order)), m))


def metric_table(samples: list[Sample], seed: int = 0) -> dict[str, dict[str, Any]]:
    """metric -> column -> mean with 95% CI."""
    table: dict[str, dict[str, Any]] = {}
    for metric in _metric_names(samples):
        by_col = _scores(samples, metric)
        table[metric] = {col: vars(bootstrap_ci(list(v.values()), seed=seed))
                         for col, v in by_col.items()}
    return table


def tag_table(samples: list[Sample], seed: int = 0) -> dict[str, dict[str, Any]]:
    """tag -> metric -> column -> mean with CI (every metric broken down per tag)."""
    tags = sorted({t for s in samples for t in s.tags})
    return {tag: metric_table([s for s in samples if tag in s.tags], seed)
            for tag in tags}


def _direction(metric: str) -> tuple[bool, bool]:
    if metric in METRICS:
        m = METRICS.get(metric)
        return m.higher_is_better, m.binary
    return True, False


def paired_table(samples: list[Sample], columns: list[str], seed: int = 0
                 ) -> list[dict[str, Any]]:
    """Every pair of columns on every paired metric, on the questions both answered."""
    rows = []
    for metric in PAIRED_METRICS:
        by_col = _scores(samples, metric)
        hib, binary = _direction(metric)
        for a, b in itertools.combinations([c for c in columns if c in by_col], 2):
            common = sorted(set(by_col[a]) & set(by_col[b]))
            if len(common) < 2:
                continue
            res = paired_compare(metric, a, [by_col[a][q] for q in common], b,
                                 [by_col[b][q] for q in common], binary, hib, seed)
            rows.append({**res.as_dict(), "verdict": verdict(res, higher_is_better=hib)})
    return rows


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


def summarize(samples: list[Sample], columns: list[str],
              peaks: dict[str, dict[str, float | None]], seed: int = 0) -> dict[str, Any]:
    """The statistical body of ``results.json``."""
    metrics = metric_table(samples, seed)
    paired = paired_table(samples, columns, seed)
    return {
        "columns": columns,
        "n_questions": len({s.question_id for s in samples}),
        "metrics": metrics,
        "higher_is_better": {m: _direction(m)[0] for m in metrics},
        "by_tag": tag_table(samples, seed),
        "paired": paired,
        "verdicts": [p["verdict"] for p in paired if p["metric"] in ("exact_match", "f1",
                                                                      "mc_accuracy")],
        "latency": cost_table(samples, peaks),
    }
