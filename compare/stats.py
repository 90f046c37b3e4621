"""Statistics the report relies on: intervals, paired tests, multiplicity, verdict sentences.

Per system and metric: the mean with a 95% interval — Wilson's score interval for a proportion
(binary metrics: 0/58 still gets an upper bound), scipy's BCa bootstrap for a continuous mean
(percentile bootstrap where BCa is undefined, e.g. a constant sample; ``interval`` says which).

Between two systems on the same questions: McNemar's exact (binomial) test for binary scores, a
paired permutation test (scipy, random sign flips of the differences; the exact null when
``2**n`` flips are no more than the resamples) for continuous ones, and a scipy bootstrap CI of
the mean per-question difference. A p-value at the permutation test's resolution floor
``1/(B+1)`` is flagged (``p_floor``) and printed as a bound, never as a value.

Every paired test of a report is one family: p-values are adjusted with Holm–Bonferroni
(default) or Benjamini–Hochberg, and verdicts are stated on the adjusted p.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as sst

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
# multiplicity corrections: argument value -> the name verdict sentences print
CORRECTIONS = {"holm": "Holm", "bh": "BH"}
# test ids of PairedResult.test -> the name verdict sentences print
TEST_NAMES = {"mcnemar-exact": "McNemar exact", "paired-permutation": "permutation",
              "paired-permutation-exact": "exact permutation"}
_REL_TOL = 1e-9


@dataclass(frozen=True)
class MeanCI:
    """A mean with its 95% interval; ``interval`` names the method ("wilson",
    "bca-bootstrap", "percentile-bootstrap", or "none" for an empty sample)."""

    mean: float
    low: float
    high: float
    n: int
    interval: str = "percentile-bootstrap"

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-friendly form (the ci-dict of ``results.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class PermutationResult:
    """A paired permutation test: its p, how many sign flips it drew (all ``2**n`` when
    ``exact``), and whether p is the smallest value the test can produce (``p_floor``)."""

    p_value: float
    n_resamples: int
    exact: bool
    p_floor: bool


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of system A against system B on one metric.

    ``mean_diff`` and its interval are of A − B. A comparison is not ``testable`` when both
    systems score the same constant on every question: its ``p_value`` is 1 (no discordant
    pair), it is left out of the multiplicity family (``p_adjusted`` stays None) and its verdict
    says "not testable". ``p_adjusted`` is set by :func:`adjust_results` once the whole family
    of tests is known.
    """

    metric: str
    a: str
    b: str
    n: int
    mean_diff: float
    diff_low: float
    diff_high: float
    p_value: float
    test: str
    wins: int
    ties: int
    losses: int
    p_floor: bool = False
    n_resamples: int | None = None
    diff_interval: str = "percentile-bootstrap"
    testable: bool = True
    p_adjusted: float | None = None
    correction: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (a row of ``results.json``'s ``paired``)."""
        return asdict(self)


# ------------------------------------------------------------------------------ intervals


def wilson_ci(successes: int, n: int, confidence: float = CONFIDENCE) -> MeanCI:
    """Proportion ``successes/n`` with Wilson's score interval (scipy's ``binomtest``)."""
    if n <= 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0, "none")
    ci = sst.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                             method="wilson")
    return MeanCI(successes / n, float(ci.low), float(ci.high), int(n), "wilson")


def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int = 0,
                 confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> MeanCI:
    """Mean with scipy's BCa bootstrap interval; the percentile bootstrap where BCa is
    undefined (a constant sample, or one observation) — ``interval`` says which was used."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0, "none")
    mean = float(x.mean())
    if x.size == 1 or np.ptp(x) == 0:  # every resample equals the sample: BCa is undefined
        return MeanCI(mean, mean, mean, int(x.size), "percentile-bootstrap")
    for method, name in (("BCa", "bca-bootstrap"), ("percentile", "percentile-bootstrap")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns before returning NaN for BCa
            res = sst.bootstrap((x,), np.mean, n_resamples=n_resamples,
                                confidence_level=confidence, method=method,
                                rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return MeanCI(mean, low, high, int(x.size), name)
    raise ArithmeticError("bootstrap interval is undefined")  # pragma: no cover


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def mean_ci(values: Sequence[float] | np.ndarray, binary: bool, seed: int = 0,
            confidence: float = CONFIDENCE) -> MeanCI:
    """The interval a report shows for one cell: Wilson for a binary metric (0/1 scores),
    the bootstrap (:func:`bootstrap_ci`) otherwise."""
    x = np.asarray(values, dtype=float)
    if binary and x.size and _is_binary(x):
        return wilson_ci(int(x.sum()), int(x.size), confidence)
    return bootstrap_ci(x, seed=seed, confidence=confidence)


# ---------------------------------------------------------------------------- paired tests


def mcnemar_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Exact (binomial) McNemar p-value for paired binary outcomes (1 with no discordant pair)."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    only_a, only_b = int(np.sum(x & ~y)), int(np.sum(~x & y))
    if only_a + only_b == 0:
        return 1.0
    return float(sst.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _abs_mean(d: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.abs(np.mean(d, axis=axis))


def paired_permutation(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                       seed: int = 0, n_resamples: int = N_RESAMPLES) -> PermutationResult:
    """Two-sided paired permutation test of the mean difference (scipy, sign flips).

    The statistic is ``|mean(a − b)|``, so p counts the flips at least as extreme in either
    direction. With ``2**n <= n_resamples`` scipy enumerates every flip (the exact null, whose
    smallest p is ``2 / 2**(nonzero differences)``); otherwise it draws ``n_resamples`` and
    p >= ``1/(B+1)``, the resolution floor.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("paired samples must be non-empty 1-d sequences")
    exact = d.size < 63 and 2 ** d.size <= n_resamples
    res = sst.permutation_test((d,), _abs_mean, permutation_type="samples", vectorized=True,
                               n_resamples=n_resamples, alternative="greater",
                               rng=np.random.default_rng(seed))
    p = float(res.pvalue)
    if exact:
        nonzero = int(np.count_nonzero(d))
        floor = 2.0 / 2 ** nonzero if nonzero else 1.0
        return PermutationResult(p, 2 ** d.size, True, p < 1 and p <= floor * (1 + _REL_TOL))
    floor = 1.0 / (n_resamples + 1)
    return PermutationResult(p, n_resamples, False, p <= floor * (1 + _REL_TOL))


def paired_compare(metric: str, a_name: str, a: Sequence[float], b_name: str,
                   b: Sequence[float], binary: bool, higher_is_better: bool = True,
                   seed: int = 0, n_resamples: int = N_RESAMPLES) -> PairedResult:
    """Compare A and B question by question; wins count where A is better in the metric's
    sense. Two columns that score the same constant everywhere are not testable."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    d = x - y
    sign = 1 if higher_is_better else -1
    wins, ties, losses = (int(np.sum(sign * d > 0)), int(np.sum(d == 0)),
                          int(np.sum(sign * d < 0)))
    test = "mcnemar-exact" if binary else "paired-permutation"
    if x.size and np.ptp(x) == 0 and np.ptp(y) == 0 and x[0] == y[0]:
        return PairedResult(metric=metric, a=a_name, b=b_name, n=int(d.size), mean_diff=0.0,
                            diff_low=0.0, diff_high=0.0, p_value=1.0, test=test,
                            wins=wins, ties=ties, losses=losses, diff_interval="none",
                            testable=False)
    ci = bootstrap_ci(d, seed=seed, n_resamples=n_resamples)
    if binary:
        p, floor, resamples = mcnemar_p(x, y), False, None
    else:
        perm = paired_permutation(x, y, seed=seed, n_resamples=n_resamples)
        p, floor, resamples = perm.p_value, perm.p_floor, perm.n_resamples
        test = "paired-permutation-exact" if perm.exact else test
    return PairedResult(metric=metric, a=a_name, b=b_name, n=int(d.size), mean_diff=ci.mean,
                        diff_low=ci.low, diff_high=ci.high, p_value=p, test=test,
                        wins=wins, ties=ties, losses=losses, p_floor=floor,
                        n_resamples=resamples, diff_interval=ci.interval)


# ---------------------------------------------------------------------------- multiplicity


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Family-wise adjusted p-values, in the input order: ``"holm"`` (Holm–Bonferroni step-down,
    controls the family-wise error rate) or ``"bh"`` (Benjamini–Hochberg step-up, controls the
    false discovery rate). A hypothesis is rejected at level alpha when its adjusted p <= alpha."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown multiplicity correction {method!r}; use one of "
                         f"{', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        stepped = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        stepped = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in out]


def adjust_results(results: Sequence[PairedResult], method: str = "holm") -> list[PairedResult]:
    """The results with ``p_adjusted`` set, the testable ones forming one family (rows that
    are not testable keep ``p_adjusted`` None)."""
    idx = [i for i, r in enumerate(results) if r.testable]
    adjusted = adjust_pvalues([results[i].p_value for i in idx], method)
    out = list(results)
    for i, q in zip(idx, adjusted, strict=True):
        out[i] = replace(results[i], p_adjusted=q, correction=method)
    return out


# ------------------------------------------------------------------------------- sentences


def format_p(p: float | None, p_floor: bool = False, n_resamples: int | None = None) -> str:
    """A p-value for print: 3 significant digits; at a permutation test's resolution floor
    ``1/(B+1)`` the bound ``"≤ 0.0001 (1/10001)"``; at the smallest p of an exact null
    ``"0.00781 (smallest attainable)"``; "–" when there is none."""
    if p is None:
        return "–"
    if p_floor and n_resamples:
        if abs(p * (n_resamples + 1) - 1) < 1e-6:
            return f"≤ {p:.2g} (1/{n_resamples + 1})"
        return f"{p:.3g} (smallest attainable)"
    return f"{p:.3g}"


def _p_phrase(p: float | None, p_floor: bool, n_resamples: int | None) -> str:
    text = format_p(p, p_floor, n_resamples)
    return f"p {text}" if text.startswith("≤") else f"p={text}"


def verdict(result: PairedResult, alpha: float = 0.05, higher_is_better: bool = True) -> str:
    """A sentence that calls a winner only when the (adjusted, if set) p is at most alpha."""
    r = result
    if not r.testable:
        return (f"not testable: {r.a} and {r.b} score the same constant on every question "
                f"on {r.metric} (n={r.n})")
    raw = f"{TEST_NAMES.get(r.test, r.test)} {_p_phrase(r.p_value, r.p_floor, r.n_resamples)}"
    if r.p_adjusted is not None:
        label = f"{CORRECTIONS.get(r.correction or '', r.correction)}-adjusted p"
        bound = "≤ " if r.p_floor else "="
        adjusted = f"{label}{' ' if r.p_floor else ''}{bound}{r.p_adjusted:.3g}"
        p_used = r.p_adjusted
    else:
        adjusted, p_used = "", r.p_value
    if p_used > alpha or r.mean_diff == 0:
        return (f"no significant difference between {r.a} and {r.b} on {r.metric} "
                f"({adjusted or raw}, n={r.n})")
    better = (r.mean_diff > 0) == higher_is_better
    winner, loser = (r.a, r.b) if better else (r.b, r.a)
    # the interval of the stated (absolute) difference, not of a − b
    low, high = ((r.diff_low, r.diff_high) if r.mean_diff > 0
                 else (-r.diff_high, -r.diff_low))
    tests = f"{raw}, {adjusted}" if adjusted else raw
    return (f"{winner} beats {loser} on {r.metric} by {abs(r.mean_diff):.3g} "
            f"({CONFIDENCE:.0%} CI [{low:.3g}, {high:.3g}]; {tests}; n={r.n})")
