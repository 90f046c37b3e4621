"""Small text helpers for pair making: sentence splitting, clipping, normalization."""

from __future__ import annotations

import re
import unicodedata

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"«“(\[]?[A-ZÁÀÂÃÉÊÍÓÔÕÚÇ0-9])")
# "D. Pedro", "Sr. Silva", "S. Paulo", "p. 12": an abbreviation, not a sentence end
_ABBREVIATION = re.compile(r"(?:\b[A-Za-z]{1,2}|\bSto|\bSta|\bDra?|\bProf|\bGen|\bCel)\.$")
_SPACES = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+", re.UNICODE)


def squash(text: str) -> str:
    """Collapse runs of whitespace to one space and strip."""
    return _SPACES.sub(" ", text).strip()


def sentences(text: str) -> list[str]:
    """Split into sentences (Portuguese punctuation, common abbreviations kept whole)."""
    pieces = [p for p in _SENTENCE_END.split(squash(text)) if p]
    merged: list[str] = []
    for piece in pieces:
        if merged and _ABBREVIATION.search(merged[-1]):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to whole sentences within ``max_chars`` (the first sentence hard-cut)."""
    text = squash(text)
    if len(text) <= max_chars:
        return text
    out = ""
    for sentence in sentences(text):
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    if out:
        return out
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def fold(text: str) -> str:
    """Lower-case, accents removed (NFKD): the comparison form of a string."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Word tokens of the folded text."""
    return _TOKEN.findall(fold(text))
