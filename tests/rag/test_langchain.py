"""rag.langchain: the BaseRetriever over a store and the ready chain, with a canned generator."""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever

from rag.langchain import (
    GeneratorRunnable,
    StoreRetriever,
    document_to_passage,
    make_chain,
    passage_to_document,
    to_chat,
)
from rag.passages import Passage


def test_retriever_returns_documents_with_metadata(history_store) -> None:
    retriever = StoreRetriever.from_store(history_store, "bm25", k=2, progress=False)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("Lei Áurea escravidão")
    assert all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.metadata["title"] == "Lei Áurea" and top.metadata["rank"] == 1
    assert {"section", "chunk_id", "score", "page_id"} <= set(top.metadata)
    assert top.page_content.startswith("A Lei Áurea") and top.id == top.metadata["chunk_id"]
    assert len(retriever.batch(["Tiradentes", "Pedro I imperador"])) == 2


def test_document_round_trip() -> None:
    p = Passage(4, "3-1", 3, "Lei Áurea", "História", 1, "texto", 0.25, (4, 5))
    assert document_to_passage(passage_to_document(p, 1)) == p


def test_chain_answers_from_retrieved_context(history_store, canned) -> None:
    gen = canned(lambda prompt: "resposta" if "[1] Tiradentes" in prompt[1]["content"] else "?")
    retriever = StoreRetriever.from_store(history_store, "hybrid", k=2, progress=False)
    chain = make_chain(retriever, gen)
    assert chain.invoke("Quem foi Tiradentes?") == "resposta"
    [prompt] = gen.calls[-1]
    assert prompt[0]["role"] == "system" and "português" in prompt[0]["content"]
    assert prompt[1]["content"].endswith("Pergunta: Quem foi Tiradentes?")


def test_chain_batch_is_one_generate_call_and_sources(history_store, canned) -> None:
    gen = canned("ok [1]")
    retriever = StoreRetriever.from_store(history_store, "bm25", k=1, progress=False)
    out = make_chain(retriever, gen, with_sources=True).batch(["Quem foi Tiradentes?",
                                                               "Who signed the Lei Áurea?"])
    assert len(gen.calls) == 1 and len(gen.calls[0]) == 2
    assert out[0]["answer"] == "ok [1]" and out[0]["question"] == "Quem foi Tiradentes?"
    assert out[1]["docs"][0].metadata["title"] == "Lei Áurea"
    assert gen.calls[0][1][1]["content"].startswith("Context:")  # English question, en template


def test_generator_runnable_and_message_conversion(canned) -> None:
    gen = canned(lambda p: f"{len(p)} msgs")
    model = GeneratorRunnable(gen)
    reply = model.invoke([SystemMessage(content="s"), HumanMessage(content="u")])
    assert isinstance(reply, AIMessage) and reply.content == "2 msgs"
    assert reply.response_metadata["completion_tokens"] == 3
    assert to_chat("oi") == [{"role": "user", "content": "oi"}]
    assert to_chat([AIMessage(content="a")]) == [{"role": "assistant", "content": "a"}]
    assert model.batch([]) == []


def test_from_store_takes_a_store_dir(tmp_path) -> None:
    from core.paths import sample_dump
    from ingest.build import build_store
    from ingest.config import IngestConfig

    store = build_store(sample_dump(), tmp_path / "store",
                        IngestConfig(embedder="hashing", workers=0, limit=3), progress=False)
    for where in (store, str(store)):
        docs = StoreRetriever.from_store(where, "hybrid", k=2, progress=False).invoke("Brasília")
        assert docs and docs[0].metadata["title"] == "Brasília"


def test_chain_over_a_pipeline_sends_the_adapters_format(history_store, canned) -> None:
    from models.formats import get_format
    from rag.pipeline import RagConfig, RagPipeline

    gen = canned("ok [1]")
    pipe = RagPipeline(history_store, gen, RagConfig(k=2, progress=False),
                       fmt=get_format("llama2"))
    assert make_chain(None, pipe).invoke("Quem foi Tiradentes?") == "ok [1]"
    [prompt] = gen.calls[-1]
    [expected] = pipe.prompts(["Quem foi Tiradentes?"], pipe.retrieve(["Quem foi Tiradentes?"]),
                              max_new_tokens=128)
    assert prompt == expected and prompt.startswith("[INST] Você é") and "[1] Tiradentes" in prompt
    out = make_chain(None, pipe, template="short", with_sources=True).invoke("Who was Pedro I?")
    assert out["answer"] == "ok [1]" and "shortest possible answer" in gen.calls[-1][0]
