"""Prompt templates as versioned data (``rag/templates/*.yaml``), rendered into chat messages.

A template names a ``version`` (recorded with every answer), the closed-book template that goes
with it, and per language: ``system`` and ``user`` messages, the ``passage`` format (numbered
``[n]`` so answers can cite), the text for an empty context, and the fixed ``refusal`` sentence
the model is told to say when the context lacks the answer (``REFUSALS``; ``is_refusal`` spots
it). Templates render in a sandboxed, strict Jinja environment; passage text is data, never
template code. ``render_prompt(q, None)`` gives the closed-book prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from core.config import read_yaml
from core.errors import UserError
from core.registry import Registry
from core.text import fold
from rag.lang import detect_language
from rag.passages import Passage

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = "default"
DEFAULT_LANG = "pt"
CONTEXT_SEPARATOR = "\n\n"
_FIELDS = ("system", "user", "refusal")
_ENV = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                           keep_trailing_newline=False)

_compile = lru_cache(maxsize=256)(_ENV.from_string)  # templates are few; compile each once

TEMPLATES: Registry[Path] = Registry("prompt template")
for _file in sorted(TEMPLATE_DIR.glob("*.yaml")):
    TEMPLATES.add(_file.stem, _file)


@dataclass(frozen=True)
class LanguageTemplate:
    """One language's messages, passage format and refusal sentence."""

    system: str
    user: str
    refusal: str
    passage: str = "[{{ n }}] {{ title }}\n{{ text }}"
    no_context: str = "-"


@dataclass(frozen=True)
class PromptTemplate:
    """A named, versioned template with one ``LanguageTemplate`` per language."""

    name: str
    version: str
    languages: dict[str, LanguageTemplate]
    closed_book: str | None = None
    path: str = ""

    def lang(self, lang: str) -> LanguageTemplate:
        """The ``lang`` part; ``UserError`` naming the template's languages."""
        try:
            return self.languages[lang]
        except KeyError:
            raise UserError(f"template {self.name!r} has no language {lang!r}; it has "
                            f"{', '.join(self.languages)} (pass --lang auto or one of those)")\
                from None

    def detect(self, question: str) -> str:
        """The question's language among this template's languages."""
        return detect_language(question, tuple(self.languages))


@lru_cache(maxsize=32)
def load_template(name: str = DEFAULT_TEMPLATE) -> PromptTemplate:
    """A template by registered name (``rag/templates/<name>.yaml``) or path to a YAML file."""
    path = Path(name).expanduser()
    if not (name.endswith((".yaml", ".yml")) and path.is_file()):
        path = TEMPLATES.get(name)
    data = read_yaml(path)
    try:
        langs = {lang: _language(str(path), lang, spec)
                 for lang, spec in dict(data["languages"]).items()}
        template = PromptTemplate(name=str(data.get("name", path.stem)),
                                  version=str(data["version"]), languages=langs,
                                  closed_book=data.get("closed_book"), path=str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a prompt template ({exc!r}); it needs version and "
                        f"languages.<lang>.{{{', '.join(_FIELDS)}}}") from None
    if not template.languages:
        raise UserError(f"{path}: a prompt template needs at least one language")
    return template


def _language(origin: str, lang: str, spec: dict[str, Any]) -> LanguageTemplate:
    missing = [f for f in _FIELDS if not spec.get(f)]
    if missing:
        raise ValueError(f"language {lang!r} lacks {', '.join(missing)}")
    for key, text in spec.items():
        try:
            _ENV.parse(str(text))
        except jinja2.TemplateSyntaxError as exc:
            raise UserError(f"{origin}: languages.{lang}.{key} is not valid Jinja ({exc})")\
                from None
    return LanguageTemplate(**{k: str(v) for k, v in spec.items()})


def closed_book_template(template: str = DEFAULT_TEMPLATE) -> PromptTemplate:
    """The closed-book template paired with ``template`` (itself when it has no context)."""
    tpl = load_template(template)
    return load_template(tpl.closed_book) if tpl.closed_book else tpl


def resolve_lang(question: str, lang: str, template: str = DEFAULT_TEMPLATE) -> str:
    """``lang`` itself (checked), or for ``"auto"`` the question's language among the template's."""
    return _resolve_lang(question, lang, load_template(template))


def _resolve_lang(question: str, lang: str, tpl: PromptTemplate) -> str:
    if lang == "auto":
        return tpl.detect(question)
    tpl.lang(lang)
    return lang


def format_passage(n: int, passage: Passage, lang: str = DEFAULT_LANG,
                   template: str = DEFAULT_TEMPLATE) -> str:
    """One numbered context entry, ``[n] Title — Section`` then the text."""
    return _format_passage(n, passage, load_template(template).lang(lang))


def _format_passage(n: int, passage: Passage, part: LanguageTemplate) -> str:
    return _compile(part.passage).render(n=n, title=passage.title,
                                                 section=passage.section, text=passage.text)


def format_context(passages: Sequence[Passage], lang: str = DEFAULT_LANG,
                   template: str = DEFAULT_TEMPLATE) -> str:
    """The numbered passages, separated by blank lines (the template's text when empty)."""
    return _format_context(passages, load_template(template).lang(lang))


def _format_context(passages: Sequence[Passage], part: LanguageTemplate) -> str:
    if not passages:
        return part.no_context
    return CONTEXT_SEPARATOR.join(_format_passage(i, p, part)
                                  for i, p in enumerate(passages, start=1))


def render_prompt(question: str, passages: Sequence[Passage] | None, lang: str = DEFAULT_LANG,
                  template: str = DEFAULT_TEMPLATE) -> list[dict[str, str]]:
    """Chat messages (system, user) for ``question``; ``passages=None`` means closed book.

    ``lang`` is a template language or ``"auto"`` (the question's language)."""
    if not isinstance(question, str) or not question.strip():
        raise UserError("the question is empty; ask something (e.g. \"Quem foi Tiradentes?\")")
    tpl = load_template(template) if passages is not None else closed_book_template(template)
    part = tpl.lang(_resolve_lang(question, lang, tpl))
    context = _format_context(passages, part) if passages is not None else ""
    values = {"question": question.strip(), "refusal": part.refusal, "context": context}
    return [{"role": "system", "content": _compile(part.system).render(**values)},
            {"role": "user", "content": _compile(part.user).render(**values)}]


def template_version(template: str = DEFAULT_TEMPLATE, closed_book: bool = False) -> str:
    """The version string recorded with answers rendered from ``template``."""
    tpl = closed_book_template(template) if closed_book else load_template(template)
    return tpl.version


def refusal_sentence(lang: str = DEFAULT_LANG, template: str = DEFAULT_TEMPLATE,
                     closed_book: bool = False) -> str:
    """The fixed sentence the model is told to answer when it cannot."""
    tpl = closed_book_template(template) if closed_book else load_template(template)
    return tpl.lang(lang).refusal


REFUSALS: dict[str, str] = {lang: t.refusal
                            for lang, t in load_template(DEFAULT_TEMPLATE).languages.items()}
CLOSED_BOOK_REFUSALS: dict[str, str] = {
    lang: t.refusal for lang, t in closed_book_template(DEFAULT_TEMPLATE).languages.items()}
REFUSAL_PT = REFUSALS["pt"]  # "O contexto não contém a resposta."
REFUSAL_EN = REFUSALS["en"]  # "The context does not contain the answer."


def is_refusal(text: str, sentences: Sequence[str] | None = None) -> bool:
    """Whether ``text`` contains one of the refusal sentences (case and accents ignored)."""
    known = sentences or [*REFUSALS.values(), *CLOSED_BOOK_REFUSALS.values()]
    folded = _plain(text)
    return any(_plain(s).rstrip(".") in folded for s in known)


def _plain(text: str) -> str:
    """Folded, single-spaced, typographic apostrophes made plain."""
    return " ".join(fold(text).replace("\u2019", "'").split())
