"""LangChain over a store: a ``BaseRetriever`` and a ready ``retriever | prompt | model | parser``.

    from rag.langchain import StoreRetriever, make_chain
    retriever = StoreRetriever.from_store("stores/sample", "hybrid", k=5)  # a path or a store
    retriever.invoke("Quem foi Tiradentes?")          # Documents (title, section, chunk_id, score)
    chain = make_chain(retriever, generator)          # generator: models.generation.Generator
    chain.invoke("Quem foi Tiradentes?")              # the answer text
    make_chain(retriever, generator, with_sources=True).invoke(q)  # {"question","docs","answer"}
    make_chain(None, RagPipeline.from_config(cfg))    # a whole pipeline: its retriever, prompt
                                                      # set, budget and adapter format

Only ``langchain-core`` is used. The prompt step is ``rag.pipeline.RagPipeline.build``: rag's own
template (``rag.prompts``) with the passages fitted to the model's window (``rag.budget``), in an
adapter's prompt format when the pipeline has one, so answers match ``rag ask``.
``GeneratorRunnable`` adapts any ``Generator`` to a LangChain ``Runnable`` whose ``batch``
makes one batched ``generate`` call. Retrieval is serialised by a lock: LangChain runs chain
branches in worker threads, and a store's index and embedder are not meant to be shared
between threads at once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from pydantic import ConfigDict, PrivateAttr

from models.generation import Decoding, Generator, Prompt
from rag.passages import Passage, StoreLike, open_store
from rag.pipeline import RagConfig, RagPipeline
from rag.prompts import render_prompt, resolve_lang
from rag.retrievers import Retriever, make_retriever

ROLES = {"system": "system", "human": "user", "ai": "assistant"}
MESSAGE_TYPES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


def passage_to_document(passage: Passage, rank: int) -> Document:
    """A LangChain ``Document``: the text, plus title/section/chunk_id/score/rank metadata."""
    return Document(page_content=passage.text, id=passage.chunk_id,
                    metadata={"title": passage.title, "section": passage.section,
                              "chunk_id": passage.chunk_id, "page_id": passage.page_id,
                              "row": passage.row, "ordinal": passage.ordinal,
                              "score": passage.score, "rank": rank, "rows": list(passage.rows)})


def document_to_passage(doc: Document) -> Passage:
    """The ``Passage`` back from a document (metadata as ``passage_to_document`` writes it)."""
    m = doc.metadata
    row = int(m.get("row", -1))
    return Passage(row=row, chunk_id=str(m.get("chunk_id", doc.id or "")),
                   page_id=int(m.get("page_id", -1)), title=str(m.get("title", "")),
                   section=str(m.get("section", "")), ordinal=int(m.get("ordinal", 0)),
                   text=doc.page_content, score=float(m.get("score", 0.0)),
                   rows=tuple(m.get("rows", [row])))


class StoreRetriever(BaseRetriever):
    """A LangChain retriever over a rag ``Retriever`` (dense, bm25 or hybrid over a store)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # rag.retrievers.Retriever
    k: int | None = None  # None: the retriever's own k
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_store(cls, store: StoreLike | str | Path, name: str = "hybrid", **opts: Any
                   ) -> StoreRetriever:
        """Build the named rag retriever over ``store`` (an opened store or a store dir;
        ``opts`` as for ``make_retriever``)."""
        if isinstance(store, (str, Path)):
            store = open_store(store)
        return cls(retriever=make_retriever(name, store, **opts))

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> list[Document]:
        rag_retriever: Retriever = self.retriever
        with self._lock:
            [passages] = rag_retriever.retrieve([query], self.k)
        return [passage_to_document(p, rank) for rank, p in enumerate(passages, start=1)]


def to_chat(value: PromptValue | str | Sequence[Any]) -> list[dict[str, str]]:
    """Chat messages (role/content dicts) from a prompt value, a string or messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages = value.to_messages() if isinstance(value, PromptValue) else list(value)
    out = []
    for m in messages:
        if isinstance(m, BaseMessage):
            out.append({"role": ROLES.get(m.type, m.type), "content": str(m.content)})
        else:
            out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


def to_prompt(value: PromptValue | str | Sequence[Any]) -> Prompt:
    """What a generator receives: a string prompt value's text as it is (an adapter's text
    format), anything else as chat messages (``to_chat``)."""
    if isinstance(value, StringPromptValue):
        return value.text
    return to_chat(value)


class GeneratorRunnable(Runnable[Any, AIMessage]):
    """A ``models.generation.Generator`` as a LangChain runnable (chat in, ``AIMessage`` out)."""

    def __init__(self, generator: Generator, decoding: Decoding = Decoding()) -> None:
        self.generator, self.decoding = generator, decoding

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
               ) -> AIMessage:
        """One answer."""
        return self.batch([input], config)[0]

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """All inputs in one batched ``generate`` call."""
        if not inputs:
            return []
        gens = self.generator.generate([to_prompt(x) for x in inputs], self.decoding)
        return [AIMessage(content=g.text.strip(),
                          response_metadata={"prompt_tokens": g.prompt_tokens,
                                             "completion_tokens": g.completion_tokens,
                                             "latency_s": g.latency_s})
                for g in gens]


def make_prompt(generator: Generator | RagPipeline | None = None, lang: str = "auto",
                template: str = "default", max_new_tokens: int = 128) -> Runnable:
    """``{"question", "docs"}`` -> the rag prompt, docs fitted to the generator's window: the
    pipeline's ``build`` (chat messages, or an adapter's text format as a string prompt). With
    a bare ``generator`` the pipeline is one over it with ``lang`` and ``template``; without any,
    the docs are not fitted."""
    pipeline = (generator if isinstance(generator, RagPipeline) or generator is None
                else RagPipeline(None, generator, RagConfig(lang=lang, template=template,
                                                            progress=False)))

    def build(inputs: dict[str, Any]) -> PromptValue:
        question = inputs["question"]
        passages = [document_to_passage(d) for d in inputs["docs"]]
        if pipeline is None:
            prompt: Prompt = render_prompt(question, passages,
                                           resolve_lang(question, lang, template), template)
        else:
            [built] = pipeline.build([question], [passages], max_new_tokens=max_new_tokens)
            prompt = built.prompt
        if isinstance(prompt, str):
            return StringPromptValue(text=prompt)
        return ChatPromptValue(messages=[MESSAGE_TYPES[m["role"]](content=m["content"])
                                         for m in prompt])

    return RunnableLambda(build, name="rag_prompt")


def make_chain(retriever: BaseRetriever | None, generator: Generator | RagPipeline,
               lang: str | None = None, template: str | None = None,
               decoding: Decoding | None = None, with_sources: bool = False) -> Runnable:
    """``retriever | prompt | model | parser``: a question in, the answer text out (or, with
    ``with_sources``, a dict with the question, the documents and the answer).

    ``generator`` is a bare ``Generator`` (prompted with ``lang``, default ``auto``, and
    ``template``, default ``default``) or a ``RagPipeline``, whose prompt set, budget and adapter
    format are used (``lang``/``template``, when given, override its config). ``retriever`` may
    be ``None`` with a pipeline that has its own store."""
    pipeline = chain_pipeline(generator, lang, template)
    decoding = pipeline.decoding(decoding)
    if retriever is None:
        if not isinstance(pipeline.retriever, Retriever):
            raise ValueError("make_chain needs a retriever, or a RagPipeline over a store")
        retriever = StoreRetriever(retriever=pipeline.retriever)
    setup = RunnableParallel(docs=retriever, question=RunnablePassthrough())
    prompt = make_prompt(pipeline, max_new_tokens=decoding.max_new_tokens)
    model = GeneratorRunnable(pipeline.generator, decoding)
    if with_sources:
        return setup | RunnablePassthrough.assign(prompt=prompt) | AnswerWithSources(model)
    return setup | prompt | model | StrOutputParser()


def chain_pipeline(generator: Generator | RagPipeline, lang: str | None = None,
                   template: str | None = None) -> RagPipeline:
    """The pipeline a chain prompts with: ``generator``'s own, or one over a bare generator;
    ``lang``/``template`` (when given) replace the pipeline config's."""
    if not isinstance(generator, RagPipeline):
        return RagPipeline(None, generator, RagConfig(lang=lang or "auto",
                                                      template=template or "default",
                                                      progress=False))
    if lang is None and template is None:
        return generator
    config = dataclasses.replace(generator.config, lang=lang or generator.config.lang,
                                 template=template or generator.config.template)
    return RagPipeline(generator.store, generator.generator, config, fmt=generator.format,
                       retriever=generator.retriever)


class AnswerWithSources(Runnable[dict[str, Any], dict[str, Any]]):
    """``{"question", "docs", "prompt"}`` -> ``{"question", "docs", "answer"}``, batched."""

    def __init__(self, model: GeneratorRunnable) -> None:
        self.model = model

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None,
               **kwargs: Any) -> dict[str, Any]:
        """One answer with its documents."""
        return self.batch([input], config)[0]

    def batch(self, inputs: list[dict[str, Any]],
              config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
        """All prompts in one batched ``generate`` call."""
        replies = self.model.batch([x["prompt"] for x in inputs])
        return [{"question": x["question"], "docs": x["docs"], "answer": str(r.content)}
                for x, r in zip(inputs, replies, strict=True)]
