"""Builds: refusal/overwrite/resume, determinism, kill -9 + resume, limits and bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from ingest.build import build_store
from ingest.config import IngestConfig
from ingest.dump import DumpError
from ingest.hashing_embedder import HashingEmbedder
from ingest.store import Store

HASHING = IngestConfig(embedder="hashing", workers=0, checkpoint_pages=20)
QUERIES = ["Quem foi Tiradentes?", "Lei Áurea abolição", "Copa do Mundo de 1970", "Brasília"]


def snapshot(path: Path) -> dict:
    """What must be identical between two builds of the same dump and settings."""
    with Store.open(path) as store:
        vectors = np.concatenate([np.load(p) for p in sorted((path / "vectors").glob("*.npy"))])
        return {"sha": store.sha256(), "ids": [c.chunk_id for c in store.iter_chunks()],
                "vectors": vectors, "aliases": store.aliases(),
                "search": [[(c.chunk_id, round(s, 5)) for c, s in store.search(q, 5)]
                           for q in QUERIES]}


def assert_identical(a: dict, b: dict) -> None:
    assert a["ids"] == b["ids"] and a["aliases"] == b["aliases"]
    assert np.array_equal(a["vectors"], b["vectors"])
    assert a["search"] == b["search"] and a["sha"] == b["sha"]


def test_refuses_existing_store_then_overwrite_and_resume(hashing_store: Path, tmp_path: Path,
                                                          sample_dump: Path) -> None:
    with pytest.raises(UserError, match="already holds a finished store.*--resume.*--overwrite"):
        build_store(sample_dump, hashing_store, HASHING, progress=False)
    assert build_store(sample_dump, hashing_store, HASHING, resume=True) == hashing_store
    with pytest.raises(UserError, match="either --resume or --overwrite"):
        build_store(sample_dump, hashing_store, HASHING, resume=True, overwrite=True)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("x")
    with pytest.raises(UserError, match="not a store"):
        build_store(sample_dump, foreign, HASHING, progress=False)
    copy = tmp_path / "copy"
    build_store(sample_dump, copy, HASHING, progress=False)
    (copy / "vectors" / "999999.npy").write_bytes(b"junk")
    build_store(sample_dump, copy, HASHING, overwrite=True, progress=False)
    assert not (copy / "vectors" / "999999.npy").exists()


def test_worker_count_does_not_change_the_store(hashing_store: Path, tmp_path: Path,
                                                sample_dump: Path) -> None:
    inline = IngestConfig(embedder="hashing", workers=0, checkpoint_pages=20)
    out = build_store(sample_dump, tmp_path / "inline", inline, progress=False)
    assert_identical(snapshot(out), snapshot(hashing_store))  # that one ran 2 workers


def test_spawned_workers_give_the_same_store(hashing_store: Path, tmp_path: Path,
                                             sample_dump: Path, monkeypatch) -> None:
    import ingest.builder

    monkeypatch.setattr(ingest.builder, "START_METHOD", "spawn")  # what macOS/Windows use
    config = IngestConfig(embedder="hashing", workers=2, checkpoint_pages=20)
    out = build_store(sample_dump, tmp_path / "spawned", config, progress=False)
    assert_identical(snapshot(out), snapshot(hashing_store))


class CrashingEmbedder(HashingEmbedder):
    """Fails on its n-th batch: a crash in the middle of a build."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def embed_passages(self, texts, batch_size=32, progress=False):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return super().embed_passages(texts, batch_size, progress)


def test_crash_then_resume_is_identical(hashing_store: Path, tmp_path: Path,
                                        sample_dump: Path) -> None:
    config = IngestConfig(embedder="hashing", workers=2, checkpoint_pages=20)
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated"):
        build_store(sample_dump, out, config, embedder=CrashingEmbedder(3), progress=False)
    with pytest.raises(UserError, match="unfinished"):
        Store.open(out)
    build_store(sample_dump, out, config, resume=True, progress=False)
    assert_identical(snapshot(out), snapshot(hashing_store))


def _checkpoint_index(store: Path) -> int:
    """The next dump page recorded by the last committed checkpoint (0 when none yet)."""
    try:
        db = sqlite3.connect(f"{(store / 'chunks.sqlite').as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM progress WHERE key='checkpoint'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(json.loads(row[0])["next_index"]) if row else 0


def kill_mid_build(dump: Path, store: Path, args: list[str], after: int, timeout: float) -> None:
    """Run ``ingest build`` in a subprocess and SIGKILL it once ``after`` pages are committed."""
    cmd = [sys.executable, "-m", "ingest.cli", "build", str(dump), "--store", str(store), "-q",
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _checkpoint_index(store) >= after:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    rc = proc.wait(timeout=60)
    assert rc == -signal.SIGKILL, f"build ended on its own (rc {rc}): {proc.stderr.read()[-500:]}"
    assert not (store / "manifest.json").exists() and _checkpoint_index(store) >= after


def test_kill_9_then_resume_is_identical(big_dump: Path, tmp_path: Path) -> None:
    args = ["--embedder", "hashing", "--workers", "1", "--checkpoint-pages", "10"]
    config = IngestConfig(embedder="hashing", workers=1, checkpoint_pages=10)
    reference = build_store(big_dump, tmp_path / "reference", config, progress=False)
    killed = tmp_path / "killed"
    kill_mid_build(big_dump, killed, args, after=30, timeout=120)
    with pytest.raises(UserError, match="already holds an unfinished store"):
        build_store(big_dump, killed, config, progress=False)
    build_store(big_dump, killed, config, resume=True, progress=False)
    assert_identical(snapshot(killed), snapshot(reference))


@pytest.mark.slow
def test_kill_9_then_resume_with_e5_is_identical(e5_store: Path, e5_config: IngestConfig,
                                                 sample_dump: Path, tmp_path: Path) -> None:
    """The real embedder, bitwise: the first 3 blocks of the sample, killed after the first."""
    from ingest.dump import DumpReader

    with DumpReader(sample_dump) as reader:  # the articles among the first 3 blocks' pages
        first = [p for p in reader.pages() if p.index < 3 * e5_config.checkpoint_pages]
    limit = sum(p.ns == 0 and p.redirect is None for p in first)
    killed = tmp_path / "killed-e5"
    args = ["--workers", str(e5_config.workers), "--checkpoint-pages",
            str(e5_config.checkpoint_pages), "--limit", str(limit)]
    kill_mid_build(sample_dump, killed, args, after=e5_config.checkpoint_pages, timeout=300)
    config = IngestConfig(workers=e5_config.workers, limit=limit,
                          checkpoint_pages=e5_config.checkpoint_pages)
    build_store(sample_dump, killed, config, resume=True, progress=False)
    part, full = snapshot(killed), snapshot(e5_store)
    n = len(part["ids"])
    assert n > 50 and part["ids"] == full["ids"][:n]  # same blocks, so the same embed calls:
    assert np.array_equal(part["vectors"], full["vectors"][:n])  # identical bits


def test_resume_with_other_settings_is_refused(sample_dump: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    with pytest.raises(RuntimeError):
        build_store(sample_dump, out, HASHING, embedder=CrashingEmbedder(2), progress=False)
    other = IngestConfig(embedder="hashing", workers=0, checkpoint_pages=20, chunk_words=200)
    with pytest.raises(UserError, match="different settings: chunk_words=120 .now 200"):
        build_store(sample_dump, out, other, resume=True, progress=False)


def test_limit(sample_dump: Path, tmp_path: Path) -> None:
    config = IngestConfig(embedder="hashing", workers=0, limit=10)
    with Store.open(build_store(sample_dump, tmp_path / "s", config, progress=False)) as store:
        assert store.manifest["counts"]["articles_read"] == 10
        assert len(list(store.pages())) == 10


def test_truncated_dump_keeps_what_was_read_and_resumes(make_dump, tmp_path: Path,
                                                        article) -> None:
    rng = np.random.default_rng(0)  # varied words: the compressed dump spans several blocks
    pages = [(i, f"Cidade {i}", article(i, 100) + " ".join(
        f"w{n}" for n in rng.integers(0, 10**6, 4000))) for i in range(1, 80)]
    full = make_dump(pages, "full.xml.bz2")
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "s"
    config = IngestConfig(embedder="hashing", workers=0, checkpoint_pages=7)
    with pytest.raises(DumpError, match="ends early.*Cidade") as err:
        build_store(cut, out, config, progress=False)
    assert 0 < err.value.pages_read < 79
    assert _checkpoint_index(out) == err.value.pages_read  # every page read was committed
    cut.write_bytes(full.read_bytes())  # "re-downloaded"
    build_store(cut, out, config, resume=True, progress=False)
    reference = build_store(full, tmp_path / "ref", config, progress=False)
    assert snapshot(out)["ids"] == snapshot(reference)["ids"]
    assert snapshot(out)["sha"] == snapshot(reference)["sha"]


def test_malformed_and_empty_dumps(make_dump, tmp_path: Path) -> None:
    bad = make_dump([], "bad.xml", raw=b"<mediawiki><page><title>A</title><ns>0")
    with pytest.raises(UserError, match="malformed XML"):
        build_store(bad, tmp_path / "a", HASHING, progress=False)
    empty = make_dump([], "empty.xml", raw=b"")
    with pytest.raises(UserError, match="empty"):
        build_store(empty, tmp_path / "b", HASHING, progress=False)
    assert not (tmp_path / "b").exists()
    no_pages = make_dump([], "none.xml.bz2")
    with pytest.raises(UserError, match="no article text found"):
        build_store(no_pages, tmp_path / "c", HASHING, progress=False)


def test_empty_duplicate_and_huge_pages(make_dump, tmp_path: Path, caplog, article) -> None:
    huge = article(1, 30) * 40_000  # about 10 MB of wikitext
    assert len(huge.encode()) > 10_000_000
    pages = [(1, "Grande", huge), (2, "Vazia", "{{Esboço}}\n[[Categoria:X]]"),
             (3, "Normal", article(3)), (3, "Normal de novo", article(4)),
             (4, "Outra", "", 0), (5, "Nome", "#REDIRECT [[Normal]]", 0, "Normal")]
    caplog.set_level(logging.WARNING)
    start = time.perf_counter()
    out = build_store(make_dump(pages), tmp_path / "s", HASHING, progress=False)
    assert time.perf_counter() - start < 180
    with Store.open(out) as store:
        counts = store.manifest["counts"]
        assert counts["skipped_empty"] == 2 and counts["skipped_duplicate"] == 1
        assert counts["articles"] == 2 and store.aliases() == {"Nome": "Normal"}
        assert len(store) > 10_000  # the 10 MB page was chunked, not dropped
    assert "'Vazia' (id 2) skipped: empty" in caplog.text
    assert "'Normal de novo' (id 3) skipped: duplicate" in caplog.text


def test_enwiki_fragment_redirects_become_aliases(shared_wiki: Path, tmp_path: Path) -> None:
    dump = shared_wiki / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    config = IngestConfig(embedder="hashing", workers=2, tables="linearize")
    with Store.open(build_store(dump, tmp_path / "en", config, progress=False)) as store:
        counts = store.manifest["counts"]
        assert counts["redirects"] == 99 and counts["aliases"] == 99  # + 1 in namespace 4
        assert counts["pages_read"] == 206 and counts["skipped_other_namespace"] == 1
        aliases = store.aliases()
        assert aliases["AccessibleComputing"] == "Computer accessibility"
        titles = {p["title"] for p in store.pages()}
        assert set(aliases.values()) - titles  # targets outside the fragment are kept too
        assert "Anarchism" in titles and store.manifest["source"]["dbname"] == "enwiki"
