"""Context-aware pairs (RAFT, Zhang et al. 2024) for an adapter meant to answer with retrieval.

A share of the pairs gets passages from the store's own retriever — the one the evaluated RAG
system uses — so that ``rag+finetuned`` is evaluated the way its adapter was trained:

* **gold among distractors** (``1 - absent`` of the chosen pairs): the passage of the pair's
  source article that holds the answer, plus ``k - 1`` passages the retriever returns for the
  question from other articles, in a deterministic shuffled order; the answer is unchanged;
* **gold absent** (``absent`` of them): ``k`` distractors only, and the answer is the rag
  template's refusal sentence ("O contexto não contém a resposta."), so the model learns to
  decline when the context does not hold the answer instead of answering from memory.

A pair qualifies only when some chunk of its source article contains its answer (accent- and
case-folded; a long answer by its opening words), so the gold passage really supports the
answer. Which pairs are chosen and which are gold-absent is decided by sha256 of the seed and
the instruction, so a pairs file is reproducible; the counts are exact: the pairs are ranked by
that hash and the first ``round(share × qualifying)`` are chosen, the first
``round(absent × chosen)`` of those (ranked again, with another salt) lose their gold passage.
(An independent draw per pair gave 30% gold-absent where 20% was asked, on 103 pairs.) The
passages are stored on the pair (``Pair.context``); training renders them with the rag template
(``finetune.prompting``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.errors import UserError
from core.text import fold, squash
from finetune.records import Pair

log = logging.getLogger(__name__)
ANSWER_PREFIX_CHARS = 60  # a long answer is found in its chunk by its opening characters


@dataclass(frozen=True)
class RaftConfig:
    """How many pairs get passages, and which kind."""

    share: float = 0.0  # of the pairs that qualify; 0: no context-aware pairs
    absent: float = 0.05  # of those, the share with the gold passage left out (target: refusal)
    k: int = 2  # passages per pair: compare's default k
    retriever: str = "hybrid"  # the retriever the RAG system uses
    template: str = "short"  # the rag template whose refusal sentence gold-absent pairs answer
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("share", "absent"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"raft {name} must be in [0, 1], not {value}")
        if self.k < 1:
            raise UserError(f"raft k must be at least 1, not {self.k}")


def _unit(seed: int, salt: str, text: str) -> float:
    """A deterministic number in [0, 1) from the seed and a text."""
    digest = hashlib.sha256(f"{seed}:{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _ranked(pairs: Sequence[Pair], indices: Sequence[int], seed: int, salt: str) -> list[int]:
    """``indices`` in the order of their pairs' hashes (``_unit``): taking the first n draws
    exactly n, reproducibly."""
    return sorted(indices, key=lambda i: (_unit(seed, salt, pairs[i].instruction), i))


def passage_record(passage: Any) -> dict[str, Any]:
    """What a pair stores of a passage: enough to render it exactly as the RAG prompt does."""
    return {"title": str(passage.title), "section": str(passage.section or ""),
            "text": str(passage.text), "chunk_id": str(passage.chunk_id),
            "page_id": int(passage.page_id)}


def _answer_key(output: str) -> str:
    return fold(squash(output))[:ANSWER_PREFIX_CHARS].rstrip(" .")


def gold_chunk(chunks: Sequence[Any], output: str) -> Any | None:
    """The first chunk that contains the answer (folded; a long answer by its opening)."""
    key = _answer_key(output)
    if not key:
        return None
    return next((c for c in chunks if key in fold(squash(c.text))), None)


def source_chunks(store: Any, titles: set[str]) -> dict[str, list[Any]]:
    """The chunks of the named articles, in order (one pass over the store)."""
    out: dict[str, list[Any]] = defaultdict(list)
    for chunk in store.iter_chunks():
        if chunk.title in titles:
            out[chunk.title].append(chunk)
    return out


def add_context(pairs: Sequence[Pair], store: Any, config: RaftConfig, lang: str = "pt",
                retriever: Any = None, progress: bool = True
                ) -> tuple[list[Pair], dict[str, Any]]:
    """``pairs`` with a share of them carrying passages (see the module docstring); returns the
    pairs and the record the pairs' meta keeps (settings and counts)."""
    counts: Counter[str] = Counter()
    record: dict[str, Any] = {"share": config.share, "absent": config.absent, "k": config.k,
                              "retriever": config.retriever, "template": config.template,
                              "seed": config.seed}
    if config.share <= 0 or not pairs:
        return list(pairs), {**record, "counts": {}}
    from rag.prompts import refusal_sentence

    refusal = refusal_sentence(lang, config.template)
    chunks = source_chunks(store, {p.source for p in pairs if p.source})
    golds = {i: gold_chunk(chunks.get(p.source, ()), p.output) for i, p in enumerate(pairs)}
    qualified = [i for i in range(len(pairs)) if golds[i] is not None]
    chosen = sorted(_ranked(pairs, qualified, config.seed, "raft")[
        :round(config.share * len(qualified))])
    absent_ones = set(_ranked(pairs, chosen, config.seed, "absent")[
        :round(config.absent * len(chosen))])
    counts["qualified"] = len(qualified)
    if retriever is None:
        from rag.retrievers import make_retriever

        retriever = make_retriever(config.retriever, store, k=config.k + 3, dedup="page",
                                   progress=progress)
    retrieved = retriever.retrieve([pairs[i].instruction for i in chosen]) if chosen else []
    out = list(pairs)
    for i, found in zip(chosen, retrieved, strict=True):
        pair, gold = pairs[i], golds[i]
        key = _answer_key(pair.output)  # a distractor must not hold the answer either
        others = [p for p in found
                  if p.title != pair.source and key not in fold(squash(p.text))][:config.k]
        if i in absent_ones:
            if len(others) < config.k:
                counts["skipped_too_few_distractors"] += 1
                continue
            context = [passage_record(p) for p in others]
            out[i] = replace(pair, context=tuple(context), output=refusal, kind="raft-absent")
            counts["gold_absent"] += 1
            continue
        context = [passage_record(gold)] + [passage_record(p) for p in others[:config.k - 1]]
        order = sorted(range(len(context)),
                       key=lambda j: _unit(config.seed, f"order{j}", pair.instruction))
        out[i] = replace(pair, context=tuple(context[j] for j in order))
        counts["gold_present"] += 1
    log.info("context-aware pairs: %d with the gold passage, %d without (of %d that qualify)",
             counts["gold_present"], counts["gold_absent"], counts["qualified"])
    return out, {**record, "counts": dict(counts)}
