"""The ingest stage's one config: defaults < YAML (``--config``) < flags, written into the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import config_dict
from ingest.chunk import ChunkOptions
from ingest.clean import SKIP_SECTIONS, TABLE_MODES, CleanOptions
from models.sources import DEFAULT_EMBEDDER

# Settings that decide chunk ids and vectors: a resumed build must use the same values.
RESUME_KEYS = ("embedder", "chunk_words", "overlap", "title_prefix", "keep_infobox", "tables",
               "skip_sections", "batch_size", "checkpoint_pages")


@dataclass(frozen=True)
class IngestConfig:
    """How a dump becomes a store (see ``ingest build --help`` for each setting)."""

    embedder: str = DEFAULT_EMBEDDER
    chunk_words: int = 120
    overlap: int = 20
    title_prefix: bool = True  # embed "Title — Section: text" (the stored text stays plain)
    index: str = "auto"  # auto | flat | hnsw | ivf-sq8 | ivf-pq | a faiss factory string
    index_threshold: int = 100_000  # auto: exact search below this many vectors
    workers: int = 2  # cleaning/chunking processes (0 = in the main process)
    limit: int | None = None  # read at most this many articles (namespace 0, not redirects)
    keep_infobox: bool = False
    tables: str = "drop"  # drop | linearize
    skip_sections: tuple[str, ...] = SKIP_SECTIONS
    batch_size: int = 32  # embedding batch
    checkpoint_pages: int = 1000  # dump pages per checkpoint (and per embedding call)
    index_on_disk: bool = False  # IVF indexes: inverted lists in index.ivfdata, memory-mapped
    engine: str = "local"  # local | ray (Ray Data: ingest.ray_engine)
    ray_address: str | None = None  # ray: "auto", "ray://host:10001"; None: $RAY_ADDRESS or local
    ray_actors: int | None = None  # ray: embedding actors (None: one per GPU, else CPUs - 1)
    ray_batch_pages: int = 16  # ray: articles per cleaning/embedding batch

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_sections", tuple(self.skip_sections))
        if self.tables not in TABLE_MODES:
            raise ValueError(f"tables must be one of {', '.join(TABLE_MODES)}, not {self.tables!r}")
        for name in ("batch_size", "checkpoint_pages", "index_threshold", "ray_batch_pages"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, not {self.workers}")
        if self.index_on_disk and not (self.index.startswith("ivf-") or "IVF" in self.index):
            raise ValueError("index_on_disk needs an IVF index (--index ivf-sq8, ivf-pq or a "
                             f"factory string like 'IVF4096,Flat'), not {self.index!r}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ValueError(f"ray_actors must be at least 1, not {self.ray_actors}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        ChunkOptions(self.chunk_words, self.overlap)  # validates the sizes

    def clean_options(self) -> CleanOptions:
        """The cleaning part."""
        return CleanOptions(keep_infobox=self.keep_infobox, tables=self.tables,
                            skip_sections=self.skip_sections)

    def chunk_options(self, max_tokens: int) -> ChunkOptions:
        """The chunking part, capped at the embedder's window."""
        return ChunkOptions(chunk_words=self.chunk_words, overlap=self.overlap,
                            max_tokens=max_tokens, title_prefix=self.title_prefix)

    def resume_identity(self) -> dict[str, Any]:
        """The settings a resumed build must share with the interrupted one."""
        data = config_dict(self)
        return {k: data[k] for k in RESUME_KEYS}
