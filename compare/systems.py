"""The compared systems behind ``compare.protocol.System``, and the factory that builds them.

``base`` (closed-book prompt, base model), ``rag`` (passages retrieved from the store),
``finetuned`` (base + LoRA adapter, closed-book, in the adapter's prompt format) and
``rag+finetuned``. Each is a ``SystemSpec`` in the ``SYSTEMS`` registry; the factory builds any
spec from its two flags.

Sharing: one ``ModelSlot`` per model (``compare.backends``), the adapter attached to the same
weights; retrieval results are memoized per question, so rag and rag+finetuned retrieve once.
Every generator is wrapped in a ``CachedGenerator`` keyed by model fingerprint, adapter sha256,
load options, library versions, store sha256 + retriever + k (RAG), the exact prompt and the
decoding: a re-run regenerates nothing, and when everything is cached no weights are loaded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare import mc
from compare.cache import CachedGenerator, GenerationCache
from compare.prompting import (
    closed_book_messages,
    format_decoding,
    in_format,
    rag_messages,
    template_pair,
    template_versions,
)
from compare.protocol import SystemAnswer
from compare.questions import Question
from core.errors import UserError
from core.registry import Registry
from models.generation import Decoding, Generation, Generator

if TYPE_CHECKING:
    from compare.config import ExperimentConfig
    from compare.runner import Column
    from finetune.formats import Format

Retrieve = Callable[[list[str]], list[list[Any]]]


@dataclass(frozen=True)
class SystemSpec:
    """A named way of answering: with retrieval or not, with the adapter or not."""

    name: str
    retrieval: bool
    adapter: bool
    description: str


SYSTEMS: Registry[SystemSpec] = Registry("system")
for _spec in (
    SystemSpec("base", False, False, "the base model, closed-book"),
    SystemSpec("rag", True, False, "the base model reading passages retrieved from the store"),
    SystemSpec("finetuned", False, True, "base model + LoRA adapter, closed-book"),
    SystemSpec("rag+finetuned", True, True, "base model + LoRA adapter reading the passages"),
):
    SYSTEMS.add(_spec.name, _spec)


class ComparedSystem:
    """One column's system: prompts (closed-book or RAG), a cached generator, MC scoring."""

    def __init__(self, spec: SystemSpec, generator: CachedGenerator, decoding: Decoding,
                 fmt: Format | None, cfg: ExperimentConfig, retrieve: Retrieve | None,
                 fingerprint: dict[str, Any]) -> None:
        if spec.retrieval and retrieve is None:
            raise ValueError(f"system {spec.name!r} retrieves but got no retriever")
        self.spec, self.name, self.uses_retrieval = spec, spec.name, spec.retrieval
        self.generator, self.fmt, self.cfg = generator, fmt, cfg
        self.decoding = format_decoding(decoding, fmt)
        self._retrieve, self._fingerprint = retrieve, fingerprint

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this system's outputs (recorded in the run's provenance)."""
        return self._fingerprint

    def _passages(self, questions: Sequence[Question]) -> tuple[list[list[Any]] | None, float]:
        if not self.uses_retrieval:
            return None, 0.0
        start = time.perf_counter()
        found = self._retrieve([q.question for q in questions])
        return found, (time.perf_counter() - start) / max(len(questions), 1)

    def _lang(self, q: Question) -> str:
        return q.lang if self.cfg.lang == "auto" else self.cfg.lang

    def prompts(self, texts: Sequence[str], questions: Sequence[Question],
                passages: list[list[Any]] | None) -> tuple[list[Any], list[list[Any]] | None]:
        """The prompts for ``texts`` (the questions, or their MC rendering) and, for RAG, the
        passages that fit the model's window (``rag.budget``: top ones kept, in rank order)."""
        t, langs = self.cfg.template, [self._lang(q) for q in questions]
        if passages is None:
            msgs = [closed_book_messages(x, lang, t) for x, lang in zip(texts, langs, strict=True)]
            return [in_format(m, self.fmt) for m in msgs], None
        fitted = [self._fit(x, p, lang) for x, p, lang in zip(texts, passages, langs, strict=True)]
        msgs = [rag_messages(x, p, lang, t) for x, p, lang in zip(texts, fitted, langs,
                                                                   strict=True)]
        return [in_format(m, self.fmt) for m in msgs], fitted

    def _fit(self, text: str, passages: list[Any], lang: str) -> list[Any]:
        from rag.budget import context_budget, fit_passages

        template, gen = template_pair(self.cfg.template)[0], self.generator
        budget = context_budget(text, gen.count_tokens, gen.context_window,
                                self.decoding.max_new_tokens, lang, template,
                                self.cfg.context_tokens)
        return fit_passages(passages, budget, gen.count_tokens, lang, template).passages

    def answer(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        """Open answers for a batch (generation through the cache)."""
        return self._generate(questions, [q.question for q in questions])

    def _generate(self, questions: Sequence[Question], texts: list[str]) -> list[SystemAnswer]:
        retrieved, retrieval_s = self._passages(questions)
        prompts, fitted = self.prompts(texts, questions, retrieved)
        gens = self.generator.generate(prompts, self.decoding)
        answers = [_answer(q, p, g, retrieval_s) for q, p, g in zip(questions, prompts, gens,
                                                                    strict=True)]
        for i, a in enumerate(answers if retrieved else []):
            a.retrieved = evidence(retrieved[i], fitted[i])
        return answers

    def choose(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        """Multiple-choice answers: per-letter log-likelihood (default), per-option cloze
        log-likelihood (length-normalized), or a generated letter (``compare.mc``)."""
        if self.cfg.mc_mode == "generate":
            answers = self._generate(questions, [mc.generative_question(q) for q in questions])
            for q, a in zip(questions, answers, strict=True):
                a.choice = mc.parse_choice(a.output, q.choices)
            return answers
        cloze = self.cfg.mc_mode == "cloze"
        context_of = mc.cloze_context if cloze else mc.loglikelihood_context
        requests_of = mc.cloze_requests if cloze else mc.loglikelihood_requests
        passages, retrieval_s = self._passages(questions)
        contexts = [context_of(q, passages[i] if passages else None)
                    for i, q in enumerate(questions)]
        requests = [requests_of(q, c) for q, c in zip(questions, contexts, strict=True)]
        flat = self.generator.loglikelihood([r for rs in requests for r in rs])
        fresh, seconds, out, pos = self.generator.last_fresh, self.generator.last_seconds, [], 0
        for i, (q, ctx) in enumerate(zip(questions, contexts, strict=True)):
            scores, span = flat[pos:pos + len(q.choices)], range(pos, pos + len(q.choices))
            pos += len(q.choices)
            choice = mc.argmax(mc.length_normalized(q, scores) if cloze else scores)
            out.append(SystemAnswer(
                q.id, q.choices[choice], prompt=ctx,
                latency_s=sum(seconds[j] for j in span) + retrieval_s,
                retrieved=evidence(passages[i], passages[i]) if passages else [],
                cached=not any(j in fresh for j in span), choice=choice, choice_scores=scores))
        return out


def evidence(retrieved: list[Any], in_prompt: list[Any]) -> list[dict[str, Any]]:
    """Every retrieved passage (``Passage.to_dict()``), flagged with whether it fit the prompt."""
    kept = {p.chunk_id for p in in_prompt}
    return [{**p.to_dict(), "in_prompt": p.chunk_id in kept} for p in retrieved]


def _answer(q: Question, prompt: Any, g: Generation, retrieval_s: float) -> SystemAnswer:
    return SystemAnswer(q.id, g.text.strip(), prompt=prompt,
                        latency_s=g.latency_s + retrieval_s, prompt_tokens=g.prompt_tokens,
                        completion_tokens=g.completion_tokens,
                        cached=bool(getattr(g, "cached", False)))


GeneratorFor = Callable[[str, Path | None], tuple[Generator, dict[str, Any]]]


class SystemFactory:
    """Builds each column's system, sharing models, the store, retrieval and the cache.

    The keyword hooks replace the real pieces in tests: ``generator_for(model, adapter)`` returns
    a generator and its cache identity; ``store`` is an opened store, ``retriever`` anything with
    ``retrieve(questions)`` and ``describe()``; ``cache`` a generation cache.
    """

    def __init__(self, cfg: ExperimentConfig, progress: bool = True, *,
                 generator_for: GeneratorFor | None = None, store: Any = None,
                 retriever: Any = None, cache: GenerationCache | None = None) -> None:
        self.cfg, self.progress = cfg, progress
        self.cache = cache or GenerationCache(cfg.cache_path())
        self._generator_for = generator_for or self._default_generator
        self._store, self._slots = store, {}
        self._generators: dict[tuple[str, Path | None], tuple[Generator, dict[str, Any]]] = {}
        self._retriever = retriever
        self._retrieved: dict[str, list[Any]] = {}

    # --- columns -------------------------------------------------------------------------

    def build(self, column: Column, cfg: ExperimentConfig) -> ComparedSystem:
        """The system for one column (model × decoding × system)."""
        from compare.config import decoding_for

        spec = SYSTEMS.get(column.system)
        adapter = self._adapter(column.model) if spec.adapter else None
        retrieval = self.retrieval_identity() if spec.retrieval else None  # fail early
        inner, identity = self._generator(column.model, adapter)
        fmt = self._format(adapter)
        decoding = decoding_for(column.decoding, cfg)
        fingerprint = {"system": spec.name, "generator": identity, "adapter": identity.get(
            "adapter"), "prompt_format": fmt.name if fmt else "chat",
            "templates": template_versions(cfg.template), "decoding": dataclasses.asdict(
                format_decoding(decoding, fmt)), "mc_mode": cfg.mc_mode, "lang": cfg.lang}
        if retrieval is not None:
            fingerprint["retrieval"] = retrieval
            identity = {**identity, "retrieval": retrieval}
        cached = CachedGenerator(inner, self.cache, identity, cfg.batch_size)
        retrieve = self.retrieve if spec.retrieval else None
        return ComparedSystem(spec, cached, decoding, fmt, cfg, retrieve, fingerprint)

    def _adapter(self, model: str) -> Path:
        from compare.backends import check_adapter_dir

        value = self.cfg.adapter_for(model)
        path = Path(value).expanduser()
        if self.cfg.base_url and not path.is_dir():
            return Path(value)  # a served adapter name (vLLM --lora-modules NAME=PATH)
        return check_adapter_dir(path)

    def _format(self, adapter: Path | None) -> Format | None:
        if adapter is None or not (adapter / "adapter_config.json").is_file():
            return None  # no adapter, or one served by name (prompted with chat messages)
        from compare.backends import adapter_format_name
        from finetune.formats import get_format

        return get_format(adapter_format_name(adapter))

    def _generator(self, model: str, adapter: Path | None) -> tuple[Generator, dict[str, Any]]:
        key = (model, adapter)
        if key not in self._generators:
            self._generators[key] = self._generator_for(model, adapter)
        return self._generators[key]

    def _default_generator(self, model: str, adapter: Path | None
                           ) -> tuple[Generator, dict[str, Any]]:
        from compare.backends import ModelSlot, SlotGenerator, adapter_identity, server_generator

        cfg = self.cfg
        if cfg.base_url:
            served = model if adapter is None else adapter.name
            gen, identity = server_generator(cfg.base_url, served, cfg.batch_size, self.progress)
            local = adapter is not None and (adapter / "adapter_config.json").is_file()
            return gen, {**identity, "adapter": adapter_identity(adapter) if local else (
                {"served": served} if adapter is not None else None)}
        if model not in self._slots:
            from models.loading import LoadOptions

            options = LoadOptions(dtype=cfg.dtype, load_in_4bit=cfg.load_in_4bit)
            self._slots[model] = ModelSlot(model, options, cfg.batch_size, self.progress)
        gen = SlotGenerator(self._slots[model], adapter)
        return gen, gen.identity

    # --- retrieval -----------------------------------------------------------------------

    def store(self) -> Any:
        """The store, opened once (``UserError`` with how to build it when missing)."""
        if self._store is None:
            path = Path(self.cfg.store).expanduser()
            if not (path / "manifest.json").is_file():
                raise UserError(f"no store at {path}: build one with `ingest build DUMP --store "
                                f"{path}` (`python -m compare.demo` builds the default), pass "
                                "--store DIR, or drop the rag systems (--systems base,finetuned)")
            from rag.passages import open_store

            self._store = open_store(path)
        return self._store

    def retriever(self) -> Any:
        """The retriever over the store (rag's registry, with rag's defaults), built once."""
        if self._retriever is None:
            from rag.pipeline import RagConfig
            from rag.retrievers import make_retriever

            cfg = self.cfg
            opts = RagConfig(store=cfg.store, k=cfg.k, retriever=cfg.retriever, dedup=cfg.dedup,
                             progress=self.progress).retriever_options()
            self._retriever = make_retriever(cfg.retriever, self.store(), **opts)
        return self._retriever

    def retrieval_identity(self) -> dict[str, Any]:
        """Store path and content hash plus the retriever's settings (k, dedup, fusion…)."""
        return {"store": str(Path(self.cfg.store).expanduser()),
                "store_sha256": self.store().sha256(), "context_tokens": self.cfg.context_tokens,
                **self.retriever().describe()}

    def retrieve(self, texts: list[str]) -> list[list[Any]]:
        """Passages per question, memoized (rag and rag+finetuned retrieve once)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._retrieved]
        if todo:
            self._retrieved.update(zip(todo, self.retriever().retrieve(todo), strict=True))
        return [self._retrieved[t] for t in texts]

    def forget_retrievals(self) -> None:
        """Drop the memoized passages (benchmarks time retrieval afresh)."""
        self._retrieved.clear()

    def judge_generator(self, judge: str) -> CachedGenerator:
        """The LLM judge, cached like the systems: a model name (loaded in-process, sharing a
        compared model's weights when it is one), an OpenAI-compatible URL, or ``NAME@URL``."""
        name, _, url = judge.rpartition("@") if "@http" in judge else ("", "", judge)
        if url.startswith(("http://", "https://")):
            from compare.backends import server_generator

            gen, identity = server_generator(url, name or "judge", self.cfg.batch_size,
                                             self.progress)
        else:
            gen, identity = self._generator(judge, None)
        return CachedGenerator(gen, self.cache, {"role": "judge", **identity},
                               self.cfg.batch_size)

    def embedder_name(self) -> str:
        """The embedder for semantic similarity: the store's, or the default one."""
        if self.cfg.needs_store():
            return self.store().embedder_name()
        from models.sources import DEFAULT_EMBEDDER

        return DEFAULT_EMBEDDER

    def close(self) -> None:
        """Release the models, the store and the cache."""
        for slot in self._slots.values():
            slot.close()
        if self._store is not None and hasattr(self._store, "close"):
            self._store.close()
        self.cache.close()
