"""Statistics on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from compare.stats import bootstrap_ci, mcnemar_p, paired_compare, permutation_p, verdict


def test_bootstrap_ci_covers_true_mean_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, 400)
    ci = bootstrap_ci(x, seed=3)
    assert ci.low < 10.0 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * 2.0 / 20, rel=0.25)
    assert bootstrap_ci(x, seed=3) == ci
    assert bootstrap_ci([1.0, 1.0, 1.0]) == bootstrap_ci([1.0, 1.0, 1.0])
    assert bootstrap_ci([1.0, 1.0]).low == 1.0


def test_mcnemar_exact_hand_computed() -> None:
    # 6 discordant pairs, all favouring A: p = 2 * 0.5**6 = 0.03125
    a = [1] * 6 + [1, 0, 1]
    b = [0] * 6 + [1, 0, 1]
    assert mcnemar_p(a, b) == pytest.approx(0.03125)
    assert mcnemar_p([1, 0], [1, 0]) == 1.0


def test_permutation_detects_shift_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(60)
    assert permutation_p(base + 0.2, base) < 0.001
    noise = base + rng.normal(0, 0.05, 60)
    assert permutation_p(noise, base) > 0.01


def test_paired_compare_counts_and_direction() -> None:
    res = paired_compare("refusal", "rag", [0, 0, 1, 0], "base", [1, 1, 1, 0], binary=True,
                         higher_is_better=False)
    assert (res.wins, res.ties, res.losses) == (2, 2, 0)
    assert res.mean_diff == pytest.approx(-0.5)
    assert "no significant difference" in verdict(res, higher_is_better=False)


def test_verdict_names_winner_only_when_significant() -> None:
    a = [1.0] * 20
    b = [0.0] * 20
    res = paired_compare("exact_match", "rag", a, "base", b, binary=True)
    assert verdict(res).startswith("rag beats base")
    flipped = paired_compare("exact_match", "base", b, "rag", a, binary=True)
    # the interval is of the stated difference (winner minus loser), positive both ways
    assert verdict(flipped).startswith("rag beats base on exact_match by 1 (95% CI [1, 1]")
