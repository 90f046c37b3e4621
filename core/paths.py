"""Where things live: the cache dir (models, default store and adapter) and the repo's data dir."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RAGVSFT_CACHE"
REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


def cache_dir() -> Path:
    """Root of everything built once and reused: ``$RAGVSFT_CACHE`` or ``~/.cache/ragvsft``."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "ragvsft"
    return path


def models_dir() -> Path:
    """Materialized bundled models (safetensors folders)."""
    return cache_dir() / "models"


def default_store_dir() -> Path:
    """The store the demo builds from the sample dump; the default ``--store`` everywhere."""
    return cache_dir() / "stores" / "sample"


def default_adapter_dir() -> Path:
    """The adapter the demo trains with the ``cpu-demo`` preset; the default ``--adapter``."""
    return cache_dir() / "adapters" / "cpu-demo"


def sample_dump() -> Path:
    """The team-written sample Portuguese Wikipedia dump shipped in ``data/``."""
    return DATA_DIR / "wiki" / "ptwiki-sample-brazilian-history.xml.bz2"


def default_questions() -> Path:
    """The default Brazilian-history question set."""
    return DATA_DIR / "questions" / "brazil_history.jsonl"
