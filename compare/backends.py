"""Generators for the compared systems: one copy of each model's weights, loaded only when needed.

A ``ModelSlot`` holds one base model. The base and RAG systems generate with the adapter off; the
fine-tuned systems attach the LoRA adapter to the SAME weights once (peft injects its layers in
place) and generate with it on, so base + adapter costs one model's memory. After the adapter is
attached, adapter-off generation runs inside peft's ``disable_adapter()`` context, which gives the
base model's outputs exactly.

Nothing heavy happens at construction: the identity that keys the generation cache (weights
fingerprint, adapter sha256, load options, library versions) is computed from files, the tokenizer
(for prompt budgets) loads on first use, and the weights load only when the cache misses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from core.errors import UserError
from core.hashing import sha256_file
from core.versions import package_versions
from models.generation import Decoding, Generation, Prompt
from models.loading import LoadOptions

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VERSIONED = ("torch", "transformers", "peft")


def adapter_identity(adapter_dir: Path) -> dict[str, Any]:
    """Path, sha256 of the LoRA config + weights, and the recorded prompt format of an adapter."""
    folder = check_adapter_dir(adapter_dir)
    digest = "".join(sha256_file(folder / n) for n in ADAPTER_FILES if (folder / n).is_file())
    return {"path": str(folder.resolve()), "sha256": hashlib.sha256(digest.encode()).hexdigest(),
            "format": adapter_format_name(folder)}


def check_adapter_dir(adapter_dir: Path) -> Path:
    """The adapter folder, or a ``UserError`` saying how to make one."""
    folder = Path(adapter_dir).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise UserError(f"adapter {folder} does not exist or is not a LoRA adapter folder; train "
                        "one with `finetune train --config cpu-demo --pairs PAIRS --out DIR` "
                        "(`python -m compare.demo` builds the default one), or drop the "
                        "finetuned systems (--systems base,rag)")
    return folder


def adapter_format_name(folder: Path) -> str:
    """The prompt format recorded in the adapter's manifest ("chat" for a bare peft folder)."""
    if not (folder / "manifest.json").is_file():
        log.warning("adapter %s has no manifest.json (not written by `finetune train`): "
                    "prompting it with the chat template", folder)
        return "chat"
    from finetune.adapter import adapter_format

    return adapter_format(folder).name


class ModelSlot:
    """One in-process model shared by the systems on it, with an optional LoRA adapter."""

    def __init__(self, name: str, options: LoadOptions, batch_size: int = 8,
                 progress: bool = True) -> None:
        self.name, self.options = name, options
        self.batch_size, self.progress = batch_size, progress
        self.model: Any = None
        self.adapter: Path | None = None
        self._generator: Any = None
        self.load_s = 0.0  # seconds spent loading weights and attaching adapters

    @cached_property
    def ref(self) -> Any:
        """The resolved model (a bundled model is materialized here, once)."""
        from models.loading import resolve

        return resolve(self.name)

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What determines this model's outputs, short of the prompt and decoding."""
        from models.loading import model_fingerprint_of

        return {"backend": "transformers", "model": self.name,
                "fingerprint": model_fingerprint_of(self.ref),
                "load": dataclasses.asdict(self.options),
                "versions": package_versions(VERSIONED)}

    @cached_property
    def tokenizer(self) -> Any:
        """The tokenizer alone (cheap): prompt budgets need it, generation may not."""
        from models.loading import load_tokenizer

        return load_tokenizer(self.name, self.options.trust_remote_code)

    @cached_property
    def context_window(self) -> int:
        """The window ``TransformersGenerator`` would report, read from the config file only."""
        from transformers import AutoConfig

        from models.gen_transformers import TransformersGenerator

        config = AutoConfig.from_pretrained(self.ref.location, local_files_only=True,
                                            trust_remote_code=self.options.trust_remote_code)
        probe = SimpleNamespace(model=SimpleNamespace(config=config), tokenizer=self.tokenizer)
        return int(TransformersGenerator.context_window.fget(probe))  # same rule, no weights

    def load(self) -> None:
        """Load the weights now (they otherwise load at the first cache miss)."""
        self._load()

    def set_batch_size(self, batch_size: int) -> None:
        """Generate ``batch_size`` prompts at a time from now on."""
        self.batch_size, self._generator = batch_size, None

    def _load(self) -> None:
        if self.model is not None:
            return
        from models.loading import load_model

        log.info("loading %s weights (a generation was not in the cache)", self.name)
        start = time.perf_counter()
        self.model, _ = load_model(self.name, self.options)
        self._generator = None
        self.load_s += time.perf_counter() - start

    def _attach(self, adapter: Path) -> None:
        if self.adapter is not None:
            if self.adapter != adapter:
                raise UserError(f"{self.name} already carries adapter {self.adapter}; one "
                                f"adapter per model in one experiment (asked for {adapter})")
            return
        from models.loading import attach_adapter

        start = time.perf_counter()
        self.model = attach_adapter(self.model, self.ref, adapter)
        self.model.eval()
        self.adapter, self._generator = adapter, None
        self.load_s += time.perf_counter() - start

    @contextlib.contextmanager
    def active(self, adapter: Path | None) -> Iterator[Any]:
        """The in-process generator with ``adapter`` on (or, if one is attached, off)."""
        self._load()
        if adapter is not None:
            self._attach(adapter)
        if self._generator is None:
            from models.gen_transformers import TransformersGenerator

            self._generator = TransformersGenerator(
                self.model, self.tokenizer, batch_size=self.batch_size, name=self.name,
                progress=self.progress, trust_remote_code=self.options.trust_remote_code)
        off = adapter is None and self.adapter is not None
        with self.model.disable_adapter() if off else contextlib.nullcontext():
            yield self._generator

    def close(self) -> None:
        """Drop the weights."""
        self.model, self._generator = None, None
        gc.collect()


class SlotGenerator:
    """A ``Generator`` over a ``ModelSlot``, with or without the slot's adapter."""

    def __init__(self, slot: ModelSlot, adapter: Path | None = None) -> None:
        self.slot, self.adapter = slot, adapter
        self.name = slot.name if adapter is None else f"{slot.name}+{adapter.name}"

    @cached_property
    def identity(self) -> dict[str, Any]:
        """The slot's identity plus the adapter's (None for the bare model)."""
        adapter = adapter_identity(self.adapter) if self.adapter is not None else None
        return {**self.slot.identity, "adapter": adapter}

    @property
    def context_window(self) -> int:
        """The model's window."""
        return self.slot.context_window

    @property
    def load_s(self) -> float:
        """Seconds the shared slot spent loading weights (not part of any answer's latency)."""
        return self.slot.load_s

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` without special tokens (the tokenizer only)."""
        return len(self.slot.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """Generate with the adapter on or off (loads the weights on first use)."""
        with self.slot.active(self.adapter) as gen:
            return gen.generate(prompts, decoding)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Continuation log-likelihoods with the adapter on or off (one forward pass per
        context for one-token continuations, as lm-evaluation-harness does)."""
        with self.slot.active(self.adapter) as gen:
            return grouped_loglikelihood(gen, requests)


def grouped_loglikelihood(gen: Any, requests: Sequence[tuple[str, str]]) -> list[float]:
    """lm-eval's one-token shortcut: the requests that share a context and continue it by ONE
    token (multiple-choice letters) are scored from a single forward pass over that context;
    the others go through ``gen.loglikelihood``. Same numbers, a quarter of the work for 4
    options."""
    pairs = [gen._encode_pair(c, x) for c, x in requests]  # lm-eval's context/continuation split
    single: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    rest = []
    for i, (ctx, cont) in enumerate(pairs):
        if len(cont) == 1 and len(ctx) < gen.context_window:
            single.setdefault(tuple(ctx), []).append((i, cont[0]))
        else:
            rest.append(i)
    scores = [0.0] * len(requests)
    contexts = list(single)
    for start in range(0, len(contexts), gen.batch_size):
        batch = contexts[start:start + gen.batch_size]
        for ctx, logp in zip(batch, _last_logprobs(gen, batch), strict=True):
            for i, token in single[ctx]:
                scores[i] = float(logp[token])
    if rest:
        for i, value in zip(rest, gen.loglikelihood([requests[i] for i in rest]), strict=True):
            scores[i] = value
    return scores


def _last_logprobs(gen: Any, rows: Sequence[Sequence[int]]) -> Any:
    """Next-token log-probs after each (left-padded) row: [rows, vocab]."""
    import torch

    from models.gen_transformers import _takes_logits_to_keep

    width = max(len(r) for r in rows)
    pad = gen.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=gen.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=gen.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": 1} if _takes_logits_to_keep(gen.model) else {}
    with torch.inference_mode():
        logits = gen.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           **keep).logits[:, -1]
    return torch.log_softmax(logits.float(), dim=-1)


def server_generator(base_url: str, served_name: str, batch_size: int, progress: bool
                     ) -> tuple[Any, dict[str, Any]]:
    """An OpenAI-compatible client for ``served_name`` and its cache identity."""
    from models.gen_openai import OpenAIGenerator

    gen = OpenAIGenerator(base_url, served_name, max_concurrency=batch_size, progress=progress)
    return gen, {"backend": "openai", "base_url": gen.base_url, "model": served_name}
