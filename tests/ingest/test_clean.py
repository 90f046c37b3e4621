"""Cleaning: no markup residue on real pages, infobox fields, tables, sections, disambiguation."""

from __future__ import annotations

import time
from pathlib import Path

import mwparserfromhell
import pytest

from ingest.clean import CleanOptions, clean_page, is_disambiguation, split_sections
from ingest.dump import DumpReader
from ingest.markup import residue
from ingest.namespaces import build_namespaces


def articles(path: Path) -> tuple[list, object]:
    with DumpReader(path) as reader:
        pages = [p for p in reader.pages() if p.ns == 0 and p.redirect is None]
        return pages, build_namespaces(reader.site_names)


def cleaned(path: Path, options: CleanOptions = CleanOptions()) -> dict[str, str]:
    pages, ns = articles(path)
    out = {}
    for p in pages:
        page = clean_page(p.page_id, p.title, p.text, ns, options)
        out[p.title] = "\n".join(f"{h}\n{t}" for h, t in page.sections)
    return out


@pytest.mark.parametrize("tables", ["drop", "linearize"])
def test_sample_has_no_residue(sample_dump: Path, tables: str) -> None:
    texts = cleaned(sample_dump, CleanOptions(tables=tables, keep_infobox=True))
    assert len(texts) >= 60
    dirty = {title: r for title, t in texts.items() if (r := residue(t))}
    assert dirty == {}


def test_enwiki_fragment_has_no_residue_and_beats_strip_code(shared_wiki: Path) -> None:
    path = shared_wiki / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    texts = cleaned(path, CleanOptions(tables="linearize"))
    ours = {k: sum(r.values()) for k, r in ((t, residue(x)) for t, x in texts.items()) if r}
    pages, _ = articles(path)
    theirs = sum(sum(residue(mwparserfromhell.parse(p.text).strip_code()).values())
                 for p in pages)
    assert sum(ours.values()) <= 3, ours  # a handful at most on 100+ real articles
    assert sum(ours.values()) < theirs


def test_table_markup_fragment(shared_wiki: Path) -> None:
    texts = cleaned(shared_wiki / "enwiki-table-markup.xml.bz2", CleanOptions(tables="linearize"))
    assert all(not residue(t) for t in texts.values()), {k: residue(t) for k, t in texts.items()}
    awards = texts["Academy Award for Best Production Design"]
    assert "Cedric Gibbons" in awards  # table content survives as text


def test_infobox_fields_and_keep_infobox(sample_dump: Path) -> None:
    pages, ns = articles(sample_dump)
    raw = next(p for p in pages if p.title == "Tiradentes")
    page = clean_page(raw.page_id, raw.title, raw.text, ns)
    assert page.infobox["_template"] == "Info/Biografia"
    assert page.infobox["nome_completo"] == "Joaquim José da Silva Xavier"
    assert page.infobox["morte_local"] == "Rio de Janeiro, Brasil Colônia"
    assert page.lead.startswith("Joaquim José da Silva Xavier, conhecido como Tiradentes")
    assert "nascimento data" not in page.sections[0][1]
    kept = clean_page(raw.page_id, raw.title, raw.text, ns, CleanOptions(keep_infobox=True))
    lead = kept.sections[0][1]
    assert "nascimento data: 12 de novembro de 1746" in lead.splitlines()
    assert ".jpg" not in lead and "imagem" not in lead
    assert kept.lead == page.lead  # the pages table keeps the lead without infobox lines


def test_tables_linearized_on_sample(sample_dump: Path) -> None:
    drop = cleaned(sample_dump)["Lista de presidentes do Brasil"]
    lin = cleaned(sample_dump, CleanOptions(tables="linearize"))["Lista de presidentes do Brasil"]
    row = ("N.º: 36; Presidente: Dilma Rousseff; Início do mandato: 1 de janeiro de 2011; "
           "Fim do mandato: 31 de agosto de 2016")
    assert row in lin and row not in drop and "Dilma Rousseff" in drop


def test_sections_paths_and_skipped_sections() -> None:
    text = ("Lead.\n== A ==\nTexto A.\n=== B ===\nTexto B.\n== Referências ==\n* livro\n"
            "=== Notas ===\nnota\n== Ligações externas ==\n* site\n== C ==\nTexto C.")
    assert split_sections(text) == [("", "Lead."), ("A", "Texto A."), ("A / B", "Texto B."),
                                     ("C", "Texto C.")]


def test_disambiguation_detection(sample_dump: Path) -> None:
    pages, _ = articles(sample_dump)
    found = [p.title for p in pages if is_disambiguation(p.title, p.text)]
    assert found == ["Tiradentes (desambiguação)"]
    assert is_disambiguation("Mercury", "'''Mercury''' may refer to:\n{{disambig|geo}}")
    assert is_disambiguation("X", "...\n{{dab}}") and is_disambiguation("X (disambiguation)", "")
    assert not is_disambiguation("Dabney", "{{dabney}} {{Disambiguous-ish}}x")


def test_empty_page_has_no_sections() -> None:
    ns = build_namespaces()
    page = clean_page(1, "Vazia", "{{Esboço}}\n[[Categoria:Nada]]\n<!-- só isto -->", ns)
    assert page.sections == () and page.lead == ""


def _ten_mb_pages() -> dict[str, str]:
    base = Path(__file__).resolve().parents[2] / "data/wiki/pages/1002-tiradentes.wiki"
    body = base.read_text(encoding="utf-8").split("---\n", 1)[1]
    mixed = ("<ref name=x>sem fim {{aberta|x [[link [http://a.org/b c <span a=b "
             "'''negrito {| tabela\n| célula\n") * 60_000
    return {"realistic": (body * (10_000_000 // len(body) + 1))[:10_000_000],
            "broken": mixed[:10_000_000]}


@pytest.mark.parametrize("kind", ["realistic", "broken"])
def test_ten_megabyte_page_is_bounded(kind: str) -> None:
    text = _ten_mb_pages()[kind]
    start = time.perf_counter()
    page = clean_page(1, "Enorme", text, build_namespaces())
    elapsed = time.perf_counter() - start
    assert elapsed < 60, elapsed  # linear passes: seconds; a quadratic one would take hours
    assert page.sections and not residue("\n".join(t for _, t in page.sections)).get("template")


def test_bgwiki_categories_need_the_dumps_own_namespace_names(shared_wiki: Path) -> None:
    pages, ns = articles(shared_wiki / "bgwiki-latest-pages-articles-shortened.xml.bz2")
    page = pages[0]
    assert "[[Категория:" in page.text
    text = "\n".join(t for _, t in clean_page(page.page_id, page.title, page.text, ns).sections)
    assert "Категория" not in text and text.startswith("Григорианският календар")
    fallback = clean_page(page.page_id, page.title, page.text, build_namespaces())
    assert "Категория" in "\n".join(t for _, t in fallback.sections)  # pt/en names alone miss it
