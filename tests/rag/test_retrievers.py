"""rag.retrievers: dense vs brute force, bm25, RRF math, title boost, k, dedup, reranker."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from core.errors import UserError
from rag.retrievers import HybridRanker, make_retriever, rrf
from rag.titles import TitleMatcher

MISMATCH = ("store /x was built with embedder 'multilingual-e5-small' (revision abc) but "
            "'all-minilm-l6-v2' was loaded; rebuild the store or use its embedder")


def synthetic_store(make_store, n: int = 60, dim: int = 12, queries: int = 5):
    """Random unit vectors as chunk embeddings; query i embeds to a fixed random vector."""
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    qvecs = rng.normal(size=(queries, dim)).astype(np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)

    def embed(texts):
        return np.stack([qvecs[int(t[1:])] for t in texts])

    pages = [(f"Página {i}", [f"texto {i}"]) for i in range(n)]
    return make_store(pages=pages, aliases={}, embed=embed, vectors=vecs), vecs, qvecs


def test_dense_matches_brute_force(make_store) -> None:
    store, vecs, qvecs = synthetic_store(make_store)
    retriever = make_retriever("dense", store, k=7, dedup="none")
    got = retriever.retrieve([f"q{i}" for i in range(len(qvecs))])
    for q, passages in zip(qvecs, got, strict=True):
        sims = vecs @ q
        expected = np.argsort(-sims, kind="stable")[:7]
        assert [p.row for p in passages] == expected.tolist()
        np.testing.assert_allclose([p.score for p in passages], sims[expected], rtol=1e-5)


def test_dense_keyword_store_finds_the_page(history_store) -> None:
    [top] = make_retriever("dense", history_store, k=1).retrieve(["abolição escravidão 1888"])
    assert top[0].title == "Lei Áurea"


@pytest.mark.parametrize("name", ["dense", "hybrid"])
def test_embedder_mismatch_surfaces_as_one_user_error(make_store, name) -> None:
    store = make_store(embedder_error=MISMATCH)
    with pytest.raises(UserError) as err:
        make_retriever(name, store).retrieve(["Quem foi Tiradentes?"])
    assert str(err.value) == MISMATCH


def test_bm25_retriever_accent_folded(history_store) -> None:
    [ps] = make_retriever("bm25", history_store, k=2).retrieve(["constituicao outorgada"])
    assert ps[0].title == "Constituição brasileira de 1824"


def test_rrf_hand_computed() -> None:
    lists = {"dense": {1: 1, 2: 2, 3: 3}, "bm25": {3: 1, 1: 2, 4: 3}}
    got = dict(rrf(lists, {"dense": 1.0, "bm25": 1.0}, k=60))
    assert got[1] == pytest.approx(1 / 61 + 1 / 62)
    assert got[3] == pytest.approx(1 / 63 + 1 / 61)
    assert got[2] == pytest.approx(1 / 62) and got[4] == pytest.approx(1 / 63)
    assert [r for r, _ in rrf(lists, {"dense": 1.0, "bm25": 1.0}, k=60)] == [1, 3, 2, 4]
    # bm25 weighted up: 3 (bm25 rank 1) overtakes 1; k=0 makes ranks count fully
    assert [r for r, _ in rrf(lists, {"dense": 1.0, "bm25": 3.0}, k=60)][:2] == [3, 1]
    assert dict(rrf(lists, {}, k=0))[1] == pytest.approx(1 + 1 / 2)


def test_rrf_ties_break_by_best_rank_then_row() -> None:
    lists = {"a": {5: 2, 9: 1}, "b": {9: 2, 5: 1}, "c": {7: 1, 6: 1}}
    order = [r for r, _ in rrf(lists, {}, k=60)]
    assert order == [5, 9, 6, 7]  # 5 and 9 tie (best rank 1 both) -> row; 6,7 tie -> row


def test_hybrid_fuses_component_rankings(history_store, monkeypatch) -> None:
    ranker = HybridRanker(history_store, progress=False, title_boost=False)
    monkeypatch.setattr(ranker.dense, "rank", lambda qs, n: [[(4, .9), (0, .8), (2, .1)]])
    monkeypatch.setattr(ranker.bm25, "rank", lambda qs, n: [[(0, 7.0), (5, 3.0)]])
    [fused] = ranker.rank(["q"], 3)
    assert [r for r, _ in fused] == [0, 4, 5]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1][1] == pytest.approx(1 / 61)
    assert fused[2][1] == pytest.approx(1 / 62)  # row 5 (bm25 2nd) before row 2 (dense 3rd)


def test_titles_match_aliases_longest_first_and_skip_common(history_store) -> None:
    from rag.lexical import LexicalIndex

    index = LexicalIndex.for_store(history_store, progress=False)
    loose = TitleMatcher(index.pages, history_store.aliases(), index.doc_freq, index.n_docs, 1.0)
    [m] = loose.match("Quem foi Dom Pedro I?")
    assert (m.page.title, m.phrase) == ("Pedro I do Brasil", "dom pedro i")
    assert [m.page.title for m in loose.match("O estado novo de getulio")] == [
        "Estado Novo (Brasil)"]  # parenthesis optional, alias of the same page counted once
    assert [m.page.title for m in loose.match("pedro i do brasil e o brasil")] == [
        "Pedro I do Brasil", "Brasil"]  # longest phrase first; "brasil" inside it not reused
    assert loose.match("Quem foi Dom Pedro II?") == []
    strict = TitleMatcher(index.pages, history_store.aliases(), index.doc_freq, index.n_docs,
                          0.3)
    assert [m.page.title for m in strict.match("Qual a capital do Brasil?")] == []  # 4/9 chunks
    assert [m.page.title for m in strict.match("Tiradentes e o Brasil")] == ["Tiradentes"]


BOOST_PAGES = [
    ("Pedro I do Brasil", ["O imperador abdicou do trono em 1831 e partiu."]),
    ("Constituição de 1824", ["Dom Pedro outorgou a carta de 1824."]),
    ("Grito", ["Dom Pedro e a comitiva pararam no riacho."]),
    ("Outro", ["Texto sem relação com nada."]),
]


def test_title_boost_brings_the_named_page_up(make_store) -> None:
    store = make_store(pages=BOOST_PAGES, aliases={"Dom Pedro I": "Pedro I do Brasil"})
    question = ["Quem foi Dom Pedro I?"]
    plain = make_retriever("hybrid", store, k=2, title_boost=False, progress=False)
    assert "Pedro I do Brasil" not in [p.title for p in plain.retrieve(question)[0]]
    boosted = make_retriever("hybrid", store, k=2, title_max_df=1.0, progress=False)
    [ps] = boosted.retrieve(question)
    assert ps[0].title == "Pedro I do Brasil"
    weak = make_retriever("hybrid", store, k=4, title_max_df=1.0, weights={"title": 0.5})
    assert [p.title for p in weak.retrieve(question)[0]].index("Pedro I do Brasil") > 0
    # depth 1: the named page is not among the candidates, so its lead chunk is brought in
    ranker = HybridRanker(store, progress=False, depth=1, title_max_df=1.0)
    [[(row, score)]] = ranker.rank(question, 1)
    assert row == 0 and score == pytest.approx(2 / 61)  # title rank 1 only, weight 2


def test_k_validation_and_clamp(history_store, caplog) -> None:
    with pytest.raises(UserError, match="k must be at least 1"):
        make_retriever("bm25", history_store, k=0)
    retriever = make_retriever("dense", history_store, k=2, dedup="none")
    with pytest.raises(UserError, match="k must be at least 1"):
        retriever.retrieve(["x"], k=-3)
    with caplog.at_level(logging.WARNING):
        [ps] = retriever.retrieve(["Tiradentes"], k=50)
    assert len(ps) == len(history_store) == 9 and "more than the 9 chunks" in caplog.text


def test_empty_questions_and_unknown_names(history_store) -> None:
    retriever = make_retriever("bm25", history_store)
    with pytest.raises(UserError, match="question 2 is empty"):
        retriever.retrieve(["Tiradentes", "  "])
    with pytest.raises(UserError, match="Did you mean 'hybrid'"):
        make_retriever("hybird", history_store)
    with pytest.raises(UserError, match="no option 'rrfk'. Did you mean 'rrf_k'"):
        make_retriever("hybrid", history_store, rrfk=10)
    with pytest.raises(UserError, match="unknown dedup mode"):
        make_retriever("bm25", history_store, dedup="pages")


def test_page_dedup_returns_k_distinct_pages(history_store) -> None:
    [ps] = make_retriever("bm25", history_store, k=3).retrieve(["Tiradentes Pedro Brasil"])
    assert len({p.page_id for p in ps}) == len(ps) == 3
    [ps] = make_retriever("bm25", history_store, k=3, dedup="merge").retrieve(["Tiradentes"])
    assert ps[0].title == "Tiradentes" and ps[0].rows == (0, 1)
    assert "mártir" in ps[0].text and "enforcado" in ps[0].text


class LengthScorer:
    """A tiny fake reranker: prefers short texts; records its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, query, texts):
        self.calls += 1
        return [-float(len(t)) for t in texts]


def test_reranker_reorders_and_replaces_scores(history_store) -> None:
    scorer = LengthScorer()
    retriever = make_retriever("bm25", history_store, k=2, dedup="none", reranker=scorer)
    [ps] = retriever.retrieve(["Pedro"])
    assert scorer.calls == 1
    assert [p.score for p in ps] == sorted((p.score for p in ps), reverse=True)
    assert ps[0].score == -len(ps[0].text)
    assert retriever.describe()["reranker"] == "LengthScorer"


def test_reranker_path_must_be_a_local_model(history_store, tmp_path) -> None:
    with pytest.raises(UserError, match="not a local cross-encoder folder"):
        make_retriever("bm25", history_store, reranker=str(tmp_path / "nope"))


def test_describe_records_settings(history_store) -> None:
    d = make_retriever("hybrid", history_store, k=3, rrf_k=10, progress=False).describe()
    assert (d["retriever"], d["k"], d["rrf_k"], d["embedder"]) == ("hybrid", 3, 10,
                                                                    "keyword-one-hot")
    assert d["tokenizer_version"] >= 1 and d["weights"]["title"] == 2.0


def test_alias_targets_with_sections_and_lower_case(history_store) -> None:
    from rag.lexical import LexicalIndex

    index = LexicalIndex.for_store(history_store, progress=False)
    matcher = TitleMatcher(index.pages, {"Execução do alferes": "tiradentes#Morte",
                                         "Nada": "Página inexistente"})
    assert [m.page.title for m in matcher.match("A execução do alferes")] == ["Tiradentes"]
    assert matcher.match("Nada") == []


def test_a_named_page_keeps_its_lead_besides_its_best_chunk(history_store) -> None:
    question = ["Quando Tiradentes foi enforcado?"]
    plain = make_retriever("hybrid", history_store, k=3, title_boost=False, progress=False)
    [ps] = plain.retrieve(question)
    assert [(p.title, p.ordinal) for p in ps if p.title == "Tiradentes"] == [("Tiradentes", 1)]
    named = make_retriever("hybrid", history_store, k=3, title_max_df=1.0, progress=False)
    [ps] = named.retrieve(question)
    assert [(p.title, p.ordinal) for p in ps[:2]] == [("Tiradentes", 1), ("Tiradentes", 0)]
    assert len(ps) == 3 and ps[2].title != "Tiradentes"
