"""Wikitext -> plain-text sections, infobox fields and a disambiguation flag (one page at a time).

The fast regex passes of ``ingest.markup`` do the bulk; mwparserfromhell parses only the infobox
template, whose ``key = value`` fields are worth keeping (dates live there). Headings become the
section structure (``"Biografia / Juventude"``, ``""`` for the lead); reference-only sections
(Referências, Ligações externas, See also...) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import mwparserfromhell

from core.text import fold
from ingest.markup import (
    apply_tables,
    clean_inline,
    matching_braces,
    remove_templates,
    replace_links,
    strip_comments_and_refs,
    strip_inline,
)
from ingest.namespaces import Namespaces

TABLE_MODES = ("drop", "linearize")
MAX_INFOBOX_CHARS = 200_000
# Sections that hold references, link lists or media, not prose (pt, en, es; compared folded).
SKIP_SECTIONS = ("referencias", "notas", "notas e referencias", "bibliografia",
                 "ligacoes externas", "ver tambem", "leitura adicional", "fontes", "galeria",
                 "references", "notes", "see also", "external links", "further reading",
                 "bibliography", "sources", "footnotes", "gallery", "enlaces externos",
                 "vease tambem")

_INFOBOX = re.compile(r"\{\{\s*(?:info\s*/|infobox|info\b|ficha\b|caixa de informa|"
                      r"инфокутия|taxobox|geobox)", re.I)
_DISAMBIG_NAMES = (r"desambigua[çc][ãa]o|desambig\w*|disambig\w*|dab|hndis|geodis|"
                   r"desambiguaci[óo]n|homonymie|begriffskl[äa]rung|пояснение|"
                   r"set index article|sia|mehrdeutig")
_DISAMBIG = re.compile(r"\{\{\s*(?:" + _DISAMBIG_NAMES + r")\s*(?:\||\}\})|__DISAMBIG__", re.I)
_DISAMBIG_TITLE = re.compile(r"\((?:desambiguação|disambiguation|desambiguación|homonymie|"
                             r"пояснение)\)\s*$", re.I)
_HEADING = re.compile(r"^(={1,6})[ \t]*(.+?)[ \t]*\1[ \t]*$", re.M)
_LIST_MARK = re.compile(r"^[*#:;]+[ \t]*", re.M)
_RESIDUE_LINE = re.compile(r"^[ \t]*(?:\{\||\|\}|\||!|-{4,}).*$", re.M)
_EMPTY_PARENS = re.compile(r"\([\s,;:.–-]*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([,.;:!?)])")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u200b]+")
_BLANKS = re.compile(r"\n{3,}")
_FILE_VALUE = re.compile(r"\.(?:jpe?g|png|svg|gif|tiff?|webm|ogg|ogv|pdf)\s*$", re.I)
_MEDIA_KEY = re.compile(r"^(?:imagem|image|img|legenda|caption|alt|tamanho|size|mapa|map|"
                        r"assinatura|signature|largura|width|upright|logo|escudo|bandeira|"
                        r"brasão|flag|coat|pushpin|coord)", re.I)


@dataclass(frozen=True)
class CleanOptions:
    """How wikitext is turned into text."""

    keep_infobox: bool = False  # infobox fields as "key: value" lines at the top of the lead
    tables: str = "drop"  # "drop" | "linearize"
    skip_sections: tuple[str, ...] = SKIP_SECTIONS

    def __post_init__(self) -> None:
        if self.tables not in TABLE_MODES:
            raise ValueError(f"tables must be one of {TABLE_MODES}, not {self.tables!r}")


@dataclass(frozen=True)
class CleanPage:
    """A cleaned article: sections in page order (the lead first, heading ``""``)."""

    page_id: int
    title: str
    revision_id: int | None
    timestamp: str
    sections: tuple[tuple[str, str], ...]
    infobox: dict[str, str] = field(default_factory=dict)
    lead: str = ""  # the lead's text without infobox lines (what the pages table keeps)


def is_disambiguation(title: str, text: str) -> bool:
    """Whether a page is a disambiguation page (its templates, magic word or title)."""
    return bool(_DISAMBIG.search(text) or _DISAMBIG_TITLE.search(title))


def take_infobox(text: str, ns: Namespaces) -> tuple[dict[str, str], str]:
    """The first infobox's fields (``_template`` = its name) and the text without it."""
    match = _INFOBOX.search(text)
    if not match:
        return {}, text
    start = match.start()
    end = matching_braces(text, start)
    if end - start > MAX_INFOBOX_CHARS:  # unclosed: parsing the rest of the page is wasted time
        return {}, text
    parsed = mwparserfromhell.parse(text[start:end]).filter_templates(recursive=False)
    if not parsed:
        return {}, text
    template = parsed[0]
    fields = {"_template": clean_inline(str(template.name), ns)}
    for param in template.params:
        key = " ".join(str(param.name).split())
        value = clean_inline(str(param.value), ns)
        if key and value and key not in fields:
            fields[key] = value
    return fields, text[:start] + text[end:]


def infobox_lines(fields: dict[str, str]) -> str:
    """Infobox fields as ``key: value`` lines (media fields and file names left out)."""
    lines = [f"{key.replace('_', ' ')}: {value}" for key, value in fields.items()
             if not key.startswith("_") and not _MEDIA_KEY.match(key)
             and not _FILE_VALUE.search(value)]
    return "\n".join(lines)


def to_plain(text: str, ns: Namespaces, tables: str) -> str:
    """Wikitext (infobox already taken) -> plain text that still has its ``== headings ==``."""
    text = remove_templates(text)
    text = replace_links(text, ns)
    text = apply_tables(text, tables)
    return strip_inline(text)


def tidy(text: str) -> str:
    """List markers, residue lines, empty brackets and extra whitespace removed."""
    text = _LIST_MARK.sub("", text)
    text = _RESIDUE_LINE.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    lines = (line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def split_sections(text: str, skip: tuple[str, ...] = SKIP_SECTIONS) -> list[tuple[str, str]]:
    """(heading path, tidy text) per section; the lead is ``""``; skipped/empty ones dropped."""
    skipped = {fold(s).strip() for s in skip}
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    heading, last, dropped = "", 0, False
    for match in _HEADING.finditer(text):
        _append(out, heading, text[last:match.start()], dropped)
        level, name = len(match.group(1)), tidy(match.group(2)).strip("= ")
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        heading = " / ".join(n for _, n in stack)
        dropped = any(fold(n).strip() in skipped for _, n in stack)
        last = match.end()
    _append(out, heading, text[last:], dropped)
    return out


def _append(out: list[tuple[str, str]], heading: str, body: str, dropped: bool) -> None:
    body = tidy(body)
    if body and not dropped:
        out.append((heading, body))


def clean_page(page_id: int, title: str, text: str, ns: Namespaces,
               options: CleanOptions = CleanOptions(), revision_id: int | None = None,
               timestamp: str = "") -> CleanPage:
    """One article's wikitext -> ``CleanPage`` (sections may be empty: the caller warns)."""
    text = strip_comments_and_refs(text)
    infobox, text = take_infobox(text, ns)
    sections = split_sections(to_plain(text, ns, options.tables), options.skip_sections)
    lead = sections[0][1] if sections and sections[0][0] == "" else ""
    if options.keep_infobox and infobox_lines(infobox):
        lines = infobox_lines(infobox)
        if lead:
            sections[0] = ("", f"{lines}\n\n{lead}")
        else:
            sections.insert(0, ("", lines))
    return CleanPage(page_id=page_id, title=title, revision_id=revision_id, timestamp=timestamp,
                     sections=tuple(sections), infobox=infobox, lead=lead)
