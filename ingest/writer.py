"""Writing a store during a build: one checkpoint per block, resumable after ``kill -9``.

A block commits in this order: its vectors go to a new shard ``vectors/NNNNNN.npy`` (temporary
file, fsync, rename), then one sqlite transaction inserts its pages, chunks and aliases and
records the checkpoint (next dump page, next row, shard list, counts). A crash before the commit
leaves at most an orphan shard, which ``resume`` deletes; everything committed stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from ingest.chunk import ChunkDraft
from ingest.store import CONFIG, DATABASE, INDEX, MANIFEST, VECTORS

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    page_id INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, title TEXT NOT NULL,
    revision_id INTEGER, timestamp TEXT NOT NULL, lead TEXT NOT NULL, infobox TEXT NOT NULL,
    n_chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, page_id INTEGER NOT NULL,
    title TEXT NOT NULL, section TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
    sha256 TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_page ON chunks (page_id, ordinal);
CREATE TABLE IF NOT EXISTS aliases (title TEXT PRIMARY KEY, target TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS progress (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
STORE_FILES = (MANIFEST, CONFIG, DATABASE, DATABASE + "-journal", INDEX, INDEX + ".tmp",
               MANIFEST + ".tmp", "index.ivfdata")


@dataclass
class PageRow:
    """An article as the pages table keeps it."""

    page_id: int
    title: str
    revision_id: int | None
    timestamp: str
    lead: str
    infobox: dict[str, str]
    n_chunks: int


@dataclass
class Checkpoint:
    """Where a build stands: the next dump page to read, the next chunk row, the shards."""

    next_index: int = 0
    next_row: int = 0
    next_seq: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)  # {"file", "rows"}
    counts: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> str:
        """Serialized for the progress table."""
        return json.dumps({"next_index": self.next_index, "next_row": self.next_row,
                           "next_seq": self.next_seq, "shards": self.shards,
                           "counts": dict(self.counts)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parsed from the progress table."""
        data = json.loads(text)
        return cls(next_index=data["next_index"], next_row=data["next_row"],
                   next_seq=data["next_seq"], shards=list(data["shards"]),
                   counts=Counter(data["counts"]))


def store_state(path: Path) -> str:
    """``missing`` (absent or empty dir), ``finished``, ``unfinished`` or ``foreign``."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return "missing"
    if not path.is_dir():
        return "foreign"
    if (path / MANIFEST).is_file():
        return "finished"
    return "unfinished" if (path / DATABASE).is_file() else "foreign"


def remove_store(path: Path) -> None:
    """Delete a store's own files (other files in the dir are left alone)."""
    for name in STORE_FILES:
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / VECTORS, ignore_errors=True)


class StoreWriter:
    """Appends blocks to an unfinished store; ``finish`` leaves the manifest last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / VECTORS).mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path / DATABASE, isolation_level=None)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.checkpoint = self._load("checkpoint", Checkpoint.from_json) or Checkpoint()
        self._drop_orphans()

    def _load(self, key: str, parse: Any) -> Any:
        row = self.db.execute("SELECT value FROM progress WHERE key = ?", (key,)).fetchone()
        return parse(row[0]) if row else None

    def meta(self, key: str) -> Any:
        """A JSON value recorded with ``set_meta`` (``None`` when absent)."""
        return self._load(key, json.loads)

    def set_meta(self, key: str, value: Any) -> None:
        """Record a JSON value (the build's config and source) in its own transaction."""
        self.db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?)",
                        (key, json.dumps(value, sort_keys=True)))

    def _drop_orphans(self) -> None:
        """Shards written by a block whose transaction never committed (a kill in between)."""
        known = {s["file"] for s in self.checkpoint.shards}
        for file in (self.path / VECTORS).iterdir():
            if file.name not in known:
                log.info("removing %s left by an interrupted block", file)
                file.unlink()

    def commit_block(self, pages: Sequence[PageRow], chunks: Sequence[ChunkDraft],
                     vectors: np.ndarray, aliases: Sequence[tuple[str, str]], next_index: int,
                     counts: Counter[str]) -> None:
        """Write one block's shard, then its rows and the new checkpoint in one transaction."""
        cp = self.checkpoint
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        shards = list(cp.shards)
        if len(chunks):
            name = f"{len(shards):06d}.npy"
            self._write_shard(self.path / VECTORS / name, vectors)
            shards.append({"file": name, "rows": len(chunks)})
        new = Checkpoint(next_index=next_index, next_row=cp.next_row + len(chunks),
                         next_seq=cp.next_seq + len(pages), shards=shards,
                         counts=cp.counts + counts)
        try:
            self.db.execute("BEGIN")
            self._insert(pages, chunks, aliases, cp)
            self.db.execute("INSERT OR REPLACE INTO progress VALUES ('checkpoint', ?)",
                            (new.to_json(),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.checkpoint = new

    def _insert(self, pages: Sequence[PageRow], chunks: Sequence[ChunkDraft],
                aliases: Sequence[tuple[str, str]], cp: Checkpoint) -> None:
        self.db.executemany(
            "INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(p.page_id, cp.next_seq + i, p.title, p.revision_id, p.timestamp, p.lead,
              json.dumps(p.infobox, ensure_ascii=False), p.n_chunks)
             for i, p in enumerate(pages)])
        self.db.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(cp.next_row + i, c.chunk_id, c.page_id, c.title, c.section, c.ordinal, c.text,
              c.sha256) for i, c in enumerate(chunks)])
        self.db.executemany("INSERT OR REPLACE INTO aliases VALUES (?, ?)", list(aliases))

    @staticmethod
    def _write_shard(path: Path, vectors: np.ndarray) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def shard_paths(self) -> list[Path]:
        """The committed shards, in row order."""
        return [self.path / VECTORS / s["file"] for s in self.checkpoint.shards]

    def page_ids(self) -> set[int]:
        """Ids of the pages already stored (duplicate pages in a dump are skipped)."""
        return {r[0] for r in self.db.execute("SELECT page_id FROM pages")}

    def content_sha256(self, settings: dict[str, Any]) -> str:
        """sha256 over the settings, every chunk (id, text hash), vector, page and alias."""
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for table, cols in (("chunks", "row, chunk_id, sha256"),
                            ("pages", "seq, page_id, title, revision_id, lead, infobox"),
                            ("aliases", "title, target")):
            digest.update(f"\n{table}\n".encode())
            order = cols.split(",")[0]
            for rec in self.db.execute(f"SELECT {cols} FROM {table} ORDER BY {order}"):
                digest.update(json.dumps(rec, ensure_ascii=False).encode())
        for path in self.shard_paths():
            digest.update(np.ascontiguousarray(np.load(path, mmap_mode="r")).tobytes())
        return digest.hexdigest()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The last file of a build (temporary file, then rename)."""
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
        os.replace(tmp, self.path / MANIFEST)

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def require_empty(path: Path) -> None:
    """Refuse to build into a directory holding something that is not a store."""
    if store_state(path) == "foreign":
        raise UserError(f"{path} exists and is not a store; choose a new or empty directory")
