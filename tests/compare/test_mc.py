"""Multiple-choice helpers: prompts, letter parsing (Portuguese articles are not letters)."""

from __future__ import annotations

import pytest

from compare.mc import (
    argmax,
    cloze_context,
    generative_question,
    length_normalized,
    loglikelihood_context,
    parse_choice,
)
from core.questions import Question

CHOICES = ("Dom Pedro I", "Dom Pedro II", "Deodoro da Fonseca", "Getúlio Vargas")
Q = Question(id="m", question="Quem foi o primeiro imperador?", answers=("Dom Pedro I",),
             choices=CHOICES, answer_index=0)


@pytest.mark.parametrize("reply,expected", [
    ("B", 1), ("B)", 1), ("(C)", 2), ("**D**", 3), ("A.", 0), ("C. Deodoro da Fonseca", 2),
    ("A letra correta é C.", 2), ("Resposta: D", 3), ("The answer is B.", 1),
    ("Dom Pedro II", 1), ("Foi Deodoro da Fonseca.", 2),
    ("A capital é Brasília", None), ("A resposta é a capital", None), ("não sei", None),
])
def test_parse_choice(reply: str, expected: int | None) -> None:
    assert parse_choice(reply, CHOICES) == expected


def test_prompts() -> None:
    assert loglikelihood_context(Q).endswith("A. Dom Pedro I\nB. Dom Pedro II\n"
                                             "C. Deodoro da Fonseca\nD. Getúlio Vargas\nResposta:")
    assert cloze_context(Q) == "Pergunta: Quem foi o primeiro imperador?\nResposta:"
    assert generative_question(Q).endswith("Responda apenas com a letra da alternativa correta.")
    en = Question(id="e", question="Who?", answers=("x",), choices=("x", "y"), answer_index=0,
                  lang="en")
    assert loglikelihood_context(en).endswith("Answer:")


def test_argmax_first_on_ties_and_length_normalization() -> None:
    assert argmax([-1.0, -0.5, -0.5]) == 1
    assert length_normalized(Q, [-12.0, -13.0, -19.0, -15.0])[0] == pytest.approx(-1.0)
