"""summarize() on synthetic samples: the results.json contract of issue 11 (primary metric,
multiplicity family, headline comparisons, n per cell, no verdict where nothing applies, the
multiple-choice choice distribution)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from compare.aggregate import headline_pairs, summarize
from compare.rundir import Sample
from compare.stats import adjust_pvalues

SYSTEMS = ("base", "rag", "finetuned", "rag+finetuned")
N_OPEN, N_MC = 40, 12
# the headline comparisons, treatment first
_ORIENTED_PAIRS = [("rag", "base"), ("finetuned", "base"), ("rag+finetuned", "base"),
                   ("rag", "finetuned"), ("rag+finetuned", "rag"), ("rag+finetuned", "finetuned")]


def _sample(column: str, qid: str, scores: dict[str, float], *, choice: int | None = None,
            choice_scores: list[float] | None = None, tags: list[str] | None = None) -> Sample:
    return Sample(column=column, system=column.rpartition("/")[2], model="m", decoding={},
                  question_id=qid, question=f"q {qid}", references=["x"], tags=tags or [],
                  choice=choice, choice_scores=choice_scores, scores=scores, latency_s=0.1)


def _run(columns: tuple[str, ...] = SYSTEMS, seed: int = 0) -> list[Sample]:
    """Open questions where rag-type systems are right far more often than the others, exact
    match 0 everywhere (answers are sentences), and multiple-choice questions (generated
    replies, some unparsed)."""
    rng = np.random.default_rng(seed)
    out = []
    for col in columns:
        system = col.rpartition("/")[2]
        rate = {"base": 0.2, "finetuned": 0.3, "rag": 0.8, "rag+finetuned": 0.85}[system]
        for i in range(N_OPEN):
            scores = {"answer_accuracy": float(rng.random() < rate), "exact_match": 0.0,
                      "f1": float(rng.random() * rate)}
            if "rag" in system:
                scores["hit@k"] = float(rng.random() < 0.9)
            out.append(_sample(col, f"open-{i}", scores, tags=["open"]))
        for i in range(N_MC):
            choice: int | None = int(rng.integers(0, 4))
            if system == "base" and i < 3:  # base cannot be parsed on 3 questions
                choice = None
            if system == "finetuned":  # always answers "D"
                choice = 3
            right = choice == i % 4
            scores = {"mc_accuracy": float(right)}
            if choice is None:
                scores["mc_unparsed"] = 1.0
            out.append(_sample(col, f"mc-{i}", scores, choice=choice, tags=["mc"]))
    return out


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return summarize(_run(), list(SYSTEMS), {}, seed=0)


def test_contract_keys(results: dict[str, Any]) -> None:
    for key in ("primary_metric", "multiplicity", "metrics", "paired", "headline", "verdicts",
                "choice_distribution", "by_tag", "latency", "columns", "n_questions",
                "higher_is_better"):
        assert key in results
    assert results["primary_metric"] == "answer_accuracy"
    assert results["n_questions"] == N_OPEN + N_MC
    assert results["multiplicity"]["method"] == "holm"
    assert results["multiplicity"]["alpha"] == 0.05
    assert set(results["headline"]) >= {"metrics", "rows", "comparisons", "verdicts"}
    assert results["verdicts"] == results["headline"]["verdicts"]
    for row in results["paired"]:
        assert {"p_value", "p_adjusted", "p_floor", "n_resamples", "verdict"} <= set(row)


def test_intervals_per_cell(results: dict[str, Any]) -> None:
    cell = results["metrics"]["answer_accuracy"]["base"]
    assert set(cell) == {"mean", "low", "high", "n", "interval"}
    assert cell["interval"] == "wilson" and cell["n"] == N_OPEN
    assert results["metrics"]["f1"]["rag"]["interval"] == "bca-bootstrap"
    # exact match is 0 everywhere: a real upper bound, not [0, 0]
    em = results["metrics"]["exact_match"]["rag"]
    assert em["mean"] == 0 and em["high"] > 0.05
    # hit@k applies to retrieval systems only: absent, not zero, for the others
    assert set(results["metrics"]["hit@k"]) == {"rag", "rag+finetuned"}
    assert results["higher_is_better"]["mc_unparsed"] is False


def test_family_is_every_testable_paired_row(results: dict[str, Any]) -> None:
    paired = results["paired"]
    testable = [p for p in paired if p["testable"]]
    assert results["multiplicity"]["family_size"] == len(testable)
    # 6 pairs on each of answer_accuracy, f1 and mc_accuracy; mc_unparsed is 0 everywhere
    # but for base, so only its 3 pairs with base are tested; exact match (0 everywhere) makes
    # 6 rows that are not tested; hit@k is not a paired metric
    assert len(testable) == 6 * 3 + 3
    untested = sorted((p["metric"], p["a"], p["b"]) for p in paired if not p["testable"])
    assert untested == sorted(
        [("exact_match", a, b) for a, b in _ORIENTED_PAIRS]
        + [("mc_unparsed", "rag", "finetuned"), ("mc_unparsed", "rag+finetuned", "rag"),
           ("mc_unparsed", "rag+finetuned", "finetuned")])
    assert not any(p["metric"] == "hit@k" for p in paired)
    assert all(p["p_adjusted"] is None for p in paired if not p["testable"])
    raw = [p["p_value"] for p in testable]
    assert [p["p_adjusted"] for p in testable] == pytest.approx(adjust_pvalues(raw, "holm"))
    assert all(p["p_adjusted"] >= p["p_value"] for p in testable)


def test_headline_comparisons_and_verdicts(results: dict[str, Any]) -> None:
    head = results["headline"]
    assert head["metrics"] == ["answer_accuracy", "mc_accuracy"]
    assert set(head["rows"]["answer_accuracy"]) == set(SYSTEMS)
    pairs = {(p["metric"], p["a"], p["b"]) for p in head["comparisons"]}
    assert pairs == {(m, a, b) for m in head["metrics"] for a, b in _ORIENTED_PAIRS}
    # rag is right on ~80% vs base ~20% of 40 questions: significant after Holm
    rag_vs_base = next(v for v in head["verdicts"]
                       if v.startswith("rag beats base on answer_accuracy"))
    assert "Holm-adjusted p=" in rag_vs_base and "McNemar exact" in rag_vs_base
    # the six exact-match comparisons (0 everywhere) state no verdict anywhere
    assert not any("exact_match" in p["verdict"] and "not testable" not in p["verdict"]
                   for p in results["paired"])
    assert not any("exact_match" in v for v in results["verdicts"])
    assert head["note"] is None


def test_choice_distribution_counts_unparsed(results: dict[str, Any]) -> None:
    dist = results["choice_distribution"]
    assert set(dist) == set(SYSTEMS)
    assert dist["finetuned"] == {"A": 0, "B": 0, "C": 0, "D": N_MC, "unparsed": 0}
    assert dist["base"]["unparsed"] == 3
    assert sum(dist["base"].values()) == N_MC
    # mc_unparsed is defined on every multiple-choice sample, 1 where no option was read
    assert results["metrics"]["mc_unparsed"]["base"]["mean"] == pytest.approx(3 / N_MC)
    assert results["metrics"]["mc_unparsed"]["rag"]["n"] == N_MC


def test_long_form_only_run_states_no_verdict_on_what_did_not_apply() -> None:
    # sentence references: answer_accuracy and exact_match are n/a (absent); F1 applies
    samples = [_sample(col, f"q{i}", {"f1": 0.1 * (i % 7) + (0.2 if col == "rag" else 0.0)})
               for col in ("base", "rag") for i in range(27)]
    res = summarize(samples, ["base", "rag"], {})
    assert "answer_accuracy" not in res["metrics"]
    assert res["headline"]["metrics"] == []
    assert res["headline"]["comparisons"] == [] and res["verdicts"] == []
    assert "answer_accuracy" in res["headline"]["note"]
    assert [p["metric"] for p in res["paired"]] == ["f1"]
    assert res["multiplicity"]["family_size"] == 1
    assert res["choice_distribution"] == {}


def test_pair_without_applicable_samples_gets_no_row() -> None:
    samples = _run()
    # judge_correct on rag and base only: no row, hence no verdict, for any other pair
    for s in samples:
        if s.column in ("rag", "base") and s.question_id.startswith("open"):
            s.scores["judge_correct"] = s.scores["answer_accuracy"]
    res = summarize(samples, list(SYSTEMS), {}, primary="judge_correct", correction="bh")
    rows = [p for p in res["paired"] if p["metric"] == "judge_correct"]
    assert [(p["a"], p["b"]) for p in rows] == [("rag", "base")]
    assert res["primary_metric"] == "judge_correct"
    assert res["paired"][0]["metric"] == "judge_correct"  # the primary metric first
    assert res["multiplicity"]["method"] == "bh"
    assert any("BH-adjusted" in v for v in res["verdicts"])
    judge_verdicts = [v for v in res["verdicts"] if "judge_correct" in v]
    assert len(judge_verdicts) == 1 and "rag" in judge_verdicts[0]


def test_auto_primary_and_unknown_correction() -> None:
    assert summarize(_run(), list(SYSTEMS), {}, primary="auto")["primary_metric"] == \
        "answer_accuracy"
    with pytest.raises(ValueError, match="multiplicity"):
        summarize(_run(), list(SYSTEMS), {}, correction="bonferroni")


def test_n_per_cell_and_per_pair_when_columns_differ() -> None:
    samples = [s for s in _run(("base", "rag"))
               if not (s.column == "rag" and s.question_id in {"open-0", "open-1", "open-2"})]
    res = summarize(samples, ["base", "rag"], {})
    cells = res["metrics"]["answer_accuracy"]
    assert (cells["base"]["n"], cells["rag"]["n"]) == (N_OPEN, N_OPEN - 3)
    row = next(p for p in res["paired"] if p["metric"] == "answer_accuracy")
    assert (row["a"], row["b"], row["n"]) == ("rag", "base", N_OPEN - 3)


def test_prefixed_columns_compare_within_their_model() -> None:
    cols = ["m1/base", "m1/rag", "m2/base", "m2/rag", "m2/finetuned"]
    assert headline_pairs(cols) == [("m1/rag", "m1/base"), ("m2/rag", "m2/base"),
                                    ("m2/finetuned", "m2/base"), ("m2/rag", "m2/finetuned")]
    res = summarize(_run(tuple(cols)), cols, {})
    pairs = {(p["a"], p["b"]) for p in res["headline"]["comparisons"]}
    assert ("m1/rag", "m2/base") not in pairs and ("m2/base", "m1/rag") not in pairs
    assert ("m1/rag", "m1/base") in pairs
