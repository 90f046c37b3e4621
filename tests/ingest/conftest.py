"""Fixtures for the ingest tests: the sample dump, dump writers, stores built once per session.

Fakes first: most stores use the model-free ``hashing`` embedder; the real default embedder
(multilingual-e5-small) builds one store per session for the acceptance and resume checks.
"""

from __future__ import annotations

import bz2
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

from ingest.build import build_store
from ingest.config import IngestConfig
from ingest.store import Store

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "wiki" / "ptwiki-sample-brazilian-history.xml.bz2"
ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
BGWIKI = "bgwiki-latest-pages-articles-shortened.xml.bz2"
TABLES = "enwiki-table-markup.xml.bz2"
HEAD = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" '
        'xml:lang="pt">\n')
SITEINFO = ("  <siteinfo>\n    <sitename>Wikipédia</sitename>\n    <dbname>ptwiki</dbname>\n"
            "    <namespaces>\n      <namespace key=\"0\" case=\"first-letter\" />\n"
            "      <namespace key=\"6\" case=\"first-letter\">Ficheiro</namespace>\n"
            "      <namespace key=\"14\" case=\"first-letter\">Categoria</namespace>\n"
            "    </namespaces>\n  </siteinfo>\n")
# A page the tests write: (id, title, text) or (id, title, text, ns, redirect target)
PageSpec = tuple


def page_xml(spec: PageSpec) -> str:
    """One ``<page>`` element (schema 0.11, with ``<origin>``)."""
    pid, title, text, *rest = spec
    ns = rest[0] if rest else 0
    redirect = rest[1] if len(rest) > 1 else None
    red = f"    <redirect title={quoteattr(redirect)} />\n" if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n"
            f"{red}    <revision>\n      <id>{pid * 10}</id>\n"
            "      <timestamp>2024-05-01T12:00:00Z</timestamp>\n"
            f"      <origin>{pid * 10}</origin>\n      <model>wikitext</model>\n"
            "      <format>text/x-wiki</format>\n"
            f"      <text bytes=\"{len(text.encode())}\" xml:space=\"preserve\">{escape(text)}"
            "</text>\n    </revision>\n  </page>\n")


def dump_text(pages: Sequence[PageSpec], siteinfo: bool = True) -> str:
    """A whole export document."""
    return HEAD + (SITEINFO if siteinfo else "") + "".join(map(page_xml, pages)) + "</mediawiki>\n"


@pytest.fixture
def make_dump(tmp_path: Path) -> Callable[..., Path]:
    """Write a dump of ``pages`` (``.xml`` or ``.xml.bz2`` by the name's suffix)."""

    def make(pages: Sequence[PageSpec], name: str = "dump.xml.bz2", siteinfo: bool = True,
             raw: bytes | None = None) -> Path:
        data = raw if raw is not None else dump_text(pages, siteinfo).encode("utf-8")
        path = tmp_path / name
        path.write_bytes(bz2.compress(data) if name.endswith(".bz2") else data)
        return path

    return make


@pytest.fixture(scope="session")
def sample_dump() -> Path:
    """The team's sample ptwiki dump (data/wiki)."""
    return SAMPLE


@pytest.fixture(scope="session")
def article() -> Callable[..., str]:
    """A plain article body (``n`` makes it unique) in two sections."""

    def make(n: int, words: int = 200) -> str:
        sentence = f"A cidade número {n} fica perto do rio e tem uma praça antiga com igreja."
        body = " ".join([sentence] * max(1, words // 15))
        return f"{body}\n\n== História ==\n{body}\n\n[[Categoria:Teste]]"

    return make


@pytest.fixture(scope="session")
def hashing_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample built with the hashing embedder, 2 worker processes, small checkpoints."""
    out = tmp_path_factory.mktemp("stores") / "sample-hashing"
    config = IngestConfig(embedder="hashing", workers=2, checkpoint_pages=20)
    return build_store(SAMPLE, out, config, progress=False)


@pytest.fixture
def open_store(hashing_store: Path) -> Store:
    """The hashing store, opened (closed after the test)."""
    store = Store.open(hashing_store)
    yield store
    store.close()


E5_CONFIG = IngestConfig(workers=2, checkpoint_pages=10)


@pytest.fixture(scope="session")
def e5_config() -> IngestConfig:
    """The settings of ``e5_store`` (the resume test must use the same)."""
    return E5_CONFIG


@pytest.fixture(scope="session")
def e5_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample built with the real default embedder (about a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("stores") / "sample-e5"
    return build_store(SAMPLE, out, E5_CONFIG, progress=False)


def replicate(src: Path, dst: Path, times: int) -> Path:
    """``src``'s pages ``times`` over, with new ids and titles (a bigger dump, same content)."""
    from ingest.dump import DumpReader

    with DumpReader(src) as reader:
        pages = list(reader.pages())
    specs = [(p.page_id + k * 100_000, p.title if k == 0 else f"{p.title} ({k})", p.text, p.ns,
              None if p.redirect is None or k == 0 else f"{p.redirect} ({k})")
             for k in range(times) for p in pages]
    dst.write_bytes(bz2.compress(dump_text(specs).encode("utf-8")))
    return dst


@pytest.fixture(scope="session")
def big_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample six times over (about 490 pages)."""
    return replicate(SAMPLE, tmp_path_factory.mktemp("dumps") / "sample-x6.xml.bz2", 6)
