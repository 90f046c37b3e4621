"""Context-aware (RAFT) pairs: gold passage among distractors, or none and the refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from finetune.pairs import PairsConfig, pairs_from_store
from finetune.prompting import TrainingPrompt
from finetune.raft import RaftConfig, add_context, gold_chunk
from finetune.records import Pair, pair_from_dict, read_pairs
from rag.passages import Passage
from rag.prompts import refusal_sentence


class ChunkRetriever:
    """Every chunk of the store, ranked by how many question words it shares (a stand-in for
    the store's retriever: deterministic, no embedder)."""

    def __init__(self, store) -> None:  # noqa: ANN001
        self.chunks = list(store.iter_chunks())
        self.asked: list[str] = []

    def retrieve(self, queries: list[str]) -> list[list[Passage]]:
        self.asked += queries
        out = []
        for q in queries:
            words = set(q.lower().split())
            ranked = sorted(self.chunks, key=lambda c: -len(words & set(c.text.lower().split())))
            seen, hits = set(), []
            for c in ranked:
                if c.title not in seen:
                    seen.add(c.title)
                    hits.append(Passage.from_chunk(c, 1.0))
            out.append(hits)
        return out

    def describe(self) -> dict[str, str]:
        return {"name": "words"}


def _pairs() -> list[Pair]:
    return [
        Pair("Quando foi assinada a Lei Áurea?", "", "13 de maio de 1888", source="Lei Áurea",
             kind="short"),
        Pair("Em que ano ocorreu a Inconfidência Mineira?", "", "1789",
             source="Inconfidência Mineira", kind="short"),
        Pair("Onde ocorreu a Proclamação da República do Brasil?", "", "Vila Rica",  # not in text
             source="Proclamação da República do Brasil", kind="short"),
    ]


def test_gold_chunk_holds_the_answer(fake_store) -> None:
    chunks = [c for c in fake_store.iter_chunks() if c.title == "Lei Áurea"]
    assert gold_chunk(chunks, "13 de maio de 1888").section == ""
    assert gold_chunk(chunks, "Vila Rica") is None


def test_every_qualifying_pair_gets_gold_and_distractors(fake_store) -> None:
    retriever = ChunkRetriever(fake_store)
    pairs, record = add_context(_pairs(), fake_store, RaftConfig(share=1.0, absent=0.0, k=3),
                                retriever=retriever)
    assert record["counts"] == {"qualified": 2, "gold_present": 2}
    lei, inconf, procl = pairs
    assert procl.context == ()  # its answer is in no chunk of its article: stays closed book
    for pair, title in ((lei, "Lei Áurea"), (inconf, "Inconfidência Mineira")):
        assert len(pair.context) == 3
        gold = [c for c in pair.context if c["title"] == title]
        assert len(gold) == 1 and pair.output in gold[0]["text"]
        assert all(pair.output not in c["text"] for c in pair.context if c["title"] != title)
    assert lei.output == "13 de maio de 1888"  # the answer is unchanged


def test_gold_absent_pairs_answer_the_templates_refusal(fake_store) -> None:
    pairs, record = add_context(_pairs(), fake_store, RaftConfig(share=1.0, absent=1.0, k=2),
                                retriever=ChunkRetriever(fake_store))
    assert record["counts"]["gold_absent"] == 2
    refusal = refusal_sentence("pt", "short")
    for pair, title in zip(pairs[:2], ("Lei Áurea", "Inconfidência Mineira"), strict=True):
        assert pair.output == refusal and pair.kind == "raft-absent"
        assert len(pair.context) == 2 and all(c["title"] != title for c in pair.context)


def test_choice_is_deterministic_and_follows_the_share(fake_store) -> None:
    many = [Pair(f"Quando foi assinada a Lei Áurea? ({i})", "", "13 de maio de 1888",
                 source="Lei Áurea") for i in range(200)]
    config = RaftConfig(share=0.5, absent=0.25, k=2)
    a, rec = add_context(many, fake_store, config, retriever=ChunkRetriever(fake_store))
    b, _ = add_context(many, fake_store, config, retriever=ChunkRetriever(fake_store))
    assert a == b
    with_context = sum(bool(p.context) for p in a)
    assert with_context == 100 == rec["counts"]["gold_present"] + rec["counts"]["gold_absent"]
    assert rec["counts"]["gold_absent"] == 25  # exactly the shares asked for, not about them
    again, rec = add_context(many, fake_store, RaftConfig(share=0.5, absent=0.25, k=2, seed=1),
                             retriever=ChunkRetriever(fake_store))
    assert rec["counts"]["gold_absent"] == 25 and again != a  # another seed, other pairs
    assert add_context(many, fake_store, RaftConfig(share=0.0))[0] == many


def test_context_pairs_are_rendered_as_the_rag_prompt(fake_store, tiny_tokenizer,
                                                     tiny_generator) -> None:
    """A context-aware pair's prompt is the RAG prompt rag's pipeline sends for the same
    question and passages (prompt parity for rag+finetuned)."""
    from models.formats import get_format
    from rag.pipeline import RagConfig, RagPipeline

    pairs, _ = add_context(_pairs(), fake_store, RaftConfig(share=1.0, absent=0.0, k=2),
                           retriever=ChunkRetriever(fake_store))
    pair = pairs[0]
    fmt, gen = get_format("llama2"), tiny_generator
    pipeline = RagPipeline(None, gen, RagConfig(template="short"), fmt=fmt)
    passages = [[Passage(row=0, chunk_id=c["chunk_id"], page_id=c["page_id"], title=c["title"],
                         section=c["section"], ordinal=0, text=c["text"], score=1.0)
                 for c in pair.context]]
    sent = pipeline.prompts([pair.instruction], passages)[0]
    assert TrainingPrompt("short").text(fmt, tiny_tokenizer, pair) == sent
    assert pair.context[0]["text"] in sent
    with pytest.raises(UserError, match="need a prompt template"):
        TrainingPrompt(None).text(fmt, tiny_tokenizer, pair)


def test_pairs_file_round_trip_and_meta(fake_store, tmp_path: Path, monkeypatch) -> None:
    import finetune.raft as raft

    original = raft.add_context
    monkeypatch.setattr("finetune.pairs.add_context", lambda pairs, store, config, **kw: original(
        pairs, store, config, retriever=ChunkRetriever(store)))
    del raft
    out = tmp_path / "pairs.jsonl"
    meta = pairs_from_store(fake_store, out, PairsConfig(raft_share=1.0, raft_absent=0.5),
                            progress=False)
    pairs = read_pairs(out)
    assert meta["counts"]["with_context"] == sum(bool(p.context) for p in pairs) > 0
    assert meta["raft"]["counts"]["qualified"] >= meta["counts"]["with_context"]
    line = next(json.loads(x) for x in out.read_text().splitlines() if '"context"' in x)
    assert pair_from_dict(line).context == tuple(line["context"])
    with pytest.raises(ValueError, match="context"):
        pair_from_dict({**line, "context": [{"title": 1}]})
    with pytest.raises(UserError, match="raft share"):
        PairsConfig(raft_share=1.5)


def test_cli_flags_and_preset() -> None:
    from finetune.cli import build_parser
    from finetune.config import train_config

    args = build_parser().parse_args(["pairs", "--out", "p.jsonl", "--raft-share", "0.5",
                                      "--raft-absent", "0.3", "--raft-k", "3"])
    assert (args.raft_share, args.raft_absent, args.raft_k) == (0.5, 0.3, 3)
    raft, demo = train_config("cpu-raft"), train_config("cpu-demo")
    assert raft.max_seq_length >= 768 > demo.max_seq_length
    assert raft.prompt_template == demo.prompt_template == "short"
