"""Text primitives every stage shares: accent folding, sentence splitting, language identification.

* ``fold_accents("Constituição")`` -> ``"Constituicao"`` (NFKD, combining marks dropped, case
  kept); ``fold("ÁUREA")`` -> ``"aurea"`` (case-folded too): the comparison form of a string for
  lexical matching (BM25 tokens, section names, leakage signatures, refusal phrases).
* ``split_sentences`` splits Portuguese/English prose after ``. ! ? …`` when the next sentence
  starts with a capital letter, a digit or an opening quote/bracket, keeping common abbreviations
  ("D. Pedro", "Sr. Silva", "p. 12") whole. The chunker, the pair templates and the context
  budget all cut text at the same boundaries.
* ``identify_language`` asks py3langid for the most likely of a few candidate languages; its
  model is loaded on first use (and cached per candidate set), not at import.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

# A sentence ends at . ! ? or … followed by whitespace and a sentence start: an optional opening
# quote or bracket, then an upper-case letter (Latin-1 range) or a digit.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"'«“(\[]?[A-ZÀ-ÖØ-Þ0-9])")
_SENTENCE_END_KEEP = re.compile(r"(?<=[.!?…])(\s+)(?=[\"'«“(\[]?[A-ZÀ-ÖØ-Þ0-9])")
# A piece ending in one of these is an abbreviation, not a sentence: it joins the next piece.
_ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-ZÀ-Þ]|Sr|Sra|Dr|Dra|Prof|Profa|St|Sto|Sta|Mr|Mrs|Ms|"
                           r"Jr|Vol|Cap|Art|Gen|Cel|Ten|Pe|Fr|pp?|n\.º|nº|No|cf|ca|c)\.$")
_SPACES = re.compile(r"\s+")


def fold_accents(text: str) -> str:
    """Strip diacritics, case kept: ``"Constituição"`` -> ``"Constituicao"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold(text: str) -> str:
    """Case-folded and accent-folded: ``"ÁUREA"`` -> ``"aurea"`` (what lexical matching uses)."""
    return fold_accents(text.casefold())


def squash(text: str) -> str:
    """Runs of whitespace (newlines included) collapsed to one space, ends stripped."""
    return _SPACES.sub(" ", text).strip()


def split_sentences(text: str, keep_whitespace: bool = False) -> list[str]:
    """The sentences of ``text`` (boundaries in the module docstring).

    By default whitespace is squashed (``squash``) and each sentence comes back without it. With
    ``keep_whitespace`` nothing is changed: each sentence keeps the whitespace after it, so
    ``"".join(split_sentences(text, keep_whitespace=True)) == text`` (for cutting a text to a
    prefix of whole sentences).
    """
    if not keep_whitespace:
        out: list[str] = []
        for piece in _SENTENCE_END.split(squash(text)):
            if out and _ABBREVIATION.search(out[-1]):
                out[-1] = f"{out[-1]} {piece}"
            elif piece:
                out.append(piece)
        return out
    parts = _SENTENCE_END_KEEP.split(text)  # sentence, separator, sentence, ..., sentence
    kept: list[str] = []
    for i in range(0, len(parts), 2):
        sentence, sep = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        if kept and _ABBREVIATION.search(kept[-1].rstrip()):
            kept[-1] += sentence + sep
        elif sentence or sep:
            kept.append(sentence + sep)
    return kept


@lru_cache(maxsize=8)
def _identifier(languages: tuple[str, ...]) -> Any:
    """A py3langid identifier restricted to ``languages`` (its model is npz, no pickle)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(languages))
    return ident


def identify_language(text: str, languages: Sequence[str]) -> str:
    """The ISO code py3langid finds most likely for ``text`` among ``languages``.

    Character n-grams need some text: callers decide what to do with very short strings.
    """
    langs = tuple(dict.fromkeys(languages))
    if not langs:
        raise ValueError("identify_language needs at least one candidate language")
    if len(langs) == 1:
        return langs[0]
    return str(_identifier(langs).classify(text)[0])
