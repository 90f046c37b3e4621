"""The three Ray Data stages of ``ingest build --engine ray``, as plain functions and one class.

They run inside Ray workers, so this module never imports ray: ``read_dump`` (one generator task
streams the dump, block by block, as ``read_blocks`` cuts it), ``prepare_rows`` (clean + chunk,
``prepare_page``, in parallel tasks) and ``EmbedRows`` (the embedding actor: an embedder loaded
once per actor, on the GPU Ray gives it). Every row has the same columns from reader to driver:
``block`` (the dump block it belongs to), ``kind`` (article, end of block, dump error, done) and
``payload`` (JSON); the embedding stage adds ``vectors`` (float32 bytes, one row per chunk).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from core.errors import UserError
from ingest.chunk import ChunkDraft, ChunkOptions, CounterSpec, TokenCounter, embed_text
from ingest.clean import CleanOptions
from ingest.dump import DumpError, DumpReader, RawPage
from ingest.embedding import EmbedderLike, embed_texts, get_embedder, same_embedder
from ingest.namespaces import Namespaces, build_namespaces
from ingest.pages import Block, PageResult, prepare_page, read_blocks
from ingest.writer import PageRow

ARTICLE, END, ERROR, DONE = 0, 1, 2, 3
Batch = dict[str, np.ndarray]


def rows(block: int, kinds: Sequence[int], payloads: Sequence[str]) -> Batch:
    """A batch in the pipeline's row layout."""
    return {"block": np.full(len(kinds), block, dtype=np.int64),
            "kind": np.asarray(kinds, dtype=np.int64),
            "payload": np.asarray(list(payloads), dtype=object)}


def block_rows(number: int, block: Block, position: int) -> Batch:
    """One dump block: its articles, then an END row with its aliases, counts and position."""
    end = {"aliases": block.aliases, "counts": dict(block.counts),
           "next_index": block.next_index, "position": position}
    payloads = [json.dumps(dataclasses.asdict(raw), ensure_ascii=False)
                for raw in block.articles]
    return rows(number, [ARTICLE] * len(payloads) + [END], [*payloads, json.dumps(end)])


def read_dump(_: Batch, dump: str, start: int, block_pages: int, limit: int | None,
              articles_before: int) -> Iterator[Batch]:
    """The reader task: every block from dump page ``start``, then DONE (or ERROR) last."""
    number = 0
    with DumpReader(dump) as reader:
        try:
            for number, block in enumerate(read_blocks(reader, start, block_pages, limit,
                                                       articles_before)):
                yield block_rows(number, block, reader.position)
        except DumpError as exc:
            error = {"message": str(exc), "pages_read": exc.pages_read}
            yield rows(number + 1, [ERROR], [json.dumps(error)])
            return
        done = {"sha256": reader.source_sha256(), "position": reader.size}
        yield rows(number + 1, [DONE], [json.dumps(done)])


_PREPARED: dict[str, tuple[Namespaces, TokenCounter]] = {}


def _context(site_names: dict[int, list[str]], counter: CounterSpec
             ) -> tuple[Namespaces, TokenCounter]:
    """Namespaces and the token counter, built once per worker process (tasks reuse workers)."""
    key = repr((sorted(site_names.items()), counter))
    if key not in _PREPARED:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per task
        _PREPARED[key] = (build_namespaces(site_names), counter.load())
    return _PREPARED[key]


def prepare_rows(batch: Batch, site_names: dict[int, list[str]], clean: CleanOptions,
                 chunking: ChunkOptions, counter: CounterSpec) -> Batch:
    """Clean and chunk the batch's articles (``prepare_page``); other rows pass through."""
    ns, count = _context(site_names, counter)
    out = []
    for kind, payload in zip(batch["kind"], batch["payload"], strict=True):
        if kind == ARTICLE:
            raw = RawPage(**json.loads(payload))
            payload = result_json(prepare_page(raw, ns, clean, chunking, count))
        out.append(payload)
    return {**batch, "payload": np.asarray(out, dtype=object)}


def result_json(result: PageResult) -> str:
    """A ``PageResult`` as JSON (page row, chunk drafts, skip reason)."""
    return json.dumps({"page": dataclasses.asdict(result.page),
                       "chunks": [dataclasses.asdict(c) for c in result.chunks],
                       "skip": result.skip}, ensure_ascii=False)


def result_from_json(text: str) -> PageResult:
    """The inverse of ``result_json``."""
    data = json.loads(text)
    page = PageRow(**data["page"])
    return PageResult(page, [ChunkDraft(**c) for c in data["chunks"]], data["skip"])


class EmbedRows:
    """The embedding actor: vectors for every chunk of the batch's articles, in one call."""

    def __init__(self, embedder: str | EmbedderLike, expected: dict[str, Any], batch_size: int,
                 title_prefix: bool) -> None:
        self.embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
        why = same_embedder(expected, self.embedder.info)
        if why is None and int(self.embedder.info.max_tokens) != int(expected["max_tokens"]):
            why = f"its max_tokens is {self.embedder.info.max_tokens}, not {expected['max_tokens']}"
        if why:
            raise UserError(f"the embedder {expected['name']!r} a Ray worker loaded differs from "
                            f"the driver's: {why}; install the same model on every node")
        self.batch_size, self.title_prefix = batch_size, title_prefix

    def __call__(self, batch: Batch) -> Batch:
        """``batch`` plus a ``vectors`` column (empty bytes for rows that are not articles)."""
        texts: list[str] = []
        sizes: list[int] = []
        for kind, payload in zip(batch["kind"], batch["payload"], strict=True):
            chunks = json.loads(payload)["chunks"] if kind == ARTICLE else []
            texts.extend(embed_text(c["title"], c["section"], c["text"], self.title_prefix)
                         for c in chunks)
            sizes.append(len(chunks))
        vectors = embed_texts(self.embedder, texts, self.batch_size)
        bounds = np.cumsum([0, *sizes])
        blobs = [vectors[bounds[i]:bounds[i + 1]].tobytes() for i in range(len(sizes))]
        return {**batch, "vectors": np.asarray(blobs, dtype=object)}


def vectors_from_bytes(blob: bytes, dim: int) -> np.ndarray:
    """The float32 [n, dim] array an ``EmbedRows`` row carries."""
    return np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
