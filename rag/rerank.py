"""Optional second-stage reranking of retrieved chunks with a cross-encoder (never required).

Configured only by naming a local sentence-transformers ``CrossEncoder`` folder (``reranker=``
in ``make_retriever`` / ``RagConfig``); without one, retrieval order is final. Anything with a
``score(query, texts)`` method can stand in (tests use a tiny fake scorer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.errors import UserError

log = logging.getLogger(__name__)


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs; higher means more relevant."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, in order."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` loaded from a local folder, lazily."""

    def __init__(self, path: str | Path, batch_size: int = 16, device: str | None = None) -> None:
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise UserError(f"reranker {self.path} is not a local cross-encoder folder (no "
                            "config.json); pass a folder saved by sentence-transformers, or no "
                            "reranker")
        self.batch_size, self.device = batch_size, device
        self._model = None

    def _load(self):  # noqa: ANN202 - sentence_transformers is imported lazily
        if self._model is None:
            from sentence_transformers import CrossEncoder

            log.info("loading cross-encoder reranker from %s", self.path)
            self._model = CrossEncoder(str(self.path), device=self.device,
                                       local_files_only=True, trust_remote_code=False)
        return self._model

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Cross-encoder relevance of each text to ``query``."""
        if not texts:
            return []
        scores = self._load().predict([(query, t) for t in texts], batch_size=self.batch_size,
                                      show_progress_bar=False)
        return [float(s) for s in scores]


def make_reranker(spec: str | Path | Reranker | None) -> Reranker | None:
    """``None`` (no reranking), a ready ``Reranker``, or a local cross-encoder folder."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, Reranker):
        return spec
    return CrossEncoderReranker(spec)
