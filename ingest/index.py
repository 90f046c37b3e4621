"""FAISS index over the chunk vectors: which index (``auto``, ``flat``, ``hnsw``, ``ivf-sq8``,
``ivf-pq`` or any faiss factory string), built from vector shards without loading them all at once.

``auto`` keeps exact inner-product search (``Flat``) below ``threshold`` vectors (100k: a few ms a
query on 2 cores, 150 MB at 384 dims) and switches to ``IVF{nlist},SQ8`` above it: 1 byte per
dimension (5M x 384-d = 1.9 GB), trained on a sample, built shard by shard, recall@10 >= 0.95 at
the chosen ``nprobe`` (``bench/ingest_speed.py``). Vectors are L2-normalised, so inner
product = cosine.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from core.errors import UserError
from core.registry import Registry

log = logging.getLogger(__name__)

AUTO_THRESHOLD = 100_000
SEED = 1234
TRAIN_PER_LIST = 40  # training vectors per IVF list (faiss wants at least 39)
KMEANS_NITER = 10
IVFDATA = "index.ivfdata"  # an IVF index's inverted lists on disk (--index-on-disk), beside it


@dataclass(frozen=True)
class IndexPlan:
    """What to build: a faiss factory string, its search-time parameters, a training size."""

    kind: str
    factory: str
    search_params: str = ""  # faiss.ParameterSpace string, e.g. "nprobe=32"
    build_params: dict[str, int] = field(default_factory=dict)  # efConstruction, kmeans_niter
    train_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (goes into the store manifest)."""
        return asdict(self)


PLANS: Registry[Callable[[int, int], IndexPlan]] = Registry("index kind")


def nlist_for(n: int) -> int:
    """IVF cells: about 2·sqrt(n) as a power of two in [16, 65536] (1024 for 200k vectors,
    4096 for 5M): lists of a few thousand vectors, and k-means training that stays affordable
    on a laptop (its cost grows with nlist²)."""
    return int(min(65536, max(16, 2 ** round(math.log2(2 * math.sqrt(max(n, 1)))))))


@PLANS.register("flat")
def flat_plan(n: int, dim: int) -> IndexPlan:
    """Exact search: every vector compared (the reference the others are measured against)."""
    return IndexPlan("flat", "Flat")


@PLANS.register("hnsw")
def hnsw_plan(n: int, dim: int) -> IndexPlan:
    """HNSW graph, 32 links a node, full vectors (dim·4 + ~256 bytes a vector)."""
    return IndexPlan("hnsw", "HNSW32", "efSearch=128", {"efConstruction": 80})


@PLANS.register("ivf-sq8")
def ivf_sq8_plan(n: int, dim: int) -> IndexPlan:
    """Inverted lists with 8-bit scalar codes (dim bytes a vector)."""
    nlist = nlist_for(n)
    return IndexPlan("ivf-sq8", f"IVF{nlist},SQ8", f"nprobe={max(8, nlist // 32)}",
                     {"kmeans_niter": KMEANS_NITER}, train_size=min(n, TRAIN_PER_LIST * nlist))


@PLANS.register("ivf-pq")
def ivf_pq_plan(n: int, dim: int) -> IndexPlan:
    """Inverted lists with product-quantised codes, one byte per 4 dimensions (dim/4 bytes a
    vector): the smallest index here, at some recall cost (see ``bench/RESULTS.md``)."""
    nlist = nlist_for(n)
    m = next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)
    return IndexPlan("ivf-pq", f"IVF{nlist},PQ{m}x8np", f"nprobe={max(8, nlist // 32)}",
                     {"kmeans_niter": KMEANS_NITER}, train_size=min(n, TRAIN_PER_LIST * nlist))


def plan_index(spec: str, n: int, dim: int, threshold: int = AUTO_THRESHOLD) -> IndexPlan:
    """The plan for ``spec``: a registered kind, ``auto``, or a faiss factory string."""
    if spec == "auto":
        return flat_plan(n, dim) if n < threshold else ivf_sq8_plan(n, dim)
    if spec in PLANS:
        return PLANS.get(spec)(n, dim)
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise UserError(f"--index {spec!r} is neither a kind (auto, {', '.join(PLANS.names())}) "
                        "nor a faiss factory string (e.g. 'IVF1024,SQ8', 'HNSW32,Flat')") from None
    trained = bool(index.is_trained)
    return IndexPlan("factory", spec, train_size=0 if trained else min(n, 100_000))


class ShardVectors:
    """Vectors stored as ``.npy`` shards (row order), read memory-mapped."""

    def __init__(self, paths: Sequence[Path], dim: int) -> None:
        self.paths = [Path(p) for p in paths]
        self.dim = dim
        self.sizes = [int(np.load(p, mmap_mode="r").shape[0]) for p in self.paths]

    def __len__(self) -> int:
        return sum(self.sizes)

    def batches(self) -> Iterator[np.ndarray]:
        """Each shard in order, as float32."""
        for path in self.paths:
            yield np.ascontiguousarray(np.load(path, mmap_mode="r"), dtype=np.float32)

    def sample(self, k: int, seed: int = SEED) -> np.ndarray:
        """``k`` rows chosen uniformly without replacement (deterministic in ``seed``)."""
        n = len(self)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))
        starts = np.cumsum([0, *self.sizes])
        parts = []
        for i, path in enumerate(self.paths):
            sel = rows[(rows >= starts[i]) & (rows < starts[i + 1])] - starts[i]
            if sel.size:
                parts.append(np.asarray(np.load(path, mmap_mode="r")[sel], dtype=np.float32))
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, self.dim),
                                                                                 np.float32)


def new_index(plan: IndexPlan, dim: int) -> faiss.Index:
    """An empty index for ``plan`` (inner-product metric, build parameters applied)."""
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    inner = faiss.downcast_index(index)
    hnsw = getattr(inner, "hnsw", None)
    if hnsw is not None and "efConstruction" in plan.build_params:
        hnsw.efConstruction = int(plan.build_params["efConstruction"])
    if hasattr(inner, "cp") and "kmeans_niter" in plan.build_params:
        inner.cp.niter = int(plan.build_params["kmeans_niter"])
    return index


def build_index(plan: IndexPlan, vectors: ShardVectors, progress: bool = True) -> faiss.Index:
    """Train (on a sample when needed) and add every shard."""
    index = new_index(plan, vectors.dim)
    if not index.is_trained:
        sample = vectors.sample(max(plan.train_size, 1))
        log.info("training %s on %d vectors", plan.factory, len(sample))
        index.train(sample)
    for batch in tqdm(vectors.batches(), total=len(vectors.paths), desc="index", unit="shard",
                      disable=not progress):
        if len(batch):
            index.add(batch)
    apply_search_params(index, plan.search_params)
    return index


def apply_search_params(index: faiss.Index, params: str) -> None:
    """Set search-time parameters (``nprobe``, ``efSearch``, ``k_factor``) on a loaded index."""
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)  # type: ignore[arg-type]


def write_index(index: faiss.Index, path: Path) -> None:
    """Write atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def read_index(path: Path, search_params: str = "") -> faiss.Index:
    """Load an index (one with on-disk lists too: ``ingest.ondisk``) and re-apply its search
    parameters."""
    if Path(path).with_name(IVFDATA).is_file():  # --index-on-disk
        index = read_on_disk(Path(path))
    else:
        index = faiss.read_index(str(path))
    apply_search_params(index, search_params)
    return index


def read_on_disk(path: Path) -> faiss.Index:
    """An on-disk index, its lists looked up beside it (the store may have moved)."""
    with faiss_notes_to_stderr():
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)


@contextlib.contextmanager
def faiss_notes_to_stderr() -> Iterator[None]:
    """faiss's C++ code prints notes ("resizing ...", "IO_FLAG_ONDISK_SAME_DIR: ...") on stdout;
    send them to stderr, so a CLI's stdout (``ingest search --json``) stays clean."""
    sys.stdout.flush()
    try:
        flush = ctypes.CDLL(None).fflush  # C stdio buffers stdout when it is a pipe
    except (OSError, AttributeError):  # no C runtime to flush (Windows): leave stdout alone
        yield
        return
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        flush(None)
        os.dup2(saved, 1)
        os.close(saved)


def index_bytes_per_vector(path: Path, vectors: int) -> float:
    """Index file size / vectors (what the README's memory table is about; no in-memory copy);
    on-disk inverted lists (``index.ivfdata`` beside it) count too."""
    files = [Path(path), Path(path).with_name(IVFDATA)]
    return sum(f.stat().st_size for f in files if f.is_file()) / max(vectors, 1)
