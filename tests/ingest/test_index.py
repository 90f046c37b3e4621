"""FAISS plans and builds, checked against brute force on synthetic vectors (as faiss contrib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from ingest.index import (
    ShardVectors,
    build_index,
    nlist_for,
    plan_index,
    read_index,
    write_index,
)

DIM = 64


def clustered(n: int, seed: int, centers: int = 200) -> np.ndarray:
    """Unit vectors around random centres (real embeddings are clustered, not uniform)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).standard_normal((centers, DIM)).astype(np.float32)
    x = base[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(
        np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def shards(tmp_path: Path, x: np.ndarray, size: int = 3000) -> ShardVectors:
    paths = []
    for i in range(0, len(x), size):
        path = tmp_path / f"{i // size:06d}.npy"
        np.save(path, x[i:i + size], allow_pickle=False)
        paths.append(path)
    return ShardVectors(paths, DIM)


def recall_at_10(index, x: np.ndarray, q: np.ndarray) -> float:
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    _, got = index.search(q, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got, strict=True)]))


def test_plans() -> None:
    assert plan_index("auto", 99_999, 384).factory == "Flat"
    auto = plan_index("auto", 200_000, 384)
    assert auto.kind == "ivf-sq8" and auto.factory == "IVF1024,SQ8" and auto.train_size == 40960
    assert plan_index("auto", 500, 384, threshold=100).kind == "ivf-sq8"
    assert plan_index("hnsw", 10, 384).factory == "HNSW32"
    assert plan_index("ivf-pq", 200_000, 384).factory == "IVF1024,PQ96x8np"
    assert plan_index("IVF64,Flat", 5000, 384).train_size == 5000
    assert plan_index("HNSW16", 5000, 384).kind == "factory"
    assert nlist_for(1) == 16 and nlist_for(5_000_000) == 4096
    with pytest.raises(UserError, match="neither a kind"):
        plan_index("IVFnonsense", 10, 384)


def test_flat_is_exact_and_roundtrips(tmp_path: Path) -> None:
    x = clustered(5000, 1)
    q = clustered(20, 2)
    index = build_index(plan_index("flat", len(x), DIM), shards(tmp_path, x), progress=False)
    scores, rows = index.search(q, 5)
    brute = q @ x.T
    assert np.array_equal(rows, np.argsort(-brute, axis=1)[:, :5])
    assert np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)
    write_index(index, tmp_path / "i.faiss")
    assert read_index(tmp_path / "i.faiss").ntotal == 5000


@pytest.mark.parametrize("kind,minimum", [("ivf-sq8", 0.95), ("hnsw", 0.95)])
def test_approximate_recall(tmp_path: Path, kind: str, minimum: float) -> None:
    x = clustered(20_000, 3)
    q = clustered(100, 4)
    plan = plan_index(kind, len(x), DIM)
    index = build_index(plan, shards(tmp_path, x), progress=False)
    assert index.ntotal == len(x)
    loaded = read_index(_written(index, tmp_path), plan.search_params)
    assert recall_at_10(loaded, x, q) >= minimum


def test_ivf_pq_finds_the_nearest_among_its_ten(tmp_path: Path) -> None:
    x = clustered(4000, 6)[:, :16].copy()  # 16-d keeps PQ training quick; recall: bench/
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:100] + 0.01
    plan = plan_index("ivf-pq", len(x), 16)
    index = build_index(plan, ShardVectors([_saved(tmp_path, x)], 16), progress=False)
    _, rows = index.search(q, 10)
    best = np.argmax(q @ x.T, axis=1)
    assert np.mean([b in r for b, r in zip(best, rows, strict=True)]) >= 0.9


def _saved(tmp_path: Path, x: np.ndarray) -> Path:
    np.save(tmp_path / "s.npy", x, allow_pickle=False)
    return tmp_path / "s.npy"


def _written(index, tmp_path: Path) -> Path:
    write_index(index, tmp_path / "x.faiss")
    return tmp_path / "x.faiss"


def test_shard_sample_is_deterministic(tmp_path: Path) -> None:
    x = clustered(7000, 5)
    vectors = shards(tmp_path, x)
    assert len(vectors) == 7000 and vectors.sizes == [3000, 3000, 1000]
    a, b = vectors.sample(500), vectors.sample(500)
    assert a.shape == (500, DIM) and np.array_equal(a, b)
    rows = {tuple(np.round(r, 6)) for r in x}
    assert all(tuple(np.round(r, 6)) in rows for r in a[:50])
