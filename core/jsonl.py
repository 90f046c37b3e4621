"""Reading JSONL files line by line, with the line number of every bad line (one reader for the
questions, pairs and run-dir files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NOT_UTF8 = "not UTF-8 text"


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object) for each non-blank line; where a line cannot be read, the
    object is a ``ValueError`` saying why ("not UTF-8 text", "not valid JSON (…, column n)"), so
    a caller can report every bad line at once."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield lineno, ValueError(NOT_UTF8)
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, ValueError(f"not valid JSON ({exc.msg}, column {exc.colno})")
