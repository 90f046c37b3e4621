"""Retrieval quality apart from generation: hit@k, recall@k and MRR against gold titles.

Per question, with the top-``k`` passages (one per page by default) and the question's
``gold_titles`` (redirect aliases resolved to their targets, MediaWiki first-letter case):
hit@k = 1 if any gold page is retrieved; recall@k = the fraction of gold pages retrieved;
MRR = 1 / rank of the first gold page (0 when none is in the top ``k``). Each is averaged over
the questions that have gold titles. The questions come from ``core.questions.read_questions``
(the one questions JSONL contract); those without ``gold_titles`` are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from core.errors import UserError
from core.questions import Question
from rag.lexical import LexicalIndex
from rag.passages import StoreLike
from rag.retrievers import Retriever, make_retriever

log = logging.getLogger(__name__)

BATCH = 32


def normalize_title(title: str) -> str:
    """MediaWiki form: spaces for underscores, collapsed whitespace, first letter upper-case."""
    title = " ".join(title.replace("_", " ").split())
    return title[:1].upper() + title[1:]


def resolve_title(title: str, aliases: Mapping[str, str], hops: int = 3) -> str:
    """``title`` normalised, following redirects (a few hops, for double redirects)."""
    title = normalize_title(title)
    for _ in range(hops):
        target = aliases.get(title)
        if target is None:
            break
        title = normalize_title(target)
    return title


def question_scores(retrieved: Sequence[str], gold: set[str]) -> tuple[float, float, float]:
    """(hit, recall, reciprocal rank) of retrieved titles (best first) against gold titles."""
    found = [t for t in dict.fromkeys(retrieved) if t in gold]
    hit = float(bool(found))
    recall = len(found) / len(gold) if gold else 0.0
    rank = next((i for i, t in enumerate(retrieved, start=1) if t in gold), 0)
    return hit, recall, (1.0 / rank if rank else 0.0)


@dataclass
class RetrievalReport:
    """One retriever's averages and per-question details."""

    retriever: str
    k: int
    questions: int
    hit: float
    recall: float
    mrr: float
    per_question: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json``)."""
        return asdict(self)


def evaluate(retriever: Retriever, questions: Sequence[Question], k: int,
             aliases: Mapping[str, str], progress: bool = True) -> RetrievalReport:
    """hit@k, recall@k and MRR of ``retriever`` over the questions that have gold titles."""
    scored = [q for q in questions if q.gold_titles]
    rows, sums = [], [0.0, 0.0, 0.0]
    starts = range(0, len(scored), BATCH)
    for start in tqdm(starts, desc=f"retrieval ({retriever.name})", unit="batch",
                      disable=not progress or len(scored) <= BATCH):
        batch = scored[start:start + BATCH]
        for q, passages in zip(batch, retriever.retrieve([q.question for q in batch], k),
                               strict=True):
            gold = {resolve_title(t, aliases) for t in q.gold_titles}
            titles = [normalize_title(p.title) for p in passages]
            scores = question_scores(titles, gold)
            sums = [s + x for s, x in zip(sums, scores, strict=True)]
            rows.append({"id": q.id, "hit": scores[0], "recall": round(scores[1], 4),
                         "rr": round(scores[2], 4), "retrieved": titles, "gold": sorted(gold)})
    n = max(len(rows), 1)
    return RetrievalReport(retriever.name, k, len(rows), sums[0] / n, sums[1] / n, sums[2] / n,
                           rows)


def evaluate_retrievers(store: StoreLike, questions: Sequence[Question],
                        names: Sequence[str], k: int = 5, progress: bool = True,
                        **opts: Any) -> list[RetrievalReport]:
    """``evaluate`` for each named retriever over the same questions."""
    if not any(q.gold_titles for q in questions):
        raise UserError("no question has gold_titles; retrieval cannot be scored without them")
    skipped = sum(not q.gold_titles for q in questions)
    if skipped:
        log.warning("%d question(s) without gold_titles are left out", skipped)
    aliases = {normalize_title(a): t for a, t in store.aliases().items()}
    titles = {p.title for p in LexicalIndex.for_store(store, progress=progress).pages}
    missing = missing_gold_titles(questions, titles, aliases)
    if missing:
        log.warning("%d gold title(s) are no page of the store, so no retriever can find them: "
                    "%s", len(missing), ", ".join(missing[:20]))
    reports = []
    for name in names:
        retriever = make_retriever(name, store, k=k, progress=progress, **opts)
        reports.append(evaluate(retriever, questions, k, aliases, progress))
    return reports


def missing_gold_titles(questions: Sequence[Question], titles: set[str],
                        aliases: Mapping[str, str]) -> list[str]:
    """Gold titles (after redirects) that are no page of the store: no retriever can find them."""
    norm = {normalize_title(a): t for a, t in aliases.items()}
    gold = {resolve_title(t, norm) for q in questions for t in q.gold_titles}
    return sorted(gold - {normalize_title(t) for t in titles})


def format_table(reports: Sequence[RetrievalReport]) -> str:
    """A Markdown table: one row per retriever."""
    if not reports:
        return ""
    k = reports[0].k
    lines = [f"| retriever | questions | hit@{k} | recall@{k} | MRR@{k} |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.retriever} | {r.questions} | {r.hit:.3f} | {r.recall:.3f} | {r.mrr:.3f} |"
              for r in reports]
    return "\n".join(lines)
