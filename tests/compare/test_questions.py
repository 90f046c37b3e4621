"""compare reads questions with core.questions and needs answers: a bad file stops a run early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from core.questions import read_questions


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good(i: int, **extra) -> str:
    return json.dumps({"id": f"q{i}", "question": "Qual?", "answers": ["x"], **extra},
                      ensure_ascii=False)


def test_compare_needs_answers(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", [good(1), json.dumps({"id": "q2", "question": "Qual?"})])
    assert [q.id for q in read_questions(path)] == ["q1", "q2"]  # other stages do without
    with pytest.raises(UserError, match=r'q\.jsonl:2: missing "answers"'):
        read_questions(path, require_answers=True)


def test_every_bad_line_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", [
        good(1), "{not json", json.dumps({"id": "q3", "answers": ["x"]}), good(1),
        good(5, choices=["a"], answer_index=3), good(6, answers=[]), good(7, colour="red"),
    ])
    with pytest.raises(UserError) as err:
        read_questions(path, require_answers=True)
    message = str(err.value)
    for lineno in (2, 3, 4, 5, 6, 7):
        assert f"bad.jsonl:{lineno}:" in message
    assert "bad.jsonl:1:" not in message
    assert message.startswith("6 bad question line(s)")


def test_cli_refuses_bad_file_before_loading_anything(tmp_path: Path, capsys) -> None:
    from compare.cli import main

    bad = write(tmp_path / "bad.jsonl", [good(1), "{oops", json.dumps({"id": "b", "answers": []})])
    code = main(["run", str(bad), "--systems", "base", "--out", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl:2:" in err and "bad.jsonl:3:" in err
    assert "Traceback" not in err and not (tmp_path / "c.sqlite").exists()


def test_cli_refuses_questions_without_answers(tmp_path: Path, capsys) -> None:
    from compare.cli import main

    bad = write(tmp_path / "noanswers.jsonl", [json.dumps({"id": "a", "question": "Qual?"})])
    code = main(["run", str(bad), "--systems", "base", "--out", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and 'noanswers.jsonl:1: missing "answers"' in err


def test_compare_reads_an_lm_eval_shaped_file(tmp_path: Path) -> None:
    """choices + answer_index (or an answer letter) without "answers" is a complete
    multiple-choice question for compare, scored against the right option."""
    path = write(tmp_path / "mc.jsonl", [
        json.dumps({"id": "m1", "question": "Capital?", "choices": ["Rio", "Brasília"],
                    "answer_index": 1}),
        json.dumps({"id": "m2", "question": "Capital?", "choices": ["Rio", "Brasília"],
                    "answer": "A"}),
        good(3),
    ])
    m1, m2, open_q = read_questions(path, require_answers=True)
    assert (m1.answer_index, m1.answers, m2.answer_index, m2.answers) == (
        1, ("Brasília",), 0, ("Rio",))
    assert m1.is_multiple_choice and m2.is_multiple_choice and not open_q.is_multiple_choice
