"""The store contract (CONTRACTS.md): chunks, pages, aliases, search, embedder checks, errors."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from ingest.embedding import get_embedder
from ingest.store import Chunk, Store, describe_store
from rag.passages import Passage, StoreLike


def test_counts_and_manifest(open_store: Store) -> None:
    m = open_store.manifest
    assert len(open_store) == m["counts"]["chunks"] == m["index"]["vectors"] > 250
    c = m["counts"]
    assert (c["articles"], c["redirects"], c["aliases"]) == (63, 10, 10)
    assert c["skipped_disambiguation"] == 1 and c["skipped_other_namespace"] == 7
    assert c["pages_read"] == 81
    assert m["embedder"]["name"] == "hashing" and m["index"]["factory"] == "Flat"
    assert m["chunking"]["title_prefix"] is True and m["chunking"]["chunk_words"] == 120
    assert m["source"]["name"].endswith(".xml.bz2") and len(m["source"]["sha256"]) == 64
    assert m["format_version"] == 1 and "faiss-cpu" in m["versions"]
    assert (open_store.path / "config.yaml").is_file()


def test_chunks_in_row_order_pages_contiguous(open_store: Store) -> None:
    chunks = list(open_store.iter_chunks(batch=37))
    assert [c.row for c in chunks] == list(range(len(open_store)))
    assert all(isinstance(c, Chunk) for c in chunks)
    seen: set[int] = set()
    for page_id, group in itertools.groupby(chunks, key=lambda c: c.page_id):
        assert page_id not in seen
        seen.add(page_id)
        ordinals = [c.ordinal for c in group]
        assert ordinals == list(range(len(ordinals)))
    assert open_store.chunks([5, 0, 5]) == [chunks[5], chunks[0], chunks[5]]
    with pytest.raises(IndexError):
        open_store.chunks([len(open_store)])
    assert chunks[0].chunk_id == f"{chunks[0].page_id}-0"


def test_pages_have_lead_and_infobox(open_store: Store) -> None:
    pages = {p["title"]: p for p in open_store.pages()}
    assert len(pages) == 63 and "Tiradentes (desambiguação)" not in pages
    tira = pages["Tiradentes"]
    assert tira["page_id"] == 1002 and tira["revision_id"] == 10021 and tira["timestamp"]
    assert tira["lead"].startswith("Joaquim José da Silva Xavier")
    assert tira["infobox"]["nascimento_data"] == "12 de novembro de 1746"
    assert not any(t.startswith(("Categoria:", "Predefinição:", "Portal:")) for t in pages)


def test_aliases(open_store: Store) -> None:
    aliases = open_store.aliases()
    assert aliases["Joaquim José da Silva Xavier"] == "Tiradentes"
    assert aliases["Redemocratização do Brasil"] == "Abertura política no Brasil"
    assert len(aliases) == 10


def test_search_and_search_vectors(open_store: Store) -> None:
    hits = open_store.search("Tiradentes alferes dentista tropeiro", k=3)
    assert hits[0][0].title == "Tiradentes" and hits[0][1] >= hits[-1][1]
    q = open_store.embed_queries(["Tiradentes", "samba bossa nova"])
    scores, rows = open_store.search_vectors(q, k=len(open_store) + 5)
    assert rows.shape == (2, len(open_store) + 5) and (rows[:, -5:] == -1).all()
    assert rows.dtype == np.int64
    with pytest.raises(UserError, match="dimension"):
        open_store.search_vectors(np.zeros((1, 3), np.float32), 2)


def test_protocols_other_stages_use(open_store: Store) -> None:
    members = [n for n in vars(StoreLike) if not n.startswith("_")]
    assert members and all(callable(getattr(open_store, n)) for n in members if n != "manifest")
    chunk = open_store.chunks([0])[0]
    assert Passage.from_chunk(chunk, 0.5).chunk_id == chunk.chunk_id
    from finetune.pairs import store_pages

    records = {r.title: r for r in store_pages(open_store)}
    assert records["Tiradentes"].infobox["_template"] == "Info/Biografia"
    assert records["Tiradentes"].sections[0][0] == ""


def test_sha256_and_describe(hashing_store: Path) -> None:
    info = describe_store(hashing_store)
    assert info["sizes"]["total"] > info["sizes"]["vectors"] > 0
    with Store.open(hashing_store) as store:
        assert store.sha256() == info["manifest"]["content_sha256"]


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_manifest(path: Path, change) -> None:
    data = json.loads((path / "manifest.json").read_text())
    change(data)
    (path / "manifest.json").write_text(json.dumps(data))


def test_other_embedder_is_refused(hashing_store: Path, tmp_path: Path) -> None:
    path = copy_store(hashing_store, tmp_path / "s")
    edit_manifest(path, lambda m: m["embedder"].update(revision="hashing-crc32-v0-d256"))
    with Store.open(path) as store, pytest.raises(UserError, match="revision"):
        store.search("Tiradentes")
    edit_manifest(path, lambda m: m["embedder"].update(
        get_embedder("hashing").info.to_dict(), dimension=128))
    with Store.open(path) as store, pytest.raises(UserError, match="dimension"):
        store.embedder()


def test_open_errors(hashing_store: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        Store.open(tmp_path / "nothing")
    path = copy_store(hashing_store, tmp_path / "s")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        Store.open(path)
    (path / "manifest.json").unlink()
    with pytest.raises(UserError, match="unfinished.*--resume"):
        Store.open(path)
    other = copy_store(hashing_store, tmp_path / "t")
    edit_manifest(other, lambda m: m["counts"].update(chunks=3))
    with pytest.raises(UserError, match="manifest says 3"):
        Store.open(other)
    edit_manifest(other, lambda m: m.update(format_version=99))
    with pytest.raises(UserError, match="format"):
        Store.open(other)
