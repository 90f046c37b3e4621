"""Instruction pairs from a store: templates (+ generator QA), limits, dedup, overlap, split.

Output: ONE pairs JSONL whose rows carry ``split`` = ``train`` | ``validation``; the split is by
article (sha256 of ``seed:title`` read as a fraction, below ``val_fraction``), so no article has
pairs on both sides. Beside it, ``<name>.meta.json`` records the counts, the config, the split rule,
the overlap check against the evaluation questions (``leakage``: mode ``report`` or ``strict``,
threshold, every question file with its sha256, which pairs overlap which questions, drops) and
the source store; adapter manifests copy it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from core.config import config_dict
from core.errors import UserError
from core.text import fold, squash
from finetune.genqa import ChunkText, generated_pairs
from finetune.leakage import DEFAULT_MODE, DEFAULT_THRESHOLD, Questions, check_mode, check_pairs
from finetune.raft import RaftConfig, add_context
from finetune.records import Pair, split_of, write_meta, write_pairs
from finetune.templates import TEMPLATES, Limits, PageRecord, page_pairs
from finetune.text import clip

if TYPE_CHECKING:
    from models.generation import Generator

log = logging.getLogger(__name__)

Item = tuple[str, Pair]  # (article title, pair): the title decides the split


@dataclass(frozen=True)
class PairsConfig:
    """How pairs are made from a store."""

    templates: tuple[str, ...] = ("lead", "summary", "dates", "facts", "sections", "short")
    # the mix: which templates make pairs (``short``: bare-value answers, ``paraphrases`` each)
    paraphrases: int = 3
    max_instruction_chars: int = 300
    max_input_chars: int = 2000
    max_output_chars: int = 560  # answers cut to whole sentences: ~185 tokens, so a pair fits
    # cpu-demo's 256 tokens with the chat template and keeps its EOS (truncated answers teach
    # the model not to stop)
    min_output_chars: int = 2
    max_fact_chars: int = 200
    max_section_pairs: int = 4
    val_fraction: float = 0.1
    seed: int = 0
    leakage_threshold: float = DEFAULT_THRESHOLD  # question similarity of the overlap check
    overlap: str = DEFAULT_MODE  # "report": keep overlapping pairs, list them; "strict": drop
    raft_share: float = 0.0  # context-aware pairs (finetune.raft): share of the qualifying pairs
    raft_absent: float = 0.05  # ... of which the gold passage is left out (target: refusal;
    # 30% taught the 0.5B model to refuse 71 of 82 answerable questions, 5% did not)
    raft_k: int = 2  # passages per context-aware pair (compare's k)
    raft_retriever: str = "hybrid"  # the RAG system's retriever
    prompt_template: str = "short"  # the rag template (its refusal is the gold-absent target)
    generator: str | None = None
    gen_per_chunk: int = 0
    gen_max_chunks: int = 200
    max_pages: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        for name in self.templates:
            TEMPLATES.get(name)
        if self.gen_per_chunk < 0 or (self.gen_per_chunk and not self.generator):
            raise UserError("--gen-per-chunk needs --generator MODEL (and a count >= 0)")
        check_mode(self.overlap)
        self.raft()  # its ranges, checked
        if not 0 < self.leakage_threshold <= 1:
            raise UserError(f"--leakage-threshold must be in (0, 1], not "
                            f"{self.leakage_threshold}")

    def raft(self) -> RaftConfig:
        """The context-aware pairs' settings."""
        return RaftConfig(share=self.raft_share, absent=self.raft_absent, k=self.raft_k,
                          retriever=self.raft_retriever, template=self.prompt_template,
                          seed=self.seed)

    def limits(self) -> Limits:
        """The per-template limits."""
        return Limits(max_output_chars=self.max_output_chars, max_fact_chars=self.max_fact_chars,
                      max_section_pairs=self.max_section_pairs, paraphrases=self.paraphrases)


def store_pages(store: Any) -> Iterator[PageRecord]:
    """Articles of an ``ingest.store.Store``: page rows joined with their chunks' sections.

    Chunks are read in row order and grouped by page id; each section contributes its first
    chunk (chunks overlap, so concatenating them would repeat text).
    """
    pages = {int(p["page_id"]): p for p in store.pages()}
    seen: set[int] = set()
    for page_id, group in itertools.groupby(store.iter_chunks(), key=lambda c: c.page_id):
        sections: dict[str, str] = {}
        for chunk in group:
            sections.setdefault(chunk.section or "", chunk.text)
        row = pages.get(int(page_id))
        if row is None or page_id in seen:
            continue
        seen.add(page_id)
        yield _record(row, tuple(sections.items()))
    for page_id, row in pages.items():  # pages without chunks still have a lead
        if page_id not in seen:
            yield _record(row, ())


def _record(row: dict[str, Any], sections: tuple[tuple[str, str], ...]) -> PageRecord:
    infobox = row.get("infobox") or {}
    return PageRecord(page_id=int(row["page_id"]), title=str(row["title"]),
                      lead=str(row.get("lead") or ""),
                      infobox=infobox if isinstance(infobox, dict) else {}, sections=sections)


def store_chunks(store: Any) -> Iterator[ChunkText]:
    """The store's chunks as the generator reads them."""
    for chunk in store.iter_chunks():
        yield ChunkText(chunk_id=chunk.chunk_id, title=chunk.title, text=chunk.text)


def template_items(pages: Iterable[PageRecord], config: PairsConfig, counts: Counter[str],
                   progress: bool = True) -> list[Item]:
    """Template pairs of every article (``max_pages`` first ones when set)."""
    items: list[Item] = []
    limits = config.limits()
    chosen = itertools.islice(pages, config.max_pages) if config.max_pages else pages
    for page in tqdm(chosen, desc="pairs from articles", unit="page", disable=not progress):
        counts["pages"] += 1
        items.extend((page.title, pair) for pair in page_pairs(page, limits, config.templates))
    return items


def clean_items(items: Sequence[Item], config: PairsConfig, counts: Counter[str]) -> list[Item]:
    """Length limits (clip outputs, drop over-long prompts and empty answers) and de-duplication."""
    out: list[Item] = []
    seen: set[tuple[str, str]] = set()
    for title, pair in items:
        pair = dataclasses.replace(pair, instruction=squash(pair.instruction),
                                   input=pair.input.strip(), output=pair.output.strip())
        reason = _length_problem(pair, config)
        if reason:
            counts[f"dropped_{reason}"] += 1
            continue
        if len(pair.output) > config.max_output_chars:
            counts["clipped_output"] += 1
            pair = dataclasses.replace(pair, output=clip(pair.output, config.max_output_chars))
        key = (fold(pair.instruction), fold(squash(pair.input)))
        if key in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(key)
        out.append((title, pair))
    return out


def _length_problem(pair: Pair, config: PairsConfig) -> str | None:
    if len(pair.instruction) > config.max_instruction_chars:
        return "instruction_too_long"
    if len(pair.input) > config.max_input_chars:
        return "input_too_long"
    if len(pair.output) < config.min_output_chars:
        return "output_too_short"
    return None


def assign_splits(items: Iterable[Item], config: PairsConfig) -> list[Pair]:
    """Each pair takes its article's split (deterministic in title and seed)."""
    return [dataclasses.replace(pair, split=split_of(title, config.val_fraction, config.seed))
            for title, pair in items]


def build_pairs(pages: Iterable[PageRecord], config: PairsConfig,
                questions: Questions = None, generator: Generator | None = None,
                chunks: Iterable[ChunkText] = (), progress: bool = True
                ) -> tuple[list[Pair], dict[str, Any]]:
    """The whole recipe on page records; returns the pairs and the meta record.

    ``questions``: the experiment's question files (and/or ``Question`` objects) every pair is
    checked against; ``config.overlap`` says whether overlapping pairs are kept and listed
    (``report``) or dropped (``strict``)."""
    counts: Counter[str] = Counter()
    items = template_items(pages, config, counts, progress)
    if generator is not None and config.gen_per_chunk > 0:
        items += generated_pairs(chunks, generator, config.gen_per_chunk, config.gen_max_chunks)
    counts.update(f"candidates_{pair.kind}" for _, pair in items)
    items = clean_items(items, config, counts)
    overlaps, leakage = check_pairs([p for _, p in items], questions, config.leakage_threshold,
                                    config.overlap)
    strict = config.overlap == "strict"
    pairs = assign_splits((item for item, hits in zip(items, overlaps, strict=True)
                           if not (strict and hits)), config)
    if not pairs:
        raise UserError("no instruction pairs were made (empty store, or every pair overlaps "
                        "an evaluation question in strict mode); check the store, or use "
                        "--overlap report")
    meta = pairs_meta(pairs, config, dict(counts), leakage.to_dict())
    if generator is not None:
        meta["generator"] = {"name": generator.name, "per_chunk": config.gen_per_chunk,
                             "max_chunks": config.gen_max_chunks}
    return pairs, meta


def pairs_meta(pairs: Sequence[Pair], config: Any, counts: dict[str, int],
               leakage: dict[str, Any]) -> dict[str, Any]:
    """The sidecar record: counts by split and kind, config, split rule, the overlap check
    (``leakage``, an ``OverlapReport`` as a dict)."""
    splits = Counter(p.split for p in pairs)
    return {
        "format_version": 1,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "layout": "one JSONL; field 'split' is 'train' or 'validation'",
        "counts": {"pairs": len(pairs), "train": splits["train"],
                   "validation": splits["validation"],
                   "by_kind": dict(sorted(Counter(p.kind for p in pairs).items())), **counts},
        "split": {"by": "article",
                  "rule": "int(sha256(f'{seed}:{title}')[:8 bytes]) / 2**64 < val_fraction",
                  "val_fraction": getattr(config, "val_fraction", 0.0),
                  "seed": getattr(config, "seed", 0)},
        "leakage": leakage,
        "config": config_dict(config) if dataclasses.is_dataclass(config) else dict(config),
    }


def make_pairs(store_dir: Path, out: Path, config: PairsConfig,
               questions: Questions = None, progress: bool = True) -> dict[str, Any]:
    """``finetune pairs``: open the store, build, write ``out`` and its ``.meta.json``."""
    from ingest.store import Store

    store = Store.open(store_dir)
    try:
        return pairs_from_store(store, out, config, questions, progress, label=str(store_dir))
    finally:
        store.close()


def pairs_from_store(store: Any, out: Path, config: PairsConfig, questions: Questions = None,
                     progress: bool = True, label: str = "") -> dict[str, Any]:
    """Build pairs from an open store (anything with ``pages``/``iter_chunks``/``manifest``)."""
    generator = _generator(config, progress)
    pairs, meta = build_pairs(store_pages(store), config, questions, generator,
                              store_chunks(store) if generator else (), progress)
    if config.raft_share > 0:
        pairs, raft = add_context(pairs, store, config.raft(), progress=progress)
        meta["raft"] = raft
        meta["counts"]["by_kind"] = dict(sorted(Counter(p.kind for p in pairs).items()))
        meta["counts"]["with_context"] = sum(bool(p.context) for p in pairs)
    manifest = getattr(store, "manifest", {}) or {}
    meta["store"] = {"path": label, "source": manifest.get("source"),
                     "counts": manifest.get("counts")}
    write_pairs(pairs, out)
    write_meta(out, meta)
    log.info("wrote %d pairs (%d train, %d validation) to %s", len(pairs),
             meta["counts"]["train"], meta["counts"]["validation"], out)
    return meta


def _generator(config: PairsConfig, progress: bool) -> Generator | None:
    if not config.generator or config.gen_per_chunk <= 0:
        return None
    from models.backends import make_generator

    return make_generator(config.generator, progress=progress)
