"""Statistics checked against independent references: published tables, hand counts, exact
enumerations written here with itertools, and scipy's own routines where ours delegate to them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sst

from compare.stats import (
    N_RESAMPLES,
    PairedResult,
    adjust_pvalues,
    adjust_results,
    bootstrap_ci,
    format_p,
    mcnemar_p,
    mean_ci,
    paired_compare,
    paired_permutation,
    verdict,
    wilson_ci,
)

# ------------------------------------------------------------------------------ intervals


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    # Newcombe RG (1998), "Two-sided confidence intervals for the single proportion:
    # comparison of seven methods", Statistics in Medicine 17:857-872, Table II, method 3
    # (Wilson score interval without continuity correction), printed to 4 decimals.
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_1998_table(k: int, n: int, low: float, high: float) -> None:
    ci = wilson_ci(k, n)
    assert ci.interval == "wilson"
    assert ci.mean == pytest.approx(k / n)
    assert ci.low == pytest.approx(low, abs=6e-5)
    assert ci.high == pytest.approx(high, abs=6e-5)


def test_zero_of_58_has_a_real_upper_bound() -> None:
    # For k = 0 the Wilson bounds reduce to [0, z²/(n + z²)]; with z = 1.959964 (97.5% normal
    # quantile), z² = 3.841459 and 3.841459 / (58 + 3.841459) = 3.841459 / 61.841459 = 0.062118.
    ci = mean_ci([0.0] * 58, binary=True)
    assert (ci.low, ci.n, ci.interval) == (0.0, 58, "wilson")
    assert ci.high == pytest.approx(0.062118, abs=2e-6)
    # the old percentile bootstrap printed [0.000, 0.000] here
    assert ci.high > 0.05


def test_binary_flag_with_non_binary_values_falls_back_to_bootstrap() -> None:
    ci = mean_ci([0.0, 0.5, 1.0, 1.0, 0.25], binary=True)
    assert ci.interval == "bca-bootstrap"


def test_bca_is_scipys_bca_with_the_same_seed() -> None:
    rng = np.random.default_rng(7)
    x = rng.exponential(2.0, 45)
    ours = bootstrap_ci(x, seed=11)
    ref = sst.bootstrap((x,), np.mean, method="BCa", n_resamples=N_RESAMPLES,
                        rng=np.random.default_rng(11)).confidence_interval
    assert ours.interval == "bca-bootstrap"
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert bootstrap_ci(x, seed=11) == ours  # seeded
    # right-skewed data: BCa puts more of the interval above the mean than below it
    assert ours.high - ours.mean > ours.mean - ours.low


def test_bca_coverage_of_a_known_mean() -> None:
    # 300 samples of n = 40 from Exp(1) (true mean 1): a 95% interval must cover ~95% of the
    # time; the binomial SD of the coverage at 300 reps is ~1.3 points.
    rng = np.random.default_rng(2024)
    covered = sum(ci.low <= 1.0 <= ci.high
                  for ci in (bootstrap_ci(rng.exponential(1.0, 40), seed=i, n_resamples=2000)
                             for i in range(300)))
    assert 0.89 <= covered / 300 <= 0.985


def test_constant_sample_falls_back_to_percentile_and_says_so() -> None:
    ci = bootstrap_ci([0.7] * 12)
    assert (ci.mean, ci.low, ci.high, ci.n) == pytest.approx((0.7, 0.7, 0.7, 12))
    assert ci.interval == "percentile-bootstrap"
    assert bootstrap_ci([]).interval == "none"


# ---------------------------------------------------------------------------- paired tests


def test_mcnemar_exact_against_a_hand_count() -> None:
    # 12 questions only A gets right, 3 only B, 20 concordant. Under H0 the discordant split is
    # Bin(15, 1/2); two-sided exact p = 2·P(X ≤ 3) = 2·(C(15,0)+C(15,1)+C(15,2)+C(15,3))/2^15
    # = 2·(1 + 15 + 105 + 455)/32768 = 1152/32768 = 0.03515625.
    a = [1] * 12 + [0] * 3 + [1] * 10 + [0] * 10
    b = [0] * 12 + [1] * 3 + [1] * 10 + [0] * 10
    assert mcnemar_p(a, b) == pytest.approx(1152 / 32768)
    assert mcnemar_p(a, b) == pytest.approx(2 * sst.binom.cdf(3, 15, 0.5))
    assert mcnemar_p(b, a) == mcnemar_p(a, b)


def _enumerated_sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip p by brute force: every one of the 2^n sign vectors."""
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d.size)))
    null = np.abs((signs * d).mean(axis=1))
    return float(np.mean(null >= observed - 1e-12))


def test_exact_permutation_matches_enumeration() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1.0, 10), rng.normal(0.0, 1.0, 10)
    res = paired_permutation(a, b)
    assert res.exact and res.n_resamples == 2 ** 10
    assert res.p_value == pytest.approx(_enumerated_sign_flip_p(a - b), abs=1e-12)
    assert 0.01 < res.p_value < 0.99


def test_sampled_permutation_is_close_to_enumeration() -> None:
    # n = 16: 65 536 sign vectors, more than the 10 000 resamples, so scipy samples
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.25, 1.0, 16), rng.normal(0.0, 1.0, 16)
    res = paired_permutation(a, b, seed=1)
    exact = _enumerated_sign_flip_p(a - b)
    assert not res.exact and res.n_resamples == N_RESAMPLES
    assert 0.02 < exact < 0.9
    # Monte Carlo SE ≤ sqrt(0.25/10000) = 0.005
    assert res.p_value == pytest.approx(exact, abs=0.02)


def test_sampled_permutation_floor_is_flagged_and_printed_as_a_bound() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(60)
    res = paired_permutation(base + 0.2 + rng.normal(0, 0.01, 60), base)
    assert res.p_value == pytest.approx(1 / 10_001)
    assert res.p_floor
    assert format_p(res.p_value, res.p_floor, res.n_resamples) == "≤ 0.0001 (1/10001)"
    noise = paired_permutation(base + rng.normal(0, 0.05, 60), base)
    assert not noise.p_floor and noise.p_value > 0.01


def test_exact_null_floor() -> None:
    # 8 differences, 7 nonzero and all positive: only the identity and the flip of all seven
    # nonzero signs reach |mean| = observed, each with 2 choices for the zero's sign:
    # 4 of 256 vectors, p = 4/256 = 0.015625, the smallest this data's null can give.
    d = np.array([0.0, 1, 2, 3, 4, 5, 6, 7])
    res = paired_permutation(d, np.zeros(8))
    assert res.exact and res.p_value == pytest.approx(4 / 256) and res.p_floor
    assert format_p(res.p_value, res.p_floor, res.n_resamples) == "0.0156 (smallest attainable)"
    mixed = paired_permutation(np.array([0.0, 1, -2, 3, 4, -5, 6, 7]), np.zeros(8))
    assert not mixed.p_floor


def test_format_p() -> None:
    assert format_p(0.0123456) == "0.0123"
    assert format_p(0.41) == "0.41"
    assert format_p(1 / 1000, True, 999) == "≤ 0.001 (1/1000)"
    assert format_p(None) == "–"


def test_identical_constant_columns_are_not_testable() -> None:
    res = paired_compare("exact_match", "rag", [0.0] * 30, "base", [0.0] * 30, binary=True)
    assert not res.testable and res.p_value == 1.0
    assert verdict(res).startswith("not testable")
    assert "p=1" not in verdict(res)
    # identical but varying columns: a real (null) result, p = 1 and no winner
    x = [1.0, 0.0] * 15
    same = paired_compare("exact_match", "rag", x, "base", x, binary=True)
    assert same.testable and same.p_value == 1.0
    assert verdict(same).startswith("no significant difference")


def test_paired_counts_and_direction_for_lower_is_better() -> None:
    # refusal, lower is better: rag refuses on 2 of 30 questions, base on 12 (the 2 included)
    rag = [1.0] * 2 + [0.0] * 28
    base = [1.0] * 12 + [0.0] * 18
    res = paired_compare("refusal", "rag", rag, "base", base, binary=True,
                         higher_is_better=False)
    assert (res.wins, res.ties, res.losses) == (10, 20, 0)
    assert res.mean_diff == pytest.approx(-10 / 30)
    assert res.p_value == pytest.approx(2 * 0.5 ** 10)  # 10 discordant, all one way
    assert verdict(res, higher_is_better=False).startswith("rag beats base on refusal by 0.333")


# ---------------------------------------------------------------------------- multiplicity


def test_holm_wikipedia_worked_example() -> None:
    # Wikipedia, "Holm–Bonferroni method", Example: four hypotheses with p = 0.01, 0.04, 0.03,
    # 0.005 and α = 0.05 (Holm 1979, Scand. J. Statist. 6:65-70). Ordered: 0.005 (H4),
    # 0.01 (H1), 0.03 (H3), 0.04 (H2); adjusted p (Wright 1992 "Adjusted P-values for
    # simultaneous inference"): H4 4·0.005 = 0.02; H1 max(0.02, 3·0.01) = 0.03;
    # H3 max(0.03, 2·0.03) = 0.06; H2 max(0.06, 1·0.04) = 0.06.
    # H4 and H1 are rejected, H3 and H2 are not (as in the worked example).
    adj = adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm")
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [q <= 0.05 for q in adj] == [True, False, False, True]


def test_holm_caps_at_one() -> None:
    # m = 3: ordered 0.2, 0.5, 0.6 -> 3·0.2 = 0.6, max(0.6, 2·0.5) = 1.0, max(1.0, 0.6) = 1.0
    assert adjust_pvalues([0.5, 0.2, 0.6], "holm") == pytest.approx([1.0, 0.6, 1.0])


def test_bh_matches_scipy_false_discovery_control() -> None:
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(0, 0.01, 6), rng.uniform(0, 1, 30), [0.03, 0.03, 1.0]])
    assert adjust_pvalues(list(p), "bh") == pytest.approx(
        list(sst.false_discovery_control(p, method="bh")), rel=1e-12)


def test_bh_is_no_more_conservative_than_holm_and_rejects_unknown_methods() -> None:
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
    holm, bh = adjust_pvalues(p, "holm"), adjust_pvalues(p, "bh")
    assert all(b <= h + 1e-15 for b, h in zip(bh, holm, strict=True))
    assert adjust_pvalues([], "holm") == []
    with pytest.raises(ValueError, match="unknown multiplicity"):
        adjust_pvalues(p, "bonferonni")
    with pytest.raises(ValueError):
        adjust_pvalues([0.5, 1.5], "holm")


# ------------------------------------------------------------------------------- verdicts


def _row(p: float, diff: float = 0.31) -> PairedResult:
    return PairedResult(metric="answer_accuracy", a="rag", b="base", n=58, mean_diff=diff,
                        diff_low=0.19, diff_high=0.43, p_value=p, test="mcnemar-exact",
                        wins=20, ties=36, losses=2)


def test_verdict_is_stated_on_the_adjusted_p() -> None:
    # raw p = 0.0004 and 0.02, family of 10: Holm-adjusted 0.004 and (9·0.02 =) 0.18
    family = [_row(0.0004), _row(0.02)] + [_row(0.5, 0.0)] * 8
    adjusted = adjust_results(family, "holm")
    assert adjusted[0].p_adjusted == pytest.approx(0.004)
    assert verdict(adjusted[0]) == (
        "rag beats base on answer_accuracy by 0.31 (95% CI [0.19, 0.43]; McNemar exact "
        "p=0.0004, Holm-adjusted p=0.004; n=58)")
    assert adjusted[1].p_adjusted == pytest.approx(0.18)
    # significant unadjusted, not after adjustment: no winner is called
    assert verdict(adjusted[1]) == (
        "no significant difference between rag and base on answer_accuracy "
        "(Holm-adjusted p=0.18, n=58)")
    assert verdict(_row(0.02)).startswith("rag beats base")  # a lone, unadjusted test
    bh = adjust_results(family, "bh")
    assert "BH-adjusted p=" in verdict(bh[0])


def test_verdict_flips_the_interval_when_b_wins() -> None:
    res = paired_compare("answer_accuracy", "base", [0.0] * 20, "rag", [1.0] * 20, binary=True)
    text = verdict(adjust_results([res])[0])
    # the stated difference is rag minus base: positive, its interval too
    assert text.startswith("rag beats base on answer_accuracy by 1 (95% CI [1, 1];")
    assert f"p={2 * 0.5 ** 20:.3g}" in text and math.isclose(res.p_value, 2 * 0.5 ** 20)


def test_untestable_rows_are_left_out_of_the_family() -> None:
    untestable = paired_compare("exact_match", "rag", [0.0] * 5, "base", [0.0] * 5, True)
    rows = adjust_results([_row(0.01), untestable, _row(0.04)], "holm")
    assert rows[1].p_adjusted is None
    assert [rows[0].p_adjusted, rows[2].p_adjusted] == pytest.approx([0.02, 0.04])
