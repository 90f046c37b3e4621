"""``--index-on-disk``: an IVF index whose inverted lists live in ``index.ivfdata``.

It must answer exactly as the same IVF index held in memory (same training, same vectors), open
from a moved store, count its lists in bytes/vector, and refuse index kinds without lists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from core.errors import UserError
from ingest.build import build_store
from ingest.cli import main
from ingest.config import IngestConfig
from ingest.index import ShardVectors, build_index, plan_index
from ingest.ondisk import build_index_on_disk
from ingest.store import Store

QUERIES = ["Quem foi Tiradentes?", "Lei Áurea abolição", "Copa do Mundo de 1970", "Brasília",
           "Getúlio Vargas Estado Novo", "Constituição de 1988"]


def search(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with Store.open(path) as store:
        return store.search_vectors(store.embed_queries(QUERIES), 10)


def test_on_disk_store_answers_like_the_in_memory_one(sample_dump: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture) -> None:
    config = IngestConfig(embedder="hashing", workers=0, checkpoint_pages=20, index="ivf-sq8")
    memory = build_store(sample_dump, tmp_path / "memory", config, progress=False)
    disk = tmp_path / "disk"
    assert main(["build", str(sample_dump), "--store", str(disk), "--embedder", "hashing",
                 "--workers", "0", "--checkpoint-pages", "20", "--index", "ivf-sq8",
                 "--index-on-disk", "-q"]) == 0
    assert (disk / "index.ivfdata").stat().st_size > (disk / "index.faiss").stat().st_size
    scores, rows = search(disk)
    want_scores, want_rows = search(memory)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)
    with Store.open(disk) as store:
        inner = faiss.extract_index_ivf(store.index())
        assert isinstance(faiss.downcast_InvertedLists(inner.invlists), faiss.OnDiskInvertedLists)
        index = store.manifest["index"]
        assert index["on_disk"] is True and index["factory"].endswith(",SQ8")
        assert index["bytes_per_vector"] >= 256  # the SQ8 codes (dim bytes) are in ivfdata
    capfd.readouterr()  # faiss's C++ notes go to stderr: `ingest search --json` stays JSON
    assert main(["search", str(disk), "Quem foi Tiradentes?", "-k", "2", "--json"]) == 0
    out = capfd.readouterr().out
    assert [json.loads(line)["rank"] for line in out.splitlines()] == [1, 2]
    moved = tmp_path / "elsewhere" / "store"
    shutil.move(str(disk), str(moved))  # the lists are found beside the index, not by old path
    np.testing.assert_array_equal(search(moved)[1], want_rows)
    build_store(sample_dump, moved, config, overwrite=True, progress=False)
    assert not (moved / "index.ivfdata").exists()  # --overwrite removes the lists too


def test_on_disk_ivf_pq_from_several_shards_matches_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(20, 32)).astype(np.float32)
    paths = []
    for i in range(4):  # four shards of unit vectors around 20 centres
        x = centers[rng.integers(0, 20, 500)] + 0.3 * rng.normal(size=(500, 32))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        paths.append(tmp_path / f"{i:06d}.npy")
        np.save(paths[-1], x, allow_pickle=False)
    vectors = ShardVectors(paths, 32)
    plan = plan_index("IVF16,PQ8x4", len(vectors), 32)  # 4-bit PQ codes: quick to train
    queries = vectors.sample(50, seed=9)
    memory = build_index(plan, vectors, progress=False)
    disk = build_index_on_disk(plan, vectors, tmp_path / "index.faiss", progress=False)
    assert disk.ntotal == memory.ntotal == 2000
    for a, b in zip(memory.search(queries, 10), disk.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_on_disk_needs_an_ivf_index(tmp_path: Path) -> None:
    for index in ("flat", "hnsw", "auto"):
        with pytest.raises(ValueError, match="needs an IVF index"):
            IngestConfig(index=index, index_on_disk=True)
    IngestConfig(index="IVF64,Flat", index_on_disk=True)
    with pytest.raises(UserError, match="needs an IVF index"):
        build_index_on_disk(plan_index("flat", 10, 8), ShardVectors([], 8),
                            tmp_path / "index.faiss", progress=False)
