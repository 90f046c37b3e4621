"""Question files: validation reports every bad line at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare.questions import load_questions
from core.errors import UserError


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good(i: int, **extra) -> str:
    return json.dumps({"id": f"q{i}", "question": "Qual?", "answers": ["x"], **extra},
                      ensure_ascii=False)


def test_loads_open_and_multiple_choice(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", [good(1, tags=["t"]), "",
                                        good(2, choices=["a", "b"], answer_index=1)])
    qs = load_questions(path)
    assert [q.id for q in qs] == ["q1", "q2"]
    assert qs[1].is_multiple_choice and not qs[0].is_multiple_choice


def test_every_bad_line_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", [
        good(1), "{not json", json.dumps({"id": "q3", "answers": ["x"]}), good(1),
        good(5, choices=["a"], answer_index=3), good(6, answers=[]), good(7, colour="red"),
    ])
    with pytest.raises(UserError) as err:
        load_questions(path)
    message = str(err.value)
    for lineno in (2, 3, 4, 5, 6, 7):
        assert f"bad.jsonl:{lineno}:" in message
    assert "bad.jsonl:1:" not in message
    assert message.startswith("6 bad question line(s)")


def test_missing_file_and_empty(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="no questions"):
        load_questions(write(tmp_path / "e.jsonl", [""]))


def test_cli_refuses_bad_file_before_loading_anything(tmp_path: Path, capsys) -> None:
    from compare.cli import main

    bad = write(tmp_path / "bad.jsonl", [good(1), "{oops", json.dumps({"id": "b", "answers": []})])
    code = main(["run", str(bad), "--systems", "base", "--out", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl:2:" in err and "bad.jsonl:3:" in err
    assert "Traceback" not in err and not (tmp_path / "c.sqlite").exists()
