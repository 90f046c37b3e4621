"""A persistent generation cache: a re-run or a resumed run regenerates nothing.

The key is a sha256 over everything that determines an output: the generator's identity (backend,
model files' fingerprint, resolved dtype, device and quantization, GGUF hash and file type, every
adapter file, the model a server reports it serves), the exact prompt and the decoding parameters
(seed included). Keys cannot collide by construction: the parts are written as canonical JSON,
where ``"1"`` and ``1``, a prompt string and a message list, a path and its text all differ; an
object JSON cannot write is written with its type, never as bare ``str()``. Sampled answers are
keyed by (seed, prompt) because every backend draws a prompt's answer with
``models.generation.prompt_seed(seed, prompt)``: the answer does not depend on the batch.
Entries are committed after every batch, so Ctrl-C loses at most the batch in flight.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from models.generation import Decoding, Generation, Generator, Prompt

KEY_SCHEMA = 2  # 2: resolved load facts, every adapter file, served model ids, per-prompt seeds


def cache_key(*parts: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of the key schema and
    ``parts`` (see the module docstring)."""
    blob = json.dumps([KEY_SCHEMA, *parts], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=_tagged)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _tagged(value: Any) -> Any:
    """What ``cache_key`` writes for an object JSON has no form for: a path, a set, a dataclass,
    an enum, bytes, anything else, each tagged with its kind so that none reads as a string."""
    if isinstance(value, PurePath):
        return {"__path__": value.as_posix()}
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted(json.dumps(v, sort_keys=True, default=_tagged) for v in value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f"__{type(value).__qualname__}__": dataclasses.asdict(value)}
    if isinstance(value, enum.Enum):
        return {f"__{type(value).__qualname__}__": value.name}
    if isinstance(value, bytes):
        return {"__bytes__": hashlib.sha256(value).hexdigest()}
    return {f"__{type(value).__module__}.{type(value).__qualname__}__": repr(value)}


class GenerationCache:
    """sqlite table ``key -> JSON value``; safe to share across runs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS gen (key TEXT PRIMARY KEY, value TEXT)")
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The cached values among ``keys``."""
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = list(keys[start:start + 500])
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT key, value FROM gen WHERE key IN ({marks})", part)
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store and commit ``key -> value`` pairs."""
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO gen VALUES (?, ?)",
                                 [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()])
            self._db.commit()

    def close(self) -> None:
        """Close the database."""
        self._db.close()


# Generations are committed (and samples flushed) every COMMIT_BATCHES generator batches: llama.cpp
# keeps its slots full within one call (continuous batching) but waits for the slowest answer at
# the end of each call, so calls of one batch each left slots idle; an interruption loses at most
# one commit.
COMMIT_BATCHES = 4


class CachedGenerator:
    """Wraps a ``Generator``; answers from the cache and generates only the misses."""

    def __init__(self, inner: Generator, cache: GenerationCache, identity: dict[str, Any],
                 batch_size: int = 8 * COMMIT_BATCHES) -> None:
        self.inner = inner
        self.cache = cache
        self.identity = identity
        self.batch_size = batch_size
        self.name = inner.name
        self.last_fresh: set[int] = set()  # see ``loglikelihood``
        self.last_seconds: list[float] = []

    @property
    def context_window(self) -> int:
        """The wrapped generator's window."""
        return self.inner.context_window

    def count_tokens(self, text: str) -> int:
        """The wrapped generator's token count."""
        return self.inner.count_tokens(text)

    @property
    def has_chat_template(self) -> bool:
        """Whether the wrapped generator renders chat prompts itself (``prompt_text``)."""
        return bool(getattr(self.inner, "has_chat_template", False))

    def prompt_text(self, prompt: Prompt) -> str:
        """The wrapped generator's rendering of ``prompt`` (chat template, answer turn open)."""
        render = getattr(self.inner, "prompt_text", None)
        if render is None:
            if isinstance(prompt, str):
                return prompt
            raise TypeError(f"{self.name} cannot render chat prompts to text")
        return str(render(prompt))

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """Cached generations, generating the misses batch by batch (each batch committed)."""
        params = dataclasses.asdict(decoding)
        keys = [cache_key("gen", self.identity, p, params) for p in prompts]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.cache.hits += len(keys) - len(missing)
        self.cache.misses += len(missing)
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start:start + self.batch_size]
            outs = self.inner.generate([prompts[i] for i in idx], decoding)
            fresh = {keys[i]: dataclasses.asdict(g) for i, g in zip(idx, outs, strict=True)}
            self.cache.put_many(fresh)
            found.update(fresh)
        fresh_idx = set(missing)
        return [_generation(found[k], i not in fresh_idx) for i, k in enumerate(keys)]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Cached continuation log-likelihoods. After the call, ``last_fresh`` holds the indices
        computed now and ``last_seconds`` each request's compute time (weights loading excluded;
        a cached request keeps the time it took when it was computed)."""
        keys = [cache_key("ll", self.identity, c, x) for c, x in requests]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.cache.hits += len(keys) - len(missing)
        self.cache.misses += len(missing)
        self.last_fresh = set(missing)
        if missing:
            loaded, start = getattr(self.inner, "load_s", 0.0), time.perf_counter()
            values = self.inner.loglikelihood([requests[i] for i in missing])
            seconds = (time.perf_counter() - start
                       - (getattr(self.inner, "load_s", 0.0) - loaded)) / len(missing)
            fresh = {keys[i]: {"ll": v, "s": seconds} for i, v in zip(missing, values,
                                                                     strict=True)}
            self.cache.put_many(fresh)
            found.update(fresh)
        entries = [found[k] if isinstance(found[k], dict) else {"ll": found[k], "s": 0.0}
                   for k in keys]
        self.last_seconds = [float(e["s"]) for e in entries]
        return [float(e["ll"]) for e in entries]


def _generation(value: dict[str, Any], cached: bool) -> Generation:
    fields = {f.name for f in dataclasses.fields(Generation)}
    gen = Generation(**{k: v for k, v in value.items() if k in fields})
    gen.cached = cached  # type: ignore[attr-defined]
    return gen
