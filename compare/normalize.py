"""Portuguese-aware answer normalization (SQuAD-style, extended).

Drop bracketed citations ("[1]", "[2, 3]") and a leading "Resposta:" / "Answer:" label, lower-case,
fold accents, drop punctuation, drop the articles (pt: o/a/os/as/um/uma/uns/umas;
en: the/a/an), turn Portuguese number words and ordinal marks into digits ("sete" -> "7",
"1º" -> "1"), remove thousands separators ("1.888" stays "1888"), squeeze whitespace.
"""

from __future__ import annotations

import re

from core.text import fold_accents

ARTICLES = frozenset(["o", "a", "os", "as", "um", "uma", "uns", "umas", "the", "an"])
_NUMBER_WORDS = {
    "zero": 0, "dois": 2, "duas": 2, "tres": 3, "quatro": 4, "cinco": 5, "seis": 6, "sete": 7,
    "oito": 8, "nove": 9, "dez": 10, "onze": 11, "doze": 12, "treze": 13, "catorze": 14,
    "quatorze": 14, "quinze": 15, "dezesseis": 16, "dezessete": 17, "dezoito": 18,
    "dezenove": 19, "vinte": 20, "trinta": 30, "quarenta": 40, "cinquenta": 50, "sessenta": 60,
    "setenta": 70, "oitenta": 80, "noventa": 90, "cem": 100, "mil": 1000,
    "primeiro": 1, "primeira": 1, "segundo": 2, "segunda": 2, "terceiro": 3, "terceira": 3,
}
_ORDINAL = re.compile(r"(\d+)\.?\s*[ºª°]")
_THOUSANDS = re.compile(r"(?<=\d)\.(?=\d{3}\b)")
_PUNCT = re.compile(r"[^\w\s]")
_CITATION = re.compile(r"\[\s*\d+(?:\s*[,;–-]\s*\d+)*\s*\]")
_LABEL = re.compile(r"^\s*(?:resposta(?: curta)?|answer|short answer)\s*:\s*", re.I)


def normalize_answer(text: str) -> str:
    """Normalize an answer or reference for exact match and token F1."""
    text = _LABEL.sub("", _CITATION.sub(" ", text))
    text = _ORDINAL.sub(r"\1", text.lower())
    text = _THOUSANDS.sub("", text)
    text = _PUNCT.sub(" ", fold_accents(text).replace("_", " "))
    words = [str(_NUMBER_WORDS.get(w, w)) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def answer_tokens(text: str) -> list[str]:
    """Tokens of the normalized answer."""
    return normalize_answer(text).split()
