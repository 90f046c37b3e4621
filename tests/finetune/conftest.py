"""Finetune fixtures: the tiny random Llama of tests/models (built once), pairs files, a fake store.

The tiny-model builder is loaded from ``tests/models/conftest.py`` by path (pytest's importlib
mode gives test folders no package to import from), so both suites test the same checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from finetune.records import Pair, write_pairs
from ingest.store import Chunk as FakeChunk  # the real record; only the store is faked

MODELS_CONFTEST = Path(__file__).resolve().parents[1] / "models" / "conftest.py"


def _models_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_tiny_llama_builder", MODELS_CONFTEST)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random Llama (safetensors) and its tokenizer (with a chat template)."""
    return _models_conftest().build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def other_llama_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another base model: the tiny Llama with different weights, in a folder of another name."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("other-llama")
    for path in tiny_llama_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy(path, folder / path.name)
    weights = load_file(str(folder / "model.safetensors"))
    torch.manual_seed(99)
    weights = {k: v + 0.05 * torch.randn_like(v) for k, v in weights.items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_dir: Path) -> Any:
    """The tiny Llama's tokenizer as ``models.loading`` loads it."""
    from models.loading import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


def sample_pairs(n: int = 24, val_every: int = 6) -> list[Pair]:
    """Short Portuguese pairs, every ``val_every``-th article in validation."""
    names = ["Pedro", "Vargas", "Tiradentes", "Isabel", "Cabral", "Deodoro"]
    out = []
    for i in range(n):
        name = names[i % len(names)]
        out.append(Pair(instruction=f"Quem foi {name} {i}?", input="",
                        output=f"{name} {i} foi um líder do Brasil em 18{i:02d}.",
                        source=f"{name} {i}", kind="lead",
                        split="validation" if i % val_every == 0 else "train"))
    return out


@pytest.fixture()
def pairs_file(tmp_path: Path) -> Path:
    """A valid pairs JSONL with train and validation rows."""
    path = tmp_path / "pairs.jsonl"
    write_pairs(sample_pairs(), path)
    return path


class FakeStore:
    """Pages and chunks in memory, with the ``Store`` methods ``finetune.pairs`` calls."""

    def __init__(self, pages: list[dict[str, Any]], chunks: list[FakeChunk]) -> None:
        self._pages, self._chunks = pages, chunks
        self.manifest = {"source": {"name": "fake.xml", "sha256": "0" * 64},
                         "counts": {"pages": len(pages), "chunks": len(chunks)}}
        self.closed = False

    def pages(self):
        return iter(self._pages)

    def iter_chunks(self, batch: int = 1000):
        return iter(self._chunks)

    def close(self) -> None:
        self.closed = True


FAKE_PAGES: list[dict[str, Any]] = [
    {"page_id": 1, "title": "Tiradentes",
     "lead": "Joaquim José da Silva Xavier, o Tiradentes (Fazenda do Pombal, 12 de novembro de "
             "1746 – Rio de Janeiro, 21 de abril de 1792), foi um dentista e militar brasileiro. "
             "Foi o líder da Inconfidência Mineira.",
     "infobox": {"_template": "Info/Biografia", "nascimento_local": "Fazenda do Pombal",
                 "ocupacao": "dentista, militar", "imagem": "Tiradentes.jpg"}},
    {"page_id": 2, "title": "Inconfidência Mineira",
     "lead": "A Inconfidência Mineira foi um movimento separatista ocorrido na capitania de "
             "Minas Gerais em 1789. Foi reprimida pela Coroa portuguesa.",
     "infobox": {"_template": "Info/Conflito", "data": "1789", "local": "Vila Rica",
                 "resultado": "Conjuração desarticulada"}},
    {"page_id": 3, "title": "Lei Áurea",
     "lead": "A Lei Áurea é a lei que extinguiu a escravidão no Brasil, assinada em 13 de maio de "
             "1888 pela princesa Isabel.", "infobox": {}},
    {"page_id": 4, "title": "Proclamação da República do Brasil",
     "lead": "A Proclamação da República do Brasil foi um golpe de Estado político-militar "
             "ocorrido em 15 de novembro de 1889. Instaurou a forma republicana de governo.",
     "infobox": {"data": "15 de novembro de 1889", "local": "Rio de Janeiro"}},
    {"page_id": 5, "title": "Café com leite",
     "lead": "A política do café com leite foi um acordo entre as oligarquias de São Paulo e "
             "Minas Gerais na República Velha.", "infobox": {}},
    {"page_id": 6, "title": "Página vazia", "lead": "", "infobox": {}},
]


def fake_chunks(pages: list[dict[str, Any]]) -> list[FakeChunk]:
    """Lead chunk + two section chunks per page (a 'Referências' section is skipped)."""
    chunks: list[FakeChunk] = []
    for page in pages:
        if not page["lead"]:
            continue
        texts = [("", page["lead"]),
                 ("História", f"A história de {page['title']} começa no século XVIII. "
                              "Houve muitos acontecimentos importantes."),
                 ("História", f"Continuação sobre {page['title']}."),
                 ("Referências", "Livro citado, p. 12.")]
        for ordinal, (section, text) in enumerate(texts):
            chunks.append(FakeChunk(row=len(chunks), chunk_id=f"{page['page_id']}-{ordinal}",
                                    page_id=page["page_id"], title=page["title"],
                                    section=section, ordinal=ordinal, text=text,
                                    sha256=hashlib.sha256(text.encode()).hexdigest()))
    return chunks


@pytest.fixture()
def fake_store() -> FakeStore:
    """A store-like object with five articles about Brazilian history and one empty page."""
    return FakeStore(FAKE_PAGES, fake_chunks(FAKE_PAGES))


@pytest.fixture()
def questions_file(tmp_path: Path) -> Path:
    """Two evaluation questions; the first restates a template pair about Lei Áurea."""
    path = tmp_path / "questions.jsonl"
    rows = [{"id": "q1", "question": "O que é a Lei Áurea?", "answers": ["a lei da abolição"]},
            {"id": "q2", "question": "Em que ano foi criada a capital Brasília?",
             "answers": ["1960"]}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture()
def fake_pages() -> list[dict[str, Any]]:
    """The fake store's page rows (a fresh copy)."""
    return [dict(p) for p in FAKE_PAGES]


@pytest.fixture()
def make_store():
    """Factory: page rows -> a FakeStore with their chunks."""
    return lambda pages: FakeStore(pages, fake_chunks(pages))


@pytest.fixture()
def tiny_generator(tiny_tokenizer: Any) -> Any:
    """A ``TransformersGenerator`` around the tiny tokenizer with a stand-in model: enough to
    encode prompts as inference does (no forward pass)."""
    from models.gen_transformers import TransformersGenerator

    class Model:  # just enough for the generator's constructor and context window
        generation_config = type("G", (), {"eos_token_id": None})()
        config = type("C", (), {"max_position_embeddings": 2048})()

    return TransformersGenerator(Model(), tiny_tokenizer, progress=False)
