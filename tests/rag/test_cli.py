"""``rag`` CLI end to end: fake store + canned generator, then one run of the real 135M model."""

from __future__ import annotations

import json

import pytest

import models.backends
import rag.cli as cli
import rag.pipeline as pipeline_mod
from models.sources import TEST_GENERATOR


@pytest.fixture
def wired(history_store, canned, monkeypatch):
    """The CLI reading the fake store and answering with the canned generator."""
    gen = canned("Tiradentes foi Joaquim José da Silva Xavier [1].")
    monkeypatch.setattr(pipeline_mod, "open_rag_store", lambda path: history_store)
    monkeypatch.setattr(cli, "open_rag_store", lambda path: history_store)
    monkeypatch.setattr(models.backends, "make_generator", lambda *a, **k: gen)
    return gen


def test_ask_prints_answer_then_numbered_sources(wired, capsys) -> None:
    assert cli.main(["ask", "Quem foi Tiradentes?", "-k", "2", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Tiradentes foi Joaquim José da Silva Xavier [1]."
    assert out[2] == "Fontes:"
    assert out[3].startswith("  [1] Tiradentes (score ")
    assert len(out) == 5 and out[4].startswith("  [2] ")
    # bm25: only the page with a matching content word; its best chunk is in section 1
    assert cli.main(["ask", "Quem foi Tiradentes?", "--retriever", "bm25", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[3:] == ["  [1] Tiradentes — Seção 1 (score 0.5545)"]


def test_ask_json_one_object_per_question(wired, capsys) -> None:
    assert cli.main(["ask", "Quem foi Tiradentes?", "Who was Pedro I?", "--json", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["lang"] for o in objs] == ["pt", "en"]
    assert objs[0]["sources"][0]["title"] == "Tiradentes" and objs[0]["citations"] == [1]
    assert len(wired.calls) == 1  # both questions in one batch


@pytest.mark.parametrize(("argv", "message"), [
    (["ask", "   "], "question 1 is empty"),
    (["ask", "Quem?", "-k", "0"], "k must be at least 1"),
    (["ask", "Quem?", "--lang", "fr"], "has no language 'fr'"),
    (["ask", "Quem?", "--template", "nope"], "unknown prompt template 'nope'"),
])
def test_ask_bad_input_is_one_line(wired, capsys, argv, message) -> None:
    assert cli.main([*argv, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_store_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RAGVSFT_CACHE", str(tmp_path))
    assert cli.main(["ask", "Quem foi Tiradentes?", "-q"]) == 2
    err = capsys.readouterr().err
    assert "error: no store at" in err and "ingest build" in err and len(err.splitlines()) == 1


def test_eval_retrieval_table_and_json(wired, tmp_path, capsys) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in [
        {"id": "1", "question": "Quem foi Tiradentes?", "gold_titles": ["Tiradentes"]},
        {"id": "2", "question": "Quem foi Dom Pedro I?", "gold_titles": ["Dom Pedro I"]},
    ]) + "\n", "utf-8")
    assert cli.main(["eval-retrieval", str(path), "--retrievers", "bm25,hybrid", "-q"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| retriever | questions | hit@5")
    assert table[2] == "| bm25 | 2 | 1.000 | 1.000 | 1.000 |"
    assert cli.main(["eval-retrieval", str(path), "--retrievers", "dense", "-k", "1", "--json",
                     "-q"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["retriever"] == "dense" and report["k"] == 1 and report["questions"] == 2
    assert cli.main(["eval-retrieval", str(path), "--retrievers", "bm26", "-q"]) == 2
    assert "Did you mean 'bm25'" in capsys.readouterr().err


@pytest.mark.slow
def test_ask_with_the_bundled_135m_model(history_store, monkeypatch, capsys) -> None:
    """The real generator end to end (greedy, few tokens): output shape, not wording."""
    monkeypatch.setattr(pipeline_mod, "open_rag_store", lambda path: history_store)
    argv = ["ask", "Quem foi Tiradentes?", "--model", TEST_GENERATOR, "-k", "2",
            "--max-new-tokens", "12", "--json", "-q"]
    assert cli.main(argv) == 0
    [obj] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert obj["answer"].strip() and obj["sources"][0]["title"] == "Tiradentes"
    assert 0 < obj["generation"]["completion_tokens"] <= 12
    assert obj["prompt"][1]["content"].startswith("Contexto:\n[1] Tiradentes")
