"""The default questions' ``split:unnamed-article`` split: questions that do not name their page.

Hybrid retrieval boosts a page whose title (or redirect alias) a question names, so RAG's score
on questions that name their article is an upper bound. This split holds the questions whose
text names none of their gold pages; each gold page is an article of the sample dump, and the
text the store is built from (the page cleaned with ingest's default options) holds an answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache

import pytest

from core.paths import default_questions, sample_dump
from core.questions import Question, read_questions
from core.text import fold, squash
from ingest.clean import clean_page
from ingest.config import IngestConfig
from ingest.dump import DumpReader
from ingest.namespaces import build_namespaces

SPLIT = "split:unnamed-article"
MIN_QUESTIONS = 24
MIN_PAGES = 12
_PAREN = re.compile(r"\s*\([^)]*\)\s*$")

QUESTIONS = [q for q in read_questions(default_questions(), require_answers=True)
             if SPLIT in q.tags]


@dataclass(frozen=True)
class Sample:
    """The sample dump's articles: cleaned text by title, and redirect aliases by target."""

    texts: dict[str, str]
    aliases: dict[str, tuple[str, ...]]


@cache
def sample() -> Sample:
    """Read and clean the sample dump once (the store's default cleaning)."""
    options = IngestConfig().clean_options()
    texts: dict[str, str] = {}
    aliases: dict[str, list[str]] = {}
    with DumpReader(sample_dump()) as reader:
        namespaces = build_namespaces(reader.site_names)
        for page in reader.pages():
            if page.ns != 0:
                continue
            if page.redirect is not None:
                aliases.setdefault(page.redirect, []).append(page.title)
                continue
            cleaned = clean_page(page.page_id, page.title, page.text, namespaces, options)
            texts[page.title] = "\n".join(body for _, body in cleaned.sections)
    return Sample(texts, {k: tuple(v) for k, v in aliases.items()})


def names_of(title: str, aliases: dict[str, tuple[str, ...]]) -> list[str]:
    """Every phrase that names ``title``: itself, without a ``(...)`` suffix, its redirects."""
    return list(dict.fromkeys([title, _PAREN.sub("", title), *aliases.get(title, ())]))


def named_in(question: str, title: str, aliases: dict[str, tuple[str, ...]]) -> list[str]:
    """The names of ``title`` found in ``question`` (accent- and case-folded substrings)."""
    text = fold(question)
    return [name for name in names_of(title, aliases) if fold(name) in text]


def contains_words(text: str, span: str) -> bool:
    """``span`` occurs in ``text`` as whole words, both folded and whitespace-squashed."""
    pattern = r"(?<!\w)" + re.escape(fold(squash(span))) + r"(?!\w)"
    return re.search(pattern, fold(squash(text))) is not None


def test_the_checks_catch_a_question_that_names_its_page() -> None:
    aliases = {"Pedro I do Brasil": ("Dom Pedro I",), "Estado Novo (Brasil)": ()}
    assert named_in("Quem assinou a LEI AUREA?", "Lei Áurea", {}) == ["Lei Áurea"]
    assert named_in("Quando Dom Pedro I abdicou?", "Pedro I do Brasil", aliases) == [
        "Dom Pedro I"]
    assert named_in("Quando começou o Estado Novo?", "Estado Novo (Brasil)", aliases) == [
        "Estado Novo"]
    assert named_in("Que lei de 1888 aboliu a escravidão?", "Lei Áurea", {}) == []
    assert contains_words("assinada em 13 de maio de 1888.", "13 DE MAIO de  1888")
    assert not contains_words("Em 1888 foi assinada", "188")
    assert not contains_words("os Estados Unidos", "Estado")


def test_split_size_and_spread() -> None:
    pages = {q.gold_titles[0] for q in QUESTIONS if q.gold_titles}
    assert len(QUESTIONS) >= MIN_QUESTIONS
    assert len(pages) >= MIN_PAGES, sorted(pages)


def test_ids_are_unique_across_the_file() -> None:
    lines = default_questions().read_text(encoding="utf-8").splitlines()
    ids = [str(json.loads(line)["id"]) for line in lines if line.strip()]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.id)
def test_question_does_not_name_its_pages_and_a_gold_page_answers_it(question: Question) -> None:
    pages = sample()
    assert question.gold_titles, "a question of this split needs gold_titles"
    assert [t for t in question.gold_titles if t not in pages.texts] == [], (
        "gold titles that are not articles of the sample")
    named = {t: found for t in question.gold_titles
             if (found := named_in(question.question, t, pages.aliases))}
    assert named == {}, "the question names its gold page(s)"
    assert [a for a in question.answers if contains_words(question.question, a)] == [], (
        "the question gives its own answer away")
    unanswered = [t for t in question.gold_titles
                  if not any(contains_words(pages.texts[t], a) for a in question.answers)]
    assert unanswered == [], "gold pages whose text holds none of the answers"
