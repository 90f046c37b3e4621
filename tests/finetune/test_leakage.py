"""The leakage filter: a restated question is dropped (fuzzy), others kept, drops reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from core.questions import Question
from finetune.leakage import LeakageFilter, filter_pairs, similarity
from finetune.records import Pair

QUESTIONS = [Question("q1", "Em que ano foi proclamada a independência do Brasil?"),
             Question("q2", "Quem foi Tiradentes e qual foi sua importância histórica?")]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_similarity_ignores_case_accents_order_and_function_words() -> None:
    a = "Em que ano foi proclamada a independência do Brasil?"
    assert similarity(a, "Em que ano a INDEPENDENCIA do Brasil foi proclamada?") == 1.0
    assert similarity(a, "Quando foi proclamada a independência do Brasil?") == 1.0
    assert similarity(a, "Quem foi Getúlio Vargas?") < 0.3


@pytest.mark.parametrize(("pair", "question", "restates"), [
    ("Onde nasceu Getúlio Vargas?", "Em que cidade nasceu Getúlio Vargas?", True),
    ("Quando nasceu Getúlio Vargas?", "Em que cidade nasceu Getúlio Vargas?", False),
    ("Quando ocorreu o Dia do Fico?", "Em que data ocorreu o Dia do Fico?", True),
    ("Qual foi o período do mandato de Getúlio Vargas?",
     "Qual foi o período do governo de Getúlio Vargas?", True),
    ("O que foi a Proclamação da República do Brasil?",
     "Em que data foi proclamada a República no Brasil?", False),
    ("O que foi as Capitanias do Brasil?", "Qual a capital do Brasil?", False),
    ("Resuma o artigo Juscelino Kubitschek.",
     "Qual era o lema do governo de Juscelino Kubitschek?", False),
])
def test_restatement_vs_same_subject(pair: str, question: str, restates: bool) -> None:
    """Cases seen on the sample store: same question reworded vs another question."""
    assert (similarity(pair, question) >= 0.8) is restates


def test_filter_drops_restatements_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", [{"id": q.id, "question": q.question} for q in QUESTIONS])
    pairs = [
        Pair("Quando foi proclamada a Independência do Brasil?", "", "Em 1822."),  # restated
        Pair("Quem foi Tiradentes? Qual foi a sua importância histórica?", "", "Um mártir."),
        Pair("Quem foi Tiradentes?", "", "Um dentista."),  # same topic, not the question
        Pair("O que foi a Inconfidência Mineira?", "", "Um movimento."),
        Pair("Responda.", "Em que ano foi proclamada a independência do Brasil?", "1822"),
    ]
    kept, report = filter_pairs(pairs, path, threshold=0.8)
    assert [p.instruction for p in kept] == ["Quem foi Tiradentes?",
                                             "O que foi a Inconfidência Mineira?"]
    assert report.enabled and report.dropped == 3 and report.n_questions == 2
    assert report.by_question == {"q1": 2, "q2": 1}
    assert report.questions_sha256 and len(report.examples) == 3
    assert all(e["similarity"] >= 0.8 for e in report.examples)


def test_filter_off_keeps_everything() -> None:
    pairs = [Pair("Quem foi Tiradentes?", "", "Um dentista.")]
    kept, report = filter_pairs(pairs, None)
    assert kept == pairs and not report.enabled and report.dropped == 0


def test_threshold_matters() -> None:
    loose, strict = LeakageFilter(QUESTIONS, 0.3), LeakageFilter(QUESTIONS, 0.99)
    text = "Quem foi Tiradentes?"
    assert loose.match(text) is not None and strict.match(text) is None
    with pytest.raises(UserError, match="threshold"):
        LeakageFilter(QUESTIONS, 0.0)


def test_questions_file_errors(tmp_path: Path) -> None:
    """The questions file is read with core.questions: every bad line reported before work."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "ok?"}\n{"id": "b"}\nnot json\n', "utf-8")
    pairs = [Pair("Quem foi Tiradentes?", "", "Um dentista.")]
    with pytest.raises(UserError, match=r"2 bad question line\(s\)") as err:
        filter_pairs(pairs, bad)
    assert "bad.jsonl:2:" in str(err.value) and "bad.jsonl:3:" in str(err.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", "utf-8")
    with pytest.raises(UserError, match="holds no questions"):
        filter_pairs(pairs, empty)
