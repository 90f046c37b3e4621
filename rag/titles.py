"""Pages a question names: page titles and redirect aliases found in the question text.

"Quem foi Dom Pedro I?" names "Pedro I do Brasil" through the redirect "Dom Pedro I". Matching
is on folded words (case and accents ignored, stopwords kept), longest phrase first, phrases
not overlapping; a parenthesised disambiguator is optional ("Estado Novo (Brasil)" also
matches "Estado Novo"). Titles made only of very common words (every content token in more
than ``max_df`` of the chunks, like "Brasil" in a Brazilian-history store) name nothing: they
would boost one generic page for most questions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from rag.lexical import PageEntry
from rag.text import tokenize, words

MAX_TITLE_WORDS = 8
_PAREN = re.compile(r"\s*\([^)]*\)\s*$")


@dataclass(frozen=True)
class TitleMatch:
    """A page named by a question, and the phrase that named it."""

    page: PageEntry
    phrase: str


def title_keys(title: str) -> list[str]:
    """The folded phrases that name ``title``: itself, and without a trailing ``(...)``."""
    keys = [" ".join(words(title))]
    bare = _PAREN.sub("", title)
    if bare != title:
        keys.append(" ".join(words(bare)))
    return [k for k in dict.fromkeys(keys) if k]


class TitleMatcher:
    """Finds the pages a question names, by title or redirect alias."""

    def __init__(self, pages: Iterable[PageEntry], aliases: Mapping[str, str],
                 doc_freq: Callable[[str], int] | None = None, n_docs: int = 0,
                 max_df: float = 0.1) -> None:
        by_title = {p.title: p for p in pages}
        self._phrases: dict[str, PageEntry] = {}
        names = list(by_title.items())
        for alias, target in aliases.items():
            page = by_title.get(_target_title(target))
            if page is not None:
                names.append((alias, page))
        for name, page in names:
            if doc_freq is not None and n_docs and _too_common(name, doc_freq, n_docs, max_df):
                continue
            for key in title_keys(name):
                self._phrases.setdefault(key, page)
        self.max_words = min(MAX_TITLE_WORDS, max((k.count(" ") + 1 for k in self._phrases),
                                                  default=1))

    def __len__(self) -> int:
        return len(self._phrases)

    def match(self, question: str) -> list[TitleMatch]:
        """Pages named in ``question``: longest phrases first, non-overlapping, one per page."""
        tokens = words(question)
        taken = [False] * len(tokens)
        found: dict[int, TitleMatch] = {}
        for n in range(min(self.max_words, len(tokens)), 0, -1):
            for i in range(len(tokens) - n + 1):
                phrase = " ".join(tokens[i:i + n])
                page = self._phrases.get(phrase)
                if page is None or any(taken[i:i + n]):
                    continue
                taken[i:i + n] = [True] * n
                found.setdefault(page.page_id, TitleMatch(page, phrase))
        return list(found.values())


def _too_common(name: str, doc_freq: Callable[[str], int], n_docs: int, max_df: float) -> bool:
    """Whether every content token of ``name`` occurs in more than ``max_df`` of the chunks."""
    tokens = tokenize(_PAREN.sub("", name)) or tokenize(name)
    return not tokens or all(doc_freq(t) > max_df * n_docs for t in tokens)


def _target_title(target: str) -> str:
    """A redirect target as a page title: no ``#section``, first letter upper-case."""
    title = " ".join(target.split("#", 1)[0].replace("_", " ").split())
    return title[:1].upper() + title[1:]
