"""The compared systems behind ``compare.protocol.System``, and the factory that builds them.

Every system is rag's one RAG system (``rag.pipeline.RagPipeline``: retriever + token budget +
prompt set + generator, with the adapter's prompt format when it has one): ``base`` and
``finetuned`` answer through its closed-book path, ``rag`` and ``rag+finetuned`` through its
retrieval path, so ``rag ask`` sends the very prompts compare does. Each system is a
``SystemSpec`` in ``compare.protocol.SYSTEMS``; the factory builds any spec from its two flags.
compare adds what a comparison needs around the pipeline: per-question languages (each
question's own with ``lang: auto``), multiple-choice scoring (``choose``), and a
``CachedGenerator`` as the pipeline's generator.

Sharing: one ``models.slot.ModelSlot`` per model, the adapter attached to the same weights;
retrieval results are memoized per question (``MemoizedRetrieval``), so rag and rag+finetuned
retrieve once. Every generator is wrapped in a ``CachedGenerator`` keyed by model fingerprint,
adapter sha256, load options, library versions, store sha256 + retriever settings (RAG), the
exact prompt and the decoding: a re-run regenerates nothing, and when everything is cached no
weights are loaded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare import mc
from compare.cache import COMMIT_BATCHES, CachedGenerator, GenerationCache
from compare.config import ExperimentConfig, decoding_for
from compare.protocol import SYSTEMS, SystemAnswer, SystemSpec
from core.errors import UserError
from core.questions import Question
from models.generation import Decoding, Generator

if TYPE_CHECKING:
    from compare.runner import Column
    from models.formats import Format
    from models.slot import ModelSlot
    from rag.pipeline import RagAnswer, RagPipeline

__all__ = ["SYSTEMS", "ComparedSystem", "MemoizedRetrieval", "SystemFactory", "SystemSpec",
           "evidence"]


class ComparedSystem:
    """One column's system: a ``RagPipeline`` (closed-book or retrieval path) over a cached
    generator, answering open questions and scoring multiple-choice ones."""

    def __init__(self, spec: SystemSpec, pipeline: RagPipeline, decoding: Decoding,
                 cfg: ExperimentConfig, fingerprint: dict[str, Any]) -> None:
        if spec.retrieval and pipeline.retriever is None:
            raise ValueError(f"system {spec.name!r} retrieves but got no retriever")
        self.spec, self.name, self.uses_retrieval = spec, spec.name, spec.retrieval
        self.pipeline, self.cfg = pipeline, cfg
        self.generator: CachedGenerator = pipeline.generator  # type: ignore[assignment]
        self.fmt: Format | None = pipeline.format
        self.decoding = pipeline.decoding(decoding)
        self._fingerprint = fingerprint

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this system's outputs (recorded in the run's provenance)."""
        return self._fingerprint

    def _passages(self, questions: Sequence[Question]) -> tuple[list[list[Any]] | None, float]:
        if not self.uses_retrieval:
            return None, 0.0
        texts = [q.question for q in questions]
        start = time.perf_counter()
        found = self.pipeline.retrieve(texts)
        memoized = getattr(self.pipeline.retriever, "seconds", None)
        if memoized is not None:  # what retrieving them cost, whichever system did it first
            return found, memoized(texts)
        return found, (time.perf_counter() - start) / max(len(texts), 1)

    def chat_scoring(self) -> bool:
        """Whether multiple-choice log-likelihoods are taken after the system's own chat prompt
        (``mc_prompt``: chat, or auto with a chat model) rather than lm-eval's plain text."""
        return _chat_scoring(self.cfg, self.generator)

    def _lang(self, q: Question) -> str:
        return q.lang if self.cfg.lang == "auto" else self.cfg.lang

    def answer(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        """Open answers for a batch (generation through the cache)."""
        return self._generate(questions, [q.question for q in questions])

    def _generate(self, questions: Sequence[Question], texts: list[str]) -> list[SystemAnswer]:
        """Answer ``texts`` (the questions, or their MC rendering) with the passages retrieved
        for the questions; a RAG prompt holds the passages that fit the window (top ones, in
        rank order), the evidence flags which did."""
        retrieved, retrieval_s = self._passages(questions)
        langs = [self._lang(q) for q in questions]
        if retrieved is None:
            answers = self.pipeline.answer_closed_book(texts, self.decoding, langs=langs)
        else:
            answers = self.pipeline.answer(texts, self.decoding, langs=langs, passages=retrieved)
        return [_answer(q, a, retrieval_s, self.uses_retrieval)
                for q, a in zip(questions, answers, strict=True)]

    def choose(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        """Multiple-choice answers: per-letter log-likelihood (default), per-option cloze
        log-likelihood (length-normalized), or a generated letter (``compare.mc``)."""
        if self.cfg.mc_mode == "generate":
            answers = self._generate(questions, [mc.generative_question(q) for q in questions])
            for q, a in zip(questions, answers, strict=True):
                a.choice = mc.parse_choice(a.output, q.choices)
            return answers
        cloze = self.cfg.mc_mode == "cloze"
        passages, retrieval_s = self._passages(questions)
        prompts: list[Any]
        if self.chat_scoring():
            # the system's own prompt (rag template, passages, adapter format, chat template),
            # the answer turn open: each option's letter (or text, cloze) is the answer scored
            texts = [q.question if cloze else mc.generative_question(q) for q in questions]
            built = self.pipeline.build(texts, passages, langs=[self._lang(q) for q in questions],
                                        max_new_tokens=8)
            prompts = [b.prompt for b in built]
            contexts = [self.generator.prompt_text(p) for p in prompts]
            prefix = self.fmt.answer_prefix if self.fmt is not None else ""
            requests = [mc.answer_requests(q, c, prefix, cloze)
                        for q, c in zip(questions, contexts, strict=True)]
            in_prompt = [b.fitted.passages for b in built] if passages is not None else None
        else:
            context_of = mc.cloze_context if cloze else mc.loglikelihood_context
            requests_of = mc.cloze_requests if cloze else mc.loglikelihood_requests
            contexts = [context_of(q, passages[i] if passages else None)
                        for i, q in enumerate(questions)]
            prompts, in_prompt = contexts, passages
            requests = [requests_of(q, c) for q, c in zip(questions, contexts, strict=True)]
        flat = self.generator.loglikelihood([r for rs in requests for r in rs])
        fresh, seconds, out, pos = self.generator.last_fresh, self.generator.last_seconds, [], 0
        for i, (q, sent) in enumerate(zip(questions, prompts, strict=True)):
            scores, span = flat[pos:pos + len(q.choices)], range(pos, pos + len(q.choices))
            pos += len(q.choices)
            choice = mc.argmax(mc.length_normalized(q, scores) if cloze else scores)
            out.append(SystemAnswer(
                q.id, q.choices[choice], prompt=sent,
                latency_s=sum(seconds[j] for j in span) + retrieval_s,
                retrieved=evidence(passages[i], in_prompt[i]) if passages and in_prompt else [],
                cached=not any(j in fresh for j in span), choice=choice, choice_scores=scores))
        return out


def _chat_scoring(cfg: ExperimentConfig, generator: Any) -> bool:
    """Whether multiple-choice contexts are the system's chat prompt (``mc_prompt``)."""
    if cfg.mc_prompt == "plain":
        return False
    return cfg.mc_prompt == "chat" or bool(getattr(generator, "has_chat_template", False))


def evidence(retrieved: list[Any], in_prompt: list[Any]) -> list[dict[str, Any]]:
    """Every retrieved passage (``Passage.to_dict()``), flagged with whether it fit the prompt;
    the text of those that did (as the prompt shows it) is kept for the judge and for readers."""
    kept = {p.chunk_id: p for p in in_prompt}
    return [{**p.to_dict(), "in_prompt": p.chunk_id in kept,
             **({"text": kept[p.chunk_id].text} if p.chunk_id in kept else {})}
            for p in retrieved]


def _answer(q: Question, a: RagAnswer, retrieval_s: float, retrieval: bool) -> SystemAnswer:
    g = a.generation
    return SystemAnswer(q.id, a.text, prompt=a.prompt,
                        retrieved=evidence(a.retrieved, a.passages) if retrieval else [],
                        latency_s=g.latency_s + retrieval_s, prompt_tokens=g.prompt_tokens,
                        completion_tokens=g.completion_tokens,
                        cached=bool(getattr(g, "cached", False)))


class MemoizedRetrieval:
    """A retriever shared by the RAG systems: each question's passages are retrieved once, and
    what that cost (seconds per question of its batch) is remembered, so that every system using
    them is charged the same retrieval time.

    ``make`` builds the real retriever (rag's, over the store) when first needed."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._retriever = make, None
        self._found: dict[str, list[Any]] = {}
        self._seconds: dict[str, float] = {}

    @property
    def retriever(self) -> Any:
        """The underlying retriever, built on first use."""
        if self._retriever is None:
            self._retriever = self._make()
        return self._retriever

    def retrieve(self, queries: Sequence[str]) -> list[list[Any]]:
        """Passages per question, memoized."""
        todo = [t for t in dict.fromkeys(queries) if t not in self._found]
        if todo:
            start = time.perf_counter()
            self._found.update(zip(todo, self.retriever.retrieve(todo), strict=True))
            each = (time.perf_counter() - start) / len(todo)
            self._seconds.update(dict.fromkeys(todo, each))
        return [self._found[t] for t in queries]

    def seconds(self, queries: Sequence[str]) -> float:
        """Mean retrieval seconds per question of ``queries`` (retrieved already)."""
        return sum(self._seconds.get(t, 0.0) for t in queries) / max(len(queries), 1)

    def describe(self) -> dict[str, Any]:
        """The underlying retriever's settings."""
        return self.retriever.describe()

    def forget(self) -> None:
        """Drop the memoized passages (benchmarks time retrieval afresh)."""
        self._found.clear()
        self._seconds.clear()


GeneratorFor = Callable[[str, Path | None], tuple[Generator, dict[str, Any]]]


class SystemFactory:
    """Builds each column's system, sharing models, the store, retrieval and the cache.

    The keyword hooks replace the real pieces in tests: ``generator_for(model, adapter)`` returns
    a generator and its cache identity; ``store`` is an opened store (or a store dir),
    ``retriever`` anything with ``retrieve(questions)`` and ``describe()``; ``cache`` a
    generation cache.
    """

    def __init__(self, cfg: ExperimentConfig, progress: bool = True, *,
                 generator_for: GeneratorFor | None = None, store: Any = None,
                 retriever: Any = None, cache: GenerationCache | None = None) -> None:
        self.cfg, self.progress = cfg, progress
        self.cache = cache or GenerationCache(cfg.cache_path())
        self._generator_for = generator_for or self._default_generator
        if isinstance(store, (str, Path)):
            from rag.passages import open_store

            store = open_store(store)
        self._store = store
        self._slots: dict[str, ModelSlot] = {}
        self._generators: dict[tuple[str, Path | None], tuple[Generator, dict[str, Any]]] = {}
        self._retriever = retriever
        self.retrieval = MemoizedRetrieval(self.retriever)

    # --- columns -------------------------------------------------------------------------

    def build(self, column: Column, cfg: ExperimentConfig) -> ComparedSystem:
        """The system for one column (model × decoding × system)."""
        from rag.pipeline import RagPipeline

        spec = SYSTEMS.get(column.system)
        adapter = self._adapter(column.model) if spec.adapter else None
        retrieval = self.retrieval_identity() if spec.retrieval else None  # fail early
        inner, identity = self._generator(column.model, adapter)
        decoding = decoding_for(column.decoding, cfg)
        rag_cfg = cfg.rag_config(column.model, str(adapter) if adapter else None,
                                 decoding.max_new_tokens, self.progress)
        cache_identity = identity if retrieval is None else {**identity, "retrieval": retrieval}
        cached = CachedGenerator(inner, self.cache, cache_identity,
                                 cfg.batch_size * COMMIT_BATCHES)
        pipeline = RagPipeline(None, cached, rag_cfg, fmt=self._format(adapter),
                               retriever=self.retrieval if spec.retrieval else None)
        fmt = pipeline.format
        mismatch = pipeline.check_adapter_prompt(adapter)
        fingerprint = {"system": spec.name, "generator": identity, "adapter": identity.get(
            "adapter"), "prompt_format": fmt.name if fmt else "chat",
            "templates": pipeline.template_versions(), "decoding": dataclasses.asdict(
                pipeline.decoding(decoding)), "mc_mode": cfg.mc_mode, "lang": cfg.lang,
            "prompt_mismatch": mismatch}
        if retrieval is not None:
            fingerprint["retrieval"] = retrieval
        return ComparedSystem(spec, pipeline, decoding, cfg, fingerprint)

    def _adapter(self, model: str) -> Path:
        from models.adapters import check_adapter_dir

        value = self.cfg.adapter_for(model)
        path = Path(value).expanduser()
        if self.cfg.base_url and not path.is_dir():
            return Path(value)  # a served adapter name (vLLM --lora-modules NAME=PATH)
        return check_adapter_dir(path, hint="or drop the finetuned systems (--systems base,rag)")

    def _format(self, adapter: Path | None) -> Format | None:
        if adapter is None or not (adapter / "adapter_config.json").is_file():
            return None  # no adapter, or one served by name (prompted with chat messages)
        from models.adapters import prompt_format_of

        return prompt_format_of(adapter)

    def _generator(self, model: str, adapter: Path | None) -> tuple[Generator, dict[str, Any]]:
        key = (model, adapter)
        if key not in self._generators:
            self._generators[key] = self._generator_for(model, adapter)
        return self._generators[key]

    def _default_generator(self, model: str, adapter: Path | None
                           ) -> tuple[Generator, dict[str, Any]]:
        """A model slot's generator and its identity; with ``base_url``, the server's client,
        keyed by the model card the server reports for the served name (``served``: id, root,
        owner…, ``models.gen_openai.served_model_identity``) besides the name and URL. A server
        that cannot report it gets a one-off key (nothing cached is reused) and a warning."""
        from models.adapters import adapter_identity
        from models.backends import server_generator
        from models.slot import ModelSlot, SlotGenerator

        cfg = self.cfg
        if cfg.base_url:
            import logging
            import uuid

            from models.gen_openai import ServerRefused, ServerUnreachable, served_model_identity

            served = model if adapter is None else adapter.name
            client, identity = server_generator(cfg.base_url, served, cfg.batch_size,
                                                self.progress)
            card: dict[str, Any]
            try:
                card = served_model_identity(cfg.base_url, served)
            except (ServerRefused, ServerUnreachable) as exc:
                logging.getLogger(__name__).warning(
                    "the server at %s cannot say which model it serves as %s (%s); its answers "
                    "will not be reused from the cache", cfg.base_url, served, exc)
                card = {"id": None, "unverified": str(exc)[:300], "nonce": uuid.uuid4().hex}
            about: dict[str, Any] | None = None
            if adapter is not None:
                local = (adapter / "adapter_config.json").is_file()
                about = adapter_identity(adapter) if local else {"served": served}
            return client, {**identity, "served": card, "adapter": about}
        if model not in self._slots:
            from models.loading import LoadOptions

            options = LoadOptions(dtype=cfg.dtype, load_in_4bit=cfg.load_in_4bit)
            self._slots[model] = ModelSlot(model, options, cfg.batch_size, self.progress,
                                           backend=cfg.backend, reproducible=cfg.reproducible)
        gen = SlotGenerator(self._slots[model], adapter)
        return gen, gen.identity

    # --- retrieval -----------------------------------------------------------------------

    def store(self) -> Any:
        """The store, opened once (``UserError`` with how to build it when missing)."""
        if self._store is None:
            path = Path(self.cfg.store).expanduser()
            if not (path / "manifest.json").is_file():
                raise UserError(f"no store at {path}: build one with `ingest build DUMP --store "
                                f"{path}` (`python -m demo` builds the default), pass "
                                "--store DIR, or drop the rag systems (--systems base,finetuned)")
            from rag.passages import open_store

            self._store = open_store(path)
        return self._store

    def retriever(self) -> Any:
        """The retriever over the store (rag's registry, with the experiment's options), built
        once."""
        if self._retriever is None:
            from rag.retrievers import make_retriever

            opts = self.cfg.rag_config(progress=self.progress).retriever_options()
            self._retriever = make_retriever(self.cfg.retriever, self.store(), **opts)
        return self._retriever

    def retrieval_identity(self) -> dict[str, Any]:
        """Store path and content hash plus the retriever's settings (k, dedup, fusion…)."""
        return {"store": str(Path(self.cfg.store).expanduser()),
                "store_sha256": self.store().sha256(), "context_tokens": self.cfg.context_tokens,
                **self.retriever().describe()}

    def retrieve(self, texts: list[str]) -> list[list[Any]]:
        """Passages per question, memoized (rag and rag+finetuned retrieve once)."""
        return self.retrieval.retrieve(texts)

    def forget_retrievals(self) -> None:
        """Drop the memoized passages (benchmarks time retrieval afresh)."""
        self.retrieval.forget()

    def judge_generator(self, judge: str) -> CachedGenerator:
        """The LLM judge, cached like the systems: a model name (loaded in-process, sharing a
        compared model's weights when it is one, keyed by that generator's identity), an
        OpenAI-compatible URL (judging with the one model the server serves), or ``NAME@URL``.

        A served judge is keyed by the model card the server reports for it (``GET /v1/models``:
        id, owner, root…; ``models.gen_openai.served_model_identity``) as well as its name and
        URL, so that other weights behind the same name never answer from the cache; a server
        that cannot report it (no model list, no answer) gets a one-off key, so nothing cached
        is reused, and a warning. The columns whose model is the judge (same name, weights or
        identity) are left in ``self.judge_same_as`` for the judge's results."""
        import logging
        import uuid

        from compare.judge import same_as_model_under_test
        from compare.runner import columns_for

        name, _, url = judge.rpartition("@") if "@http" in judge else ("", "", judge)
        gen: Generator
        if url.startswith(("http://", "https://")):
            from models.backends import server_generator
            from models.gen_openai import ServerRefused, ServerUnreachable, served_model_identity

            served: dict[str, Any]
            try:
                served = served_model_identity(url, name or None)
            except (ServerRefused, ServerUnreachable) as exc:
                logging.getLogger(__name__).warning(
                    "the judge server cannot say which model it serves (%s); the judge's answers "
                    "will not be reused from the cache", exc)
                served = {"id": None, "unverified": str(exc)[:300], "nonce": uuid.uuid4().hex}
            gen, identity = server_generator(url, name or served["id"] or "judge",
                                             self.cfg.batch_size, self.progress)
            identity = {**identity, "served": served}
        else:
            from models.sources import canonical_model_name

            judge_model = canonical_model_name(judge)
            if judge_model not in self._slots:  # not a compared model: its own backend
                from models.loading import LoadOptions
                from models.slot import ModelSlot

                options = LoadOptions(dtype=self.cfg.dtype, load_in_4bit=self.cfg.load_in_4bit)
                self._slots[judge_model] = ModelSlot(judge_model, options, self.cfg.batch_size,
                                                     self.progress,
                                                     backend=self.cfg.judge_backend,
                                                     reproducible=self.cfg.reproducible)
            gen, identity = self._generator(judge_model, None)
        models = {c.label: c.model for c in columns_for(self.cfg)}
        known = {m: self._generator(m, None)[1] for m in dict.fromkeys(models.values())}
        self.judge_same_as: list[str] = same_as_model_under_test(
            identity, {label: (m, known[m]) for label, m in models.items()})
        return CachedGenerator(gen, self.cache, {"role": "judge", **identity},
                               self.cfg.batch_size * COMMIT_BATCHES)

    def embedder_name(self) -> str:
        """The embedder for semantic similarity: the store's, or the default one."""
        if self.cfg.needs_store():
            return self.store().embedder_name()
        from models.sources import DEFAULT_EMBEDDER

        return DEFAULT_EMBEDDER

    def prefetch_retrieval(self, questions: Sequence[Question]) -> None:
        """Retrieve every question's passages before any model answers (the RAG columns then
        read them from ``retrieval``), and let the store's embedder go: its weights (~0.7 GB for
        the default e5-small in fp32) are not held beside the generator's. The semantic
        similarity pass loads it again once the generators are released."""
        if not any(SYSTEMS.get(name).retrieval for name in self.cfg.systems):
            return
        self.retrieval.retrieve([q.question for q in questions])
        store = self.store()
        if hasattr(store, "release_embedder"):
            store.release_embedder()
        from models.embedders import release_embedders

        release_embedders()

    def release_models(self, keep: str | None = None) -> None:
        """Drop the weights of every model but ``keep`` (the judge, still to run) once the
        columns are answered, so the scoring passes do not add to their memory (a model used
        again reloads)."""
        from models.sources import canonical_model_name

        kept = canonical_model_name(keep) if keep and "@" not in keep else None
        for name, slot in self._slots.items():
            if name != kept:
                slot.close()

    def close(self) -> None:
        """Release the models, the store and the cache."""
        for slot in self._slots.values():
            slot.close()
        if self._store is not None and hasattr(self._store, "close"):
            self._store.close()
        self.cache.close()
