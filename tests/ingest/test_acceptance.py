"""The issue's acceptance with the real default embedder (multilingual-e5-small) on the sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.chunk import embed_text
from ingest.store import Store

pytestmark = pytest.mark.slow


def test_tiradentes_ranks_first(e5_store: Path) -> None:
    with Store.open(e5_store) as store:
        hits = store.search("Quem foi Tiradentes?", k=5)
        assert hits[0][0].title == "Tiradentes"
        assert store.search("Quando foi assinada a Lei Áurea?", k=3)[0][0].title in {
            "Lei Áurea", "Abolição da escravatura no Brasil"}
        assert store.manifest["embedder"]["name"] == "multilingual-e5-small"
        assert store.manifest["embedder"]["dimension"] == 384


def test_no_chunk_exceeds_the_model_window(e5_store: Path) -> None:
    with Store.open(e5_store) as store:
        embedder = store.embedder()
        limit = embedder.info.max_tokens
        prefix = store.manifest["chunking"]["title_prefix"]
        longest = max(embedder.count_tokens(embed_text(c.title, c.section, c.text, prefix))
                      for c in store.iter_chunks())
    assert longest <= limit
