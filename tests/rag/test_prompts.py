"""rag.prompts and rag.lang: templates as data, pt/en/closed-book rendering, refusals, language."""

from __future__ import annotations

import pytest

from core.errors import UserError
from rag.lang import detect_language
from rag.passages import Passage
from rag.prompts import (
    CLOSED_BOOK_REFUSALS,
    REFUSAL_EN,
    REFUSAL_PT,
    REFUSALS,
    TEMPLATES,
    format_context,
    is_refusal,
    load_template,
    refusal_sentence,
    render_prompt,
    template_version,
)

TIRA = Passage(0, "1-0", 1, "Tiradentes", "", 0, "Joaquim José da Silva Xavier, o Tiradentes.",
               0.9, (0,))
LEI = Passage(4, "3-0", 3, "Lei Áurea", "Assinatura", 0, "Assinada em 1888 {{ 7*7 }}.", 0.5, (4,))


def test_pt_rag_prompt_numbers_passages_and_states_the_rules() -> None:
    system, user = render_prompt("Quem foi Tiradentes?", [TIRA, LEI], lang="pt")
    assert (system["role"], user["role"]) == ("system", "user")
    assert "português" in system["content"] and REFUSAL_PT in system["content"]
    assert "[1]" in system["content"]  # the citation example
    assert user["content"] == ("Contexto:\n[1] Tiradentes\nJoaquim José da Silva Xavier, o "
                               "Tiradentes.\n\n[2] Lei Áurea — Assinatura\nAssinada em 1888 "
                               "{{ 7*7 }}.\n\nPergunta: Quem foi Tiradentes?")


def test_en_prompt_and_auto_language() -> None:
    system, user = render_prompt("Who was Tiradentes?", [TIRA], lang="auto")
    assert "English" in system["content"] and REFUSAL_EN in system["content"]
    assert user["content"].startswith("Context:\n[1] Tiradentes")
    assert user["content"].endswith("Question: Who was Tiradentes?")


def test_closed_book_prompt_has_no_context() -> None:
    system, user = render_prompt("Quem foi Tiradentes?", None)
    assert "contexto" not in (system["content"] + user["content"]).lower()
    assert CLOSED_BOOK_REFUSALS["pt"] in system["content"]
    assert user["content"] == "Pergunta: Quem foi Tiradentes?"
    assert render_prompt("Who was Tiradentes?", None, "en")[1]["content"].startswith("Question:")


def test_empty_context_is_said_not_left_blank() -> None:
    _, user = render_prompt("Quem foi Tiradentes?", [], "pt")
    assert "(nenhum trecho encontrado)" in user["content"]
    assert format_context([], "en") == "(no passages found)"


def test_refusal_constants_match_the_templates() -> None:
    assert REFUSAL_PT == "O contexto não contém a resposta." == refusal_sentence("pt")
    assert refusal_sentence("en") == REFUSAL_EN
    assert set(REFUSALS) == {"pt", "en"}
    assert refusal_sentence("pt", closed_book=True) == "Não sei a resposta."
    assert is_refusal("Infelizmente, o contexto nao contem a resposta")
    assert is_refusal("I DON'T KNOW THE ANSWER.") and is_refusal("I don’t know the answer")
    assert not is_refusal("Tiradentes foi um mártir [1].")


def test_versions_and_registry() -> None:
    assert template_version() == load_template("default").version == "rag-default-1"
    assert template_version(closed_book=True) == "closed-book-1"
    assert {"default", "closed_book"} <= set(TEMPLATES.names())
    with pytest.raises(UserError, match="Did you mean 'default'"):
        load_template("defualt")
    with pytest.raises(UserError, match="has no language 'fr'"):
        render_prompt("Qui était Tiradentes ?", [TIRA], lang="fr")
    with pytest.raises(UserError, match="question is empty"):
        render_prompt("   ", [TIRA])


def test_user_template_file(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("version: mine-1\nlanguages:\n  pt:\n    refusal: Sei lá.\n"
                    "    system: 'Responda. Senão: {{ refusal }}'\n"
                    "    user: '{{ context }} || {{ question }}'\n", "utf-8")
    system, user = render_prompt("Quem?", [TIRA], "auto", str(path))
    assert system["content"] == "Responda. Senão: Sei lá."
    assert user["content"].endswith("|| Quem?")
    assert load_template(str(path)).version == "mine-1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nlanguages:\n  pt:\n    system: x\n", "utf-8")
    with pytest.raises(UserError, match="lacks user, refusal"):
        load_template(str(bad))
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nlanguages:\n  pt: {system: '{% if %}', user: u, refusal: r}\n")
    with pytest.raises(UserError, match="not valid Jinja"):
        load_template(str(broken))


@pytest.mark.parametrize(("text", "lang"), [
    ("Quem foi Tiradentes?", "pt"),
    ("Who was Tiradentes?", "en"),
    ("Tiradentes?", "pt"),
    ("Em que ano foi assinada a Lei Áurea que aboliu a escravidão?", "pt"),
    ("In which year was the Golden Law that abolished slavery in Brazil signed?", "en"),
    ("Qual foi a importância histórica da Inconfidência Mineira para o Brasil?", "pt"),
])
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_detect_language_respects_candidates() -> None:
    assert detect_language("Who was Tiradentes?", ("pt",)) == "pt"
    assert detect_language("¿Quién fue Tiradentes y qué hizo en la historia?",
                           ("pt", "en", "es")) == "es"
