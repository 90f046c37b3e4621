"""rag.text: folding, tokens, stopwords, sentence split, language guess."""

from __future__ import annotations

from rag.text import (
    STOPWORDS,
    fold,
    fold_accents,
    guess_language,
    ngrams,
    split_sentences,
    tokenize,
    words,
)


def test_fold_and_tokenize_drop_accents_case_and_stopwords() -> None:
    assert fold_accents("Constituição Áurea") == "Constituicao Aurea"
    assert fold("ÁUREA") == "aurea"
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


def test_split_sentences_keeps_text() -> None:
    text = "Primeira frase. Segunda frase!  Terceira? Sem ponto"
    parts = split_sentences(text)
    assert "".join(parts) == text
    assert parts == ["Primeira frase. ", "Segunda frase!  ", "Terceira? ", "Sem ponto"]
    assert split_sentences("") == []


def test_ngrams() -> None:
    assert ngrams(["a", "b", "c"], 2) == ["a", "b", "c", "a b", "b c"]
    assert ngrams(["a"], 3) == ["a"]
