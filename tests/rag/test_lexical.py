"""rag.lexical: BM25 over store chunks, accent folding, the no-pickle cache in the store dir."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import rag.lexical as lexical
from rag.lexical import BM25_DIR, META_FILE, LexicalIndex, top_n


def test_accent_folded_query_finds_accented_text(history_store) -> None:
    index = LexicalIndex.for_store(history_store, progress=False)
    [ranking] = index.rank(["constituicao 1824"], 3)
    assert history_store.chunks([ranking[0][0]])[0].title == "Constituição brasileira de 1824"
    [ranking] = index.rank(["LEI AUREA"], 3)
    assert history_store.chunks([ranking[0][0]])[0].title == "Lei Áurea"
    assert all(score > 0 for _, score in ranking)


def test_no_match_and_stopword_only_queries_return_nothing(history_store) -> None:
    index = LexicalIndex.for_store(history_store, progress=False)
    assert index.rank(["xyzzy", "o que é de"], 5) == [[], []]


def test_page_table_and_doc_freq(history_store) -> None:
    index = LexicalIndex.for_store(history_store, progress=False)
    assert [(p.title, p.first_row) for p in index.pages][:3] == [
        ("Tiradentes", 0), ("Pedro I do Brasil", 2), ("Lei Áurea", 4)]
    assert list(index.page_rows(2)) == [2, 3]
    assert list(index.page_rows(8)) == [8]  # the last page runs to the end
    assert index.doc_freq("tiradentes") == 2
    assert index.doc_freq("brasil") == 4
    assert index.doc_freq("nothing") == 0


def test_cache_is_reused_and_holds_no_pickle(history_store) -> None:
    LexicalIndex.for_store(history_store, progress=False)
    assert history_store.iter_calls == 1
    folder = history_store.path / BM25_DIR
    names = sorted(p.name for p in folder.iterdir())
    assert all(n.endswith((".npy", ".json")) for n in names), names
    for npy in folder.glob("*.npy"):
        np.load(npy, allow_pickle=False)  # raises if the array needed pickle
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["store_sha256"] == history_store.sha256()
    again = LexicalIndex.for_store(history_store, progress=False)
    assert history_store.iter_calls == 1  # loaded, not rebuilt
    assert again.rank(["tiradentes"], 2) == LexicalIndex.for_store(
        history_store, progress=False).rank(["tiradentes"], 2)


def test_stale_cache_is_rebuilt(history_store, monkeypatch) -> None:
    LexicalIndex.for_store(history_store, progress=False)
    monkeypatch.setattr(lexical, "TOKENIZER_VERSION", 999)
    LexicalIndex.for_store(history_store, progress=False)
    assert history_store.iter_calls == 2
    monkeypatch.setattr(type(history_store), "sha256", lambda self: "other")
    LexicalIndex.for_store(history_store, progress=False)
    assert history_store.iter_calls == 3
    assert json.loads((history_store.path / BM25_DIR / META_FILE).read_text())[
        "store_sha256"] == "other"


def test_corrupt_cache_is_rebuilt(history_store) -> None:
    LexicalIndex.for_store(history_store, progress=False)
    (history_store.path / BM25_DIR / "vocab.index.json").write_text("{not json")
    index = LexicalIndex.for_store(history_store, progress=False)
    assert history_store.iter_calls == 2 and index.rank(["tiradentes"], 1)


def test_read_only_store_dir_keeps_the_index_in_memory(history_store, monkeypatch,
                                                       caplog) -> None:
    def refuse(*_a, **_k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(lexical.bm25s.BM25, "save", refuse)
    with caplog.at_level(logging.WARNING):
        index = LexicalIndex.for_store(history_store, progress=False)
    assert index.rank(["tiradentes"], 1)
    assert "could not cache the BM25 index" in caplog.text
    assert not (history_store.path / BM25_DIR).exists()
    assert not list(history_store.path.glob("bm25.tmp-*"))


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_top_n_matches_a_full_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    scores = rng.integers(0, 4, size=40).astype(np.float32)  # many ties and zeros
    expected = sorted((i for i in range(40) if scores[i] > 0), key=lambda i: (-scores[i], i))
    assert [i for i, _ in top_n(scores, n)] == expected[:n]
