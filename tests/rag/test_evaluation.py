"""rag.evaluation: hit@k / recall@k / MRR on hand-computed cases, over core.questions records."""

from __future__ import annotations

import pytest

from core.errors import UserError
from core.questions import Question
from rag.evaluation import (
    evaluate_retrievers,
    format_table,
    missing_gold_titles,
    question_scores,
    resolve_title,
)


def test_question_scores_hand_computed() -> None:
    assert question_scores(["A", "B", "C"], {"B", "Z"}) == (1.0, 0.5, 0.5)
    assert question_scores(["A", "B", "C"], {"C", "A"}) == (1.0, 1.0, 1.0)
    assert question_scores(["A", "B"], {"Z"}) == (0.0, 0.0, 0.0)
    assert question_scores(["A", "A", "B"], {"B"}) == (1.0, 1.0, 1 / 3)  # ranks count repeats


def test_resolve_title_follows_redirects_and_first_letter_case() -> None:
    aliases = {"Dom Pedro I": "Pedro I do Brasil", "D. Pedro I": "Dom Pedro I"}
    assert resolve_title("dom_Pedro  I", aliases) == "Pedro I do Brasil"
    assert resolve_title("D. Pedro I", aliases) == "Pedro I do Brasil"  # double redirect
    assert resolve_title("tiradentes", aliases) == "Tiradentes"


QUESTIONS = [
    Question("q1", "Quem foi Tiradentes?", gold_titles=("Tiradentes",)),
    Question("q2", "Quando a escravidão foi abolida pela Lei Áurea?", gold_titles=("lei áurea",)),
    Question("q3", "Quem outorgou a constituição?",
             gold_titles=("Dom Pedro I", "Constituição brasileira de 1824")),
    Question("q4", "Pergunta sem ouro"),
]


def test_evaluate_retrievers_on_the_fake_store(history_store) -> None:
    reports = evaluate_retrievers(history_store, QUESTIONS, ["bm25", "dense"], k=2,
                                  progress=False)
    bm25 = reports[0]
    assert (bm25.retriever, bm25.k, bm25.questions) == ("bm25", 2, 3)
    rows = {r["id"]: r for r in bm25.per_question}
    assert rows["q1"]["retrieved"][0] == "Tiradentes" and rows["q1"]["rr"] == 1.0
    # "lei áurea" -> first letter upper: "Lei áurea" is no page title; accents are kept
    assert rows["q2"]["gold"] == ["Lei áurea"] and rows["q2"]["hit"] == 0.0
    assert rows["q3"]["gold"] == ["Constituição brasileira de 1824", "Pedro I do Brasil"]
    expected_hit = sum(r["hit"] for r in rows.values()) / 3
    assert bm25.hit == pytest.approx(expected_hit)
    assert bm25.mrr == pytest.approx(sum(r["rr"] for r in rows.values()) / 3)
    table = format_table(reports)
    assert table.splitlines()[0] == "| retriever | questions | hit@2 | recall@2 | MRR@2 |"
    assert table.splitlines()[2].startswith("| bm25 | 3 |")


def test_evaluation_needs_gold_titles(history_store) -> None:
    with pytest.raises(UserError, match="no question has gold_titles"):
        evaluate_retrievers(history_store, [QUESTIONS[3]], ["bm25"], progress=False)


def test_missing_gold_titles() -> None:
    missing = missing_gold_titles(QUESTIONS, {"Tiradentes", "Pedro I do Brasil"},
                                  {"Dom Pedro I": "Pedro I do Brasil"})
    assert missing == ["Constituição brasileira de 1824", "Lei áurea"]
