"""One copy of a model's weights shared by several generators, loaded only when needed.

A ``ModelSlot`` holds one base model. Generators without the adapter use it as it is; the first
generator with a LoRA adapter attaches it to the SAME weights once (peft injects its layers in
place), so base + adapter costs one model's memory. After the adapter is attached, adapter-off
generation runs inside peft's ``disable_adapter()`` context, which gives the base model's outputs
exactly. ``SlotGenerator`` is the ``Generator`` over a slot, with or without its adapter.

The model name is resolved once (``ref``) and its tokenizer loaded once; both are handed to the
weights' loading. Nothing heavy happens at construction: the identity that keys a generation
cache (weights fingerprint, adapter sha256, load options and what they resolve to on this machine:
dtype, device, quantization; the GGUF's hash and file type on llama.cpp; library versions) is
computed from files, the tokenizer (for prompt budgets) and the config (for the window) load on
first use, and the weights load only when something has to be generated or scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.versions import package_versions
from models.adapters import adapter_identity
from models.generation import Decoding, Generation, Prompt
from models.loading import LoadOptions

if TYPE_CHECKING:
    from models.gen_llamacpp import LlamaCppGenerator
    from models.gen_transformers import TransformersGenerator
    from models.sources import ModelRef

log = logging.getLogger(__name__)

VERSIONED = ("torch", "transformers", "peft")


class ModelSlot:
    """One in-process model shared by the generators on it, with an optional LoRA adapter."""

    def __init__(self, name: str | Path, options: LoadOptions = LoadOptions(),
                 batch_size: int = 8, progress: bool = True, backend: str = "transformers",
                 reproducible: str = "off") -> None:
        self.name, self.options = str(name), options
        self.batch_size, self.progress = batch_size, progress
        # on llama.cpp, what a re-run reproduces: "prompt", "run" or "off"
        # (models.gen_llamacpp.REPRODUCIBLE: slots and prefix reuse)
        self.reproducible = reproducible
        self.model: Any = None
        self.adapter: Path | None = None
        self._generator: TransformersGenerator | None = None
        self.load_s = 0.0  # seconds spent loading weights and attaching adapters
        self.backend = backend  # what generates: auto | transformers | llamacpp
        self._llama: LlamaCppGenerator | None = None
        self._attached = False  # whether ``adapter`` is attached to the transformers weights

    @cached_property
    def generates_with(self) -> str:
        """The backend that generates and scores continuations ("auto" resolved by
        ``models.backends.choose_backend``): on llama.cpp, the transformers weights are never
        loaded."""
        from models.backends import choose_backend

        return choose_backend(self.ref, self.backend, self.options, self.adapter)

    def register(self, adapter: Path | None) -> None:
        """Note the adapter a generator on this slot will use (llama.cpp loads every LoRA when
        it starts; one adapter per model in one experiment, as on transformers)."""
        if adapter is None:
            return
        if self.adapter is not None and self.adapter != adapter:
            raise UserError(f"{self.name} already carries adapter {self.adapter}; one "
                            f"adapter per model in one experiment (asked for {adapter})")
        if self._llama is not None and self.adapter is None:
            # llama.cpp loads its LoRAs when it starts: restart it with this one (about a second
            # for a small GGUF; the base answers are the same with the LoRA loaded but off)
            log.info("restarting llama.cpp for %s with adapter %s", self.name, adapter)
            self._llama = None
        self.adapter = adapter

    def llama(self, adapter: Path | None) -> LlamaCppGenerator:
        """The llama.cpp generator of this slot, with ``adapter`` on (or off)."""
        self.register(adapter)
        if self._llama is None:
            from models.backends import gguf_of
            from models.gen_llamacpp import LlamaCppGenerator
            from models.loading import check_adapter_base
            from models.lora_gguf import export_lora_gguf

            gguf = gguf_of(self.ref)
            assert gguf is not None  # generates_with checked it
            loras = []
            if self.adapter is not None:
                check_adapter_base(self.adapter, self.ref)
                loras.append(export_lora_gguf(self.adapter, gguf))
            start = time.perf_counter()
            self._llama = LlamaCppGenerator(gguf, self.tokenizer, name=self.name,
                                            parallel=self.slots, progress=self.progress,
                                            loras=loras, prefix_cache=self.prefix_cache)
            self._llama.server()
            self.load_s += time.perf_counter() - start
        return self._llama.with_adapter(0 if adapter is not None else None)

    @property
    def slots(self) -> int:
        """Sequences llama.cpp decodes together (``reproducible`` "off": ``batch_size``)."""
        from models.gen_llamacpp import REPRODUCIBLE

        return REPRODUCIBLE[self.reproducible][0] or self.batch_size

    @property
    def prefix_cache(self) -> bool:
        """Whether llama.cpp reads a prompt from where it parts from the slot's previous one."""
        from models.gen_llamacpp import REPRODUCIBLE

        return REPRODUCIBLE[self.reproducible][1]

    @cached_property
    def ref(self) -> ModelRef:
        """The resolved model (a bundled model is materialized here, once)."""
        from models.loading import resolve

        return resolve(self.name)

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What determines this model's outputs, short of the prompt and decoding, computed
        without loading the weights: the backend that generates, the model's files' fingerprint,
        the load options as given and as they resolve on this machine (dtype, device type,
        quantization: ``models.gen_transformers.load_identity``), and the library versions. On
        llama.cpp, also the GGUF it runs (file, sha256, file type, i.e. its quantization) and
        the device llama.cpp computes on (which also scores continuations), the CPU features
        its build was compiled with and how it batches (``models.gen_llamacpp.llamacpp_identity``).
        """
        from models.gen_transformers import load_identity
        from models.loading import model_fingerprint_of

        if self.generates_with == "llamacpp":
            from models.backends import gguf_of
            from models.gen_llamacpp import SCORE_TOP, llamacpp_identity

            gguf = gguf_of(self.ref)
            assert gguf is not None  # generates_with checked it
            known = None  # a bundled GGUF's sha256 is checked when installed or joined
            if self.ref.kind == "bundled":
                from models.bundled import BUNDLED

                known = BUNDLED.get(self.ref.name).sha256
            return {**llamacpp_identity(gguf, sha256=known, slots=self.slots,
                                        prefix_cache=self.prefix_cache),
                    "model": self.name, "fingerprint": model_fingerprint_of(self.ref),
                    "scoring": {"backend": "llamacpp", "first_read": SCORE_TOP},
                    "versions": package_versions((*VERSIONED, "xllamacpp"))}
        return {"backend": "transformers", "model": self.name,
                "fingerprint": model_fingerprint_of(self.ref),
                "load": dataclasses.asdict(self.options), **load_identity(self.options),
                "versions": package_versions(VERSIONED)}

    @cached_property
    def tokenizer(self) -> Any:
        """The tokenizer alone (cheap): prompt budgets need it, generation may not."""
        from models.loading import load_tokenizer

        return load_tokenizer(self.ref, self.options.trust_remote_code)

    @cached_property
    def context_window(self) -> int:
        """The window the generating backend will report (transformers': from the config file
        alone; llama.cpp's: what each of its sequences may hold)."""
        from models.loading import context_window_of, model_config

        config = model_config(self.ref, self.options.trust_remote_code)
        window = context_window_of(config, self.tokenizer)
        if self.generates_with == "llamacpp":
            from models.gen_llamacpp import DEFAULT_CONTEXT

            window = min(window, DEFAULT_CONTEXT)
        return window

    def load(self) -> None:
        """Load the weights now (they otherwise load when first needed)."""
        if self.model is not None:
            return
        from models.loading import load_model

        log.info("loading %s weights", self.name)
        start = time.perf_counter()
        self.model, _ = load_model(self.ref, self.options, tokenizer=self.tokenizer)
        self._generator = None
        self.load_s += time.perf_counter() - start

    def set_batch_size(self, batch_size: int) -> None:
        """Generate ``batch_size`` prompts at a time from now on."""
        self.batch_size, self._generator = batch_size, None

    def _attach(self, adapter: Path) -> None:
        self.register(adapter)
        if self._attached:
            return
        from models.loading import attach_adapter

        start = time.perf_counter()
        self.model = attach_adapter(self.model, self.ref, adapter)
        self.model.eval()
        self._attached, self._generator = True, None
        self.load_s += time.perf_counter() - start

    @contextlib.contextmanager
    def active(self, adapter: Path | None) -> Iterator[TransformersGenerator]:
        """The in-process generator with ``adapter`` on (or, if one is attached, off)."""
        self.load()
        if adapter is not None:
            self._attach(adapter)
        if self._generator is None:
            from models.gen_transformers import TransformersGenerator

            self._generator = TransformersGenerator(
                self.model, self.tokenizer, batch_size=self.batch_size, name=self.name,
                progress=self.progress, trust_remote_code=self.options.trust_remote_code)
        off = adapter is None and self._attached
        with self.model.disable_adapter() if off else contextlib.nullcontext():
            yield self._generator

    def close(self) -> None:
        """Drop the weights (and llama.cpp's copy)."""
        self.model, self._generator, self._llama = None, None, None
        self._attached = False
        gc.collect()


class SlotGenerator:
    """A ``Generator`` over a ``ModelSlot``, with or without the slot's adapter."""

    def __init__(self, slot: ModelSlot, adapter: str | Path | None = None) -> None:
        self.slot = slot
        self.adapter = Path(adapter).expanduser() if adapter is not None else None
        self.name = slot.name if self.adapter is None else f"{slot.name}+{self.adapter.name}"
        slot.register(self.adapter)

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

    @property
    def has_chat_template(self) -> bool:
        """Whether the model's tokenizer has a chat template (an instruction-tuned model)."""
        return bool(getattr(self.slot.tokenizer, "chat_template", None))

    def prompt_text(self, prompt: Prompt) -> str:
        """The text the model reads for ``prompt`` before its answer: a string as is, chat
        messages through the tokenizer's chat template with the assistant turn opened (what
        generation renders, so a scored continuation is the start of the answer)."""
        if isinstance(prompt, str):
            return prompt
        if not self.has_chat_template:
            raise UserError(f"{self.name} has no chat template: score it with plain-text "
                            "prompts (mc_prompt: plain)")
        return str(self.slot.tokenizer.apply_chat_template(list(prompt), tokenize=False,
                                                           add_generation_prompt=True))

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """Generate with the adapter on or off (loads the weights on first use), on the slot's
        generating backend."""
        if self.slot.generates_with == "llamacpp":
            return self.slot.llama(self.adapter).generate(prompts, decoding)
        with self.slot.active(self.adapter) as gen:
            return gen.generate(prompts, decoding)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Continuation log-likelihoods with the adapter on or off, on the slot's backend (one
        forward pass per context for one-token continuations, as lm-evaluation-harness does)."""
        if self.slot.generates_with == "llamacpp":
            return self.slot.llama(self.adapter).grouped_loglikelihood(requests)
        with self.slot.active(self.adapter) as gen:
            return gen.grouped_loglikelihood(requests)


__all__ = ["VERSIONED", "ModelSlot", "SlotGenerator"]
