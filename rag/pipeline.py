"""Retrieval-augmented answers: retrieve, fit the context to the window, generate in batches.

    pipe = RagPipeline.from_config(RagConfig(k=5))          # default store and model
    [answer] = pipe.answer(["Quem foi Tiradentes?"])
    answer.text, [p.title for p in answer.passages]

Questions are answered in their own language (``lang="auto"``), from numbered passages the model
cites as [n] (``rag.prompts``), within the model's window (``rag.budget``). Generation is one
batched call through a ``models.generation.Generator`` (in-process transformers, optionally
with a LoRA adapter, or an OpenAI-compatible server). With an adapter the prompt is the same
chat messages as without: the adapter's training format is not applied here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.paths import default_store_dir, sample_dump
from models.generation import Decoding, Generation, Generator
from models.sources import DEFAULT_GENERATOR
from rag.budget import Fitted, context_budget, fit_passages
from rag.passages import DEDUP_MODES, Passage, StoreLike, open_store
from rag.prompts import is_refusal, load_template, render_prompt, resolve_lang, template_version
from rag.retrievers import RETRIEVERS, Retriever, check_k, check_queries, make_retriever

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RagConfig:
    """Everything that shapes a RAG answer (loadable from YAML via ``core.config``)."""

    store: str | None = None  # None: core.paths.default_store_dir()
    model: str = DEFAULT_GENERATOR
    adapter: str | None = None
    k: int = 5
    retriever: str = "hybrid"
    dedup: str = "page"
    template: str = "default"
    lang: str = "auto"
    max_new_tokens: int = 128
    context_tokens: int | None = None  # None: what the model's window leaves
    rrf_k: int = 60
    title_boost: bool = True
    reranker: str | None = None  # a local cross-encoder folder; None: no reranking
    base_url: str | None = None  # an OpenAI-compatible server instead of in-process
    load_in_4bit: bool = False
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        check_k(self.k)
        RETRIEVERS.get(self.retriever)
        if self.dedup not in DEDUP_MODES:
            raise UserError(f"unknown dedup mode {self.dedup!r}; use {', '.join(DEDUP_MODES)}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        template = load_template(self.template)
        if self.lang != "auto":
            template.lang(self.lang)

    def retriever_options(self) -> dict[str, Any]:
        """The ``make_retriever`` options this config implies."""
        opts: dict[str, Any] = {"k": self.k, "dedup": self.dedup, "reranker": self.reranker,
                                "progress": self.progress}
        if self.retriever == "hybrid":
            opts.update(rrf_k=self.rrf_k, title_boost=self.title_boost)
        return opts


@dataclass
class RagAnswer:
    """One answer with the passages its prompt held (numbered [1..n] in that order)."""

    question: str
    text: str
    passages: list[Passage]
    prompt: list[dict[str, str]]
    generation: Generation
    lang: str
    template_version: str = ""
    retrieved: list[Passage] = field(default_factory=list)  # before the token budget

    @property
    def refused(self) -> bool:
        """Whether the answer is the template's "context lacks the answer" sentence."""
        return is_refusal(self.text)

    @property
    def citations(self) -> list[int]:
        """The passage numbers the answer cites as [n] (valid ones, in order, once each)."""
        found = (int(n) for n in re.findall(r"\[(\d+)\]", self.text))
        return list(dict.fromkeys(n for n in found if 1 <= n <= len(self.passages)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``rag ask --json``)."""
        g = self.generation
        return {"question": self.question, "answer": self.text, "lang": self.lang,
                "template_version": self.template_version, "refused": self.refused,
                "citations": self.citations,
                "sources": [{"n": i, **p.to_dict()} for i, p in enumerate(self.passages, 1)],
                "dropped_by_budget": len(self.retrieved) - len(self.passages),
                "prompt": self.prompt,
                "generation": {"prompt_tokens": g.prompt_tokens,
                               "completion_tokens": g.completion_tokens,
                               "latency_s": round(g.latency_s, 4)}}


def open_rag_store(path: str | Path | None) -> StoreLike:
    """The store at ``path``; with ``None`` the default store, or how to build it."""
    if path is None:
        default = default_store_dir()
        if not (default / "manifest.json").is_file():
            dump = sample_dump().relative_to(sample_dump().parents[2])
            raise UserError(f"no store at {default} (the default); build it with `ingest build "
                            f"{dump} --store {default}` or `make demo`, or pass --store DIR")
        path = default
    return open_store(path)


class RagPipeline:
    """Retriever + prompt template + token budget + generator, answering batches of questions."""

    def __init__(self, store: StoreLike, generator: Generator, config: RagConfig) -> None:
        self.store, self.generator, self.config = store, generator, config
        self.retriever: Retriever = make_retriever(config.retriever, store,
                                                   **config.retriever_options())

    @classmethod
    def from_config(cls, config: RagConfig) -> RagPipeline:
        """Open the store and load the generator the config names."""
        from models.generation import make_generator
        from models.loading import LoadOptions

        store = open_rag_store(config.store)
        generator = make_generator(config.model, adapter=config.adapter,
                                   options=LoadOptions(load_in_4bit=config.load_in_4bit),
                                   batch_size=config.batch_size, base_url=config.base_url,
                                   progress=config.progress)
        return cls(store, generator, config)

    def retrieve(self, questions: Sequence[str]) -> list[list[Passage]]:
        """Up to ``k`` passages per question, best first."""
        return self.retriever.retrieve(list(questions))

    def prompts(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]] | None
                ) -> list[list[dict[str, str]]]:
        """Chat prompts with each question's passages fitted to the window (None: closed book)."""
        return [p for p, _, _ in self._build(questions, passages, self.config.max_new_tokens)]

    def answer(self, questions: Sequence[str], decoding: Decoding | None = None
               ) -> list[RagAnswer]:
        """Retrieve, build prompts and generate for all ``questions`` in one batched call."""
        decoding = decoding or Decoding(max_new_tokens=self.config.max_new_tokens)
        questions = list(questions)
        self._budgets(questions, decoding.max_new_tokens, closed_book=False)  # fail before work
        retrieved = self.retrieve(questions)
        built = self._build(questions, retrieved, decoding.max_new_tokens)
        generations = self.generator.generate([p for p, _, _ in built], decoding)
        version = template_version(self.config.template)
        return [RagAnswer(question=q, text=g.text.strip(), passages=fit.passages, prompt=prompt,
                          generation=g, lang=lang, template_version=version, retrieved=list(r))
                for q, r, (prompt, fit, lang), g in zip(questions, retrieved, built, generations,
                                                        strict=True)]

    def languages(self, questions: Sequence[str]) -> list[str]:
        """The template language each question is answered in."""
        return [resolve_lang(q, self.config.lang, self.config.template) for q in questions]

    def _budgets(self, questions: Sequence[str], max_new_tokens: int, closed_book: bool,
                 langs: Sequence[str] | None = None) -> list[int]:
        """Context tokens per question; ``UserError`` for empty or too long questions."""
        check_queries(questions)
        gen, cfg = self.generator, self.config
        langs = langs or self.languages(questions)
        return [context_budget(q, gen.count_tokens, gen.context_window, max_new_tokens, lang,
                               cfg.template, cfg.context_tokens, closed_book)
                for q, lang in zip(questions, langs, strict=True)]

    def _build(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]] | None,
               max_new_tokens: int) -> list[tuple[list[dict[str, str]], Fitted, str]]:
        """(prompt, fitted passages, language) per question."""
        closed = passages is None
        if not closed and len(passages) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        check_queries(questions)
        langs = self.languages(questions)
        budgets = self._budgets(questions, max_new_tokens, closed, langs)
        out = []
        for i, (q, lang) in enumerate(zip(questions, langs, strict=True)):
            if closed:
                fit = Fitted([], budgets[i], 0, 0, False)
            else:
                fit = fit_passages(passages[i], budgets[i], self.generator.count_tokens, lang,
                                   self.config.template)
                if fit.dropped or fit.truncated:
                    log.info("question %d: %d passage(s) dropped, truncated=%s (budget %d "
                             "tokens)", i + 1, fit.dropped, fit.truncated, fit.budget)
            prompt = render_prompt(q, None if closed else fit.passages, lang,
                                   self.config.template)
            out.append((prompt, fit, lang))
        return out

    def describe(self) -> dict[str, Any]:
        """What identifies this pipeline's outputs (for ``compare`` fingerprints)."""
        store_sha = self.store.sha256()
        return {"retrieval": self.retriever.describe(), "store_sha256": store_sha,
                "template": self.config.template,
                "template_version": template_version(self.config.template),
                "closed_book_version": template_version(self.config.template, closed_book=True),
                "generator": getattr(self.generator, "name", type(self.generator).__name__),
                "lang": self.config.lang, "max_new_tokens": self.config.max_new_tokens,
                "context_tokens": self.config.context_tokens}


__all__ = ["RagAnswer", "RagConfig", "RagPipeline", "open_rag_store"]
