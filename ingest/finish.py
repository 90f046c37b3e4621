"""The end of a build: the FAISS index from the vector shards, then the manifest (written last)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import config_dict, write_config
from core.errors import UserError
from core.versions import package_versions
from ingest.chunk import EMBED_TEMPLATE
from ingest.config import IngestConfig
from ingest.embedding import EmbedderLike
from ingest.index import ShardVectors, build_index, index_bytes_per_vector, plan_index, write_index
from ingest.store import CONFIG, FORMAT_VERSION, INDEX
from ingest.writer import StoreWriter

log = logging.getLogger(__name__)

VERSIONED = ("ragvsft", "faiss-cpu", "sentence-transformers", "transformers", "torch", "numpy",
             "mwxml", "mwparserfromhell")


def chunking_record(config: IngestConfig, embedder: EmbedderLike) -> dict[str, Any]:
    """How text was cut and what was embedded (the manifest's ``chunking``)."""
    return {"unit": "words", "chunk_words": config.chunk_words, "overlap": config.overlap,
            "overlap_rule": "whole trailing sentences up to `overlap` words, else the last "
                            "`overlap` words", "section_aware": True,
            "max_tokens": int(embedder.info.max_tokens),
            "token_counter": str(getattr(embedder, "token_counter", "hf")),
            "title_prefix": config.title_prefix,
            "embedded_text": (EMBED_TEMPLATE + " (lead: '{title}: {text}')"
                              if config.title_prefix else "{text}"),
            "passage_prompt": str(embedder.info.passage_prompt),
            "ids": "{page_id}-{ordinal}", "hash": "sha256 of the stored text"}


def finish_store(writer: StoreWriter, config: IngestConfig, embedder: EmbedderLike, dump: Path,
                 source_sha256: str, dbname: str, seconds: float, progress: bool) -> None:
    """Build and write the index, the resolved config and the manifest (last)."""
    counts = writer.checkpoint.counts
    if not counts["chunks"]:
        raise UserError(f"{dump}: no article text found ({counts['pages_read']} pages read, "
                        f"{counts['articles_read']} articles); nothing to index. Is it a "
                        "MediaWiki pages-articles dump?")
    dim = int(embedder.info.dimension)
    plan = plan_index(config.index, counts["chunks"], dim, config.index_threshold)
    vectors = ShardVectors(writer.shard_paths(), dim)
    if config.index_on_disk:
        from ingest.ondisk import build_index_on_disk

        index = build_index_on_disk(plan, vectors, writer.path / INDEX, progress)
    else:
        index = build_index(plan, vectors, progress)
        write_index(index, writer.path / INDEX)
    (aliases,) = writer.db.execute("SELECT COUNT(*) FROM aliases").fetchone()
    record = {
        "embedder": embedder.info.to_dict(),
        "chunking": chunking_record(config, embedder),
        "cleaning": {"keep_infobox": config.keep_infobox, "tables": config.tables,
                     "skip_sections": list(config.skip_sections)},
        "index": {**plan.to_dict(), "on_disk": config.index_on_disk,
                  "metric": "inner_product", "vectors": int(index.ntotal),
                  "dimension": dim, "bytes_per_vector": round(index_bytes_per_vector(
                      writer.path / INDEX, index.ntotal), 1),
                  "threshold": config.index_threshold if config.index == "auto" else None},
        "counts": {**dict(sorted(counts.items())), "aliases": int(aliases)},
    }
    settings = {k: record[k] for k in ("chunking", "cleaning")}
    settings["embedder"] = {k: record["embedder"][k] for k in ("revision", "dimension")}
    write_config(config, writer.path / CONFIG)
    manifest = {"format_version": FORMAT_VERSION,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": {"name": dump.name, "sha256": source_sha256,
                           "bytes": dump.stat().st_size, "dbname": dbname},
                **record, "content_sha256": writer.content_sha256(settings),
                "build": {"seconds": round(seconds, 1), "workers": config.workers},
                "config": config_dict(config),
                "versions": package_versions(VERSIONED, python=True, missing="absent")}
    writer.write_manifest(manifest)
    log.info("store %s ready: %d chunks of %d articles, %s index, %.0f s", writer.path,
             counts["chunks"], counts["articles"], plan.factory, seconds)
