"""``ingest build --engine ray``: the same build as a Ray Data pipeline, on one machine or many.

    ingest build data/wiki/ptwiki-sample-brazilian-history.xml.bz2 --store stores/s --engine ray
    RAY_ADDRESS=auto ingest build ptwiki-latest-pages-articles.xml.bz2 --store /shared/ptwiki \\
        --engine ray --index ivf-sq8 --index-on-disk

The pipeline (``ingest.ray_stages``): one reader task, on the driver's node (where the dump is),
streams the dump (a bz2 XML stream can only be parsed in order) in the local engine's blocks;
cleaning and chunking run as parallel tasks (``map_batches``); embedding runs in an actor pool
(``map_batches`` with a callable class), one actor per GPU where Ray sees GPUs, else one per CPU
but one. Every node needs ragvsft and the embedder (e.g. ``RAGVSFT_CACHE`` on shared storage).
The driver receives the rows in dump
order (``preserve_order``) and commits each block with the local engine's writer: same pages,
chunk ids, texts and vectors, the same checkpoints (``--resume`` works across engines), the same
vector shards, and one FAISS index trained once and filled shard by shard (on-disk inverted lists
with ``--index-on-disk``). Ray is optional: ``pip install "ragvsft[scale]"``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tqdm.auto import tqdm

from core.errors import UserError
from ingest.builder import Builder
from ingest.dump import DumpError, DumpReader
from ingest.embedding import LOCAL_EMBEDDERS, EmbedderLike, counter_spec
from ingest.finish import finish_store
from ingest.pages import Block, PageResult
from ingest.ray_stages import (
    DONE,
    END,
    ERROR,
    EmbedRows,
    prepare_rows,
    read_dump,
    result_from_json,
    vectors_from_bytes,
)

log = logging.getLogger(__name__)

INSTALL = 'pip install "ragvsft[scale]"  (or: pip install "ray[data]>=2.60")'
BLOCK_BYTES = 8 << 20  # Ray block size cap: a few thousand pages in flight per block
MIN_ACTOR_MEMORY = 256 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
ENV_KEYS = ("RAGVSFT_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def require_ray() -> Any:
    """The ``ray`` module, or one ``UserError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(f"--engine ray needs Ray Data, which is not installed: {INSTALL}; "
                        "or use --engine local") from None
    return ray


@dataclass(frozen=True)
class InfoOnly:
    """The driver's view of an embedder it never runs: its identity and how tokens are counted."""

    info: Any  # models.embedders.EmbedderInfo
    token_counter: str = "hf"


def driver_embedder(name: str) -> EmbedderLike | InfoOnly:
    """The embedder's identity without loading its weights (the actors load them)."""
    if name in LOCAL_EMBEDDERS:
        return LOCAL_EMBEDDERS.get(name)()
    from models.embedders import resolve_embedder

    return InfoOnly(resolve_embedder(name))


@contextlib.contextmanager
def ray_session(address: str | None, progress: bool) -> Iterator[Any]:
    """Join the Ray instance already up, or ``address``/``$RAY_ADDRESS``, or start a local one;
    shut down only what was started here."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=progress,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError) as exc:
            where = address or os.environ.get("RAY_ADDRESS")
            raise UserError(f"cannot join the Ray cluster at {where!r}: {exc}; start it (`ray "
                            "start --head`) or drop --ray-address to run a local instance"
                            ) from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def actor_memory(info: Any) -> int:
    """RAM to reserve for one embedding actor: 3x its weight files (model, activations,
    tokenizer), at least ``MIN_ACTOR_MEMORY``. Ray then never packs more actors on a node than
    fit, and the cleaning tasks (which reserve none) stay a stage of their own."""
    folder = Path(str(getattr(info, "location", "") or ""))
    weights = sum(f.stat().st_size for f in folder.glob("*") if f.suffix in WEIGHT_SUFFIXES
                  ) if str(folder) not in ("", ".") and folder.is_dir() else 0
    return max(MIN_ACTOR_MEMORY, 3 * weights)


def actor_plan(resources: dict[str, float], wanted: int | None) -> tuple[int, dict[str, Any]]:
    """(embedding actors, their Ray resources): one per GPU, else one per CPU but one, always
    leaving one CPU for the cleaning tasks (else the pipeline would wait forever)."""
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    actors = wanted or (gpus if gpus else max(1, cpus - 1))
    if gpus and actors > gpus:
        raise UserError(f"--ray-actors {actors}: the Ray cluster has {gpus} GPUs (one per actor)")
    if actors + 1 > cpus:
        raise UserError(f"the Ray cluster has {cpus} CPUs: {actors} embedding actors and the "
                        f"cleaning tasks need {actors + 1}; pass --ray-actors {max(1, cpus - 1)} "
                        "or fewer, or use --engine local")
    return actors, {"num_cpus": 1, "num_gpus": 1 if gpus else 0}


@contextlib.contextmanager
def data_context(ray: Any, progress: bool) -> Iterator[None]:
    """Rows in dump order, small blocks, Ray's progress bars with ours; restored afterwards."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.target_max_block_size,
             ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    ctx.target_max_block_size = min(ctx.target_max_block_size or BLOCK_BYTES, BLOCK_BYTES)
    ctx.enable_progress_bars = progress
    try:
        yield
    finally:
        (ctx.execution_options.preserve_order, ctx.target_max_block_size,
         ctx.enable_progress_bars) = saved


class RayBuilder(Builder):
    """A build whose reading, cleaning, chunking and embedding run in Ray; the store is written
    here, block by block, exactly as the local engine writes it."""

    def __init__(self, dump: Path, store: Path, config: Any, embedder: EmbedderLike | None,
                 progress: bool) -> None:
        self.injected = embedder  # shipped to the actors as is (tests, custom embedders)
        # the driver never encodes: an InfoOnly carries all the builder reads (info, counter)
        driver = cast(EmbedderLike, embedder or driver_embedder(config.embedder))
        super().__init__(dump.resolve(), store, config, driver, progress)

    def run(self) -> None:
        with DumpReader(self.dump) as reader:
            site_names, dbname, size = reader.site_names, reader.dbname, reader.size
        self.writer.set_meta("dbname", dbname)
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="ingest (ray)",
                   disable=not self.progress)
        try:
            with ray_session(self.config.ray_address, self.progress) as ray, \
                    data_context(ray, self.progress):
                sha = self._consume(self._dataset(ray, site_names), bar)
        finally:
            bar.close()
        finish_store(self.writer, self.config, self.embedder, self.dump, sha, dbname,
                     time.monotonic() - self.started, self.progress)

    def _dataset(self, ray: Any, site_names: dict[int, list[str]]) -> Any:
        """reader task -> cleaning/chunking tasks -> embedding actor pool."""
        cfg, cp = self.config, self.writer.checkpoint
        actors, remote = actor_plan(ray.cluster_resources(), cfg.ray_actors)
        log.info("ray: %d embedding actors (%s)", actors, remote)
        chunking = cfg.chunk_options(int(self.embedder.info.max_tokens))
        ds = ray.data.from_items([{"dump": str(self.dump)}])
        here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}  # the dump's node
        ds = ds.map_batches(read_dump, batch_size=1, num_cpus=0, label_selector=here, fn_kwargs={
            "dump": str(self.dump), "start": cp.next_index, "block_pages": cfg.checkpoint_pages,
            "limit": cfg.limit, "articles_before": cp.counts["articles_read"]})
        ds = ds.map_batches(prepare_rows, batch_size=cfg.ray_batch_pages, num_cpus=1, fn_kwargs={
            "site_names": site_names, "clean": cfg.clean_options(), "chunking": chunking,
            "counter": counter_spec(self.embedder)})
        embedder = self.injected if self.injected is not None else cfg.embedder
        return ds.map_batches(
            EmbedRows, batch_size=cfg.ray_batch_pages,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_args=(embedder, self.embedder.info.to_dict(), cfg.batch_size,
                                 cfg.title_prefix), memory=actor_memory(self.embedder.info),
            **remote)

    def _consume(self, ds: Any, bar: Any) -> str:
        """Commit each block as its END row arrives; the dump's sha256 from the DONE row."""
        dim = int(self.embedder.info.dimension)
        results: list[PageResult] = []
        vectors: list[Any] = []
        for batch in _batches(ds):
            for kind, payload, blob in zip(batch["kind"], batch["payload"], batch["vectors"],
                                           strict=True):
                if kind == END:
                    self._commit_rows(json.loads(payload), results, vectors, bar)
                    results, vectors = [], []
                elif kind == ERROR:
                    error = json.loads(payload)
                    raise DumpError(error["message"], error["pages_read"])
                elif kind == DONE:
                    return str(json.loads(payload)["sha256"])
                else:
                    results.append(result_from_json(payload))
                    vectors.append(vectors_from_bytes(blob, dim))
        raise UserError(f"the Ray pipeline over {self.dump} ended without its last row; "
                        "run again with --resume")

    def _commit_rows(self, end: dict[str, Any], results: list[PageResult], vectors: list[Any],
                     bar: Any) -> None:
        import numpy as np

        counts = Counter(end["counts"])
        counts["articles_read"] += len(results)
        kept = self.select(results, counts)
        block = Block(aliases=[tuple(a) for a in end["aliases"]], counts=counts,
                      next_index=int(end["next_index"]))
        dim = int(self.embedder.info.dimension)
        stacked = (np.concatenate([vectors[i] for i in kept]) if kept
                   else np.zeros((0, dim), np.float32))
        self.store_block(block, [results[i] for i in kept], stacked, counts, bar)
        bar.update(int(end["position"]) - bar.n)


def _batches(ds: Any) -> Iterator[dict[str, Any]]:
    """The pipeline's output in order; a ``UserError`` raised in a worker comes out as one."""
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except UserError:
        raise
    except Exception as exc:
        message = _user_error_in(exc)
        if message is None:
            raise
        raise UserError(message) from None


_RAISED = re.compile(r"^([A-Za-z_][\w.]*\.[A-Za-z_]\w*): (.+)$", re.M)


def _user_error_in(exc: BaseException) -> str | None:
    """The message of a ``UserError`` behind a Ray error: Ray Data wraps a worker's exception in
    ``UserCodeException`` and keeps the original only as traceback text (``module.Class: msg``)."""
    for name, message in _RAISED.findall(str(exc)):
        module, _, cls = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), cls, None)
        except ImportError:
            continue
        if isinstance(found, type) and issubclass(found, UserError):
            return message
    return None
