"""The regex wikitext passes, construct by construct, including the time bounds on bad markup."""

from __future__ import annotations

import time

import pytest

from ingest.markup import (
    apply_tables,
    clean_inline,
    drop_tag_blocks,
    linearize_table,
    matching_braces,
    remove_templates,
    replace_links,
    strip_comments_and_refs,
    strip_inline,
    table_spans,
)
from ingest.namespaces import build_namespaces

NS = build_namespaces({6: ["Ficheiro"], 14: ["Categoria"], 10: ["Predefinição"]})


def test_templates_nested_removed_and_inline_kept() -> None:
    text = "A {{citar|x={{b|c}}}}B {{lang-en|Empire}} C {{nowrap|10 km}} D {{convert|5|km}}."
    assert remove_templates(text) == "A B Empire C 10 km D 5 km."


def test_unbalanced_template_leaves_no_braces() -> None:
    assert "{{" not in remove_templates("texto {{aberto|sem fim e {{outro}} fim")
    assert "}}" not in remove_templates("texto }} solto")


def test_links_files_categories_interlanguage() -> None:
    text = ("[[Brasil]], [[Rio de Janeiro|o Rio]], [[Ficheiro:A.jpg|thumb|Legenda [[X]]]], "
            "[[Categoria:História]][[en:Brazil]] [[:Categoria:Lista|a lista]] [[Imagem:B.png]]"
            " [[Wikipédia:Ajuda]] [http://a.org/x site] [https://b.org]")
    out = replace_links(text, NS)
    assert out == "Brasil, o Rio, ,  a lista  Ajuda site "
    for gone in ("thumb", "Legenda", "História", "Brazil", "A.jpg", "B.png", "http", "[", "]"):
        assert gone not in out, gone


def test_refs_comments_and_unclosed_ref() -> None:
    text = ("Fato.<ref name=a>{{citar livro|título=X}}</ref> Outro.<ref name=a /> "
            "<!-- nota --> Mais <REF>fonte</REF>. Aberto <ref>sem fim")
    out = strip_comments_and_refs(text)
    assert out == "Fato. Outro.  Mais . Aberto sem fim"


def test_drop_tag_blocks_is_linear_on_unclosed_tags() -> None:
    text = "<ref name=x>texto " * 200_000  # 3.6 MB of unclosed refs: quadratic would hang
    start = time.perf_counter()
    out = drop_tag_blocks(text)
    assert time.perf_counter() - start < 20
    assert "<ref" not in out and out.count("texto") == 200_000


def test_matching_braces() -> None:
    text = "a {{b|{{c}}|d}} e"
    assert text[2:matching_braces(text, 2)] == "{{b|{{c}}|d}}"
    assert matching_braces("{{aberto", 0) == len("{{aberto")


TABLE = """{| class="wikitable"
|+ Presidentes
! Nome !! Início
|-
| Deodoro || 1889
|-
| style="x" | Floriano || 1891
|}"""


def test_table_linearize_and_drop() -> None:
    assert linearize_table(TABLE).strip().splitlines() == [
        "Presidentes", "Nome: Deodoro; Início: 1889", "Nome: Floriano; Início: 1891"]
    text = f"antes\n{TABLE}\ndepois"
    assert apply_tables(text, "drop") == "antes\n\n\ndepois"
    assert table_spans(text) == [(6, 6 + len(TABLE))]


def test_nested_and_unclosed_tables() -> None:
    nested = "{|\n| a\n{|\n| b\n|}\n| c\n|}\nfim"
    assert apply_tables(nested, "drop").strip() == "fim"
    assert apply_tables("x\n{|\n| aberta\n", "drop").strip() == "x"


def test_strip_inline_tags_quotes_entities() -> None:
    text = "'''Negrito''' e ''itálico''<br/>linha<span class=x>a</span> &amp; &nbsp;__NOTOC__"
    assert strip_inline(text) == "Negrito e itálico\nlinhaa &  "


def test_clean_inline_value() -> None:
    value = "[[Rio de Janeiro]], [[Brasil Colônia]]<ref>x</ref><br />{{nowrap|1792}}"
    assert clean_inline(value, NS) == "Rio de Janeiro, Brasil Colônia; 1792"


@pytest.mark.parametrize("text", [
    "[http://x.org/a b " * 300_000,
    "{{a|b " * 500_000,
    "[[abc " * 500_000,
    "<span a=b " * 300_000,
])
def test_bad_markup_is_bounded(text: str) -> None:
    start = time.perf_counter()
    strip_inline(replace_links(remove_templates(strip_comments_and_refs(text)), NS))
    assert time.perf_counter() - start < 20
