"""core.text: accent folding, sentence splitting and language identification (the one copy)."""

from __future__ import annotations

import pytest

from core.text import fold, fold_accents, identify_language, split_sentences, squash


def test_fold_accents_keeps_case_and_fold_also_casefolds() -> None:
    assert fold_accents("Constituição Áurea ç") == "Constituicao Aurea c"
    assert fold("ÁUREA") == "aurea"
    assert fold("  Referências ") == "  referencias "  # whitespace is the caller's business
    assert fold("Straße") == "strasse"  # full case folding, not just lower()
    assert fold("ﬁm") == "fim"  # NFKD also splits compatibility ligatures


def test_squash() -> None:
    assert squash("  a \n\t b  ") == "a b"
    assert squash("") == ""


def test_sentences_split_before_a_capital_or_digit_only() -> None:
    text = "Primeira frase. Segunda frase!  Terceira? «Quarta» aqui. 1822 foi o ano. e fim"
    assert split_sentences(text) == ["Primeira frase.", "Segunda frase!", "Terceira?",
                                     "«Quarta» aqui.", "1822 foi o ano. e fim"]
    assert split_sentences("") == [] and split_sentences("   ") == []
    assert split_sentences("Sem ponto") == ["Sem ponto"]


@pytest.mark.parametrize("text", [
    "A rainha D. Maria I comutou as penas.",
    "Nasceu em c. 1467 em Belmonte.",
    "O Sr. Silva e a Profa. Souza chegaram.",
    "Ver p. 12 e pp. 14-15 do livro.",
])
def test_abbreviations_do_not_end_sentences(text: str) -> None:
    assert split_sentences(f"{text} Outra frase.") == [text, "Outra frase."]


def test_roman_numerals_and_short_words_do_end_sentences() -> None:
    assert split_sentences("Nasceu no século XX. É autor de canções.") == [
        "Nasceu no século XX.", "É autor de canções."]
    assert split_sentences("Fundou o PT. Depois foi eleito.") == ["Fundou o PT.",
                                                                  "Depois foi eleito."]


def test_default_squashes_whitespace() -> None:
    assert split_sentences("Uma  frase\n com quebra. Outra\tfrase.") == [
        "Uma frase com quebra.", "Outra frase."]


def test_keep_whitespace_gives_back_the_text() -> None:
    text = "  Primeira frase. Segunda frase!  Terceira? Sem ponto"
    parts = split_sentences(text, keep_whitespace=True)
    assert "".join(parts) == text
    assert parts == ["  Primeira frase. ", "Segunda frase!  ", "Terceira? ", "Sem ponto"]
    royal = "A rainha D. Maria I reinou.\nDepois veio D. João VI. "
    parts = split_sentences(royal, keep_whitespace=True)
    assert parts == ["A rainha D. Maria I reinou.\n", "Depois veio D. João VI. "]
    assert split_sentences("", keep_whitespace=True) == []


def test_both_modes_cut_at_the_same_places() -> None:
    text = "O Sr. Silva chegou. Ele disse: «Olá». Em 1822 foi a independência. Fim do texto"
    kept = split_sentences(text, keep_whitespace=True)
    assert [s.strip() for s in kept] == split_sentences(text)


def test_identify_language_among_candidates() -> None:
    assert identify_language("Quem foi o primeiro imperador do Brasil?", ("pt", "en")) == "pt"
    assert identify_language("Who was the first emperor of Brazil?", ("pt", "en")) == "en"
    assert identify_language("¿Quién fue el primer emperador de Brasil?",
                             ("pt", "en", "es")) == "es"
    assert identify_language("anything", ("en",)) == "en"  # one candidate: no model needed
    with pytest.raises(ValueError, match="at least one"):
        identify_language("x", ())


def test_importing_core_text_loads_no_language_model() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, core.text; "
            "assert 'py3langid' not in sys.modules and 'py3langid.langid' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parents[2])
