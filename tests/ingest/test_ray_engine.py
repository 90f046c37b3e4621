"""``ingest build --engine ray`` on a local Ray instance (2 CPUs) gives the local engine's store.

Equal in content: the same chunk ids, texts, pages and aliases, the same vectors (bit for bit
with the hashing embedder, allclose with e5, whose batches differ), the same top-k on the default
questions; and a damaged dump stops both engines at the same page, a resume finishing either.
Ray is optional: these tests skip without it (CI installs the ``scale`` extra).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from core.paths import default_questions
from ingest.build import build_store
from ingest.cli import main
from ingest.config import IngestConfig
from ingest.dump import DumpError
from ingest.ray_engine import actor_plan
from ingest.store import Store

RAY_CPUS = 2


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session (starting one takes ~5 s)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if not ray.is_initialized():
        ray.init(num_cpus=RAY_CPUS, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


def questions() -> list[str]:
    """The default question set (what the acceptance compares top-k on)."""
    lines = default_questions().read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def content(path: Path) -> dict:
    """Everything two builds of one dump must share, plus top-5 over the default questions."""
    with Store.open(path) as store:
        chunks = list(store.iter_chunks())
        scores, rows = store.search_vectors(store.embed_queries(questions()), 5)
        return {"ids": [c.chunk_id for c in chunks], "texts": [c.text for c in chunks],
                "pages": list(store.pages()), "aliases": store.aliases(),
                "counts": store.manifest["counts"], "sha": store.sha256(),
                "vectors": np.concatenate([np.load(p) for p in
                                           sorted((path / "vectors").glob("*.npy"))]),
                "rows": rows, "scores": scores}


def assert_same_content(ray_store: dict, local: dict, exact: bool) -> None:
    for key in ("ids", "texts", "pages", "aliases", "counts"):
        assert ray_store[key] == local[key], key
    np.testing.assert_array_equal(ray_store["rows"], local["rows"])
    if exact:
        assert np.array_equal(ray_store["vectors"], local["vectors"])
        assert ray_store["sha"] == local["sha"]
    else:
        np.testing.assert_allclose(ray_store["vectors"], local["vectors"], atol=2e-5)
    np.testing.assert_allclose(ray_store["scores"], local["scores"], atol=2e-5)


def test_ray_engine_equals_local_with_hashing(ray_cluster, hashing_store: Path, sample_dump: Path,
                                              tmp_path: Path, monkeypatch) -> None:
    import ingest.ray_engine

    monkeypatch.setattr(ingest.ray_engine, "BLOCK_BYTES", 32 << 10)  # many Ray blocks in flight
    out = tmp_path / "ray"
    assert main(["build", str(sample_dump), "--store", str(out), "--engine", "ray",
                 "--embedder", "hashing", "--checkpoint-pages", "20", "-q"]) == 0
    ray_store, local = content(out), content(hashing_store)
    assert_same_content(ray_store, local, exact=True)
    assert len(ray_store["ids"]) > 250 and (ray_store["rows"] >= 0).all()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["engine"] == "ray"


@pytest.mark.slow
def test_ray_engine_equals_local_with_e5(ray_cluster, e5_store: Path, e5_config: IngestConfig,
                                         sample_dump: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    out = build_store(sample_dump, tmp_path / "ray-e5", replace(e5_config, engine="ray"),
                      progress=False)
    assert_same_content(content(out), content(e5_store), exact=False)


def chunk_ids(store: Path) -> list[str]:
    with sqlite3.connect(store / "chunks.sqlite") as db:
        return [r[0] for r in db.execute("SELECT chunk_id FROM chunks ORDER BY row")]


def test_damaged_dump_stops_both_engines_alike_and_resume_crosses_engines(
        ray_cluster, make_dump, tmp_path: Path, article) -> None:
    rng = np.random.default_rng(0)  # varied words: the compressed dump spans several bz2 blocks
    pages = [(i, f"Cidade {i}", article(i, 100) + " ".join(
        f"w{n}" for n in rng.integers(0, 10**6, 4000))) for i in range(1, 60)]
    full = make_dump(pages, "full.xml.bz2")
    cut = tmp_path / "dump.xml.bz2"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    stores = {engine: tmp_path / engine for engine in ("local", "ray")}
    configs = {e: IngestConfig(embedder="hashing", workers=0, checkpoint_pages=7, engine=e)
               for e in stores}
    read = {}
    for engine, out in stores.items():
        with pytest.raises(DumpError, match="ends early.*Cidade") as err:
            build_store(cut, out, configs[engine], progress=False)
        read[engine] = err.value.pages_read
    assert read["local"] == read["ray"] > 0
    assert chunk_ids(stores["local"]) == chunk_ids(stores["ray"]) != []
    cut.write_bytes(full.read_bytes())  # the complete re-download
    other = {"local": "ray", "ray": "local"}
    for engine, out in stores.items():  # each store is finished by the OTHER engine
        build_store(cut, out, configs[other[engine]], resume=True, progress=False)
    with Store.open(stores["local"]) as a, Store.open(stores["ray"]) as b:
        assert a.sha256() == b.sha256() and len(a) == len(b) > 0


def test_a_user_error_in_a_ray_worker_is_one_user_error(ray_cluster, sample_dump: Path,
                                                       tmp_path: Path) -> None:
    from ingest.hashing_embedder import HashingEmbedder

    class MissingWeights(HashingEmbedder):  # local: Ray ships it to the actor by value
        def embed_passages(self, texts, batch_size=32, progress=False):
            raise UserError("embedder weights missing on node 7; install them there")

    with pytest.raises(UserError, match="^embedder weights missing on node 7; install them"):
        build_store(sample_dump, tmp_path / "s", IngestConfig(engine="ray", embedder="hashing"),
                    embedder=MissingWeights(), progress=False)


def test_missing_ray_is_one_user_error(monkeypatch, sample_dump: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is absent
    out = tmp_path / "never"
    with pytest.raises(UserError, match=r'pip install "ragvsft\[scale\]"'):
        build_store(sample_dump, out, IngestConfig(embedder="hashing", engine="ray"))
    assert not out.exists()
    with pytest.raises(UserError, match="unknown ingest engine 'rey'. Did you mean 'ray'"):
        build_store(sample_dump, out, IngestConfig(embedder="hashing", engine="rey"))


def test_actor_plan_one_actor_per_gpu_else_cpus_but_one() -> None:
    assert actor_plan({"CPU": 2.0}, None) == (1, {"num_cpus": 1, "num_gpus": 0})
    assert actor_plan({"CPU": 16.0}, None)[0] == 15
    assert actor_plan({"CPU": 32.0, "GPU": 4.0}, None) == (4, {"num_cpus": 1, "num_gpus": 1})
    with pytest.raises(UserError, match="has 2 CPUs.*--ray-actors 1"):
        actor_plan({"CPU": 2.0}, 2)
    with pytest.raises(UserError, match="4 GPUs"):
        actor_plan({"CPU": 32.0, "GPU": 4.0}, 8)
