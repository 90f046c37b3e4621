"""Refusal and language-fidelity detection measured on labelled sets (tests/compare/data).

``refusal_<lang>.jsonl``: realistic model replies, ``{"text", "refusal": bool}``.
``language_<lang>.jsonl``: answers to a question in ``question_lang``, ``{"text", "question_lang",
"lang"}`` with ``lang`` the answer's true language or "none" (a name, a number, a date).
Precision and recall must both reach 0.9 per language; ``pytest -s`` prints them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare.metrics import (
    METRICS,
    MetricInput,
    detection_quality,
    is_in_language,
    is_refusal,
    labelled_detector_quality,
)
from core.questions import Question

DATA = Path(__file__).parent / "data"
MIN_QUALITY = 0.9


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text("utf-8").splitlines()
            if line.strip()]


@pytest.fixture(scope="module")
def quality() -> dict[str, dict[str, dict[str, float]]]:
    return labelled_detector_quality(DATA)


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_labelled_sets_are_big_enough_and_balanced(lang: str) -> None:
    refusals = _rows(f"refusal_{lang}.jsonl")
    assert len(refusals) >= 60
    share = sum(r["refusal"] for r in refusals) / len(refusals)
    assert 0.35 <= share <= 0.65
    answers = _rows(f"language_{lang}.jsonl")
    assert len(answers) >= 60
    assert all(r["question_lang"] == lang for r in answers)
    assert sum(len(r["text"].split()) <= 4 for r in answers) >= 30  # mostly short answers
    assert {r["lang"] for r in answers} >= {"pt", "en", "none"}


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_refusal_precision_and_recall(quality: dict, lang: str) -> None:
    q = quality["refusal"][lang]
    print(f"\nrefusal[{lang}]: precision {q['precision']:.3f} recall {q['recall']:.3f} "
          f"(n={q['n']:.0f}, refusals={q['positives']:.0f})")
    assert q["precision"] >= MIN_QUALITY and q["recall"] >= MIN_QUALITY


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_language_fidelity_precision_and_recall(quality: dict, lang: str) -> None:
    q = quality["language_fidelity"][lang]
    print(f"\nlanguage_fidelity[{lang}]: precision {q['precision']:.3f} "
          f"recall {q['recall']:.3f} (n={q['n']:.0f}, in language={q['positives']:.0f})")
    assert q["precision"] >= MIN_QUALITY and q["recall"] >= MIN_QUALITY


@pytest.mark.parametrize("text,expected", [
    # the cases issue 11 names
    ("A Constituição de 1824 não menciona o voto feminino, mas garantia o voto censitário.", False),
    ("Não tenho certeza.", True),
    ("Desconheço.", True),
    ("I don\u2019t know.", True),
    ("Não, a capital do Brasil é Brasília desde 1960.", False),
    # a hedged answer still answers; a hedged refusal does not
    ("Não tenho certeza, mas acredito que foi em 1888.", False),
    ("Sinto muito, mas não sei quem foi o primeiro governador-geral.", True),
    # the template sentences, as before
    ("O contexto não contém a resposta.", True),
    ("I don't know the answer.", True),
])
def test_refusal_named_cases(text: str, expected: bool) -> None:
    assert is_refusal(text) is expected


def test_named_cases_are_in_the_labelled_sets() -> None:
    texts = {r["text"] for lang in ("pt", "en") for r in _rows(f"refusal_{lang}.jsonl")}
    assert {"Não tenho certeza.", "Desconheço.", "I don\u2019t know."} <= texts
    assert "A Constituição de 1824 não menciona o voto feminino, mas garantia o voto " \
           "censitário." in texts


@pytest.mark.parametrize("text,lang,expected", [
    ("1822", "pt", True), ("Dom Pedro II", "en", True),        # language-neutral
    ("Em 1822.", "en", False), ("In 1822.", "pt", False),      # short, but not neutral
    ("Sim.", "pt", True), ("Yes.", "pt", False),
])
def test_language_of_short_answers(text: str, lang: str, expected: bool) -> None:
    assert is_in_language(text, lang) is expected


def test_language_fidelity_judges_every_open_answer() -> None:
    fidelity = METRICS.get("language_fidelity").fn
    question = Question(id="q", question="Quando?", answers=("1822",), lang="pt")
    scores = [fidelity(MetricInput(text, question)) for text in
              ("1822", "Em 1822.", "In 1822.", "Foi em 7 de setembro de 1822.")]
    assert scores == [1.0, 1.0, 0.0, 1.0]


def test_detection_quality_hand_computed() -> None:
    # predicted T T F F T, actual T F T F T: tp 2, predicted positives 3, positives 3
    q = detection_quality([True, True, False, False, True], [True, False, True, False, True])
    assert q == {"precision": 2 / 3, "recall": 2 / 3, "n": 5.0, "positives": 3.0}
