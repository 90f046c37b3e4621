"""Stream a MediaWiki XML export (``.xml``, ``.xml.bz2`` incl. multistream, ``.xml.gz``) by page.

Memory stays flat: mwxml walks the XML with ``iterparse`` and the root element is emptied after
every page. Compression is found from the magic bytes, the text encoding from a byte-order mark or
the XML declaration (UTF-16 and other non-UTF-8 dumps are transcoded to UTF-8 while streaming), and
a dump without ``<siteinfo>`` gets an empty one (mwxml requires it). Any damage (truncated bz2,
malformed XML, undecodable bytes) becomes one ``DumpError`` naming the last good page and the
compressed byte offset, raised after every good page before it has been yielded.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import mwxml
from mwxml.element_iterator import ElementIterator
from mwxml.errors import MalformedXML

from core.errors import UserError
from ingest.namespaces import siteinfo_names

log = logging.getLogger(__name__)

_BLOCK = 1 << 16
_HEAD_LIMIT = 1 << 20  # bytes of header read while looking for <siteinfo>/<page>
_DECL = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*[\"'])([\w.:-]+)([\"'])")
_DECL_ANY = re.compile(rb"^\s*<\?xml[^>]*\?>")
_REDIRECT = re.compile(r"^\s*#\s*(?:REDIRECT|REDIRECIONAMENTO|REDIRECCIÓN|REDIRECCION|"
                       r"REDIRECIONA|WEITERLEITUNG|REDIRECTION|RINVIA|ПРЕНАСОЧВАНЕ)\s*:?\s*"
                       r"\[\[([^\]|#]+)", re.I)


# What damaged input raises: truncated/corrupt compression, bad XML, undecodable bytes, bad ids.
DAMAGE = (EOFError, OSError, ParseError, MalformedXML, UnicodeError, ValueError)


class DumpError(UserError):
    """The dump is damaged; everything before ``pages_read`` was read fine."""

    def __init__(self, message: str, pages_read: int) -> None:
        super().__init__(message)
        self.pages_read = pages_read


@dataclass(frozen=True)
class RawPage:
    """One page as the dump holds it (the last revision's text)."""

    index: int  # 0-based position in the dump, every namespace counted (checkpoints use it)
    page_id: int
    title: str
    ns: int
    redirect: str | None  # target title when the page is a redirect
    revision_id: int | None
    timestamp: str
    text: str


class _CountingReader(io.RawIOBase):
    """A raw file that counts and hashes the bytes read (progress/ETA and the source sha256)."""

    def __init__(self, fh: io.BufferedIOBase) -> None:
        self._fh = fh
        self.position = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        if n:
            self.position += n
            self.digest.update(memoryview(buffer)[:n])
        return n or 0

    def drain(self) -> None:
        """Read (and hash) whatever is left of the file."""
        while block := self._fh.read(1 << 20):
            self.position += len(block)
            self.digest.update(block)

    def close(self) -> None:
        self._fh.close()
        super().close()


class _ChunkReader(io.RawIOBase):
    """A binary file over an iterator of byte strings (the fixed-up, transcoded stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buf = chunk
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


DECOMPRESSORS: dict[bytes, Callable[[Any], io.BufferedIOBase]] = {
    b"BZh": lambda fh: bz2.BZ2File(fh),  # concatenated (multistream) streams are read through
    b"\x1f\x8b": lambda fh: gzip.GzipFile(fileobj=fh),
}


def detect_encoding(head: bytes) -> str:
    """The text encoding of an XML document from its first bytes (BOM, then declaration)."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return name
    if head[:4] == b"<\x00?\x00":
        return "utf-16-le"
    if head[:4] == b"\x00<\x00?":
        return "utf-16-be"
    match = _DECL.match(head)
    return match.group(2).decode("ascii").lower() if match else "utf-8"


def _transcoded(first: bytes, rest: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    yield decoder.decode(first).encode("utf-8")
    for block in rest:
        yield decoder.decode(block).encode("utf-8")
    yield decoder.decode(b"", final=True).encode("utf-8")


def _fix_head(head: bytes) -> bytes:
    """UTF-8 head: declaration says UTF-8; an empty ``<siteinfo>`` when the dump has none."""
    head = _DECL_ANY.sub(b'<?xml version="1.0" encoding="utf-8"?>', head, count=1)
    page, info = head.find(b"<page"), head.find(b"<siteinfo")
    if page >= 0 and (info < 0 or info > page):
        head = head[:page] + b"<siteinfo></siteinfo>\n  " + head[page:]
    elif page < 0 and info < 0:
        end = head.rfind(b"</mediawiki>")
        if end >= 0:
            head = head[:end] + b"<siteinfo></siteinfo>\n" + head[end:]
    return head


def _utf8_blocks(first: bytes, stream: io.BufferedIOBase, encoding: str) -> Iterator[bytes]:
    """The decompressed stream (``first`` block already read) as UTF-8 blocks, head fixed."""
    blocks = iter(lambda: stream.read(_BLOCK), b"")
    if encoding not in ("utf-8", "utf8", "us-ascii", "ascii", "utf-8-sig"):
        blocks = _transcoded(first, blocks, encoding)
        first = next(blocks)
    elif encoding == "utf-8-sig":
        first = first[len(codecs.BOM_UTF8):]
    head = first
    while b"<siteinfo" not in head and b"<page" not in head and len(head) < _HEAD_LIMIT:
        more = next(blocks, None)
        if more is None:
            break
        head += more
    yield _fix_head(head)
    yield from blocks


class DumpReader:
    """An open dump: ``site_names``, ``pages()``, and ``position``/``size`` for an ETA."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"dump {self.path} does not exist (pass a .xml or .xml.bz2 file)")
        self.size = self.path.stat().st_size
        if self.size == 0:
            raise UserError(f"dump {self.path} is empty (0 bytes); re-download it")
        self._raw = _CountingReader(open(self.path, "rb"))  # noqa: SIM115 (closed in close())
        self._last: RawPage | None = None
        self._root, self._dump = self._open()
        self.site_names: dict[int, list[str]] = siteinfo_names(self._dump.site_info)
        self.dbname: str = str(getattr(self._dump.site_info, "dbname", "") or "")

    def _open(self) -> tuple[ElementIterator, mwxml.Dump]:
        magic = self._peek(6)
        if magic == b"7z\xbc\xaf\x27\x1c":
            raise UserError(f"{self.path} is a 7z archive; use the .xml.bz2 dump (or unpack it)")
        opener = next((f for m, f in DECOMPRESSORS.items() if magic.startswith(m)), None)
        stream: io.BufferedIOBase = (opener(self._raw) if opener
                                     else io.BufferedReader(self._raw))
        encoding = "utf-8"
        try:
            first = stream.read(_BLOCK)
            encoding = detect_encoding(first)
            codecs.lookup(encoding)
            root = ElementIterator.from_file(_ChunkReader(_utf8_blocks(first, stream, encoding)))
            return root, mwxml.Dump.from_element(root)
        except LookupError:
            raise UserError(f"{self.path}: unknown text encoding {encoding!r} in the XML "
                            "declaration") from None
        except DAMAGE as exc:
            raise self._damage(exc, "reading the header") from None

    def _peek(self, n: int) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read(n)

    @property
    def position(self) -> int:
        """Compressed bytes consumed so far (for an ETA against ``size``)."""
        return self._raw.position

    def pages(self, start: int = 0) -> Iterator[RawPage]:
        """Every page in dump order; the first ``start`` ones are parsed but not built."""
        index = -1
        items = iter(self._dump.pages)
        while True:
            try:
                page = next(items, None)
                if page is None:
                    break
                index += 1
                raw = self._raw_page(page, index) if index >= start else None
            except DAMAGE as exc:
                raise self._damage(exc, "reading a page") from None
            self._root.element.clear()  # drop finished <page> elements from the root
            if raw is not None:
                self._last = raw
                yield raw

    def _raw_page(self, page: Any, index: int) -> RawPage:
        revision = None
        for revision in page:  # noqa: B007 (the last revision is the current text)
            pass
        text = (revision.text if revision is not None else None) or ""
        redirect = page.redirect or _redirect_target(text)
        return RawPage(index=index, page_id=int(page.id), title=str(page.title),
                       ns=int(page.namespace or 0), redirect=redirect,
                       revision_id=int(revision.id) if revision is not None and revision.id
                       else None,
                       timestamp=str(revision.timestamp) if revision is not None and
                       revision.timestamp else "", text=text)

    def _damage(self, exc: BaseException, doing: str) -> DumpError:
        what = {EOFError: "the compressed file ends early (truncated download?)",
                ParseError: "malformed XML", MalformedXML: "unexpected XML structure",
                UnicodeDecodeError: "bytes that are not valid text in the declared encoding",
                OSError: "corrupt compressed data"}
        kind = next((v for k, v in what.items() if isinstance(exc, k)), type(exc).__name__)
        last = (f"after page {self._last.title!r} (id {self._last.page_id}, #{self._last.index})"
                if self._last else "before the first page")
        pages = self._last.index + 1 if self._last else 0
        return DumpError(f"{self.path}: {kind} while {doing}, {last}, near compressed byte "
                         f"{self.position:,} of {self.size:,} ({exc}); the pages before it were "
                         "read; repair or re-download the dump, then run again with --resume",
                         pages)

    def source_sha256(self) -> str:
        """sha256 of the whole dump file (reads the rest of it when not at the end yet)."""
        self._raw.drain()
        return self._raw.digest.hexdigest()

    def close(self) -> None:
        """Close the underlying file."""
        self._raw.close()

    def __enter__(self) -> DumpReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _redirect_target(text: str) -> str | None:
    """The target of a ``#REDIRECT [[...]]`` page (old dumps lack the ``<redirect>`` tag)."""
    match = _REDIRECT.match(text[:500]) if text.lstrip().startswith("#") else None
    return match.group(1).strip().replace("_", " ") if match else None


def quick_fingerprint(path: str | Path) -> dict[str, Any]:
    """Name, size and sha256 of the first 64 KiB: enough to tell a resumed run got the same
    dump, while a truncated download and its complete re-download still match."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(1 << 16)).hexdigest()
    return {"name": path.name, "bytes": path.stat().st_size, "head_sha256": head}
