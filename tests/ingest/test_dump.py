"""Reading dumps: schemas, compression, encodings, namespaces from <siteinfo>, and damage."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest

from core.errors import UserError
from ingest.dump import DumpError, DumpReader, detect_encoding
from ingest.namespaces import build_namespaces


def read_all(path: Path) -> tuple[DumpReader, list]:
    with DumpReader(path) as reader:
        return reader, list(reader.pages())


def test_sample_dump_pages(sample_dump: Path) -> None:
    reader, pages = read_all(sample_dump)
    assert reader.dbname == "ptwiki" and reader.site_names[6] == ["Ficheiro"]
    assert [p.index for p in pages] == list(range(len(pages)))
    tira = next(p for p in pages if p.title == "Tiradentes")
    assert (tira.page_id, tira.ns, tira.redirect, tira.revision_id) == (1002, 0, None, 10021)
    assert tira.timestamp.startswith("2024-") and "Inconfidência Mineira" in tira.text
    redirects = {p.title: p.redirect for p in pages if p.redirect}
    assert redirects["Dom Pedro I"] == "Pedro I do Brasil"
    assert {p.ns for p in pages} >= {0, 1, 4, 6, 10, 14, 100, 102}
    assert reader.position == reader.size  # all compressed bytes consumed: the ETA reaches 100%


def test_enwiki_fragment(shared_wiki: Path) -> None:
    reader, pages = read_all(shared_wiki / "enwiki-latest-pages-articles1.xml-p000000010p000030302"
                             "-shortened.bz2")
    assert len(pages) == 206
    assert sum(p.redirect is not None for p in pages) == 100
    assert reader.site_names[14] == ["Category"] and reader.dbname == "enwiki"
    anarchism = next(p for p in pages if p.title == "Anarchism")
    assert anarchism.ns == 0 and anarchism.redirect is None and len(anarchism.text) > 10_000


def test_bgwiki_utf16_transcoded_with_cyrillic_namespaces(shared_wiki: Path) -> None:
    path = shared_wiki / "bgwiki-latest-pages-articles-shortened.xml.bz2"
    with bz2.open(path) as fh:
        assert fh.read(2) == b"\xff\xfe"  # really UTF-16 (little-endian BOM)
    reader, pages = read_all(path)
    assert [p.ns for p in pages] == [0, 4, 4]
    assert pages[0].title == "Григориански календар"
    assert reader.site_names[6] == ["Файл"] and reader.site_names[14] == ["Категория"]
    ns = build_namespaces(reader.site_names)
    assert ns.kind("Файл") == "file" and ns.kind("категория") == "category"
    assert ns.kind("Ficheiro") == "file"  # the pt/en fallback is always there


def test_dump_without_siteinfo(shared_wiki: Path) -> None:
    reader, pages = read_all(shared_wiki / "enwiki-table-markup.xml.bz2")
    assert len(pages) == 5 and reader.site_names == {} and pages[0].ns == 0


def test_plain_gzip_and_multistream(make_dump, tmp_path: Path) -> None:
    pages = [(1, "Um", "texto um"), (2, "Dois", "texto dois")]
    plain = make_dump(pages, "d.xml")
    gz = tmp_path / "d.xml.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    text = plain.read_text(encoding="utf-8")
    cut = text.index("  <page>", text.index("<page>") + 1)  # two bz2 streams, split mid-dump
    multi = tmp_path / "multi.xml.bz2"
    multi.write_bytes(bz2.compress(text[:cut].encode()) + bz2.compress(text[cut:].encode()))
    for path in (plain, gz, multi):
        assert [p.title for p in read_all(path)[1]] == ["Um", "Dois"], path


def test_utf16_declared_without_bom(make_dump) -> None:
    xml = '<?xml version="1.0" encoding="UTF-16"?>\n' + make_dump(
        [(1, "Ação", "coração")], "x.xml").read_text(encoding="utf-8")
    path = make_dump([], "u16.xml", raw=xml.encode("utf-16-le"))
    assert [(p.title, p.text) for p in read_all(path)[1]] == [("Ação", "coração")]


def test_detect_encoding() -> None:
    assert detect_encoding(b"\xff\xfe<\x00") == "utf-16"
    assert detect_encoding(b'<?xml version="1.0" encoding="ISO-8859-1"?>') == "iso-8859-1"
    assert detect_encoding(b"<mediawiki>") == "utf-8"


def test_redirect_without_tag_found_in_text(make_dump) -> None:
    path = make_dump([(1, "Velho", "#REDIRECIONAMENTO [[Novo título#Seção]]")])
    assert read_all(path)[1][0].redirect == "Novo título"


def test_truncated_bz2_names_last_good_page(make_dump, tmp_path: Path) -> None:
    words = " ".join(f"palavra{i}" for i in range(6000))  # bz2 blocks hold 900 kB: 3.6 MB
    pages = [(i, f"Página {i}", words) for i in range(1, 60)]
    full = make_dump(pages)
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    seen = []
    with pytest.raises(DumpError) as err, DumpReader(cut) as reader:
        seen.extend(reader.pages())
    assert seen and err.value.pages_read == len(seen)
    message = str(err.value)
    assert "ends early" in message and f"Página {len(seen)}" in message
    assert "compressed byte" in message and "--resume" in message


def test_malformed_xml(make_dump) -> None:
    good = make_dump([(1, "Bom", "ok"), (2, "Ruim", "x")], "g.xml").read_text(encoding="utf-8")
    bad = good.replace("<title>Ruim</title>", "<title>Ruim</titel>")
    path = make_dump([], "bad.xml", raw=bad.encode())
    with pytest.raises(DumpError, match=r"malformed XML .* after page 'Bom' \(id 1"):
        read_all(path)


def test_undecodable_bytes(make_dump) -> None:
    good = make_dump([(1, "Bom", "ok"), (2, "Outro", "AAA")], "g.xml").read_bytes()
    path = make_dump([], "enc.xml", raw=good.replace(b"AAA", b"\xff\xfe\xfa"))
    with pytest.raises(DumpError, match="after page 'Bom'"):
        read_all(path)


def test_empty_and_not_a_dump(make_dump, tmp_path: Path) -> None:
    empty = tmp_path / "empty.xml.bz2"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        DumpReader(empty)
    with pytest.raises(UserError, match="malformed XML .* before the first page"):
        DumpReader(make_dump([], "junk.xml", raw=b"this is not xml"))
    with pytest.raises(UserError, match="does not exist"):
        DumpReader(tmp_path / "missing.xml")
    assert read_all(make_dump([], "nopages.xml"))[1] == []
    with pytest.raises(UserError, match="7z archive"):
        DumpReader(make_dump([], "d.xml.7z", raw=b"7z\xbc\xaf\x27\x1c\x00\x04"))


def test_memory_flat_root_is_emptied(make_dump) -> None:
    path = make_dump([(i, f"P{i}", "texto") for i in range(1, 300)], "many.xml")
    with DumpReader(path) as reader:
        for _ in reader.pages():
            pass
        assert len(reader._root.element) <= 1  # finished <page> elements are not kept
