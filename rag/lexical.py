"""BM25 over a store's chunks (bm25s + ``rag.text.tokenize``), cached inside the store dir.

The index lives in ``<store>/bm25/``: what ``bm25s.BM25.save`` writes (npy arrays saved with
``allow_pickle=False``, JSON vocabulary and parameters; no corpus copy), ``pages.json`` (each
page's title, id and first row, for title matching) and ``ragvsft.json`` recording the store's
sha256, ``TOKENIZER_VERSION`` and the BM25 parameters. Any mismatch rebuilds the index; a store
dir that cannot be written keeps the index in memory for this process (with a warning).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from tqdm.auto import tqdm

from rag.passages import StoreLike
from rag.text import TOKENIZER_VERSION, tokenize

log = logging.getLogger(__name__)
# bm25s pins its logger to DEBUG at import; let it follow the application's logging set-up
logging.getLogger("bm25s").setLevel(logging.NOTSET)

BM25_DIR = "bm25"
META_FILE = "ragvsft.json"
PAGES_FILE = "pages.json"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Bm25Params:
    """BM25 variant and constants (bm25s defaults: Lucene's formula, k1=1.5, b=0.75)."""

    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75


@dataclass(frozen=True)
class PageEntry:
    """A page as title matching needs it: its title, id and first store row (its lead chunk)."""

    title: str
    page_id: int
    first_row: int


class LexicalIndex:
    """A BM25 index over every chunk of a store (doc id = store row) plus the page table."""

    def __init__(self, bm25: bm25s.BM25, pages: list[PageEntry]) -> None:
        self.bm25 = bm25
        self.pages = pages
        self.n_docs = int(bm25.scores["num_docs"])
        self._indptr = np.asarray(bm25.scores["indptr"])
        self._starts = [p.first_row for p in pages]

    @classmethod
    def for_store(cls, store: StoreLike, params: Bm25Params = Bm25Params(),
                  progress: bool = True) -> LexicalIndex:
        """The cached index of ``store`` when current, else a freshly built (and saved) one."""
        folder = Path(store.path) / BM25_DIR
        meta = cache_meta(store, params)
        cached = _load(folder, meta)
        if cached is not None:
            return cached
        log.info("building the BM25 index of %s (%d chunks)", store.path, len(store))
        index = build(store, params, progress)
        index.save(folder, meta)
        return index

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query`` (zeros when no query token is indexed)."""
        ids = self.bm25.get_tokens_ids(tokenize(query))
        if not ids:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)

    def rank(self, queries: list[str], n: int) -> list[list[tuple[int, float]]]:
        """Per query, up to ``n`` (row, score) pairs with a positive score, best first."""
        return [top_n(self.scores(q), n) for q in queries]

    def page_rows(self, first_row: int) -> range:
        """The rows of the page whose lead is ``first_row`` (pages are contiguous)."""
        i = bisect.bisect_right(self._starts, first_row)
        return range(first_row, self._starts[i] if i < len(self._starts) else self.n_docs)

    def doc_freq(self, token: str) -> int:
        """Number of chunks containing the (already tokenized) ``token``."""
        tid = self.bm25.vocab_dict.get(token)
        if tid is None or tid + 1 >= len(self._indptr):
            return 0
        return int(self._indptr[tid + 1] - self._indptr[tid])

    def save(self, folder: Path, meta: dict[str, Any]) -> None:
        """Write the index atomically (temp dir, then rename); warn when the dir is read-only."""
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            self.bm25.save(tmp, show_progress=False)
            pages = [[p.title, p.page_id, p.first_row] for p in self.pages]
            (tmp / PAGES_FILE).write_text(json.dumps(pages, ensure_ascii=False), "utf-8")
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2), "utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("could not cache the BM25 index in %s (%s); it is kept in memory and "
                        "will be rebuilt next time", folder, exc)


def cache_meta(store: StoreLike, params: Bm25Params) -> dict[str, Any]:
    """What a cached index must match to be reused."""
    return {"format": CACHE_FORMAT, "store_sha256": store.sha256(),
            "tokenizer_version": TOKENIZER_VERSION, "n_chunks": len(store),
            "params": asdict(params)}


def _load(folder: Path, meta: dict[str, Any]) -> LexicalIndex | None:
    """The cached index in ``folder`` when its metadata equals ``meta``, else ``None``."""
    try:
        found = json.loads((folder / META_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if found != meta:
        log.info("the cached BM25 index in %s is stale; rebuilding it", folder)
        return None
    try:
        bm25 = bm25s.BM25.load(folder, load_corpus=False, allow_pickle=False)
        rows = json.loads((folder / PAGES_FILE).read_text("utf-8"))
        pages = [PageEntry(str(t), int(p), int(r)) for t, p, r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("the cached BM25 index in %s is unreadable (%s); rebuilding it", folder, exc)
        return None
    return LexicalIndex(bm25, pages)


def build(store: StoreLike, params: Bm25Params = Bm25Params(),
          progress: bool = True) -> LexicalIndex:
    """Tokenize every chunk (row order) and index the token ids with bm25s."""
    vocab: dict[str, int] = {}
    docs: list[list[int]] = []
    pages: list[PageEntry] = []
    chunks = tqdm(store.iter_chunks(), total=len(store), desc="BM25 index", unit="chunk",
                  disable=not progress)
    for expected, chunk in enumerate(chunks):
        if int(chunk.row) != expected:
            raise ValueError(f"store rows are not contiguous: row {chunk.row} at {expected}")
        docs.append([vocab.setdefault(t, len(vocab)) for t in tokenize(chunk.text)])
        if not pages or pages[-1].page_id != int(chunk.page_id):
            pages.append(PageEntry(str(chunk.title), int(chunk.page_id), int(chunk.row)))
    vocab.setdefault("", len(vocab))  # bm25s' empty token: lets an empty corpus index
    bm25 = bm25s.BM25(method=params.method, k1=params.k1, b=params.b)
    bm25.index((docs, vocab), show_progress=False)
    return LexicalIndex(bm25, pages)


def top_n(scores: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The ``n`` best positive entries of ``scores`` as (index, score), ties by index."""
    positive = np.flatnonzero(scores > 0)
    if n < len(positive):
        cut = np.argpartition(-scores[positive], n - 1)[:n]
        threshold = scores[positive[cut]].min()
        positive = positive[scores[positive] >= threshold]  # keep ties at the cut
    order = sorted(positive.tolist(), key=lambda i: (-float(scores[i]), i))[:n]
    return [(int(i), float(scores[i])) for i in order]
