"""Leakage control: drop training pairs that restate an evaluation question.

Similarity is a normalized token-set match: both texts are lower-cased, accents folded, split
into words, Portuguese/English function words removed, and the sorted set of what remains is
compared with ``difflib.SequenceMatcher.ratio`` (0..1). A pair is dropped when its instruction
(or instruction + input) reaches ``threshold`` against any question. An inverted index keeps the
comparison to questions sharing at least one content word, and difflib's cheap upper bounds skip
the rest, so thousands of pairs × hundreds of questions take seconds.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from finetune.records import Pair, bad_lines_error, iter_jsonl
from finetune.text import fold, tokens
from models.errors import UserError
from models.hashing import sha256_file

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.8
STOPWORDS = frozenset(fold(w) for w in """
a o as os um uma uns umas de do da dos das em no na nos nas por pelo pela pelos pelas para
pra com sem sob sobre ao aos à às e ou que qual quais quem quando onde como porque por quê
se foi foram era eram é são ser sua seu suas seus ele ela eles elas isso isto esse essa este
esta qual quanto quantos quantas lhe mais muito já não nao the of in on at to and or is was
were what which who whom when where how why did does do an by for with from as that this
""".split())


@dataclass(frozen=True)
class Question:
    """An evaluation question as the leakage filter sees it."""

    id: str
    text: str


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


def signature(text: str) -> str:
    """The comparison form: sorted, de-duplicated content words joined by spaces."""
    return " ".join(sorted({t for t in tokens(text) if t not in STOPWORDS}))


def similarity(a: str, b: str) -> float:
    """Normalized token-set similarity of two texts in [0, 1]."""
    return SequenceMatcher(None, signature(a), signature(b), autojunk=False).ratio()


def read_questions(path: Path) -> list[Question]:
    """Questions JSONL (``id`` + ``question``); every bad line reported in one error."""
    out: list[Question] = []
    bad: dict[int, str] = {}
    for number, obj in iter_jsonl(Path(path)):
        if isinstance(obj, dict) and isinstance(obj.get("question"), str) and obj["question"].strip():
            out.append(Question(id=str(obj.get("id", f"line-{number}")), text=obj["question"]))
        else:
            bad[number] = str(obj) if isinstance(obj, ValueError) else "no 'question' text"
    if bad:
        raise bad_lines_error(Path(path), bad)
    if not out:
        raise UserError(f"{path} holds no questions; pass a questions JSONL to --exclude-questions")
    return out


class LeakageFilter:
    """Matches pair instructions against a fixed question set."""

    def __init__(self, questions: Sequence[Question], threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0 < threshold <= 1:
            raise UserError(f"the leakage threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self.questions = list(questions)
        self._sigs = [signature(q.text) for q in self.questions]
        self._index: dict[str, list[int]] = {}
        for i, sig in enumerate(self._sigs):
            for word in sig.split():
                self._index.setdefault(word, []).append(i)

    def match(self, text: str) -> tuple[Question, float] | None:
        """The most similar question at or above the threshold, or None."""
        sig = signature(text)
        candidates = {i for word in sig.split() for i in self._index.get(word, ())}
        best: tuple[int, float] | None = None
        for i in sorted(candidates):
            matcher = SequenceMatcher(None, sig, self._sigs[i], autojunk=False)
            if matcher.real_quick_ratio() < self.threshold or matcher.quick_ratio() < self.threshold:
                continue
            score = matcher.ratio()
            if score >= self.threshold and (best is None or score > best[1]):
                best = (i, score)
        return (self.questions[best[0]], best[1]) if best else None

    def pair_match(self, pair: Pair) -> tuple[Question, float] | None:
        """A match on the instruction alone, or on instruction + input."""
        hit = self.match(pair.instruction)
        if hit is None and pair.input.strip():
            hit = self.match(f"{pair.instruction} {pair.input}")
        return hit


def filter_pairs(pairs: Sequence[Pair], questions_path: Path | None,
                 threshold: float = DEFAULT_THRESHOLD, max_examples: int = 20
                 ) -> tuple[list[Pair], LeakageReport]:
    """Drop pairs restating a question; without ``questions_path`` keep all (report says off)."""
    if questions_path is None:
        return list(pairs), LeakageReport(enabled=False, threshold=threshold)
    questions = read_questions(questions_path)
    filt = LeakageFilter(questions, threshold)
    report = LeakageReport(enabled=True, threshold=threshold, questions_path=str(questions_path),
                           questions_sha256=sha256_file(Path(questions_path)),
                           n_questions=len(questions))
    kept, counts = [], Counter()
    for pair in pairs:
        hit = filt.pair_match(pair)
        if hit is None:
            kept.append(pair)
            continue
        counts[hit[0].id] += 1
        if len(report.examples) < max_examples:
            report.examples.append({"instruction": pair.instruction, "question_id": hit[0].id,
                                    "question": hit[0].text, "similarity": round(hit[1], 3)})
    report.dropped = sum(counts.values())
    report.by_question = dict(sorted(counts.items()))
    log.info("leakage filter: dropped %d of %d pairs restating %d of %d questions",
             report.dropped, len(pairs), len(counts), len(questions))
    return kept, report


def report_json(report: LeakageReport) -> str:
    """Compact JSON of the report (for logs)."""
    return json.dumps(report.to_dict(), ensure_ascii=False)
