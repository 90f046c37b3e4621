"""The sample dump in data/wiki: deterministic rebuild and the coverage the issue asks for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ingest.clean import is_disambiguation
from ingest.dump import DumpReader

WIKI = Path(__file__).resolve().parents[2] / "data" / "wiki"
TOPICS = ["Pedro Álvares Cabral", "Terra de Santa Cruz", "Inconfidência Mineira", "Tiradentes",
          "Independência do Brasil", "Império do Brasil", "Pedro I do Brasil",
          "Pedro II do Brasil", *(f"Constituição brasileira de {y}" for y in
                                  (1824, 1891, 1934, 1937, 1946, 1967, 1988)),
          "Lei Áurea", "Proclamação da República do Brasil", "Revolução de 1930",
          "Washington Luís", "Getúlio Vargas", "Estado Novo (Brasil)", "Brasília",
          "Juscelino Kubitschek", "Ditadura militar no Brasil", "Abertura política no Brasil",
          "Dilma Rousseff", "Rio Amazonas", "Seleção Brasileira de Futebol", "Bossa nova"]


def _builder():
    spec = importlib.util.spec_from_file_location("build_sample", WIKI / "build_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebuild_gives_the_same_bytes(tmp_path: Path) -> None:
    out = _builder().build(out=tmp_path / "again.xml.bz2")
    assert out.read_bytes() == (WIKI / "ptwiki-sample-brazilian-history.xml.bz2").read_bytes()


def test_sample_coverage(sample_dump: Path) -> None:
    with DumpReader(sample_dump) as reader:
        pages = list(reader.pages())
    articles = [p for p in pages if p.ns == 0 and p.redirect is None]
    titles = {p.title for p in articles}
    assert len(articles) >= 60
    assert [t for t in TOPICS if t not in titles] == []
    assert [p.title for p in articles if is_disambiguation(p.title, p.text)] == [
        "Tiradentes (desambiguação)"]
    assert sum(p.redirect is not None for p in pages) >= 9
    assert {p.ns for p in pages} - {0} >= {1, 4, 6, 10, 14, 100, 102}
    text = "".join(p.text for p in articles)
    for markup in ("{{Info/", "<ref", "{|", "[[Categoria:", "[[Ficheiro:", "{{Referências}}"):
        assert markup in text, markup
