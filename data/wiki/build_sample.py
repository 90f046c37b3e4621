"""Assemble the sample Portuguese Wikipedia dump from ``data/wiki/pages/*.wiki``.

    python data/wiki/build_sample.py   # writes data/wiki/ptwiki-sample-brazilian-history.xml.bz2

Each page file starts with ``key: value`` header lines (title, id, ns, optional redirect and
timestamp), a line ``---``, then the wikitext. The output is deterministic (sorted by page id,
fixed timestamps), so rebuilding gives the same bytes; a test checks that.
"""

from __future__ import annotations

import bz2
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
OUT = HERE / "ptwiki-sample-brazilian-history.xml.bz2"
NAMESPACES = [
    (-2, "Multimédia"), (-1, "Especial"), (0, ""), (1, "Discussão"), (2, "Utilizador"),
    (4, "Wikipédia"), (6, "Ficheiro"), (10, "Predefinição"), (12, "Ajuda"), (14, "Categoria"),
    (100, "Portal"), (102, "Anexo"), (828, "Módulo"),
]
HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ \
http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="pt">
  <siteinfo>
    <sitename>Wikipédia</sitename>
    <dbname>ptwiki</dbname>
    <base>https://pt.wikipedia.org/wiki/Wikip%C3%A9dia:P%C3%A1gina_principal</base>
    <generator>MediaWiki 1.42.0-wmf.5</generator>
    <case>first-letter</case>
    <namespaces>
{namespaces}
    </namespaces>
  </siteinfo>
"""


def parse_page(path: Path) -> dict[str, str]:
    """Split one page file into its header fields and wikitext."""
    head, sep, body = path.read_text(encoding="utf-8").partition("\n---\n")
    if not sep:
        raise SystemExit(f"{path}: missing the '---' line between header and wikitext")
    fields = dict(line.split(":", 1) for line in head.splitlines() if line.strip())
    page = {k.strip(): v.strip() for k, v in fields.items()}
    for key in ("title", "id"):
        if key not in page:
            raise SystemExit(f"{path}: header lacks {key!r}")
    page["text"] = body.rstrip("\n") + "\n"
    return page


def page_xml(page: dict[str, str]) -> str:
    """One ``<page>`` element in export schema 0.11 (with ``<origin>``)."""
    pid = int(page["id"])
    rev = pid * 10 + 1
    stamp = page.get("timestamp", "2024-05-01T12:00:00Z")
    target = page.get("redirect")
    redirect = f"    <redirect title={quoteattr(target)} />\n" if target else ""
    text = page["text"]
    return (
        f"  <page>\n    <title>{escape(page['title'])}</title>\n"
        f"    <ns>{page.get('ns', '0')}</ns>\n"
        f"    <id>{pid}</id>\n{redirect}    <revision>\n      <id>{rev}</id>\n"
        f"      <timestamp>{stamp}</timestamp>\n      <contributor>\n"
        f"        <username>EquipeRagVsFt</username>\n        <id>4242</id>\n      </contributor>\n"
        f"      <origin>{rev}</origin>\n      <model>wikitext</model>\n"
        f"      <format>text/x-wiki</format>\n"
        f"      <text bytes=\"{len(text.encode())}\" sha1=\"\" xml:space=\"preserve\">"
        f"{escape(text)}</text>\n    </revision>\n  </page>\n"
    )


def build(pages_dir: Path = HERE / "pages", out: Path = OUT) -> Path:
    """Write the dump from the page files; returns its path."""
    pages = sorted((parse_page(p) for p in pages_dir.glob("*.wiki")), key=lambda p: int(p["id"]))
    ids = [p["id"] for p in pages]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate page ids in data/wiki/pages")
    ns = "\n".join(
        f'      <namespace key="{k}" case="first-letter">{escape(n)}</namespace>' if n
        else f'      <namespace key="{k}" case="first-letter" />' for k, n in NAMESPACES)
    xml = HEADER.format(namespaces=ns) + "".join(page_xml(p) for p in pages) + "</mediawiki>\n"
    out.write_bytes(bz2.compress(xml.encode("utf-8"), compresslevel=9))
    return out


if __name__ == "__main__":
    path = build()
    sys.stdout.write(f"wrote {path} ({path.stat().st_size} bytes)\n")
