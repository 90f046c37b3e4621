"""``ingest build``: dump -> pages -> clean text -> chunks -> vectors -> store, resumable.

The steps are plain functions another engine can reuse: ``read_blocks`` (parse, main process),
``prepare_page`` (clean + chunk one article), ``embed_texts`` (``ingest.embedding``) and
``finish_store`` (index from vector shards + manifest). Here parsing runs in the main process,
cleaning/chunking in ``--workers`` processes (results in dump order, so ids are
deterministic), embedding batched in the main process, one checkpoint per block of
``checkpoint_pages`` dump pages. Blocks are cut by dump position only, so a resumed build embeds
exactly the same texts per call as an uninterrupted one and ends identical to it.
``--engine ray`` (``ENGINES``) runs the same steps as a Ray Data pipeline (``ingest.ray_engine``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.errors import UserError
from core.registry import Registry
from ingest.chunk import ChunkDraft, ChunkOptions, CounterSpec, TokenCounter, chunk_page, embed_text
from ingest.clean import CleanOptions, clean_page, is_disambiguation
from ingest.config import IngestConfig
from ingest.dump import DumpError, DumpReader, RawPage, quick_fingerprint
from ingest.embedding import EmbedderLike, counter_spec, embed_texts, get_embedder
from ingest.finish import finish_store
from ingest.namespaces import Namespaces, build_namespaces
from ingest.writer import PageRow, StoreWriter, remove_store, require_empty, store_state

log = logging.getLogger(__name__)


@dataclass
class PageResult:
    """What cleaning + chunking made of one article (``skip`` names why it was dropped)."""

    page: PageRow
    chunks: list[ChunkDraft]
    skip: str | None = None  # "disambiguation" | "empty" | "too_long_title"


@dataclass
class Block:
    """Consecutive dump pages handled together: one embedding call, one checkpoint."""

    articles: list[RawPage] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    next_index: int = 0


def prepare_page(raw: RawPage, ns: Namespaces, clean: CleanOptions, chunking: ChunkOptions,
                 count: TokenCounter) -> PageResult:
    """Clean and chunk one namespace-0 article (disambiguation and empty pages are skipped)."""
    row = PageRow(raw.page_id, raw.title, raw.revision_id, raw.timestamp, "", {}, 0)
    if is_disambiguation(raw.title, raw.text):
        return PageResult(row, [], "disambiguation")
    page = clean_page(raw.page_id, raw.title, raw.text, ns, clean, raw.revision_id,
                      raw.timestamp)
    row.lead, row.infobox = page.lead, page.infobox
    if not page.sections:
        return PageResult(row, [], "empty")
    try:
        chunks = chunk_page(page, chunking, count)
    except ValueError:
        return PageResult(row, [], "too_long_title")
    row.n_chunks = len(chunks)
    return PageResult(row, chunks)


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


def read_blocks(reader: DumpReader, start: int, block_pages: int, limit: int | None,
                articles_before: int = 0) -> Iterator[Block]:
    """Pages from dump position ``start`` grouped in blocks of ``block_pages`` dump pages.

    Redirects become aliases, other namespaces are counted; on a damaged dump the block read
    so far is yielded before the ``DumpError`` propagates, so it can still be committed.
    """
    block, seen = Block(next_index=start), articles_before
    try:
        for raw in reader.pages(start):
            article = raw.ns == 0 and raw.redirect is None
            if article and limit is not None and seen >= limit:
                break
            seen += int(article)
            _classify(raw, block)
            block.next_index = raw.index + 1
            if block.next_index % block_pages == 0:
                yield block
                block = Block(next_index=block.next_index)
    except DumpError:
        yield block
        raise
    yield block


def _classify(raw: RawPage, block: Block) -> None:
    block.counts["pages_read"] += 1
    if raw.ns != 0:
        block.counts["skipped_other_namespace"] += 1
    elif raw.redirect is not None:
        block.counts["redirects"] += 1
        target = raw.redirect.split("#", 1)[0].strip()
        if target and target != raw.title:
            block.aliases.append((raw.title, target))
    else:
        block.articles.append(raw)


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


class _Builder:
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


def prepare_store_dir(store: Path, resume: bool, overwrite: bool) -> str:
    """Apply ``--resume`` / ``--overwrite`` to ``store``; returns what was there before."""
    if resume and overwrite:
        raise UserError("pass either --resume or --overwrite, not both")
    state = store_state(store)
    require_empty(store)
    if state in ("finished", "unfinished") and not (resume or overwrite):
        what = "a finished" if state == "finished" else "an unfinished"
        raise UserError(f"{store} already holds {what} store; pass --resume to continue it "
                        "or --overwrite to start over")
    if overwrite and state != "missing":
        remove_store(store)
    store.mkdir(parents=True, exist_ok=True)
    return state


@dataclass(frozen=True)
class Engine:
    """How a build runs: ``check`` fails early (a missing package), ``make`` gives the builder."""

    check: Callable[[], None]
    make: Callable[[Path, Path, IngestConfig, EmbedderLike | None, bool], _Builder]


def _local_builder(dump: Path, store: Path, config: IngestConfig,
                   embedder: EmbedderLike | None, progress: bool) -> _Builder:
    return _Builder(dump, store, config, embedder or get_embedder(config.embedder), progress)


def _ray_check() -> None:
    from ingest.ray_engine import require_ray

    require_ray()


def _ray_builder(dump: Path, store: Path, config: IngestConfig,
                 embedder: EmbedderLike | None, progress: bool) -> _Builder:
    from ingest.ray_engine import RayBuilder

    return RayBuilder(dump, store, config, embedder, progress)


ENGINES: Registry[Engine] = Registry("ingest engine")
ENGINES.add("local", Engine(lambda: None, _local_builder))  # processes on this machine
ENGINES.add("ray", Engine(_ray_check, _ray_builder))  # Ray Data (ingest.ray_engine)


def build_store(dump: str | Path, store: str | Path, config: IngestConfig = IngestConfig(),
                embedder: EmbedderLike | None = None, resume: bool = False,
                overwrite: bool = False, progress: bool = True) -> Path:
    """Build (or finish, with ``resume``) the store at ``store`` from ``dump``."""
    dump, store = Path(dump), Path(store)
    engine = ENGINES.get(config.engine)
    engine.check()
    with DumpReader(dump):  # a missing, empty or unreadable dump fails before the store exists
        pass
    state = prepare_store_dir(store, resume, overwrite)
    if state == "finished" and resume:
        log.info("store %s is already finished; nothing to resume", store)
        return store
    builder = engine.make(dump, store, config, embedder, progress)
    try:
        builder.check_resume()
        if builder.writer.checkpoint.next_index:
            log.info("resuming %s at dump page %d", store, builder.writer.checkpoint.next_index)
        builder.run()
    finally:
        builder.writer.close()
    return store
