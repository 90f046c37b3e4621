"""The build's reusable steps on dump pages: ``read_blocks`` cuts the dump into blocks (redirects
become aliases, other namespaces are counted), ``prepare_page`` cleans and chunks one article.

Both engines use them (``ingest.builder`` in local processes, ``ingest.ray_stages`` as Ray tasks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ingest.chunk import ChunkDraft, ChunkOptions, TokenCounter, chunk_page
from ingest.clean import CleanOptions, clean_page, is_disambiguation
from ingest.dump import DumpError, DumpReader, RawPage
from ingest.namespaces import Namespaces
from ingest.writer import PageRow


@dataclass
class PageResult:
    """What cleaning + chunking made of one article (``skip`` names why it was dropped)."""

    page: PageRow
    chunks: list[ChunkDraft]
    skip: str | None = None  # "disambiguation" | "empty" | "too_long_title"


@dataclass
class Block:
    """Consecutive dump pages handled together: one embedding call, one checkpoint."""

    articles: list[RawPage] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    next_index: int = 0


def prepare_page(raw: RawPage, ns: Namespaces, clean: CleanOptions, chunking: ChunkOptions,
                 count: TokenCounter) -> PageResult:
    """Clean and chunk one namespace-0 article (disambiguation and empty pages are skipped)."""
    row = PageRow(raw.page_id, raw.title, raw.revision_id, raw.timestamp, "", {}, 0)
    if is_disambiguation(raw.title, raw.text):
        return PageResult(row, [], "disambiguation")
    page = clean_page(raw.page_id, raw.title, raw.text, ns, clean, raw.revision_id,
                      raw.timestamp)
    row.lead, row.infobox = page.lead, page.infobox
    if not page.sections:
        return PageResult(row, [], "empty")
    try:
        chunks = chunk_page(page, chunking, count)
    except ValueError:
        return PageResult(row, [], "too_long_title")
    row.n_chunks = len(chunks)
    return PageResult(row, chunks)


def read_blocks(reader: DumpReader, start: int, block_pages: int, limit: int | None,
                articles_before: int = 0) -> Iterator[Block]:
    """Pages from dump position ``start`` grouped in blocks of ``block_pages`` dump pages.

    Redirects become aliases, other namespaces are counted; on a damaged dump the block read
    so far is yielded before the ``DumpError`` propagates, so it can still be committed.
    """
    block, seen = Block(next_index=start), articles_before
    try:
        for raw in reader.pages(start):
            article = raw.ns == 0 and raw.redirect is None
            if article and limit is not None and seen >= limit:
                break
            seen += int(article)
            _classify(raw, block)
            block.next_index = raw.index + 1
            if block.next_index % block_pages == 0:
                yield block
                block = Block(next_index=block.next_index)
    except DumpError:
        yield block
        raise
    yield block


def _classify(raw: RawPage, block: Block) -> None:
    block.counts["pages_read"] += 1
    if raw.ns != 0:
        block.counts["skipped_other_namespace"] += 1
    elif raw.redirect is not None:
        block.counts["redirects"] += 1
        target = raw.redirect.split("#", 1)[0].strip()
        if target and target != raw.title:
            block.aliases.append((raw.title, target))
    else:
        block.articles.append(raw)
