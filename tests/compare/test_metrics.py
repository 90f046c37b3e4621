"""Metrics on hand-computed cases, Portuguese normalization included."""

from __future__ import annotations

import pytest

from compare.metrics import METRICS, MetricInput, contains, is_refusal, score_sample, token_f1
from compare.normalize import normalize_answer
from core.errors import UserError
from core.questions import Question


def q(*answers: str, **kw) -> Question:
    return Question(id="q", question="Pergunta?", answers=answers, **kw)


@pytest.mark.parametrize("raw,expected", [
    ("Brasília.", "brasilia"),
    ("O Brasil", "brasil"),
    ("as Capitanias Hereditárias", "capitanias hereditarias"),
    ("Um rei, uma rainha", "rei rainha"),
    ("7 de Setembro de 1822", "7 de setembro de 1822"),
    ("sete de setembro", "7 de setembro"),
    ("1º de janeiro", "1 de janeiro"),
    ("em 1.888", "em 1888"),
    ("The capital", "capital"),
])
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_token_f1_hand_computed() -> None:
    # pred tokens: pedro, i, imperador (3); ref: dom, pedro, i (3); common 2 -> P=R=2/3 -> F1=2/3
    assert token_f1("Pedro I, imperador", "Dom Pedro I") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("nada", "Brasília") == 0.0


def test_exact_match_uses_normalization_and_any_reference() -> None:
    em = METRICS.get("exact_match").fn
    assert em(MetricInput("brasilia", q("Brasília"))) == 1.0
    assert em(MetricInput("Dom Pedro I", q("Pedro I", "Dom Pedro I"))) == 1.0
    assert em(MetricInput("São Paulo", q("Brasília"))) == 0.0


def test_contains_whole_words_only() -> None:
    assert contains("A capital é Brasília, desde 1960.", "Brasília")
    assert not contains("Brasilianismo", "Brasília")


def test_rouge_and_bleu_ranges() -> None:
    scores = score_sample(MetricInput("a capital é brasília", q("Brasília")))
    # pred "capital e brasilia" (P=1/3) vs ref "brasilia" (R=1)
    assert scores["rouge1"] == pytest.approx(0.5)
    assert 0 <= scores["bleu"] <= 100 and 0 <= scores["chrf"] <= 100
    perfect = score_sample(MetricInput("Brasília", q("Brasília")))
    assert perfect["chrf"] == pytest.approx(100.0)


def test_refusal_detection_pt_and_en() -> None:
    assert is_refusal("O contexto não contém essa informação.")
    assert is_refusal("The context does not contain the answer.")
    assert not is_refusal("Foi Dom Pedro I.")
    assert METRICS.get("refusal").higher_is_better is False


def test_language_fidelity() -> None:
    lf = METRICS.get("language_fidelity").fn
    question = q("x", lang="pt")
    assert lf(MetricInput("A independência do Brasil foi proclamada em 1822 por Dom Pedro.",
                          question)) == 1.0
    assert lf(MetricInput("The independence of Brazil was proclaimed in 1822 by Pedro.",
                          question)) == 0.0
    assert lf(MetricInput("Brasília", question)) is None  # too short to identify


def test_hit_at_k_only_for_retrieval_with_gold() -> None:
    hit = METRICS.get("hit@k").fn
    question = q("x", gold_titles=("Tiradentes",))
    assert hit(MetricInput("x", question, ("Brasil", "tiradentes"), True)) == 1.0
    assert hit(MetricInput("x", question, ("Brasil",), True)) == 0.0
    assert hit(MetricInput("x", question)) is None


def test_mc_accuracy_and_open_metrics_skip_mc() -> None:
    mcq = q("B", choices=("A", "B", "C", "D"), answer_index=1)
    scores = score_sample(MetricInput("B", mcq, extra={"choice": 1}))
    assert scores == {"mc_accuracy": 1.0}


def test_unknown_metric_did_you_mean() -> None:
    with pytest.raises(UserError, match="exact_match"):
        METRICS.get("exact_mach")
