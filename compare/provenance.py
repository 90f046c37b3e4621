"""Provenance for results.json: code version, package versions, data and model hashes."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from core.hashing import sha256_file
from core.paths import REPO_ROOT
from core.versions import package_versions as versions_of

PACKAGES = ("ragvsft", "torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate",
            "sentence-transformers", "faiss-cpu", "datasets", "numpy", "scipy", "sacrebleu",
            "rouge-score", "py3langid")


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit hash and whether the tree had uncommitted changes (``unknown`` outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    return versions_of(names, missing="not installed")


def files_sha256(paths: list[str]) -> dict[str, str]:
    """sha256 of each existing file."""
    return {p: sha256_file(Path(p)) for p in paths if Path(p).is_file()}


def environment() -> dict[str, str]:
    """Python and platform."""
    return {"python": platform.python_version(), "platform": platform.platform()}
