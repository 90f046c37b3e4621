"""The local engine's build run: dump blocks cleaned and chunked in worker processes, embedded
in the main process, committed one checkpoint per block (``ingest.build`` picks the engine).

Parsing runs in the main process, cleaning/chunking in ``--workers`` processes (results in dump
order, so ids are deterministic), embedding batched in the main process, one checkpoint per block
of ``checkpoint_pages`` dump pages. Blocks are cut by dump position only, so a resumed build
embeds exactly the same texts per call as an uninterrupted one and ends identical to it.
``ingest.ray_engine.RayBuilder`` reuses ``Builder``'s resume checks and commits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.errors import UserError
from ingest.chunk import ChunkOptions, CounterSpec, embed_text
from ingest.clean import CleanOptions
from ingest.config import IngestConfig
from ingest.dump import DumpError, DumpReader, RawPage, quick_fingerprint
from ingest.embedding import EmbedderLike, counter_spec, embed_texts
from ingest.finish import finish_store
from ingest.namespaces import build_namespaces
from ingest.pages import Block, PageResult, prepare_page, read_blocks
from ingest.writer import StoreWriter

log = logging.getLogger(__name__)


_WORKER: dict[str, Any] = {}
# Linux forks the workers (they only run tokenizers and regexes, never torch, so the parent's
# threads are no hazard, and the tokenizer is not reloaded per worker); elsewhere they spawn.
START_METHOD = "fork" if sys.platform == "linux" else "spawn"


def _init_worker(site_names: dict[int, list[str]], clean: CleanOptions, chunking: ChunkOptions,
                 counter: CounterSpec) -> None:
    if multiprocessing.parent_process() is not None:
        _one_thread()
    _WORKER.update(ns=build_namespaces(site_names), clean=clean, chunking=chunking,
                   count=counter.load())


def _one_thread() -> None:
    """A worker is one core: no tokenizer thread pool of its own (set before its first use)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _work(raw: RawPage) -> PageResult:
    w = _WORKER
    return prepare_page(raw, w["ns"], w["clean"], w["chunking"], w["count"])


class _Pipeline:
    """Runs ``prepare_page`` for the blocks, in a process pool or inline (``workers=0``)."""

    def __init__(self, workers: int, args: tuple[Any, ...]) -> None:
        self.pool, self.workers = None, workers
        if workers > 0 and START_METHOD == "fork":
            _init_worker(*args)  # the tokenizer is loaded once; forked workers inherit it
            self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread)
        elif workers > 0:
            self.pool = multiprocessing.get_context(START_METHOD).Pool(
                workers, initializer=_init_worker, initargs=args)
        else:
            _init_worker(*args)

    def submit(self, block: Block) -> Any:
        """Start a block; ``.get()`` on the result gives its ``PageResult``s in order."""
        if self.pool is None:
            return _Done([_work(raw) for raw in block.articles])
        size = max(1, len(block.articles) // (self.workers * 4))
        return self.pool.map_async(_work, block.articles, chunksize=size)

    def close(self, ok: bool) -> None:
        """Stop the workers."""
        if self.pool is not None:
            if ok:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()


@dataclass
class _Done:
    results: list[PageResult]

    def get(self) -> list[PageResult]:
        return self.results


class Builder:
    """One build run: the writer, the embedder, progress and the block loop."""

    def __init__(self, dump: Path, store: Path, config: IngestConfig, embedder: EmbedderLike,
                 progress: bool) -> None:
        self.dump, self.store, self.config, self.embedder = dump, store, config, embedder
        self.writer = StoreWriter(store)
        self.known = self.writer.page_ids()
        self.progress = progress
        self.started = time.monotonic()
        self.done: Counter[str] = Counter()  # pages and chunks of this run (for the rates)

    def check_resume(self) -> None:
        """A resumed build must use the same settings, embedder and dump as the first run."""
        recorded = self.writer.meta("identity")
        current = self.identity()
        if recorded is None:
            self.writer.set_meta("identity", current)
            return
        diffs = [f"{k}={recorded.get(k)!r} (now {v!r})" for k, v in current.items()
                 if recorded.get(k) != v]
        if diffs:
            raise UserError(f"store {self.store} was started with different settings: "
                            f"{'; '.join(diffs)}. Resume with the same settings and dump, or "
                            "start over with --overwrite")

    def identity(self) -> dict[str, Any]:
        """Flat settings + embedder revision/dimension + dump name and head hash."""
        fp = quick_fingerprint(self.dump)
        info = self.embedder.info.to_dict()
        return {**self.config.resume_identity(), "embedder revision": info["revision"],
                "embedder dimension": info["dimension"], "dump": fp["name"],
                "dump head sha256": fp["head_sha256"]}

    def run(self) -> None:
        cp = self.writer.checkpoint
        with DumpReader(self.dump) as reader:
            chunking = self.config.chunk_options(int(self.embedder.info.max_tokens))
            args = (reader.site_names, self.config.clean_options(), chunking,
                    counter_spec(self.embedder))
            pipeline = _Pipeline(self.config.workers, args)
            ok = False
            bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc="ingest",
                       disable=not self.progress)
            try:
                self._loop(reader, pipeline, bar, cp.counts["articles_read"])
                ok = True
            finally:
                pipeline.close(ok)
                bar.close()
            sha = reader.source_sha256()
        finish_store(self.writer, self.config, self.embedder, self.dump, sha, self.dbname_of(),
                     time.monotonic() - self.started, self.progress)

    def dbname_of(self) -> str:
        return str(self.writer.meta("dbname") or "")

    def _loop(self, reader: DumpReader, pipeline: _Pipeline, bar: Any, before: int) -> None:
        self.writer.set_meta("dbname", reader.dbname)
        pending: deque[tuple[Block, Any]] = deque()
        blocks = read_blocks(reader, self.writer.checkpoint.next_index,
                             self.config.checkpoint_pages, self.config.limit, before)
        try:
            for block in blocks:
                pending.append((block, pipeline.submit(block)))
                bar.update(reader.position - bar.n)
                while len(pending) > 1:  # one block in the workers while the next is parsed
                    self._commit(*pending.popleft(), bar)
        except DumpError:
            while pending:
                self._commit(*pending.popleft(), bar)
            raise
        while pending:
            self._commit(*pending.popleft(), bar)

    def _commit(self, block: Block, job: Any, bar: Any) -> None:
        results: list[PageResult] = job.get()
        counts = Counter(block.counts)
        counts["articles_read"] += len(block.articles)
        kept = [results[i] for i in self.select(results, counts)]
        chunks = [c for r in kept for c in r.chunks]
        texts = [embed_text(c.title, c.section, c.text, self.config.title_prefix) for c in chunks]
        vectors = embed_texts(self.embedder, texts, self.config.batch_size)
        self.store_block(block, kept, vectors, counts, bar)

    def select(self, results: list[PageResult], counts: Counter[str]) -> list[int]:
        """Positions of the results to store; skipped and duplicate pages are counted."""
        kept = []
        for i, result in enumerate(results):
            if result.skip or result.page.page_id in self.known:
                reason = result.skip or "duplicate"
                counts[f"skipped_{reason}"] += 1
                if reason != "disambiguation":
                    log.warning("page %r (id %d) skipped: %s", result.page.title,
                                result.page.page_id, reason.replace("_", " "))
                continue
            self.known.add(result.page.page_id)
            kept.append(i)
        return kept

    def store_block(self, block: Block, kept: list[PageResult], vectors: Any,
                    counts: Counter[str], bar: Any) -> None:
        """Commit one block (pages, chunks, their vectors, aliases, checkpoint) and report."""
        pages = [r.page for r in kept]
        chunks = [c for r in kept for c in r.chunks]
        counts["articles"] += len(pages)
        counts["chunks"] += len(chunks)
        self.writer.commit_block(pages, chunks, vectors, block.aliases, block.next_index, counts)
        self.done.update(pages=counts["pages_read"], chunks=len(chunks))
        elapsed = max(time.monotonic() - self.started, 1e-9)
        bar.set_postfix(pages=self.writer.checkpoint.counts["pages_read"],
                        pages_s=f"{self.done['pages'] / elapsed:.1f}",
                        chunks_s=f"{self.done['chunks'] / elapsed:.1f}", refresh=False)
