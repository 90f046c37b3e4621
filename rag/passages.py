"""What retrieval reads (a store, through a small protocol) and returns (passages).

``StoreLike`` is the part of ``ingest.store.Store`` that rag uses, so retrievers can be tested
with fakes; ``open_store`` opens the real one. Chunks of one page are de-duplicated (keep the
best chunk per page) or merged (the best chunk plus its retrieved neighbours, in page order).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import UserError

DEDUP_MODES = ("page", "merge", "none")


class StoreLike(Protocol):
    """The slice of ``ingest.store.Store`` rag relies on."""

    path: Path
    manifest: dict[str, Any]

    def __len__(self) -> int: ...
    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def chunks(self, rows: Sequence[int]) -> list[Any]: ...
    def iter_chunks(self, batch: int = 1000) -> Iterator[Any]: ...
    def aliases(self) -> dict[str, str]: ...
    def embedder_name(self) -> str: ...
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...
    def sha256(self) -> str: ...


def open_store(path: str | Path) -> StoreLike:
    """Open a store dir with ``ingest.store.Store`` (``UserError`` when missing or corrupt)."""
    from ingest.store import Store

    return Store.open(path)


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk (or several merged chunks of one page) with its score."""

    row: int
    chunk_id: str
    page_id: int
    title: str
    section: str
    ordinal: int
    text: str
    score: float
    rows: tuple[int, ...] = field(default=())  # every store row merged into this passage

    @classmethod
    def from_chunk(cls, chunk: Any, score: float) -> Passage:
        """A passage from an ``ingest.store.Chunk`` (or anything with the same fields)."""
        return cls(row=int(chunk.row), chunk_id=str(chunk.chunk_id), page_id=int(chunk.page_id),
                   title=str(chunk.title), section=str(chunk.section or ""),
                   ordinal=int(chunk.ordinal), text=str(chunk.text), score=float(score),
                   rows=(int(chunk.row),))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what ``compare`` records as retrieved evidence)."""
        return {"title": self.title, "section": self.section, "chunk_id": self.chunk_id,
                "page_id": self.page_id, "row": self.row, "score": round(self.score, 6),
                "rows": list(self.rows)}


def dedup(passages: Sequence[Passage], mode: str = "page",
          keep: Collection[int] = ()) -> list[Passage]:
    """Apply the de-duplication ``mode`` to passages sorted best first.

    Rows in ``keep`` (the lead chunks of pages a question names) stay passages of their own even
    when their page already has one, in rank order."""
    if mode not in DEDUP_MODES:
        raise UserError(f"unknown dedup mode {mode!r}; use one of {', '.join(DEDUP_MODES)}")
    if mode == "none":
        return list(passages)
    chosen = best_per_page(passages) if mode == "page" else merge_per_page(passages)
    return with_kept(passages, chosen, keep)


def with_kept(passages: Sequence[Passage], chosen: list[Passage],
              keep: Collection[int]) -> list[Passage]:
    """``chosen`` plus the passages of rows in ``keep`` that none of them covers, in rank order."""
    covered = {r for p in chosen for r in p.rows}
    extra = [p for p in passages if p.row in keep and p.row not in covered]
    if not extra:
        return chosen
    order = {p.row: i for i, p in reversed(list(enumerate(passages)))}
    return sorted(chosen + extra, key=lambda p: order[p.row])


def best_per_page(passages: Sequence[Passage]) -> list[Passage]:
    """The first (best) passage of each page, in the given order."""
    seen: set[int] = set()
    out: list[Passage] = []
    for p in passages:
        if p.page_id not in seen:
            seen.add(p.page_id)
            out.append(p)
    return out


def merge_per_page(passages: Sequence[Passage]) -> list[Passage]:
    """Per page: the best chunk merged with the retrieved chunks adjacent to it (ordinal ±1,
    chained), in page order, overlapping words trimmed; the merged passage keeps the best score."""
    by_page: dict[int, dict[int, Passage]] = {}
    for p in passages:
        by_page.setdefault(p.page_id, {}).setdefault(p.ordinal, p)
    out: list[Passage] = []
    for best in best_per_page(passages):
        present = by_page[best.page_id]
        lo, hi = best.ordinal, best.ordinal
        while lo - 1 in present:
            lo -= 1
        while hi + 1 in present:
            hi += 1
        out.append(_merge([present[o] for o in range(lo, hi + 1)], best))
    return out


def _merge(parts: list[Passage], best: Passage) -> Passage:
    if len(parts) == 1:
        return best
    text = parts[0].text
    for part in parts[1:]:
        text = join_overlapping(text, part.text)
    return replace(best, text=text, rows=tuple(p.row for p in parts))


def join_overlapping(left: str, right: str, max_words: int = 200) -> str:
    """``left + right`` without repeating the words ``right`` starts with that ``left`` ends with
    (chunkers overlap consecutive chunks)."""
    lw, rw = left.split(), right.split()
    for n in range(min(len(lw), len(rw), max_words), 0, -1):
        if lw[-n:] == rw[:n]:
            return " ".join(lw + rw[n:])
    return left.rstrip() + "\n" + right.lstrip()
