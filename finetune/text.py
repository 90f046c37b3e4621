"""Pair-making text helpers on top of ``core.text``: clipping to whole sentences, word tokens."""

from __future__ import annotations

import re

from core.text import fold, split_sentences, squash

_TOKEN = re.compile(r"\w+", re.UNICODE)


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to whole sentences within ``max_chars`` (the first sentence hard-cut)."""
    text = squash(text)
    if len(text) <= max_chars:
        return text
    out = ""
    for sentence in split_sentences(text):
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    if out:
        return out
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def tokens(text: str) -> list[str]:
    """Word tokens (``\\w+``, so the leakage filter's ``_when_`` frame tokens stay whole) of the
    folded text."""
    return _TOKEN.findall(fold(text))
