"""Chunking: sizes, exact overlaps, sections, stable ids/hashes, and the embedder's token cap."""

from __future__ import annotations

import hashlib

import pytest

from ingest.chunk import COUNTERS, ChunkOptions, CounterSpec, chunk_page, embed_text, pack
from ingest.clean import CleanPage
from rag.passages import join_overlapping

WORDS = COUNTERS.get("words")({"passage_prompt": ""})
SENTENCES = " ".join(f"Frase número {i} fala do Império e da República do Brasil." for i in
                     range(60))  # 660 words, 11 a sentence


def page(*sections: tuple[str, str], title: str = "Artigo") -> CleanPage:
    return CleanPage(page_id=7, title=title, revision_id=1, timestamp="", sections=sections)


def test_pack_sizes_and_sentence_overlap() -> None:
    chunks = pack(SENTENCES, chunk_words=100, overlap=20)
    sizes = [len(c.split()) for c in chunks]
    assert all(88 <= s <= 100 for s in sizes[:-1]) and len(chunks) == 8
    for left, right in zip(chunks, chunks[1:], strict=False):
        lw, rw = left.split(), right.split()
        assert lw[-11:] == rw[:11]  # the next chunk starts with the last (11-word) sentence
        assert right.startswith("Frase")  # ...and at a sentence start
    joined = join_overlapping(join_overlapping(chunks[0], chunks[1]), chunks[2]).split()
    assert joined == SENTENCES.split()[:len(joined)]  # rag stitches neighbours back exactly


def test_pack_long_sentence_and_small_tail() -> None:
    long = " ".join(["palavra"] * 250) + "."
    chunks = pack(long, chunk_words=100, overlap=10)
    assert [len(c.split()) for c in chunks] == [100, 100, 60]  # 100-word windows; tail + 10
    tail = pack(" ".join(f"Frase {i} tem cinco palavras." for i in range(22)), 100, 0)
    assert [len(c.split()) for c in tail] == [110]  # a 10-word tail joins the previous chunk


def test_abbreviations_do_not_end_sentences() -> None:
    chunks = pack("A rainha D. Maria I comutou as penas. " * 30, chunk_words=20, overlap=0)
    assert all(not c.startswith("Maria") for c in chunks)


def test_chunks_never_cross_sections_and_carry_ids() -> None:
    drafts = chunk_page(page(("", "Lead curto."), ("História / Início", SENTENCES)),
                        ChunkOptions(chunk_words=100, overlap=20), WORDS)
    assert drafts[0].section == "" and drafts[0].text == "Lead curto."
    assert {d.section for d in drafts[1:]} == {"História / Início"}
    assert [d.chunk_id for d in drafts] == [f"7-{i}" for i in range(len(drafts))]
    assert all(d.sha256 == hashlib.sha256(d.text.encode()).hexdigest() for d in drafts)
    assert all(d.title == "Artigo" for d in drafts)


def test_embed_text_prefix() -> None:
    assert embed_text("Tiradentes", "Legado", "Texto.") == "Tiradentes — Legado: Texto."
    assert embed_text("Tiradentes", "", "Texto.") == "Tiradentes: Texto."
    assert embed_text("Tiradentes", "Legado", "Texto.", title_prefix=False) == "Texto."


def test_token_cap_splits_until_it_fits() -> None:
    text = " ".join(["pneumoultramicroscopicossilicovulcanoconiótico"] * 150)
    count = COUNTERS.get("words")({"passage_prompt": "passage: "})
    options = ChunkOptions(chunk_words=150, overlap=0, max_tokens=60)
    drafts = chunk_page(page(("", text)), options, count)
    assert all(count([embed_text("Artigo", d.section, d.text)])[0] <= 60 for d in drafts)
    assert sum(len(d.text.split()) for d in drafts) == 150


def test_title_longer_than_the_window_is_an_error() -> None:
    long_title = " ".join(["título"] * 10)
    with pytest.raises(ValueError, match="exceed"):
        chunk_page(page(("", "um dois três"), title=long_title),
                   ChunkOptions(max_tokens=5, chunk_words=10, overlap=0), WORDS)


def test_options_validated() -> None:
    with pytest.raises(ValueError):
        ChunkOptions(chunk_words=100, overlap=60)
    with pytest.raises(ValueError):
        ChunkOptions(chunk_words=5)


def test_real_tokenizer_counts_match_the_embedder_and_cap_holds() -> None:
    from models.embedders import resolve_embedder

    info = resolve_embedder("multilingual-e5-small")
    count = CounterSpec("hf", info.to_dict()).load()
    assert count(["Tiradentes foi um alferes."]) == [13]  # "passage: " + text + <s> </s>
    dense = " ".join(f"{n:07d}-ÇÃÕ-ĳ" for n in range(400))  # many tokens per word
    options = ChunkOptions(chunk_words=400, overlap=0, max_tokens=info.max_tokens)
    drafts = chunk_page(page(("Seção", dense)), options, count)
    assert len(drafts) > 1
    assert max(count([embed_text("Artigo", d.section, d.text) for d in drafts])) <= 512
