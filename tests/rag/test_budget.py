"""rag.budget: the context budget and the truncation policy (counting words as tokens)."""

from __future__ import annotations

import pytest

from core.errors import UserError
from rag.budget import (
    CHAT_TOKENS_PER_MESSAGE,
    SAFETY_TOKENS,
    context_budget,
    fit_passages,
    format_passage,
)
from rag.passages import Passage
from rag.prompts import render_prompt


def count(text: str) -> int:
    return len(text.split())


def P(i: int, text: str) -> Passage:
    return Passage(i, f"{i}-0", i, f"T{i}", "", 0, text, 1.0 / (i + 1), (i,))


def cost(i: int, p: Passage) -> int:
    return count(format_passage(i, p))


def test_budget_is_window_minus_generation_minus_overhead() -> None:
    q = "Quem foi Tiradentes?"
    overhead = sum(count(m["content"]) for m in render_prompt(q, [], "pt"))
    overhead += 2 * CHAT_TOKENS_PER_MESSAGE + SAFETY_TOKENS
    assert context_budget(q, count, 1000, 100) == 1000 - 100 - overhead
    assert context_budget(q, count, 1000, 100, context_tokens=50) == 50
    assert context_budget(q, count, 1000, 100, context_tokens=10**6) == 1000 - 100 - overhead


def test_question_longer_than_the_window_is_refused() -> None:
    q = "palavra " * 500 + "?"
    with pytest.raises(UserError, match=r"question \(501 tokens\).*does not fit the model's "
                                        r"512-token window"):
        context_budget(q, count, 512, 64)
    with pytest.raises(UserError, match="context_tokens must be at least 1"):
        context_budget("Quem?", count, 4096, 64, context_tokens=0)


def test_passages_kept_in_rank_order_until_one_does_not_fit() -> None:
    ps = [P(0, "a " * 10), P(1, "b " * 10), P(2, "c " * 30), P(3, "d " * 2)]
    c0, c1 = cost(1, ps[0]), cost(2, ps[1])
    fit = fit_passages(ps, c0 + c1 + 5, count)
    assert [p.row for p in fit.passages] == [0, 1]  # 2 does not fit; 3 would, but is after it
    assert (fit.used, fit.dropped, fit.truncated) == (c0 + c1, 2, False)
    everything = fit_passages(ps, 10**6, count)
    assert everything.passages == ps and everything.dropped == 0


def test_first_passage_truncated_at_a_sentence_boundary() -> None:
    text = "Primeira frase curta. Segunda frase também curta. Terceira frase bem mais longa aqui."
    first = P(0, text)
    budget = cost(1, P(0, "Primeira frase curta. Segunda frase também curta.")) + 1
    fit = fit_passages([first, P(1, "x")], budget, count)
    assert fit.truncated and fit.dropped == 1
    assert [p.text for p in fit.passages] == ["Primeira frase curta. Segunda frase também curta."]
    assert fit.used <= budget


def test_first_passage_cut_by_words_when_no_sentence_fits() -> None:
    first = P(0, "uma frase muito longa sem ponto nenhum até o fim do texto")
    budget = cost(1, P(0, "uma frase muito …"))
    fit = fit_passages([first], budget, count)
    assert [p.text for p in fit.passages] == ["uma frase muito …"]
    tiny = fit_passages([first], 1, count)  # never zero passages when one exists
    assert len(tiny.passages) == 1 and tiny.passages[0].text == "uma …"


def test_no_passages() -> None:
    fit = fit_passages([], 100, count)
    assert (fit.passages, fit.used, fit.dropped) == ([], 0, 0)
