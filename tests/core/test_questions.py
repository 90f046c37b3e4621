"""core.questions: the one question record and reader (every bad line at once, with a fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from core.paths import default_questions
from core.questions import FIELDS, MAX_DETAILED, Question, read_questions


def write(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return path


def line(**fields) -> str:
    return json.dumps(fields, ensure_ascii=False)


def test_reads_every_field(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", [
        line(id="q1", question=" Quem foi Tiradentes? ", answers=["Joaquim"], lang="pt",
             gold_titles=[" Tiradentes "], tags=["topic:x"]),
        "",
        line(id=2, question="Which?", answers=["b"], choices=["a", "b"], answer_index=1,
             lang="en"),
    ])
    first, second = read_questions(path)
    assert first == Question("q1", "Quem foi Tiradentes?", ("Joaquim",),
                             gold_titles=("Tiradentes",), tags=("topic:x",))
    assert first.source == f"{path}:1" and not first.is_multiple_choice
    assert (second.id, second.lang, second.choices, second.answer_index) == (
        "2", "en", ("a", "b"), 1)
    assert second.is_multiple_choice and second.source == f"{path}:3"


def test_only_id_and_question_are_required(tmp_path: Path) -> None:
    (q,) = read_questions(write(tmp_path / "q.jsonl", [line(id="a", question="Quem?")]))
    assert q == Question("a", "Quem?")
    assert (q.answers, q.gold_titles, q.lang, q.tags, q.answer_index) == ((), (), "pt", (), None)


def test_question_is_frozen() -> None:
    q = Question("a", "Quem?")
    with pytest.raises(AttributeError):
        q.id = "b"  # type: ignore[misc]


def test_every_bad_line_in_one_error_with_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", [
        line(id="a", question="ok?", gold_titles=["Tiradentes"]),  # 1: fine
        "{oops",  # 2
        "",
        line(id="b", question=" "),  # 4
        json.dumps(["x"]),  # 5
        line(id="c", question="Q", gold_titles="Tiradentes"),  # 6
        line(id="a", question="again?"),  # 7: duplicate id
        line(question="no id?"),  # 8
        line(id="d", question="Q", choices=["x"], answer_index=3),  # 9
        line(id="e", question="Q", answer_index=0),  # 10
        line(id="f", question="Q", gold_title=["typo"]),  # 11
        line(id="g", question="Q", answers=[]),  # 12
        line(id=True, question="Q"),  # 13
        line(id="h", question="Q", lang=""),  # 14
    ])
    with pytest.raises(UserError) as err:
        read_questions(path)
    message = str(err.value)
    assert message.startswith("12 bad question line(s)")
    for n in range(2, 15):
        if n != 3:
            assert f"bad.jsonl:{n}:" in message, n
    assert "bad.jsonl:1:" not in message and "bad.jsonl:3:" not in message
    lines = {ln.split(": ", 1)[0].rsplit(":", 1)[-1]: ln for ln in message.splitlines()[1:]}
    assert "not valid JSON" in lines["2"] and "one JSON object" in lines["2"]
    assert '"question" must be a non-empty string' in lines["4"]
    assert "not a JSON object" in lines["5"]
    assert '"gold_titles" must be a list of strings' in lines["6"]
    assert "duplicate id 'a'" in lines["7"] and "bad.jsonl:1" in lines["7"]
    assert 'missing "id"' in lines["8"]
    assert '"answer_index" must be the 0-based position' in lines["9"]
    assert '"choices" and "answer_index" go together' in lines["10"]
    assert "unknown field(s) 'gold_title'" in lines["11"] and "check the spelling" in lines["11"]
    assert '"answers" is empty' in lines["12"]
    assert '"id" must be' in lines["13"]
    assert '"lang" must be' in lines["14"]


def test_answers_required_on_request(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", [line(id="a", question="Q", answers=["x"]),
                                        line(id="b", question="Q")])
    assert len(read_questions(path)) == 2
    with pytest.raises(UserError, match=r'q\.jsonl:2: missing "answers" \(replies are') as err:
        read_questions(path, require_answers=True)
    assert "q.jsonl:1" not in str(err.value)


def test_several_files_share_one_id_space(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [line(id="q1", question="A?")])
    b = write(tmp_path / "b.jsonl", [line(id="q2", question="B?"), line(id="q1", question="C?")])
    with pytest.raises(UserError, match=r"b\.jsonl:2: duplicate id 'q1' \(first at .*a\.jsonl:1\)"):
        read_questions([a, b])
    assert [q.id for q in read_questions(str(a))] == ["q1"]  # a str path works too


def test_missing_empty_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_questions(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="holds no questions"):
        read_questions(write(tmp_path / "e.jsonl", ["", "  "]))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(line(id="a", question="Q?").encode() + b"\n"
                       + '{"id": "b", "question": "Questão?"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.jsonl:2: not UTF-8"):
        read_questions(latin1)


def test_a_file_of_bad_lines_lists_the_rest_by_number(tmp_path: Path) -> None:
    path = write(tmp_path / "junk.jsonl", ["junk"] * (MAX_DETAILED + 3))
    message = str(pytest.raises(UserError, read_questions, path).value)
    assert message.startswith(f"{MAX_DETAILED + 3} bad question line(s)")
    assert message.count("not valid JSON") == MAX_DETAILED
    assert f"and 3 more bad line(s): {path}:{MAX_DETAILED + 1}" in message


def test_the_shipped_question_sets_are_valid() -> None:
    folder = default_questions().parent
    for path in sorted(folder.glob("*.jsonl")):
        questions = read_questions(path, require_answers=True)
        assert questions and all(q.question and q.answers for q in questions)
        raw = [json.loads(ln) for ln in path.read_text("utf-8").splitlines() if ln.strip()]
        assert {k for obj in raw for k in obj} <= set(FIELDS)


def test_lm_eval_shaped_multiple_choice_lines(tmp_path: Path) -> None:
    """lm-evaluation-harness task files give the right option as "answer" (a letter or a
    0-based position) or "answer_index", with no "answers": the option text becomes the
    reference, and the older shape (answers + answer_index) still reads the same."""
    choices = ["Tiradentes", "Dom Pedro I", "Deodoro da Fonseca", "Getúlio Vargas"]
    path = write(tmp_path / "enem.jsonl", [
        line(id="e1", question="Quem proclamou a independência?", choices=choices,
             answer_index=1),
        line(id="e2", question="Quem proclamou a república?", choices=choices, answer="C"),
        line(id="e3", question="Quem governou no Estado Novo?", choices=choices, answer=3),
        line(id="e4", question="Quem foi enforcado em 1792?", choices=choices, answer="a"),
        line(id="e5", question="Quem?", choices=choices, answer="B", answer_index=1),
        line(id="e6", question="Quem?", answers=["D. Pedro I"], choices=choices,
             answer_index=1),
    ])
    got = read_questions(path, require_answers=True)
    assert [(q.answer_index, q.answers) for q in got] == [
        (1, ("Dom Pedro I",)), (2, ("Deodoro da Fonseca",)), (3, ("Getúlio Vargas",)),
        (0, ("Tiradentes",)), (1, ("Dom Pedro I",)), (1, ("D. Pedro I",))]
    assert all(q.is_multiple_choice and q.choices == tuple(choices) for q in got)


def test_inconsistent_multiple_choice_fields_name_their_line(tmp_path: Path) -> None:
    choices = ["x", "y", "z"]
    path = write(tmp_path / "mix.jsonl", [
        line(id="ok", question="Q", choices=choices, answer="B"),  # 1: fine
        line(id="a", question="Q", choices=choices, answer="B", answer_index=2),  # 2
        line(id="b", question="Q", choices=choices, answer="D"),  # 3: only A-C exist
        line(id="c", question="Q", choices=choices, answer="Brasília"),  # 4
        line(id="d", question="Q", answer="B"),  # 5: no choices
        line(id="e", question="Q", choices=choices),  # 6: no right option
        line(id="f", question="Q", choices=choices, answer=True),  # 7
        line(id="g", question="Q", choices=choices, answer=3),  # 8: out of range
    ])
    with pytest.raises(UserError) as err:
        read_questions(path, require_answers=True)
    message = str(err.value)
    assert message.startswith("7 bad question line(s)") and "mix.jsonl:1:" not in message
    lines = {ln.split(": ", 1)[0].rsplit(":", 1)[-1]: ln for ln in message.splitlines()[1:]}
    assert "\"answer\" 'B' is option 1 (0-based) but \"answer_index\" is 2" in lines["2"]
    for n in ("3", "4", "7", "8"):
        assert '"answer" must be the letter of the right option' in lines[n], n
    assert '"choices" and "answer" go together' in lines["5"]
    assert '"choices" and "answer_index" go together' in lines["6"]
    assert 'missing "answers"' not in message  # choices stand in for answers
    assert all(ln.count("mix.jsonl:") == 1 for ln in lines.values())  # one error a line
