"""Leakage control: drop training pairs that restate an evaluation question.

A question is reduced to its *signature*: lower-cased, accents folded, the interrogative frame
turned into one token ("quando" / "em que ano" -> ``_when_``, "onde" / "em que cidade" ->
``_where_``, "quem" -> ``_who_`` ...), function words removed. Two signatures are compared as
word sets with fuzzy word equality (difflib ratio >= 0.8 between words longer than 3 letters,
so "proclamada" meets "proclamação" but "capitanias" does not meet "capital"), scored by Dice
``2 * matched / (|a| + |b|)``. A pair is dropped when its instruction (or instruction + input)
reaches ``threshold`` against any question: "Onde nasceu Getúlio Vargas?" restates "Em que
cidade nasceu Getúlio Vargas?" (1.0), while "Quando nasceu Getúlio Vargas?" (0.75) and "O que
foi a Proclamação da República?" against "Em que data foi proclamada a República?" (0.75) are
different questions about the same subject, kept so the adapter still learns the article.
An inverted index over word prefixes limits the comparison to plausible questions.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.hashing import sha256_file
from core.questions import Question, read_questions
from core.text import fold
from finetune.records import Pair
from finetune.text import tokens

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.8
STOPWORD_TEXT = """
a o as os um uma uns umas de do da dos das em no na nos nas por pelo pela pelos pelas para
pra com sem sob sobre ao aos à às e ou que se foi foram era eram é são ser sua seu suas seus
ele ela eles elas isso isto esse essa este esta lhe mais muito já não nao the of in on at to
and or is was were whom did does do an by for with from as that this
"""
# interrogative frames -> one token each (on folded text; longer phrases first)
FRAMES = (
    (r"\bem que (?:data|ano|dia|mes|seculo|epoca|periodo)\b|\b(?:qual|que) (?:data|ano|dia)\b"
     r"|\bquando\b|\bwhen\b", "_when_"),
    (r"\bem que (?:cidade|local|lugar|estado|pais|regiao|provincia)\b"
     r"|\b(?:qual|que) (?:cidade|local|lugar)\b|\ba?onde\b|\bwhere\b", "_where_"),
    (r"\bpor ?que\b|\bporque\b|\bwhy\b", "_why_"),
    (r"\bquant[oa]s?\b|\bhow many\b|\bhow much\b", "_howmany_"),
    (r"\bo que\b|\bwhat\b", "_what_"),
    (r"\bqua(?:l|is)\b|\bwhich\b", "_which_"),
    (r"\bquem\b|\bwho\b", "_who_"),
    (r"\bcomo\b|\bhow\b", "_how_"),
)
FRAME_PATTERNS = tuple((re.compile(p), f" {token} ") for p, token in FRAMES)
WORD_MATCH = 0.8  # difflib ratio at which two words count as the same (inflections)
PREFIX = 4  # index key: the first letters of a word
STOPWORDS = frozenset(fold(w) for w in STOPWORD_TEXT.split())


@dataclass
class LeakageReport:
    """What the filter did: recorded in ``pairs.meta.json`` and copied into adapter manifests."""

    enabled: bool = False
    threshold: float = DEFAULT_THRESHOLD
    questions_path: str | None = None
    questions_sha256: str | None = None
    n_questions: int = 0
    dropped: int = 0
    by_question: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def signature(text: str) -> frozenset[str]:
    """The comparison form: interrogative frame tokens plus content words, folded."""
    folded = fold(text)
    for pattern, token in FRAME_PATTERNS:
        folded = pattern.sub(token, folded)
    return frozenset(t for t in tokens(folded) if t not in STOPWORDS)


def same_word(a: str, b: str) -> bool:
    """Exact match, or a close spelling for words longer than 3 letters (not frame tokens)."""
    if a == b:
        return True
    if min(len(a), len(b)) <= 3 or a.startswith("_") or b.startswith("_"):
        return False
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= WORD_MATCH


def dice(a: frozenset[str], b: frozenset[str]) -> float:
    """Fuzzy Dice coefficient of two signatures: each word of ``a`` matched at most once."""
    if not a or not b:
        return 0.0
    free = set(b - a)
    matched = len(a & b)
    for word in sorted(a - b):
        hit = next((w for w in sorted(free) if same_word(word, w)), None)
        if hit is not None:
            free.discard(hit)
            matched += 1
    return 2 * matched / (len(a) + len(b))


def similarity(a: str, b: str) -> float:
    """How much text ``a`` restates text ``b``, in [0, 1] (see the module docstring)."""
    return dice(signature(a), signature(b))


class LeakageFilter:
    """Matches pair instructions against a fixed question set."""

    def __init__(self, questions: Sequence[Question], threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0 < threshold <= 1:
            raise UserError(f"the leakage threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self.questions = list(questions)
        self._sigs = [signature(q.question) for q in self.questions]
        self._index: dict[str, set[int]] = {}
        for i, sig in enumerate(self._sigs):
            for word in sig:
                self._index.setdefault(word[:PREFIX], set()).add(i)

    def match(self, text: str) -> tuple[Question, float] | None:
        """The most similar question at or above the threshold, or None."""
        sig = signature(text)
        candidates = set().union(*(self._index.get(w[:PREFIX], ()) for w in sig)) if sig else ()
        best: tuple[int, float] | None = None
        for i in sorted(candidates):
            other = self._sigs[i]
            if 2 * min(len(sig), len(other)) / (len(sig) + len(other)) < self.threshold:
                continue  # even a perfect match of the smaller set stays below
            score = dice(sig, other)
            if score >= self.threshold and (best is None or score > best[1]):
                best = (i, score)
        return (self.questions[best[0]], best[1]) if best else None

    def pair_match(self, pair: Pair) -> tuple[Question, float] | None:
        """A match on the instruction alone, or on instruction + input."""
        hit = self.match(pair.instruction)
        if hit is None and pair.input.strip():
            hit = self.match(f"{pair.instruction} {pair.input}")
        return hit


def find_leaks(pairs: Sequence[Pair], questions_path: Path | None,
               threshold: float = DEFAULT_THRESHOLD, max_examples: int = 20
               ) -> tuple[list[bool], LeakageReport]:
    """One flag per pair (True = restates a question) and the report; all False when off."""
    if questions_path is None:
        return [False] * len(pairs), LeakageReport(enabled=False, threshold=threshold)
    questions = read_questions(questions_path)
    filt = LeakageFilter(questions, threshold)
    report = LeakageReport(enabled=True, threshold=threshold, questions_path=str(questions_path),
                           questions_sha256=sha256_file(Path(questions_path)),
                           n_questions=len(questions))
    flags: list[bool] = []
    counts: Counter[str] = Counter()
    for pair in pairs:
        hit = filt.pair_match(pair)
        flags.append(hit is not None)
        if hit is None:
            continue
        counts[hit[0].id] += 1
        if len(report.examples) < max_examples:
            report.examples.append({"instruction": pair.instruction, "question_id": hit[0].id,
                                    "question": hit[0].question, "similarity": round(hit[1], 3)})
    report.dropped = sum(counts.values())
    report.by_question = dict(sorted(counts.items()))
    log.info("leakage filter: dropped %d of %d pairs restating %d of %d questions",
             report.dropped, len(pairs), len(counts), len(questions))
    return flags, report


def filter_pairs(pairs: Sequence[Pair], questions_path: Path | None,
                 threshold: float = DEFAULT_THRESHOLD, max_examples: int = 20
                 ) -> tuple[list[Pair], LeakageReport]:
    """Drop pairs restating a question; without ``questions_path`` keep all (report says off)."""
    flags, report = find_leaks(pairs, questions_path, threshold, max_examples)
    return [p for p, leak in zip(pairs, flags, strict=True) if not leak], report


def report_json(report: LeakageReport) -> str:
    """Compact JSON of the report (for logs)."""
    return json.dumps(report.to_dict(), ensure_ascii=False)
