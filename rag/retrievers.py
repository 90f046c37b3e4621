"""Retrievers over a store, by name: ``dense`` (FAISS), ``bm25`` (bm25s) and ``hybrid`` (RRF).

``make_retriever("hybrid", store, k=5)`` gives a ``Retriever`` whose ``retrieve(questions)``
returns, per question, up to ``k`` passages best first:

- **dense**: the question embedded with the store's own embedder and query prompt
  (``store.embed_queries``; a store built with another embedder is refused there), searched with
  ``store.search_vectors``; ``score`` is the inner product (cosine on normalised vectors).
- **bm25**: ``rag.lexical`` over accent-folded, stopword-free tokens; ``score`` is BM25.
- **hybrid**: weighted reciprocal rank fusion, ``score = sum_i w_i / (rrf_k + rank_i)`` over the
  dense and bm25 top-``depth`` lists and a title list: each chunk of the i-th page the question
  names (title or redirect alias, ``rag.titles``) and that page's lead chunk get
  ``w_title / (rrf_k + i)``. With the default ``w_title = 2`` the first named page's best chunk
  ranks at least as high as any chunk of an unnamed page (which gets at most
  ``2 / (rrf_k + 1)`` from the two lists). Under de-duplication a named page keeps its lead
  chunk as a passage of its own besides its best chunk: the lead says who or what the subject
  is ("Quem foi Tiradentes?" needs "Joaquim José da Silva Xavier, conhecido como Tiradentes"),
  the best chunk holds the specific fact.

Chunks are over-fetched (``fetch`` x k), optionally reranked by a cross-encoder, then
de-duplicated per page or merged (``rag.passages.dedup``) and cut to ``k``. ``k`` below 1 is
refused; ``k`` above the number of chunks in the store is clamped to it with a warning.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from core.errors import UserError
from core.registry import Registry
from rag.lexical import Bm25Params, LexicalIndex
from rag.passages import DEDUP_MODES, Passage, StoreLike, dedup
from rag.rerank import Reranker, make_reranker
from rag.text import TOKENIZER_VERSION
from rag.titles import TitleMatcher

log = logging.getLogger(__name__)

Ranking = list[tuple[int, float]]  # (store row, score), best first
DEFAULT_WEIGHTS = {"dense": 1.0, "bm25": 1.0, "title": 2.0}


class Ranker(Protocol):
    """Ranks store rows for each query."""

    def rank(self, queries: Sequence[str], n: int) -> list[Ranking]:
        """Per query, up to ``n`` (row, score) pairs, best first."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings that identify this ranker's output (for provenance)."""
        ...


RETRIEVERS: Registry[Callable[..., Ranker]] = Registry("retriever")


@RETRIEVERS.register("dense")
class DenseRanker:
    """Inner-product search in the store's FAISS index with the store's own query embedder."""

    def __init__(self, store: StoreLike, progress: bool = True) -> None:
        self.store = store

    def rank(self, queries: Sequence[str], n: int) -> list[Ranking]:
        """Embed the queries (store's embedder and query prompt) and search the index."""
        scores, rows = self.store.search_vectors(self.store.embed_queries(list(queries)), n)
        return [[(int(r), float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
                for srow, rrow in zip(scores, rows, strict=True)]

    def describe(self) -> dict[str, Any]:
        """The embedder is part of the store; nothing else to record."""
        return {"embedder": self.store.embedder_name()}


@RETRIEVERS.register("bm25")
class Bm25Ranker:
    """BM25 over the store's chunks, the index cached in the store dir."""

    def __init__(self, store: StoreLike, progress: bool = True,
                 params: Bm25Params = Bm25Params()) -> None:
        self.params = params
        self.index = LexicalIndex.for_store(store, params, progress=progress)

    def rank(self, queries: Sequence[str], n: int) -> list[Ranking]:
        """Top ``n`` chunks with a positive BM25 score."""
        return self.index.rank(list(queries), n)

    def describe(self) -> dict[str, Any]:
        """BM25 constants and the tokenizer version."""
        return {"bm25": asdict(self.params), "tokenizer_version": TOKENIZER_VERSION}


@RETRIEVERS.register("hybrid")
class HybridRanker:
    """Weighted reciprocal rank fusion of dense, bm25 and the pages the question names."""

    def __init__(self, store: StoreLike, progress: bool = True, rrf_k: int = 60,
                 weights: Mapping[str, float] | None = None, depth: int = 50,
                 title_boost: bool = True, title_max_df: float = 0.1) -> None:
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown or rrf_k < 0 or depth < 1:
            raise UserError(f"hybrid needs rrf_k >= 0, depth >= 1 and weights among "
                            f"{', '.join(DEFAULT_WEIGHTS)} (got {sorted(unknown) or weights})")
        self.rrf_k, self.depth, self.title_boost = rrf_k, depth, title_boost
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.dense = DenseRanker(store)
        self.bm25 = Bm25Ranker(store, progress=progress)
        index = self.bm25.index
        self.titles = TitleMatcher(index.pages, store.aliases(), index.doc_freq, index.n_docs,
                                   title_max_df) if title_boost else None

    def rank(self, queries: Sequence[str], n: int) -> list[Ranking]:
        """Fuse the component rankings of each query; keep the ``n`` best."""
        depth = max(n, self.depth)
        dense, bm25 = self.dense.rank(queries, depth), self.bm25.rank(queries, depth)
        out = []
        for query, d, b in zip(queries, dense, bm25, strict=True):
            lists = {"dense": ranks_of(d), "bm25": ranks_of(b)}
            if self.titles is not None:
                lists["title"] = self.title_ranks(query, set(lists["dense"]) | set(lists["bm25"]))
            out.append(rrf(lists, self.weights, self.rrf_k)[:n])
        return out

    def title_ranks(self, query: str, candidates: set[int]) -> dict[int, int]:
        """Row -> rank i for the lead and the candidate chunks of the i-th named page."""
        ranks: dict[int, int] = {}
        for i, lead in enumerate(self.lead_rows(query), start=1):
            ranks.setdefault(lead, i)
            for row in self.bm25.index.page_rows(lead):
                if row in candidates:
                    ranks.setdefault(row, i)
        return ranks

    def lead_rows(self, query: str) -> list[int]:
        """The lead chunk (first row) of each page ``query`` names, in match order."""
        if self.titles is None:
            return []
        return [m.page.first_row for m in self.titles.match(query)]

    def describe(self) -> dict[str, Any]:
        """Fusion constants plus both components' settings."""
        return {"rrf_k": self.rrf_k, "weights": self.weights, "depth": self.depth,
                "title_boost": self.title_boost, **self.dense.describe(), **self.bm25.describe()}


def ranks_of(ranking: Ranking) -> dict[int, int]:
    """Row -> 1-based rank."""
    return {row: i for i, (row, _) in enumerate(ranking, start=1)}


def rrf(lists: Mapping[str, Mapping[int, int]], weights: Mapping[str, float],
        k: int = 60) -> Ranking:
    """Weighted reciprocal rank fusion: ``sum w / (k + rank)``; ties by best rank, then row."""
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for name, ranks in lists.items():
        w = weights.get(name, 1.0)
        for row, rank in ranks.items():
            scores[row] = scores.get(row, 0.0) + w / (k + rank)
            best[row] = min(best.get(row, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best[item[0]], item[0]))


@dataclass
class Retriever:
    """A named ranker plus what turns rows into passages: fetch, rerank, dedup, top-k."""

    name: str
    store: StoreLike
    ranker: Ranker
    k: int = 5
    dedup: str = "page"
    reranker: Reranker | None = None
    fetch: int = 4

    def retrieve(self, queries: Sequence[str], k: int | None = None) -> list[list[Passage]]:
        """Per query, up to ``k`` passages best first (see the module docstring)."""
        check_queries(queries)
        k = clamp_k(self.k if k is None else k, len(self.store))
        n = k if self.dedup == "none" and self.reranker is None else k * self.fetch
        rankings = self.ranker.rank(list(queries), min(n, len(self.store)))
        passages = self._passages(rankings)
        if self.reranker is not None:
            passages = [rerank(self.reranker, q, ps) for q, ps in zip(queries, passages,
                                                                         strict=True)]
        leads = getattr(self.ranker, "lead_rows", lambda _q: ())
        return [dedup(ps, self.dedup, keep=set(leads(q)))[:k]
                for q, ps in zip(queries, passages, strict=True)]

    def _passages(self, rankings: list[Ranking]) -> list[list[Passage]]:
        """Look every ranked row up once and build the passages."""
        rows = sorted({row for ranking in rankings for row, _ in ranking})
        chunks = {int(c.row): c for c in self.store.chunks(rows)} if rows else {}
        return [[Passage.from_chunk(chunks[row], score) for row, score in ranking]
                for ranking in rankings]

    def describe(self) -> dict[str, Any]:
        """Everything that identifies this retriever's output (recorded by ``compare``)."""
        rr = getattr(self.reranker, "path", type(self.reranker).__name__) if self.reranker else None
        return {"retriever": self.name, "k": self.k, "dedup": self.dedup, "fetch": self.fetch,
                "reranker": str(rr) if rr else None, **self.ranker.describe()}


def rerank(reranker: Reranker, query: str, passages: list[Passage]) -> list[Passage]:
    """Passages re-sorted by the reranker's scores (which replace the retrieval scores)."""
    scores = reranker.score(query, [p.text for p in passages])
    scored = [replace(p, score=float(s)) for p, s in zip(passages, scores, strict=True)]
    return sorted(scored, key=lambda p: -p.score)


def check_queries(queries: Sequence[str]) -> None:
    """Refuse a bare string (a common slip) and empty questions, naming the first bad one."""
    if isinstance(queries, str):
        raise TypeError("retrieve() takes a list of questions, not one string")
    for i, q in enumerate(queries, start=1):
        if not isinstance(q, str) or not q.strip():
            raise UserError(f"question {i} is empty; ask something (e.g. \"Quem foi Tiradentes?\")")


def check_k(k: int) -> int:
    """``k`` itself, refused unless it is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"k must be at least 1 (passages per question), not {k!r}")
    return k


def clamp_k(k: int, size: int) -> int:
    """``k`` checked (>= 1) and clamped to the store size with a warning."""
    check_k(k)
    if size < 1:
        raise UserError("the store has no chunks; rebuild it with `ingest build`")
    if k > size:
        log.warning("k=%d is more than the %d chunks in the store; returning at most %d",
                    k, size, size)
        return size
    return k


def make_retriever(name: str, store: StoreLike, **opts: Any) -> Retriever:
    """Registry lookup: ``dense`` | ``bm25`` | ``hybrid``; ``opts`` are ``k``, ``dedup``,
    ``reranker``, ``fetch`` and the ranker's own (``rrf_k``, ``weights``, ``depth``,
    ``title_boost``, ``title_max_df``, ``params``, ``progress``)."""
    factory = RETRIEVERS.get(name)
    k, mode, fetch = opts.pop("k", 5), opts.pop("dedup", "page"), opts.pop("fetch", 4)
    reranker = make_reranker(opts.pop("reranker", None))
    if mode not in DEDUP_MODES:
        raise UserError(f"unknown dedup mode {mode!r}; use one of {', '.join(DEDUP_MODES)}")
    if not isinstance(fetch, int) or fetch < 1:
        raise UserError(f"fetch must be at least 1, not {fetch!r}")
    check_k(k)
    check_options(name, factory, opts)
    ranker = factory(store, **opts)
    return Retriever(name, store, ranker, k=k, dedup=mode, reranker=reranker, fetch=fetch)


def check_options(name: str, factory: Callable[..., Ranker], opts: Mapping[str, Any]) -> None:
    """Refuse options the ranker does not take, with the closest known one."""
    known = [p for p in inspect.signature(factory).parameters if p != "store"]
    for key in opts:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"retriever {name!r} has no option {key!r}.{hint} "
                            f"Its options: k, dedup, fetch, reranker, {', '.join(known)}.")
