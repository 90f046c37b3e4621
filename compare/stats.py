"""Statistics the report relies on: bootstrap CIs, paired tests, win/tie/loss counts.

Per system: the mean with a 95% percentile-bootstrap CI. Between two systems on the same
questions: McNemar's exact test for binary scores, a paired permutation test (sign flips of the
differences) for continuous ones, plus a paired-bootstrap CI of the mean difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sst

N_RESAMPLES = 10_000


@dataclass(frozen=True)
class MeanCI:
    """A mean with its 95% bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of system A against system B on one metric."""

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

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-friendly form."""
        return asdict(self)


def bootstrap_ci(values: Sequence[float], seed: int = 0, confidence: float = 0.95) -> MeanCI:
    """Mean and percentile-bootstrap CI (a constant sample gets a zero-width interval)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(N_RESAMPLES, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return MeanCI(float(x.mean()), float(low), float(high), int(x.size))


def mcnemar_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Exact (binomial) McNemar p-value for paired binary outcomes."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    only_a, only_b = int(np.sum(x & ~y)), int(np.sum(~x & y))
    if only_a + only_b == 0:
        return 1.0
    return float(sst.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def permutation_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                  seed: int = 0) -> float:
    """Two-sided paired permutation test of the mean difference (random sign flips)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(d):
        return 1.0
    res = sst.permutation_test((d,), np.mean, permutation_type="samples",
                               n_resamples=N_RESAMPLES, alternative="two-sided",
                               random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def paired_compare(metric: str, a_name: str, a: Sequence[float], b_name: str,
                   b: Sequence[float], binary: bool, higher_is_better: bool = True,
                   seed: int = 0) -> PairedResult:
    """Compare A and B question by question; wins count where A is better in the metric's sense."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    d = x - y
    sign = 1 if higher_is_better else -1
    ci = bootstrap_ci(d, seed=seed)
    p = mcnemar_p(x, y) if binary else permutation_p(x, y, seed=seed)
    return PairedResult(
        metric=metric, a=a_name, b=b_name, n=int(d.size), mean_diff=ci.mean, diff_low=ci.low,
        diff_high=ci.high, p_value=p, test="mcnemar-exact" if binary else "paired-permutation",
        wins=int(np.sum(sign * d > 0)), ties=int(np.sum(d == 0)), losses=int(np.sum(sign * d < 0)),
    )


def verdict(result: PairedResult, alpha: float = 0.05, higher_is_better: bool = True) -> str:
    """A sentence that calls a winner only when the paired test supports it."""
    if result.p_value >= alpha or result.mean_diff == 0:
        return (f"no significant difference between {result.a} and {result.b} on "
                f"{result.metric} (p={result.p_value:.3g}, n={result.n})")
    better = (result.mean_diff > 0) == higher_is_better
    winner, loser = (result.a, result.b) if better else (result.b, result.a)
    # the interval of the difference as stated (winner minus loser), not of a − b
    low, high = ((result.diff_low, result.diff_high) if result.mean_diff > 0
                 else (-result.diff_high, -result.diff_low))
    return (f"{winner} beats {loser} on {result.metric} by {abs(result.mean_diff):.3g} "
            f"(95% CI [{low:.3g}, {high:.3g}], "
            f"{result.test} p={result.p_value:.3g}, n={result.n})")
