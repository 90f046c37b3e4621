"""Fakes for rag tests: an in-memory store (keyword one-hot embedder, FAISS flat index) and a
canned-answer generator. Exposed as fixtures (factories) so test modules need no imports."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from core.errors import UserError
from ingest.store import Chunk as FakeChunk  # the real record; only the store is faked
from models.generation import Decoding, Generation
from rag.text import words


class KeywordEmbedder:
    """One dimension per keyword (folded); a text's vector counts its keywords, L2-normalised."""

    def __init__(self, keywords: Sequence[str]) -> None:
        self.index = {w: i for i, w in enumerate(dict.fromkeys(words(" ".join(keywords))))}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.index)), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in words(text):
                if w in self.index:
                    out[i, self.index[w]] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


class FakeStore:
    """``StoreLike`` in memory: pages -> contiguous chunks, a flat inner-product FAISS index."""

    def __init__(self, path: Path, pages: Sequence[tuple[str, Sequence[str]]],
                 aliases: dict[str, str] | None = None,
                 embed: Callable[[Sequence[str]], np.ndarray] | None = None,
                 vectors: np.ndarray | None = None, embedder_error: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._chunks: list[FakeChunk] = []
        for pid, (title, texts) in enumerate(pages, start=1):
            for ordinal, text in enumerate(texts):
                row = len(self._chunks)
                section = "" if ordinal == 0 else f"Seção {ordinal}"
                self._chunks.append(FakeChunk(row, f"{pid}-{ordinal}", pid, title, section,
                                              ordinal, text,
                                              hashlib.sha256(text.encode()).hexdigest()))
        self._aliases = dict(aliases or {})
        self.embed = embed or KeywordEmbedder([c.text + " " + c.title for c in self._chunks])
        self.vectors = vectors if vectors is not None else self.embed([c.text for c in
                                                                        self._chunks])
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        self.embedder_error = embedder_error
        self.manifest: dict[str, Any] = {"embedder": {"name": "keyword-one-hot"}}
        self.chunk_calls = 0
        self.iter_calls = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self, rows: Sequence[int]) -> list[FakeChunk]:
        self.chunk_calls += 1
        return [self._chunks[r] for r in rows]

    def iter_chunks(self, batch: int = 1000) -> Iterator[FakeChunk]:
        self.iter_calls += 1
        return iter(list(self._chunks))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def embedder_name(self) -> str:
        return "keyword-one-hot"

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if self.embedder_error:
            raise UserError(self.embedder_error)
        return self.embed(texts)

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for c in self._chunks:
            digest.update(f"{c.chunk_id}\0{c.title}\0{c.sha256}\n".encode())
        return digest.hexdigest()


class CannedGenerator:
    """A ``Generator`` answering from a function of the prompt; counts words as tokens."""

    name = "canned"

    def __init__(self, answer: Callable[[list[dict[str, str]]], str] | str = "Resposta [1].",
                 window: int = 4096) -> None:
        self.answer = answer if callable(answer) else (lambda _p, a=answer: a)
        self.window = window
        self.calls: list[list[Any]] = []

    @property
    def context_window(self) -> int:
        return self.window

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompts: Sequence[Any], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        self.calls.append(list(prompts))
        return [Generation(self.answer(p), self.prompt_tokens(p), 3, 0.01) for p in prompts]

    def prompt_tokens(self, prompt: Any) -> int:
        """Words of a text prompt (an adapter's format) or of chat messages."""
        if isinstance(prompt, str):
            return self.count_tokens(prompt)
        return sum(self.count_tokens(m["content"]) for m in prompt)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [0.0 for _ in requests]


HISTORY_PAGES: list[tuple[str, list[str]]] = [
    ("Tiradentes", [
        "Joaquim José da Silva Xavier, o Tiradentes, foi um dentista e alferes, mártir da "
        "Inconfidência Mineira.",
        "Tiradentes foi enforcado no Rio de Janeiro em 21 de abril de 1792.",
    ]),
    ("Pedro I do Brasil", [
        "Pedro I foi o primeiro imperador do Brasil e proclamou a independência em 1822.",
        "Depois de abdicar em 1831, voltou a Portugal.",
    ]),
    ("Lei Áurea", [
        "A Lei Áurea, assinada pela princesa Isabel em 1888, aboliu a escravidão no Brasil.",
    ]),
    ("Constituição brasileira de 1824", [
        "A Constituição de 1824 foi outorgada por Pedro I e criou o Poder Moderador.",
    ]),
    ("Brasil", [
        "O Brasil é o maior país da América do Sul; sua capital é Brasília.",
        "A história do Brasil começa com os povos indígenas.",
    ]),
    ("Estado Novo (Brasil)", [
        "O Estado Novo foi o regime de Getúlio Vargas de 1937 a 1945.",
    ]),
]
HISTORY_ALIASES = {"Dom Pedro I": "Pedro I do Brasil", "Joaquim José da Silva Xavier":
                   "Tiradentes", "Getúlio": "Estado Novo (Brasil)"}


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., FakeStore]:
    """Factory: ``make_store(pages=..., aliases=..., **kw)`` (Brazilian-history pages default)."""
    counter = iter(range(10**6))

    def make(pages: Sequence[tuple[str, Sequence[str]]] | None = None,
             aliases: dict[str, str] | None = None, **kw: Any) -> FakeStore:
        return FakeStore(tmp_path / f"store{next(counter)}", pages or HISTORY_PAGES,
                         HISTORY_ALIASES if aliases is None else aliases, **kw)

    return make


@pytest.fixture
def history_store(make_store: Callable[..., FakeStore]) -> FakeStore:
    """The default fake store (six pages, redirect aliases)."""
    return make_store()


@pytest.fixture
def canned() -> type[CannedGenerator]:
    """The canned-answer generator class."""
    return CannedGenerator


@pytest.fixture
def fake_chunk() -> type[FakeChunk]:
    """The fake chunk class (``Passage.from_chunk`` input)."""
    return FakeChunk
