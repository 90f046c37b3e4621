"""rag.passages: Passage from chunks, page de-dup, merging adjacent chunks."""

from __future__ import annotations

import pytest

from core.errors import UserError
from rag.passages import Passage, best_per_page, dedup, join_overlapping, merge_per_page


def P(page: int, ordinal: int, text: str, score: float, row: int | None = None) -> Passage:
    row = page * 10 + ordinal if row is None else row
    return Passage(row, f"{page}-{ordinal}", page, f"Page {page}", "", ordinal, text, score,
                   (row,))


def test_from_chunk_and_to_dict(fake_chunk) -> None:
    chunk = fake_chunk(3, "7-1", 7, "Tiradentes", "Morte", 1, "texto", "abc")
    p = Passage.from_chunk(chunk, 0.5)
    assert (p.row, p.page_id, p.section, p.rows) == (3, 7, "Morte", (3,))
    assert p.to_dict() == {"title": "Tiradentes", "section": "Morte", "chunk_id": "7-1",
                           "page_id": 7, "row": 3, "score": 0.5, "rows": [3]}


def test_best_per_page_keeps_first_of_each_page_in_order() -> None:
    ps = [P(1, 2, "a", 0.9), P(2, 0, "b", 0.8), P(1, 0, "c", 0.7), P(3, 0, "d", 0.6)]
    assert [(p.page_id, p.ordinal) for p in best_per_page(ps)] == [(1, 2), (2, 0), (3, 0)]
    assert dedup(ps, "none") == ps
    with pytest.raises(UserError, match="unknown dedup mode"):
        dedup(ps, "pages")


def test_merge_chains_adjacent_retrieved_chunks_only() -> None:
    ps = [P(1, 2, "c d e", 0.9), P(2, 0, "x", 0.8), P(1, 1, "a b c d", 0.7),
          P(1, 4, "far", 0.6), P(1, 3, "e f", 0.5)]
    merged = merge_per_page(ps)
    assert [m.page_id for m in merged] == [1, 2]
    first = merged[0]
    # ordinals 1,2,3,4 are all retrieved and adjacent: one passage in page order, overlaps cut
    assert first.text == "a b c d e f far".replace(" far", "\nfar")
    assert first.rows == (11, 12, 13, 14)
    assert (first.score, first.ordinal, first.row) == (0.9, 2, 12)  # the best chunk's identity
    assert merged[1] == ps[1]
    assert dedup(ps, "merge") == merged


def test_merge_leaves_gaps_apart() -> None:
    merged = merge_per_page([P(1, 0, "lead", 1.0), P(1, 2, "other", 0.5)])
    assert [m.text for m in merged] == ["lead"]  # ordinal 2 is not adjacent to 0


def test_join_overlapping() -> None:
    assert join_overlapping("um dois três", "dois três quatro") == "um dois três quatro"
    assert join_overlapping("um dois", "três") == "um dois\ntrês"
    assert join_overlapping("a b", "a b") == "a b"


def test_kept_rows_survive_dedup_in_rank_order() -> None:
    ps = [P(1, 2, "best", 0.9), P(2, 0, "other", 0.8), P(1, 0, "lead", 0.7), P(1, 1, "mid", 0.6)]
    assert [(p.page_id, p.ordinal) for p in dedup(ps, "page", keep={10})] == [
        (1, 2), (2, 0), (1, 0)]
    assert dedup(ps, "page", keep={99}) == dedup(ps, "page")  # a row not retrieved: nothing
    merged = dedup(ps, "merge", keep={10})
    assert [p.rows for p in merged] == [(10, 11, 12), (20,)]  # the lead is already merged in
    assert dedup(ps, "none", keep={10}) == ps
