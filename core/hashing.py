"""sha256 helpers for files and folders (every fetched or assembled artifact is checked)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of one file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_dir(path: Path, pattern: str = "*") -> str:
    """Hex sha256 over the relative names and contents of the files under ``path`` (sorted)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob(pattern) if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()
