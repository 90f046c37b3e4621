"""The RAG system: retriever + token budget + prompt set + generator (+ an adapter's format).

    pipe = RagPipeline.from_config(RagConfig(k=5))          # default store and model
    [answer] = pipe.answer(["Quem foi Tiradentes?"])
    answer.text, [p.title for p in answer.passages]
    pipe.answer_closed_book(["Quem foi Tiradentes?"])      # the same prompt set, no passages

One object answers every way the project asks: ``rag ask`` (``rag.cli``), LangChain's chain
(``rag.langchain.make_chain``) and compare's four systems (``base``/``finetuned`` take the
closed-book path, ``rag``/``rag+finetuned`` the retrieval path). Questions are answered in their
own language (``lang="auto"``) or in the languages a caller passes, from numbered passages the
model cites as [n] (``rag.prompts``: a template and its closed-book companion), within the
model's window (``rag.budget``). Generation is one batched call through a
``models.generation.Generator`` (in-process transformers, optionally with a LoRA adapter, or an
OpenAI-compatible server). With an adapter, the template's chat messages are rendered in the
prompt format the adapter was trained on (``models.formats.Format.adapt``) and the format's stop
strings end each answer; ``RagAnswer.prompt`` is the prompt exactly as sent to the generator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.errors import UserError
from core.paths import default_store_dir, sample_dump
from models.formats import Format
from models.generation import Decoding, Generation, Generator, Prompt
from rag.budget import Fitted, context_budget, fit_passages
from rag.passages import DEDUP_MODES, Passage, StoreLike, open_store
from rag.prompts import is_refusal, load_template, render_prompt, resolve_lang, template_version
from rag.retrievers import RETRIEVERS, check_k, check_queries, make_retriever

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class RagConfig:
    """Everything that shapes a RAG answer (loadable from YAML via ``core.config``)."""

    store: str | None = None  # None: core.paths.default_store_dir()
    model: str | None = None  # None: models.sources.DEFAULT_GENERATOR
    adapter: str | None = None  # a LoRA adapter dir: prompts take its trained format
    k: int = 5
    retriever: str = "hybrid"
    dedup: str = "page"
    template: str = "default"  # a rag template name (rag/templates) or YAML path
    lang: str = "auto"
    max_new_tokens: int = 128
    context_tokens: int | None = None  # None: what the model's window leaves
    rrf_k: int = 60
    title_boost: bool = True
    reranker: str | None = None  # a local cross-encoder folder; None: no reranking
    base_url: str | None = None  # an OpenAI-compatible server instead of in-process
    load_in_4bit: bool = False
    backend: str = "auto"  # auto (llama.cpp for a GGUF model on a CPU) | transformers | llamacpp
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        check_k(self.k)
        RETRIEVERS.get(self.retriever)
        if self.dedup not in DEDUP_MODES:
            raise UserError(f"unknown dedup mode {self.dedup!r}; use {', '.join(DEDUP_MODES)}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        from models.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.context_tokens is not None and self.context_tokens < 1:
            raise UserError(f"context_tokens must be at least 1, not {self.context_tokens}")
        template = load_template(self.template)
        if self.lang != "auto":
            template.lang(self.lang)

    def model_name(self) -> str:
        """The generator to load: ``model`` (a bundled model's former name read as its current
        one), or the default generator."""
        from models.sources import DEFAULT_GENERATOR, canonical_model_name

        return canonical_model_name(self.model) if self.model else DEFAULT_GENERATOR

    def retriever_options(self) -> dict[str, Any]:
        """The ``make_retriever`` options this config implies."""
        opts: dict[str, Any] = {"k": self.k, "dedup": self.dedup, "reranker": self.reranker,
                                "progress": self.progress}
        if self.retriever == "hybrid":
            opts.update(rrf_k=self.rrf_k, title_boost=self.title_boost)
        return opts


class PassageRetriever(Protocol):
    """What the pipeline retrieves with: ``rag.retrievers.Retriever``, or a wrapper of one."""

    def retrieve(self, queries: Sequence[str]) -> list[list[Passage]]:
        """Per query, the passages best first."""
        ...

    def describe(self) -> dict[str, Any]:
        """What identifies the retrieval's output."""
        ...


@dataclass
class RagAnswer:
    """One answer with the passages its prompt held (numbered [1..n] in that order)."""

    question: str
    text: str
    passages: list[Passage]
    prompt: Prompt  # exactly as sent to the generator (after the adapter's format)
    generation: Generation
    lang: str
    template_version: str = ""
    retrieved: list[Passage] = field(default_factory=list)  # before the token budget
    prompt_format: str | None = None  # the adapter's prompt format; None: the chat messages

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
                "prompt_format": self.prompt_format, "prompt": self.prompt,
                "generation": {"prompt_tokens": g.prompt_tokens,
                               "completion_tokens": g.completion_tokens,
                               "latency_s": round(g.latency_s, 4)}}


@dataclass(frozen=True)
class BuiltPrompt:
    """One question's prompt: as sent, as the template's chat messages, and its passages."""

    prompt: Prompt  # what the generator receives (the messages in the adapter's format)
    messages: Messages  # the template's chat messages
    fitted: Fitted  # the passages that fit the window (none for a closed-book prompt)
    lang: str


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


def prompt_mismatch(trained: dict[str, Any] | None, template: str) -> str | None:
    """Why an adapter trained on the prompt ``trained`` (``models.adapters.trained_prompt``)
    does not see that prompt when answered with ``template``, or ``None`` when it does (same
    template, same versions of it and of its closed-book companion)."""
    if trained is None:
        return (f"the adapter was trained on bare instructions (one user turn), but is asked "
                f"with the {template!r} template's system and user messages")
    if trained.get("template") != template:
        return (f"the adapter was trained with the {trained.get('template')!r} prompt "
                f"template, but is asked with {template!r}")
    now = {"template_version": template_version(template),
           "closed_book_version": template_version(template, closed_book=True)}
    changed = [f"{k} {trained.get(k)!r} -> {v!r}" for k, v in now.items() if trained.get(k) != v]
    if changed:
        return (f"the {template!r} template changed since the adapter was trained "
                f"({'; '.join(changed)})")
    return None


class RagPipeline:
    """Retriever + prompt set + token budget + generator, answering batches of questions.

    ``store`` is an opened store, a store dir, or ``None`` for a pipeline that only answers
    closed-book or retrieves through ``retriever`` (anything with ``retrieve`` and ``describe``,
    e.g. a memoizing wrapper shared by several pipelines). ``fmt`` is the adapter's prompt
    format (``None``: the chat messages go to the generator as they are).
    """

    def __init__(self, store: StoreLike | str | Path | None, generator: Generator,
                 config: RagConfig | None = None, *, fmt: Format | None = None,
                 retriever: PassageRetriever | None = None) -> None:
        self.store = open_store(store) if isinstance(store, (str, Path)) else store
        self.generator, self.config, self.format = generator, config or RagConfig(), fmt
        self.prompt_mismatch: str | None = None  # set by ``check_adapter_prompt``
        if retriever is None and self.store is not None:
            retriever = make_retriever(self.config.retriever, self.store,
                                       **self.config.retriever_options())
        self.retriever = retriever

    @classmethod
    def from_config(cls, config: RagConfig) -> RagPipeline:
        """Open the store and load the generator (and adapter, with its format) the config
        names."""
        from models.backends import make_generator
        from models.loading import LoadOptions

        fmt = None
        if config.adapter is not None and not config.base_url:
            from models.adapters import check_adapter_dir, prompt_format_of

            fmt = prompt_format_of(check_adapter_dir(config.adapter))
        store = open_rag_store(config.store)
        generator = make_generator(config.model_name(), adapter=config.adapter,
                                   options=LoadOptions(load_in_4bit=config.load_in_4bit),
                                   batch_size=config.batch_size, base_url=config.base_url,
                                   progress=config.progress, backend=config.backend)
        pipeline = cls(store, generator, config, fmt=fmt)
        if config.adapter is not None and not config.base_url:
            pipeline.check_adapter_prompt(config.adapter)
        return pipeline

    def check_adapter_prompt(self, adapter: str | Path | None) -> str | None:
        """Compare the prompt ``adapter`` was trained on with the one this pipeline sends; a
        mismatch is logged as a warning, kept in ``prompt_mismatch`` and returned."""
        if adapter is None or not (Path(adapter) / "adapter_config.json").is_file():
            return None
        from models.adapters import trained_prompt

        self.prompt_mismatch = prompt_mismatch(trained_prompt(adapter), self.config.template)
        if self.prompt_mismatch:
            log.warning("prompt mismatch for adapter %s: %s; its answers are not evaluated the "
                        "way it was trained (retrain with `finetune train --prompt-template "
                        "%s`, or evaluate with its template)", adapter, self.prompt_mismatch,
                        self.config.template)
        return self.prompt_mismatch

    # --- the steps -----------------------------------------------------------------------

    def retrieve(self, questions: Sequence[str]) -> list[list[Passage]]:
        """Up to ``k`` passages per question, best first."""
        if self.retriever is None:
            raise UserError("this pipeline has no store to retrieve from; pass one (--store)")
        return self.retriever.retrieve(list(questions))

    def languages(self, questions: Sequence[str]) -> list[str]:
        """The template language each question is answered in."""
        return [resolve_lang(q, self.config.lang, self.config.template) for q in questions]

    def decoding(self, decoding: Decoding | None = None) -> Decoding:
        """``decoding`` (default: the config's ``max_new_tokens``) plus the adapter format's stop
        strings."""
        decoding = decoding or Decoding(max_new_tokens=self.config.max_new_tokens)
        return self.format.with_stops(decoding) if self.format is not None else decoding

    def build(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]] | None, *,
              langs: Sequence[str] | None = None, max_new_tokens: int | None = None
              ) -> list[BuiltPrompt]:
        """Each question's prompt, its passages fitted to the window (``passages=None``: the
        closed-book prompt). ``langs`` overrides the config's language per question;
        ``max_new_tokens`` (default: the config's) is what the budget leaves for the answer."""
        check_queries(questions)
        if passages is not None and len(passages) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        langs = self._langs(questions, langs)
        new_tokens = max_new_tokens or self.config.max_new_tokens
        budgets = ([0] * len(questions) if passages is None
                   else self._budgets(questions, new_tokens, langs))
        out = []
        for i, (q, lang) in enumerate(zip(questions, langs, strict=True)):
            if passages is None:
                fit = Fitted([], 0, 0, 0, False)
            else:
                fit = fit_passages(passages[i], budgets[i], self.generator.count_tokens, lang,
                                   self.config.template)
                if fit.dropped or fit.truncated:
                    log.info("question %d: %d passage(s) dropped, truncated=%s (budget %d "
                             "tokens)", i + 1, fit.dropped, fit.truncated, fit.budget)
            messages = render_prompt(q, None if passages is None else fit.passages, lang,
                                     self.config.template)
            out.append(BuiltPrompt(self.in_format(messages), messages, fit, lang))
        return out

    def prompts(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]] | None, *,
                langs: Sequence[str] | None = None, max_new_tokens: int | None = None
                ) -> list[Prompt]:
        """The prompts as sent to the generator (``build``'s, without the bookkeeping)."""
        return [b.prompt for b in self.build(questions, passages, langs=langs,
                                             max_new_tokens=max_new_tokens)]

    def in_format(self, messages: Messages) -> Prompt:
        """Chat messages as the generator receives them: in the adapter's format, if any."""
        return messages if self.format is None else self.format.adapt(messages)

    # --- answering -----------------------------------------------------------------------

    def answer(self, questions: Sequence[str], decoding: Decoding | None = None, *,
               langs: Sequence[str] | None = None,
               passages: Sequence[Sequence[Passage]] | None = None) -> list[RagAnswer]:
        """Retrieve (unless ``passages`` are given), build the prompts and generate for all
        ``questions`` in one batched call."""
        decoding = self.decoding(decoding)
        questions = list(questions)
        check_queries(questions)
        langs = self._langs(questions, langs)
        if passages is None:
            self._budgets(questions, decoding.max_new_tokens, langs)  # fail before any work
            passages = self.retrieve(questions)
        built = self.build(questions, passages, langs=langs,
                           max_new_tokens=decoding.max_new_tokens)
        return self._generate(questions, built, passages, decoding)

    def answer_closed_book(self, questions: Sequence[str], decoding: Decoding | None = None, *,
                           langs: Sequence[str] | None = None) -> list[RagAnswer]:
        """Answer without passages, with the template's closed-book companion."""
        decoding = self.decoding(decoding)
        questions = list(questions)
        built = self.build(questions, None, langs=langs, max_new_tokens=decoding.max_new_tokens)
        return self._generate(questions, built, None, decoding)

    def _generate(self, questions: list[str], built: list[BuiltPrompt],
                  passages: Sequence[Sequence[Passage]] | None, decoding: Decoding
                  ) -> list[RagAnswer]:
        generations = self.generator.generate([b.prompt for b in built], decoding)
        version = template_version(self.config.template, closed_book=passages is None)
        fmt = self.format.name if self.format is not None else None
        return [RagAnswer(question=q, text=g.text.strip(), passages=b.fitted.passages,
                          prompt=b.prompt, generation=g, lang=b.lang, template_version=version,
                          retrieved=list(passages[i]) if passages is not None else [],
                          prompt_format=fmt)
                for i, (q, b, g) in enumerate(zip(questions, built, generations, strict=True))]

    def _langs(self, questions: Sequence[str], langs: Sequence[str] | None) -> list[str]:
        if langs is None:
            return self.languages(questions)
        if len(langs) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(langs)} languages")
        return list(langs)

    def _budgets(self, questions: Sequence[str], max_new_tokens: int, langs: Sequence[str]
                 ) -> list[int]:
        """Context tokens per question; ``UserError`` for a question too long for the window."""
        gen, cfg = self.generator, self.config
        return [context_budget(q, gen.count_tokens, gen.context_window, max_new_tokens, lang,
                               cfg.template, cfg.context_tokens)
                for q, lang in zip(questions, langs, strict=True)]

    # --- identity ------------------------------------------------------------------------

    def template_versions(self) -> dict[str, str]:
        """The versions of the RAG template and its closed-book companion."""
        return {"rag": template_version(self.config.template),
                "closed_book": template_version(self.config.template, closed_book=True)}

    def describe(self) -> dict[str, Any]:
        """What identifies this pipeline's outputs (retrieval, store, prompts, generator)."""
        out: dict[str, Any] = {
            "retrieval": self.retriever.describe() if self.retriever is not None else None,
            "template": self.config.template,
            "template_version": template_version(self.config.template),
            "closed_book_version": template_version(self.config.template, closed_book=True),
            "prompt_format": self.format.name if self.format is not None else None,
            "generator": getattr(self.generator, "name", type(self.generator).__name__),
            "lang": self.config.lang, "max_new_tokens": self.config.max_new_tokens,
            "context_tokens": self.config.context_tokens}
        if self.store is not None:
            out["store_sha256"] = self.store.sha256()
        return out


__all__ = ["BuiltPrompt", "PassageRetriever", "RagAnswer", "RagConfig", "RagPipeline",
           "open_rag_store"]
