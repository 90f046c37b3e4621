"""One generation interface: the ``Generator`` protocol, its prompts, decodings and answers.

Two backends implement it: in-process transformers (``models.gen_transformers``) and an
OpenAI-compatible server (``models.gen_openai``); ``models.backends.make_generator`` picks one.
This module holds only the shared types, so every backend (and every caller) imports it and it
imports none of them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.errors import UserError

Prompt = str | list[dict[str, str]]
STRATEGIES = ("greedy", "sample", "beam", "contrastive", "best_of_n")


@dataclass(frozen=True)
class Decoding:
    """How to decode: the strategy and its knobs, a token budget, a seed and stop strings."""

    strategy: str = "greedy"  # greedy|sample|beam|contrastive|best_of_n
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 50
    num_beams: int = 4
    penalty_alpha: float = 0.6
    n: int = 4  # candidates for best_of_n
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            close = difflib.get_close_matches(self.strategy, STRATEGIES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown decoding strategy {self.strategy!r}.{hint} "
                            f"Known: {', '.join(STRATEGIES)}.")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise UserError("sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0")
        if self.num_beams < 1 or self.n < 1:
            raise UserError("num_beams and n must be at least 1")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise UserError("stop must be a tuple of non-empty strings")


@dataclass
class Generation:
    """One answer. ``latency_s`` is the batch's wall time divided by the prompts in it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


@runtime_checkable
class Generator(Protocol):
    """What every backend offers: batched generation, continuation scoring, token counting."""

    name: str

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """One ``Generation`` per prompt, in the prompts' order."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Summed log-prob of each continuation given its context."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens added)."""
        ...

    @property
    def context_window(self) -> int:
        """Most tokens (prompt + completion) the model takes."""
        ...


def prompt_seed(seed: int, prompt: Prompt) -> int:
    """The seed a sampled answer to ``prompt`` is drawn with: the first 31 bits of the sha256 of
    the canonical JSON of ``[seed, prompt]`` (sorted keys, no spaces, UTF-8). It depends on the
    decoding's seed and the prompt only, never on which prompts shared the batch, so a cached
    sampled answer is the answer that prompt gets in any batch; 31 bits suit every backend
    (``torch.manual_seed``, llama.cpp's unsigned 32-bit seed, whose 0xFFFFFFFF means "random")."""
    blob = json.dumps([int(seed), prompt], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut at the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


__all__ = ["STRATEGIES", "Decoding", "Generation", "Generator", "Prompt", "apply_stop",
           "prompt_seed"]
