"""Fast wikitext markup removal: C-speed regex passes for the constructs articles are made of.

Nested templates and links are removed innermost-first (each pass is one ``re.subn`` over the
page; real nesting is a few levels deep), tables are matched with a token scanner, and the rest
(comments, refs, tags, quotes, entities) are single substitutions. mwparserfromhell is kept for
infobox fields only (see ``ingest.clean``); this is what makes cleaning several times faster
than ``mwparserfromhell.parse(text).strip_code()`` while leaving less residue (ref bodies, file
captions and ``thumb|`` parameters are dropped here; ``strip_code`` keeps them).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from ingest.namespaces import Namespaces

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags whose whole content is dropped (refs, galleries, formulas, maps, code blocks...).
_DROP_TAGS = ("ref", "references", "gallery", "math", "chem", "ce", "timeline", "imagemap",
              "score", "graph", "mapframe", "maplink", "syntaxhighlight", "source",
              "templatedata", "inputbox", "hiero", "categorytree", "poem-ref")
_DROP_OPEN = re.compile(r"<(" + "|".join(_DROP_TAGS) + r")\b[^<>]{0,2000}?(/?)\s*>", re.I)
_TEMPLATE = re.compile(r"\{\{([^{}]*(?:(?:\{(?!\{)|\}(?!\}))[^{}]*)*)\}\}")
_LINK = re.compile(r"\[\[([^\[\]]*(?:(?:\[(?!\[)|\](?!\]))[^\[\]]*)*)\]\]")
_EXTLINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*+(?:[ \t]++([^\[\]\n]{0,1000}+))?\]", re.I)
_BR = re.compile(r"<br\s*/?\s*>", re.I)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_QUOTES = re.compile(r"'{2,}")
_MAGIC = re.compile(r"__[A-Z]+__")
_INTERLANG = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]+)*$")
_TABLE_TOKEN = re.compile(r"^[ \t:]*(\{\||\|\})", re.M)
_CELL_SPLIT = re.compile(r"\|\||!!")
_ATTRS = re.compile(r"^\s*[\w-]+\s*=")

# Inline templates whose content is text (name -> which positional argument to keep; -1 = last).
INLINE_TEMPLATES: dict[str, int] = {
    "lang": -1, "nowrap": 0, "nobr": 0, "small": 0, "smaller": 0, "big": 0, "abbr": 0,
    "nihongo": 0, "ill": 0, "interlanguage link": 0, "sc": 0, "smallcaps": 0, "lit": 0,
    "em": 0, "strong": 0, "esd": 0, "nowrap begin": 0, "versalete": 0, "pequeno": 0,
}


def strip_comments_and_refs(text: str) -> str:
    """Drop ``<!-- -->`` comments and refs, galleries, formulas and similar tag blocks."""
    if "<!--" in text:
        text = _COMMENT.sub("", text)
    if "<" in text:
        text = drop_tag_blocks(text)
    return text


class _CloseFinder:
    """Finds ``</tag>`` after a position; remembers the last answer so a page full of unclosed
    tags is scanned once (linear time), not once per tag (quadratic)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.cache: dict[str, tuple[int, re.Match[str] | None]] = {}

    def find(self, tag: str, pos: int) -> re.Match[str] | None:
        searched, found = self.cache.get(tag, (-1, None))
        if searched >= 0 and pos >= searched and (found is None or pos <= found.start()):
            return found
        found = re.compile(r"</" + re.escape(tag) + r"\s*>", re.I).search(self.text, pos)
        self.cache[tag] = (pos, found)
        return found


def drop_tag_blocks(text: str) -> str:
    """Remove ``<ref>...</ref>``-like blocks; an unclosed opening tag alone is dropped."""
    out: list[str] = []
    pos = 0
    closer = _CloseFinder(text)
    while (m := _DROP_OPEN.search(text, pos)) is not None:
        out.append(text[pos:m.start()])
        close = None if m.group(2) else closer.find(m.group(1).lower(), m.end())
        pos = close.end() if close else m.end()
    out.append(text[pos:])
    return "".join(out)


def _positional(body: str) -> list[str]:
    return [a for a in body.split("|")[1:] if not _ATTRS.match(a)]


def _template_repl(match: re.Match[str]) -> str:
    body = match.group(1)
    name = body.split("|", 1)[0].strip().lower()
    if name.startswith("lang-"):
        args = _positional(body)
        return args[0] if args else ""
    if name in ("convert", "cvt"):
        return " ".join(_positional(body)[:2])
    which = INLINE_TEMPLATES.get(name)
    if which is None:
        return ""
    args = _positional(body)
    return args[which] if args else ""


def remove_templates(text: str) -> str:
    """Remove ``{{...}}`` templates innermost-first; a few inline ones keep their text."""
    for _ in range(40):
        if "{{" not in text:
            break
        text, n = _TEMPLATE.subn(_template_repl, text)
        if not n:
            break
    return text.replace("{{", "").replace("}}", "")


def matching_braces(text: str, start: int) -> int:
    """End (exclusive) of the template opening at ``start``; ``len(text)`` when unclosed."""
    depth = 0
    for m in re.finditer(r"\{\{|\}\}", text[start:]):
        depth += 1 if m.group() == "{{" else -1
        if depth == 0:
            return start + m.end()
    return len(text)


def _link_repl(ns: Namespaces) -> Callable[[re.Match[str]], str]:
    def repl(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        colon = target.lstrip().startswith(":")
        target = target.strip().lstrip(":").strip()
        prefix, sep, rest = target.partition(":")
        if sep:
            kind = ns.kind(prefix)
            if not colon and kind in ("file", "category"):
                return ""
            if kind == "none" and _INTERLANG.match(prefix.strip()) and not label:
                return "" if not colon else rest
        if label.strip():
            return label
        shown = target.split("#", 1)[0] or target.split("#", 1)[-1]
        return shown.split(":", 1)[-1] if sep and ns.kind(prefix) != "none" else shown

    return repl


def replace_links(text: str, ns: Namespaces) -> str:
    """``[[a|b]]`` -> b, ``[[a]]`` -> a; files, categories and interlanguage links dropped."""
    repl = _link_repl(ns)
    for _ in range(20):
        if "[[" not in text:
            break
        text, n = _LINK.subn(repl, text)
        if not n:
            break
    text = _EXTLINK.sub(lambda m: m.group(1) or "", text)
    return text.replace("[[", "").replace("]]", "")


def table_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the outermost ``{| ... |}`` tables; an unclosed one runs to the end."""
    spans: list[tuple[int, int]] = []
    depth, start = 0, 0
    for m in _TABLE_TOKEN.finditer(text):
        if m.group(1) == "{|":
            if depth == 0:
                start = m.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                spans.append((start, m.end()))
    if depth:
        spans.append((start, len(text)))
    return spans


def _cell_text(cell: str) -> str:
    head, sep, tail = cell.partition("|")
    return (tail if sep and _ATTRS.match(head) else cell).strip()


def _table_rows(body: str) -> tuple[list[str], list[list[str]], list[bool]]:
    captions: list[str] = []
    rows: list[list[str]] = [[]]
    header: list[bool] = [True]
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("|+"):
            captions.append(_cell_text(stripped[2:]))
        elif stripped.startswith("|-"):
            rows.append([])
            header.append(True)
        elif stripped[:1] in ("|", "!"):
            header[-1] = header[-1] and stripped[0] == "!"
            rows[-1].extend(_cell_text(c) for c in _CELL_SPLIT.split(stripped[1:]))
        elif stripped and rows[-1]:
            rows[-1][-1] += " " + stripped
    keep = [i for i, r in enumerate(rows) if any(r)]
    return captions, [rows[i] for i in keep], [header[i] for i in keep]


def linearize_table(table: str) -> str:
    """A table as text lines: ``Header: value; Header: value`` per row when it has a header."""
    first_nl = table.find("\n")
    body = table[first_nl + 1:] if first_nl >= 0 else ""
    body = re.sub(r"^[ \t:]*\|\}\s*\Z", "", body.rstrip(), flags=re.M)
    body = apply_tables(body, "linearize")
    captions, rows, header = _table_rows(body)
    lines = [c for c in captions if c]
    heads = rows[0] if rows and header[0] else []
    for row, is_head in zip(rows, header, strict=True):
        if is_head and row is heads:
            continue
        if heads and len(heads) == len(row):
            lines.append("; ".join(f"{h}: {v}" if h else v
                                   for h, v in zip(heads, row, strict=True) if v))
        else:
            lines.append(" | ".join(c for c in row if c))
    return "\n" + "\n".join(lines) + "\n"


def apply_tables(text: str, mode: str) -> str:
    """Drop (``mode='drop'``) or linearize every table in ``text``."""
    if "{|" not in text:
        return text
    out, last = [], 0
    for start, end in table_spans(text):
        out.append(text[last:start])
        out.append("\n" if mode == "drop" else linearize_table(text[start:end]))
        last = end
    out.append(text[last:])
    return "".join(out)


def strip_inline(text: str, br: str = "\n") -> str:
    """Tags, bold/italic quotes, magic words and HTML entities (after templates and links)."""
    if "<" in text:
        text = _BR.sub(br, text)
        text = _TAG.sub("", text)
    if "''" in text:
        text = _QUOTES.sub("", text)
    if "__" in text:
        text = _MAGIC.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text.replace("\u00a0", " ")


def clean_inline(text: str, ns: Namespaces) -> str:
    """A short fragment (an infobox value) as one line of plain text."""
    text = remove_templates(strip_comments_and_refs(text))
    text = strip_inline(replace_links(text, ns), br="; ")
    return " ".join(text.split()).strip(" ;,")


# Markup that clean text must not contain (tests and ``bench/ingest_speed.py`` count it).
RESIDUE: dict[str, re.Pattern[str]] = {
    "template": re.compile(r"\{\{|\}\}"),
    "link": re.compile(r"\[\[|\]\]"),
    "ref": re.compile(r"<ref|</ref|&lt;ref", re.I),
    "tag": re.compile(r"</?(?:span|div|small|br|sup|sub|center|font|nowiki|gallery)\b", re.I),
    "table": re.compile(r"^\s*(?:\{\||\|\}|\|-|!)", re.M),
    "file": re.compile(r"\b(?:thumb|miniatura|upright)\|", re.I),
    "category": re.compile(r"^\s*\[?\[?(?:Categoria|Category)\s*:(?!\s)", re.M),
    "bold": re.compile(r"'''|''"),
    "comment": re.compile(r"<!--|-->"),
}


def residue(text: str) -> dict[str, int]:
    """How often each kind of markup residue occurs in ``text`` (kinds with none left out)."""
    return {k: len(p.findall(text)) for k, p in RESIDUE.items() if p.search(text)}
