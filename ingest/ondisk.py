"""An IVF index whose inverted lists live on disk (``--index-on-disk``): ``index.ivfdata``.

For a store whose index does not fit in RAM (IVF-Flat over tens of millions of vectors, or a
small machine): the coarse quantizer and codec are trained once on a sample, as for the in-memory
index; each vector shard is then added to its own copy of the trained index, written to a
temporary file, and ``faiss.contrib.ondisk.merge_ondisk`` merges those shard indexes (read
memory-mapped) into ``OnDiskInvertedLists`` — faiss's recipe (``demo_ondisk_ivf.py``). Only one
shard is in memory at a time. The store keeps ``index.faiss`` (quantizer, codec, list offsets)
beside ``index.ivfdata`` (the codes); ``ingest.index.read_index`` opens it from the store's own
folder (``IO_FLAG_ONDISK_SAME_DIR``), so a store can be moved, and searches memory-map the lists.
faiss's C++ notes on stdout are sent to stderr while it reads or writes those lists
(``ingest.index.faiss_notes_to_stderr``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk
from tqdm.auto import tqdm

from core.errors import UserError
from ingest.index import (
    IVFDATA,
    IndexPlan,
    ShardVectors,
    apply_search_params,
    faiss_notes_to_stderr,
    new_index,
    write_index,
)

log = logging.getLogger(__name__)


def check_on_disk(plan: IndexPlan, dim: int) -> None:
    """Only IVF indexes have inverted lists to put on disk."""
    index = new_index(plan, dim)
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        raise UserError(f"--index-on-disk needs an IVF index (--index ivf-sq8, ivf-pq or a "
                        f"factory string like 'IVF4096,Flat'), not {plan.factory!r}") from None


def build_index_on_disk(plan: IndexPlan, vectors: ShardVectors, path: Path,
                        progress: bool = True) -> faiss.Index:
    """Train on a sample, add shard by shard, merge into ``path``'s folder/``index.ivfdata``,
    and write the index to ``path``; returns the index (lists memory-mapped)."""
    check_on_disk(plan, vectors.dim)
    trained = new_index(plan, vectors.dim)
    sample = vectors.sample(max(plan.train_size, 1))
    log.info("training %s on %d vectors (inverted lists on disk)", plan.factory, len(sample))
    trained.train(sample)
    ivfdata = path.with_name(IVFDATA)
    ivfdata.unlink(missing_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ivf-shards-", dir=path.parent))
    try:
        shards = _shard_indexes(trained, vectors, scratch, progress)
        index = faiss.clone_index(trained)
        with faiss_notes_to_stderr():
            merge_ondisk(index, [str(s) for s in shards], str(ivfdata))
            write_index(index, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    apply_search_params(index, plan.search_params)
    return index


def _shard_indexes(trained: faiss.Index, vectors: ShardVectors, folder: Path,
                   progress: bool) -> list[Path]:
    """One small index file per vector shard, ids = global row numbers."""
    out, start = [], 0
    for i, batch in enumerate(tqdm(vectors.batches(), total=len(vectors.paths),
                                   desc="index (on disk)", unit="shard", disable=not progress)):
        if not len(batch):
            continue
        part = faiss.clone_index(trained)
        part.add_with_ids(batch, np.arange(start, start + len(batch), dtype=np.int64))
        start += len(batch)
        out.append(folder / f"{i:06d}.index")
        faiss.write_index(part, str(out[-1]))
    return out
