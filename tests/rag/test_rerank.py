"""rag.rerank with a real (tiny, random) sentence-transformers CrossEncoder saved to disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.rerank import CrossEncoderReranker, make_reranker
from rag.retrievers import make_retriever

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "quem", "foi", "tiradentes", "lei",
         "aurea", "brasil", "pedro", "imperador", "o", "a", "de", "em"]


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer random BERT with a one-logit head and a 17-word vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-ce")
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n", "utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=1,
                        initializer_range=1.0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cross_encoder_from_a_local_folder_reranks(tiny_cross_encoder, history_store) -> None:
    reranker = make_reranker(str(tiny_cross_encoder))
    assert isinstance(reranker, CrossEncoderReranker)
    texts = ["tiradentes foi", "lei aurea", "pedro imperador"]
    scores = reranker.score("quem foi tiradentes", texts)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert scores == reranker.score("quem foi tiradentes", texts)  # deterministic
    assert reranker.score("q", []) == []
    retriever = make_retriever("bm25", history_store, k=3, dedup="none", reranker=reranker)
    [ps] = retriever.retrieve(["Tiradentes Pedro Brasil"])
    assert [p.score for p in ps] == sorted((p.score for p in ps), reverse=True)
    again = reranker.score("Tiradentes Pedro Brasil", [p.text for p in ps])  # other batch: noise
    assert [p.score for p in ps] == pytest.approx(again, abs=1e-5)
    assert retriever.describe()["reranker"] == str(tiny_cross_encoder)
