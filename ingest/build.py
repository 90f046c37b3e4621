"""``ingest build``: dump -> pages -> clean text -> chunks -> vectors -> store, resumable.

The steps are plain functions another engine can reuse: ``read_blocks`` and ``prepare_page``
(``ingest.pages``: parse, clean + chunk one article), ``embed_texts`` (``ingest.embedding``) and
``finish_store`` (index from vector shards + manifest). ``ENGINES`` runs them: ``local`` (worker
processes on this machine, ``ingest.builder``) or ``ray`` (a Ray Data pipeline,
``ingest.ray_engine``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.registry import Registry
from ingest.builder import Builder
from ingest.config import IngestConfig
from ingest.dump import DumpReader
from ingest.embedding import EmbedderLike, get_embedder
from ingest.pages import prepare_page, read_blocks
from ingest.writer import remove_store, require_empty, store_state

__all__ = ["ENGINES", "Engine", "build_store", "prepare_page", "prepare_store_dir",
           "read_blocks"]

log = logging.getLogger(__name__)


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
    make: Callable[[Path, Path, IngestConfig, EmbedderLike | None, bool], Builder]


def _local_builder(dump: Path, store: Path, config: IngestConfig,
                   embedder: EmbedderLike | None, progress: bool) -> Builder:
    return Builder(dump, store, config, embedder or get_embedder(config.embedder), progress)


def _ray_check() -> None:
    from ingest.ray_engine import require_ray

    require_ray()


def _ray_builder(dump: Path, store: Path, config: IngestConfig,
                 embedder: EmbedderLike | None, progress: bool) -> Builder:
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
