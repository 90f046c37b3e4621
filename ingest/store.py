"""The store a build leaves behind, read by ``rag``, ``finetune`` and ``compare``.

Layout of a store dir (no pickle anywhere)::

    manifest.json     written last: its presence means the build finished
    config.yaml       the resolved IngestConfig
    chunks.sqlite     pages, chunks (row = FAISS id), aliases (redirect -> target), progress
    vectors/*.npy     float32 chunk vectors in row order, one shard per checkpoint
    index.faiss       the search index over those vectors
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from ingest.embedding import EmbedderLike, get_embedder, same_embedder
from ingest.index import read_index

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
DATABASE = "chunks.sqlite"
INDEX = "index.faiss"
VECTORS = "vectors"
_CHUNK_COLUMNS = "row, chunk_id, page_id, title, section, ordinal, text, sha256"


@dataclass(frozen=True)
class Chunk:
    """One stored passage; ``row`` is its FAISS id."""

    row: int
    chunk_id: str
    page_id: int
    title: str
    section: str
    ordinal: int
    text: str
    sha256: str


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a finished store (``UserError`` naming what is wrong otherwise)."""
    path = Path(path)
    file = path / MANIFEST
    if not path.is_dir():
        raise UserError(f"store {path} does not exist; build one with `ingest build DUMP "
                        f"--store {path}`")
    if not file.is_file():
        if (path / DATABASE).is_file():
            raise UserError(f"store {path} is unfinished (its build was interrupted); finish it "
                            f"with `ingest build DUMP --store {path} --resume`")
        raise UserError(f"{path} is not a store (no {MANIFEST}); build one with `ingest build`")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file} is corrupt ({exc}); rebuild the store with --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{file}: store format {manifest.get('format_version')!r} is not "
                        f"{FORMAT_VERSION}; rebuild the store with this version (--overwrite)")
    return manifest


def connect_readonly(file: Path) -> sqlite3.Connection:
    """A read-only sqlite connection usable from several threads (guarded by the caller)."""
    return sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True,
                           check_same_thread=False)


class Store:
    """A finished store: chunks, pages, aliases, vectors index, and the embedder it needs."""

    def __init__(self, path: Path, manifest: dict[str, Any], db: sqlite3.Connection) -> None:
        self.path = path
        self.manifest = manifest
        self._db = db
        self._lock = threading.Lock()
        self._index: Any = None
        self._embedder: EmbedderLike | None = None

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open a finished store (``UserError``: missing, unfinished or corrupt)."""
        path = Path(path)
        manifest = read_manifest(path)
        for name in (DATABASE, INDEX):
            if not (path / name).is_file():
                raise UserError(f"store {path} lacks {name}; rebuild it with --overwrite")
        db = connect_readonly(path / DATABASE)
        try:
            (rows,) = db.execute("SELECT COALESCE(MAX(row) + 1, 0) FROM chunks").fetchone()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise UserError(f"{path / DATABASE} is corrupt ({exc}); rebuild with --overwrite"
                            ) from None
        expected = int(manifest.get("counts", {}).get("chunks", -1))
        if rows != expected:
            db.close()
            raise UserError(f"store {path}: {DATABASE} holds {rows} chunks but the manifest "
                            f"says {expected}; rebuild it with --overwrite")
        return cls(path, manifest, db)

    def __len__(self) -> int:
        return int(self.manifest["counts"]["chunks"])

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def chunks(self, rows: Sequence[int]) -> list[Chunk]:
        """The chunks at ``rows``, in the given order (``IndexError`` for a row not stored)."""
        wanted = [int(r) for r in rows]
        found: dict[int, Chunk] = {}
        unique = sorted(set(wanted))
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            marks = ",".join("?" * len(part))
            for rec in self._query(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE row IN ({marks})",
                                   part):
                found[rec[0]] = Chunk(*rec)
        missing = [r for r in unique if r not in found]
        if missing:
            raise IndexError(f"store {self.path} has no chunk rows {missing[:5]}")
        return [found[r] for r in wanted]

    def iter_chunks(self, batch: int = 1000) -> Iterator[Chunk]:
        """Every chunk in row order (pages contiguous, ordinals ascending)."""
        last = -1
        while True:
            recs = self._query(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE row > ? "
                               "ORDER BY row LIMIT ?", (last, batch))
            if not recs:
                return
            for rec in recs:
                yield Chunk(*rec)
            last = recs[-1][0]

    def pages(self) -> Iterator[dict[str, Any]]:
        """Articles in dump order: page id, title, revision, timestamp, lead, infobox fields."""
        last = -1
        while True:
            recs = self._query("SELECT seq, page_id, title, revision_id, timestamp, lead, "
                               "infobox, n_chunks FROM pages WHERE seq > ? ORDER BY seq "
                               "LIMIT 1000", (last,))
            if not recs:
                return
            for _seq, page_id, title, revision_id, timestamp, lead, infobox, n in recs:
                yield {"page_id": page_id, "title": title, "revision_id": revision_id,
                       "timestamp": timestamp, "lead": lead, "infobox": json.loads(infobox),
                       "n_chunks": n}
            last = recs[-1][0]

    def aliases(self) -> dict[str, str]:
        """Redirect title -> target title (from the dump's redirect pages)."""
        return dict(self._query("SELECT title, target FROM aliases ORDER BY title"))

    def embedder_name(self) -> str:
        """The embedder the store was built with, as the user named it."""
        return str(self.manifest["embedder"]["name"])

    def embedder(self) -> EmbedderLike:
        """That embedder, loaded once; refuses one whose revision or dimension differ."""
        if self._embedder is None:
            embedder = get_embedder(self.embedder_name())
            why = same_embedder(self.manifest["embedder"], embedder.info)
            if why:
                raise UserError(f"store {self.path} needs embedder {self.embedder_name()!r}, "
                                f"but the one found here differs: {why}; rebuild the store with "
                                "`ingest build ... --overwrite` or install the original model")
            self._embedder = embedder
        return self._embedder

    def release_embedder(self) -> None:
        """Forget the loaded embedder (``embedder`` loads it again when next needed)."""
        self._embedder = None

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors with the store's embedder (its query prompt)."""
        return np.ascontiguousarray(self.embedder().embed_queries(list(texts)), dtype=np.float32)

    def index(self) -> Any:
        """The FAISS index (loaded on first use, search parameters applied)."""
        if self._index is None:
            plan = self.manifest["index"]
            index = read_index(self.path / INDEX, str(plan.get("search_params", "")))
            if index.ntotal != len(self):
                raise UserError(f"store {self.path}: {INDEX} holds {index.ntotal} vectors, "
                                f"not {len(self)}; rebuild it with --overwrite")
            self._index = index
        return self._index

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k], rows [q, k]) best first; rows are -1 where fewer than k exist."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        dim = int(self.manifest["embedder"]["dimension"])
        if queries.shape[1] != dim:
            raise UserError(f"query vectors have dimension {queries.shape[1]}, but store "
                            f"{self.path} holds {dim}-d vectors")
        if k < 1:
            raise UserError(f"k must be at least 1, not {k}")
        with self._lock:
            scores, rows = self.index().search(queries, int(k))
        return scores, rows.astype(np.int64)

    def search(self, query: str, k: int = 5) -> list[tuple[Chunk, float]]:
        """The ``k`` chunks nearest to ``query``, best first, with their scores."""
        scores, rows = self.search_vectors(self.embed_queries([query]), k)
        keep = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        chunks = self.chunks([r for r, _ in keep])
        return [(chunk, score) for chunk, (_, score) in zip(chunks, keep, strict=True)]

    def sha256(self) -> str:
        """Fingerprint of the store's content (chunks, vectors, pages, aliases, settings)."""
        return str(self.manifest["content_sha256"])

    def close(self) -> None:
        """Release the database and the index."""
        self._db.close()
        self._index = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_store(path: str | Path) -> dict[str, Any]:
    """The manifest of a finished store plus its files' sizes in bytes (``ingest info``)."""
    path = Path(path)
    manifest = read_manifest(path)
    sizes = {name: (path / name).stat().st_size for name in (DATABASE, INDEX, "index.ivfdata",
                                                               MANIFEST)
             if (path / name).is_file()}
    sizes[VECTORS] = sum(f.stat().st_size for f in (path / VECTORS).glob("*.npy"))
    sizes["total"] = sum(sizes.values())
    return {"path": str(path), "manifest": manifest, "sizes": sizes}
