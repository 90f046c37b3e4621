"""A model-free embedder: hashed bag of words, L2-normalised (``--embedder hashing``).

Two texts score high when they share words, nothing more: it is the "keyword one-hot encoder" of
the design notes, for tests and for benchmarking the ingest pipeline without paying for a neural
model. It has the ``models.embedders.Embedder`` surface ``ingest`` uses (``info``,
``count_tokens``, ``embed_passages``, ``embed_queries``) and counts tokens as whitespace words.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from models.embedders import EmbedderInfo

NAME = "hashing"
DIMENSION = 256
_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """Deterministic word-hashing vectors (crc32 of each lower-cased word, signed buckets)."""

    token_counter = "words"  # ingest.chunk.COUNTERS entry that matches count_tokens

    def __init__(self, dimension: int = DIMENSION, max_tokens: int = 512) -> None:
        self.info = EmbedderInfo(name=NAME, revision=f"hashing-crc32-v1-d{dimension}",
                                 dimension=dimension, max_tokens=max_tokens, query_prompt="",
                                 passage_prompt="", location="")

    def count_tokens(self, text: str, kind: str = "passage") -> int:
        """Whitespace words + 2 (the specials a real tokenizer would add)."""
        return len(text.split()) + 2

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        dim = self.info.dimension
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = zlib.crc32(word.encode("utf-8"))
                out[row, h % dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def embed_passages(self, texts: Sequence[str], batch_size: int = 32,
                       progress: bool = False) -> np.ndarray:
        """float32 [n, dim], unit length (all-zero rows stay zero)."""
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Same as passages: no prompts."""
        return self._embed(texts)
