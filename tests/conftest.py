"""Shared test set-up: offline hub, and the ../shared wiki fragments (skipped where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_WIKI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wiki"


@pytest.fixture(scope="session")
def shared_wiki() -> Path:
    """The real dump fragments in ../shared/data/wiki; the test is skipped where they are absent."""
    if not SHARED_WIKI.is_dir():
        pytest.skip("../shared/data/wiki is absent (a user's clone)")
    return SHARED_WIKI
