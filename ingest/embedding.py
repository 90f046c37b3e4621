"""Which embedder a store uses, and the batched embedding step of the build.

Names resolve through ``models.embedders`` (bundled names, local folders, cached hub ids); the
model-free ``hashing`` embedder (``ingest.hashing_embedder``) is known here as well, for tests and
pipeline benchmarks. Any object with the ``EmbedderLike`` surface can be injected into a build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from core.errors import UserError
from core.registry import Registry
from ingest.chunk import CounterSpec
from ingest.hashing_embedder import NAME as HASHING_NAME
from ingest.hashing_embedder import HashingEmbedder


class EmbedderLike(Protocol):
    """The part of ``models.embedders.Embedder`` ingest needs."""

    info: Any  # models.embedders.EmbedderInfo

    def count_tokens(self, text: str, kind: str = "passage") -> int: ...
    def embed_passages(self, texts: Sequence[str], batch_size: int = 32,
                       progress: bool = False) -> np.ndarray: ...
    def embed_queries(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


LOCAL_EMBEDDERS: Registry[Callable[[], EmbedderLike]] = Registry("ingest embedder")
LOCAL_EMBEDDERS.add(HASHING_NAME, HashingEmbedder)


def get_embedder(name: str) -> EmbedderLike:
    """The embedder called ``name`` (``hashing``, or anything ``models.embedders`` loads)."""
    if name in LOCAL_EMBEDDERS:
        return LOCAL_EMBEDDERS.get(name)()
    from models.embedders import load_embedder

    return load_embedder(name)


def counter_spec(embedder: EmbedderLike) -> CounterSpec:
    """How worker processes count this embedder's tokens (its tokenizer, or words for fakes)."""
    return CounterSpec(kind=str(getattr(embedder, "token_counter", "hf")),
                       embedder=embedder.info.to_dict())


def embed_texts(embedder: EmbedderLike, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Passage vectors as C-contiguous float32 [n, dim]; checks the shape and finiteness."""
    dim = int(embedder.info.dimension)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    vectors = np.ascontiguousarray(embedder.embed_passages(list(texts), batch_size=batch_size),
                                   dtype=np.float32)
    if vectors.shape != (len(texts), dim):
        raise UserError(f"embedder {embedder.info.name!r} returned shape {vectors.shape} for "
                        f"{len(texts)} texts; expected ({len(texts)}, {dim})")
    if not np.isfinite(vectors).all():
        raise UserError(f"embedder {embedder.info.name!r} returned NaN/inf vectors")
    return vectors


def same_embedder(recorded: dict[str, Any], info: Any) -> str | None:
    """Why ``info`` differs from the embedder a store recorded (``None`` when it is the same)."""
    for key in ("revision", "dimension"):
        if str(recorded.get(key)) != str(getattr(info, key)):
            return (f"its {key} is {getattr(info, key)!r} but the store was built with "
                    f"{recorded.get(key)!r}")
    return None
