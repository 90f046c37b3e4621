"""Section-aware passages of about ``chunk_words`` words, capped by the embedder's token limit.

Sentences are packed into chunks that never cross a section; consecutive chunks of a section
share their last whole sentences (up to ``overlap`` words, else the last ``overlap`` words), so
``rag.passages.join_overlapping`` can stitch neighbours back together. Every chunk's embedded text
(``"Title — Section: text"``, see ``embed_text``) is counted with the embedder's own tokenizer;
a chunk over the model's window is split again, so nothing is silently truncated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.registry import Registry
from core.text import split_sentences
from ingest.clean import CleanPage

EMBED_TEMPLATE = "{title} — {section}: {text}"  # the lead (section "") is "{title}: {text}"

TokenCounter = Callable[[Sequence[str]], list[int]]  # texts -> tokens the model sees for each
COUNTERS: Registry[Callable[[dict[str, Any]], TokenCounter]] = Registry("token counter")


@dataclass(frozen=True)
class ChunkOptions:
    """Chunk size (words), overlap (words), the model's window (tokens), title prefix."""

    chunk_words: int = 120
    overlap: int = 20
    max_tokens: int = 512
    title_prefix: bool = True

    def __post_init__(self) -> None:
        if self.chunk_words < 10:
            raise ValueError(f"chunk_words must be at least 10, not {self.chunk_words}")
        if not 0 <= self.overlap < self.chunk_words // 2:
            raise ValueError(f"overlap must be in [0, chunk_words/2), not {self.overlap}")


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has a store row."""

    page_id: int
    ordinal: int
    title: str
    section: str
    text: str
    sha256: str

    @property
    def chunk_id(self) -> str:
        """Stable id: page id and position within the page."""
        return f"{self.page_id}-{self.ordinal}"


@dataclass(frozen=True)
class CounterSpec:
    """How a (worker) process builds the token counter: a registry name and the embedder info."""

    kind: str
    embedder: dict[str, Any]

    def load(self) -> TokenCounter:
        """The counter function (loads a tokenizer for ``hf``)."""
        return COUNTERS.get(self.kind)(self.embedder)


@COUNTERS.register("hf")
def hf_counter(info: dict[str, Any]) -> TokenCounter:
    """Counts with the embedder's Hugging Face tokenizer: passage prompt + text + specials."""
    from models.embedders import EmbedderInfo, load_tokenizer_for, token_lengths

    tokenizer = load_tokenizer_for(EmbedderInfo(**info))
    prompt = str(info.get("passage_prompt") or "")
    return lambda texts: token_lengths(tokenizer, texts, prompt)


@COUNTERS.register("words")
def word_counter(info: dict[str, Any]) -> TokenCounter:
    """Whitespace words + prompt words + 2 specials (for fake embedders without a tokenizer)."""
    extra = len(str(info.get("passage_prompt") or "").split()) + 2
    return lambda texts: [len(t.split()) + extra for t in texts]


def embed_text(title: str, section: str, text: str, title_prefix: bool = True) -> str:
    """What is embedded for a chunk: the title (and section) give the passage its subject."""
    if not title_prefix:
        return text
    if section:
        return EMBED_TEMPLATE.format(title=title, section=section, text=text)
    return f"{title}: {text}"


@dataclass(frozen=True)
class _Unit:
    text: str
    words: int
    new_paragraph: bool


def sentence_units(text: str, max_words: int) -> list[_Unit]:
    """Sentences (paragraph starts marked); a sentence over ``max_words`` is cut in windows."""
    units: list[_Unit] = []
    for paragraph in text.split("\n"):
        first = True
        for sentence in split_sentences(paragraph):
            words = sentence.split()
            for i in range(0, len(words), max_words):
                part = words[i:i + max_words]
                units.append(_Unit(" ".join(part), len(part), first))
                first = False
    return units


def _join(units: Sequence[_Unit]) -> str:
    parts = [("\n" if u.new_paragraph and i else " " if i else "") + u.text
             for i, u in enumerate(units)]
    return "".join(parts)


def _tail(units: list[_Unit], overlap: int) -> list[_Unit]:
    """The trailing whole sentences within ``overlap`` words, else the last ``overlap`` words."""
    out: list[_Unit] = []
    total = 0
    for unit in reversed(units):
        if total + unit.words > overlap:
            break
        out.insert(0, unit)
        total += unit.words
    if not out and overlap and units:
        words = units[-1].text.split()[-overlap:]
        out = [_Unit(" ".join(words), len(words), False)]
    return out


def pack(text: str, chunk_words: int, overlap: int) -> list[str]:
    """One section's text as overlapping chunks of at most ``chunk_words`` words."""
    chunks: list[list[_Unit]] = []
    cur: list[_Unit] = []
    fresh = 0  # words in ``cur`` that are not overlap from the previous chunk
    for unit in sentence_units(text, chunk_words):
        if fresh and sum(u.words for u in cur) + unit.words > chunk_words:
            chunks.append(cur)
            cur, fresh = _tail(cur, overlap), 0
        while cur and not fresh and sum(u.words for u in cur) + unit.words > chunk_words:
            cur.pop(0)  # the overlap would push this chunk over the size
        cur.append(unit)
        fresh += unit.words
    if fresh:
        small = fresh < chunk_words // 4
        if chunks and small and sum(u.words for u in chunks[-1]) + fresh <= chunk_words * 5 // 4:
            chunks[-1] = chunks[-1] + cur[len(cur) - _fresh_units(cur, fresh):]
        else:
            chunks.append(cur)
    return [_join(c) for c in chunks]


def _fresh_units(units: list[_Unit], fresh: int) -> int:
    """How many trailing units hold the ``fresh`` (non-overlap) words."""
    total, n = 0, 0
    for unit in reversed(units):
        if total >= fresh:
            break
        total += unit.words
        n += 1
    return n


def fit_tokens(title: str, section: str, text: str, options: ChunkOptions,
               count: TokenCounter) -> list[str]:
    """``text`` as one or more pieces whose embedded text fits the model's window."""
    if count([embed_text(title, section, text, options.title_prefix)])[0] <= options.max_tokens:
        return [text]
    words = text.split()
    if len(words) > 1:
        half = len(words) // 2
        return [p for part in (words[:half], words[half:])
                for p in fit_tokens(title, section, " ".join(part), options, count)]
    prefix = count([embed_text(title, section, "", options.title_prefix)])[0]
    if prefix >= options.max_tokens or len(text) < 2:
        raise ValueError(f"the title/section of {title!r} alone exceed {options.max_tokens} "
                         "tokens; use --no-title-prefix or an embedder with a longer window")
    half = len(text) // 2  # one enormous "word" (a URL, a formula): cut it by characters
    return [p for part in (text[:half], text[half:])
            for p in fit_tokens(title, section, part, options, count)]


def chunk_page(page: CleanPage, options: ChunkOptions, count: TokenCounter) -> list[ChunkDraft]:
    """Every chunk of one article, ordinals from 0 in page order."""
    pieces = [(section, text) for section, body in page.sections
              for text in pack(body, options.chunk_words, options.overlap)]
    tokens = count([embed_text(page.title, s, t, options.title_prefix) for s, t in pieces])
    fitted: list[tuple[str, str]] = []
    for (section, text), n in zip(pieces, tokens, strict=True):
        if n <= options.max_tokens:
            fitted.append((section, text))
        else:
            fitted.extend((section, p) for p in fit_tokens(page.title, section, text, options,
                                                           count))
    return [ChunkDraft(page_id=page.page_id, ordinal=i, title=page.title, section=section,
                       text=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
            for i, (section, text) in enumerate(fitted)]
