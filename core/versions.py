"""Installed package versions, for the manifests and results that record what produced them."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable


def package_versions(names: Iterable[str], python: bool = False,
                     missing: str = "missing") -> dict[str, str]:
    """``name -> version`` of each installed distribution (``missing`` where absent), plus
    Python's own version under ``python`` when asked."""
    out = {"python": platform.python_version()} if python else {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = missing
    return out
