"""The language of a question, among the languages a prompt template offers.

``detect_language("Who was Tiradentes?", ("pt", "en"))`` -> ``"en"``. Questions of at least
``MIN_WORDS`` words go to py3langid restricted to the candidate languages
(``core.text.identify_language``); shorter ones (where character n-gram models guess poorly) use
``rag.text.guess_language``'s stopword count, which falls back to the first candidate on a tie.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.text import identify_language
from rag.text import guess_language, words

MIN_WORDS = 4


def detect_language(text: str, languages: Sequence[str] = ("pt", "en")) -> str:
    """The most likely of ``languages`` for ``text`` (the first one when undecidable)."""
    langs = tuple(dict.fromkeys(languages))
    if not langs:
        raise ValueError("detect_language needs at least one candidate language")
    if len(langs) == 1:
        return langs[0]
    if len(words(text)) < MIN_WORDS:
        guess = guess_language(text, default=langs[0])
        return guess if guess in langs else langs[0]
    return identify_language(text, langs)
