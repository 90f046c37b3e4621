"""Portuguese-first text handling for lexical retrieval: stopwords, words, BM25 tokens.

``tokenize("A Constituição de 1824")`` -> ``["constituicao", "1824"]``: lower-case, accents
folded with ``core.text.fold`` (so "Constituicao" finds "Constituição"), split on non-word
characters, Portuguese and English stopwords dropped, one-letter tokens dropped (numbers are
kept). No stemming: the sample questions use the articles' own word forms, and a wrong stem
costs more than it saves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from core.text import fold, fold_accents

TOKENIZER_VERSION = 1  # bump when tokenize() changes: cached BM25 indexes are rebuilt

_PT = """
a à ao aos aquela aquelas aquele aqueles aquilo as às até com como contra da das de dela
delas dele deles depois do dos e é ela elas ele eles em entre era eram essa essas esse esses
esta está estão estas estava estavam este estes eu foi fomos for foram fosse fossem fui há
isso isto já la lhe lhes lo mas me mesmo meu meus minha minhas muito na não nas nem no nos
nós nossa nossas nosso nossos num numa o os ou para pela pelas pelo pelos per por qual
quando que quem se seja sejam sem ser será seu seus si só sob sobre sua suas também te tem
têm tinha tinham um uma umas uns você vocês vos à às ser sido sendo ter tido teve tiveram
houve havia onde cujo cuja cujos cujas qual quais quanto quantos quanta quantas porque
pois assim então ainda bem cada outro outra outros outras todo toda todos todas tão tanto
"""
_EN = """
a an and are as at be been being but by did do does for from had has have he her his how
i if in into is it its me my no not of on or our she so than that the their them then there
these they this those to was we were what when where which who whom why will with would you
your about after before during over under between
"""


def _words(block: str) -> frozenset[str]:
    return frozenset(fold_accents(w) for w in block.split())


STOPWORDS_PT = _words(_PT)
STOPWORDS_EN = _words(_EN)
STOPWORDS = STOPWORDS_PT | STOPWORDS_EN
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The folded words of ``text``, stopwords kept (for phrase and title matching)."""
    return _WORD.findall(fold(text))


def tokenize(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Folded content tokens of ``text`` for BM25 (see the module docstring)."""
    return [w for w in words(text) if w not in stopwords and (len(w) > 1 or w.isdigit())]


def tokenize_many(texts: Iterable[str]) -> list[list[str]]:
    """``tokenize`` over many texts: the list-of-token-lists that ``bm25s`` indexes."""
    return [tokenize(t) for t in texts]


_PT_ONLY = STOPWORDS_PT - STOPWORDS_EN
_EN_ONLY = STOPWORDS_EN - STOPWORDS_PT


def guess_language(text: str, default: str = "pt") -> str:
    """``"pt"`` or ``"en"`` by counting language-specific stopwords; ties give ``default``."""
    ws = words(text)
    pt = sum(w in _PT_ONLY for w in ws) + len(re.findall(r"[ãõçâêôáéíóú]", text.lower()))
    en = sum(w in _EN_ONLY for w in ws)
    if pt == en:
        return default
    return "pt" if pt > en else "en"


def ngrams(tokens: Sequence[str], max_n: int) -> list[str]:
    """All space-joined n-grams of ``tokens`` for n = 1..max_n (for title lookup)."""
    return [" ".join(tokens[i:i + n]) for n in range(1, max_n + 1)
            for i in range(len(tokens) - n + 1)]
