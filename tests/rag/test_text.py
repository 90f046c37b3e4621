"""rag.text: tokens, stopwords, language guess (folding and sentences: tests/core/test_text.py)."""

from __future__ import annotations

from rag.text import STOPWORDS, guess_language, ngrams, tokenize, words


def test_tokenize_drops_accents_case_and_stopwords() -> None:
    assert tokenize("A Constituição de 1824") == ["constituicao", "1824"]
    assert tokenize("Quem foi Dom Pedro I?") == ["dom", "pedro"]  # "I" is one letter
    assert tokenize("Pedro II") == ["pedro", "ii"]
    assert tokenize("7 de setembro") == ["7", "setembro"]  # numbers kept, even one digit


def test_stopwords_are_folded_and_words_keep_them() -> None:
    assert "nao" in STOPWORDS and "não" not in STOPWORDS
    assert tokenize("Não é está") == []
    assert words("Não é, está!") == ["nao", "e", "esta"]
    assert words("d'Ávila_x") == ["d", "avila", "x"]  # underscores split like punctuation


def test_guess_language() -> None:
    assert guess_language("Quem foi Tiradentes?") == "pt"
    assert guess_language("Who was Tiradentes?") == "en"
    assert guess_language("Tiradentes?") == "pt"
    assert guess_language("Tiradentes?", default="en") == "en"
    assert guess_language("Qual é a capital?") == "pt"


def test_ngrams() -> None:
    assert ngrams(["a", "b", "c"], 2) == ["a", "b", "c", "a b", "b c"]
    assert ngrams(["a"], 3) == ["a"]
