"""The questions JSONL contract: one ``Question`` record and one reader for every stage.

One JSON object a line (blank lines are skipped)::

    {"id": "hist-004", "question": "Quando foi proclamada a independência do Brasil?",
     "answers": ["7 de setembro de 1822", "1822"], "gold_titles": ["Independência do Brasil"],
     "lang": "pt", "tags": ["topic:independencia"]}

``id`` (string or integer, unique across the files read) and ``question`` (non-empty text) are
required. ``answers`` are the acceptable references (``compare`` needs them: see
``require_answers``); ``gold_titles`` name the pages that answer it (``rag eval-retrieval``
scores retrieval on them); ``lang`` is its language (default ``pt``); ``tags`` group results in
reports. Nothing else is allowed, so a misspelt field is an error rather than silently ignored.

A multiple-choice question has ``choices`` (the options, in order) and the right one, given as
``answer_index`` (its 0-based position) or, as lm-evaluation-harness task files do, as
``answer``: the position (``1``) or the option letter (``"B"``, ``A`` being the first option)::

    {"id": "enem-01", "question": "Quem proclamou a independência?",
     "choices": ["Tiradentes", "Dom Pedro I", "Deodoro da Fonseca"], "answer": "B"}

Such a line needs no ``answers``: the right option's text is its reference. Giving both
``answer`` and ``answer_index`` is allowed only when they name the same option.

``read_questions`` validates the whole file before anything uses it and raises one ``UserError``
listing every bad line as ``file:line: what is wrong: what to do``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.jsonl import NOT_UTF8, iter_jsonl

FIELDS = ("id", "question", "answers", "gold_titles", "lang", "tags", "choices", "answer_index",
          "answer")
DEFAULT_LANG = "pt"
OPTION_LETTERS = "ABCDEFGHIJ"  # option labels: "answer": "B" names choices[1] (as in compare.mc)
_MC_FIELDS = ("choices", "answer_index", "answer")  # a right option stands in for "answers"
MAX_DETAILED = 50  # bad lines described one by one; any further ones are listed by number
_STRING_LISTS = {
    "answers": 'the acceptable reference answers, e.g. "answers": ["1822"]',
    "gold_titles": 'the titles of the pages that answer it, e.g. "gold_titles": ["Tiradentes"]',
    "tags": 'labels for the report, e.g. "tags": ["topic:colonia"]',
    "choices": 'the options of a multiple-choice question, e.g. "choices": ["A", "B"]',
}


@dataclass(frozen=True)
class Question:
    """One evaluation question (the fields of the module docstring)."""

    id: str
    question: str
    answers: tuple[str, ...] = ()
    gold_titles: tuple[str, ...] = ()
    lang: str = DEFAULT_LANG
    tags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    source: str = field(default="", compare=False)  # "file:line" it was read from

    @property
    def is_multiple_choice(self) -> bool:
        """True when the question has choices and a correct index."""
        return bool(self.choices) and self.answer_index is not None


def read_questions(paths: str | Path | Sequence[str | Path],
                   require_answers: bool = False) -> list[Question]:
    """Every question of one or more questions JSONL files, in order.

    ``require_answers``: every question must have ``answers`` (what ``compare`` scores against).
    Raises one ``UserError`` naming every bad line, a missing file, or no questions at all.
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    questions: list[Question] = []
    bad: list[tuple[str, str]] = []  # (file:line, what is wrong and what to do)
    seen: dict[str, str] = {}
    for path in files:
        for lineno, obj, error in _lines(path):
            where = f"{path}:{lineno}"
            problems = [error] if error else _problems(obj, require_answers)
            if not problems and _id(obj) in seen:
                problems = [f"duplicate id {_id(obj)!r} (first at {seen[_id(obj)]}): give every "
                            "question its own id"]
            if problems:
                bad.append((where, "; ".join(problems)))
                continue
            seen[_id(obj)] = where
            questions.append(_question(obj, where))
    if bad:
        raise UserError(_bad_lines_message(bad))
    if not questions:
        raise UserError(f"{', '.join(map(str, files))} holds no questions; write one JSON object "
                        'a line, e.g. {"id": "q1", "question": "Quem foi Tiradentes?", '
                        '"answers": ["Joaquim José da Silva Xavier"]}')
    return questions


def _lines(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, decoded object or None, what is wrong or None) for each non-blank line."""
    if not path.is_file():
        raise UserError(f"questions file {path} does not exist; pass the path of a questions "
                        "JSONL file (e.g. data/questions/core.jsonl)")
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, ValueError):
            yield lineno, obj, None
        elif str(obj) == NOT_UTF8:
            yield lineno, None, f"{NOT_UTF8}: save the file as UTF-8"
        else:
            yield lineno, None, f"{obj}: write each question as one JSON object on one line"


def _id(obj: dict[str, Any]) -> str:
    return str(obj["id"])


def _problems(obj: Any, require_answers: bool) -> list[str]:
    """What is wrong with one decoded line, each with what to do (empty when it is fine)."""
    if not isinstance(obj, dict):
        return ['not a JSON object: write {"id": ..., "question": ...}']
    out: list[str] = []
    qid = obj.get("id")
    if "id" not in obj:
        out.append('missing "id": give every question a unique id, e.g. "id": "q1"')
    elif not isinstance(qid, (str, int)) or isinstance(qid, bool) or not str(qid).strip():
        out.append('"id" must be a non-empty string or an integer')
    question = obj.get("question")
    if "question" not in obj:
        out.append('missing "question": add the question text')
    elif not isinstance(question, str) or not question.strip():
        out.append('"question" must be a non-empty string')
    for key, example in _STRING_LISTS.items():
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            out.append(f'"{key}" must be a list of strings: {example}')
        elif key == "gold_titles" and not all(v.strip() for v in value):
            out.append('"gold_titles" holds an empty title: remove it')
    if isinstance(obj.get("answers"), list) and not obj["answers"]:
        out.append(f'"answers" is empty: list {_STRING_LISTS["answers"]}, or leave it out')
    elif require_answers and all(obj.get(k) is None for k in ("answers", *_MC_FIELDS)):
        out.append(f'missing "answers" (replies are scored against them): add '
                   f'{_STRING_LISTS["answers"]}, or "choices" + "answer_index" for a '
                   "multiple-choice question")
    lang = obj.get("lang")
    if lang is not None and (not isinstance(lang, str) or not lang.strip()):
        out.append('"lang" must be a language code such as "pt" or "en"')
    out += _choice_problems(obj)
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        out.append(f"unknown field(s) {', '.join(map(repr, unknown))}: the fields are "
                   f"{', '.join(FIELDS)} (check the spelling)")
    return out


def _choice_problems(obj: dict[str, Any]) -> list[str]:
    return _right_option(obj)[1]


_INDEX_HELP = ('"answer_index" must be the 0-based position of the right option in "choices", '
               'e.g. "answer_index": 1 for the second')
_ANSWER_HELP = ('"answer" must be the letter of the right option (A for the first, e.g. '
                '"answer": "B") or its 0-based position in "choices"')


def _right_option(obj: dict[str, Any]) -> tuple[int | None, list[str]]:
    """(index of the right option or None, problems) of a line's multiple-choice fields."""
    choices, index, answer = obj.get("choices"), obj.get("answer_index"), obj.get("answer")
    if choices is None:
        given = [f'"{k}"' for k in ("answer_index", "answer") if obj.get(k) is not None]
        if given:
            return None, [f'"choices" and {" / ".join(given)} go together: give both (a '
                          "multiple-choice question) or neither (an open question: its "
                          'references go in "answers")']
        return None, []
    if index is None and answer is None:
        return None, ['"choices" and "answer_index" go together: give the right option as '
                      '"answer_index" (0-based) or "answer" (its letter), or drop "choices"']
    if not isinstance(choices, list):
        return None, []  # reported as not a list of strings
    by_index = _position(index, len(choices)) if index is not None else None
    by_answer = _answer_position(answer, len(choices)) if answer is not None else None
    problems = ([_INDEX_HELP] if index is not None and by_index is None else []) + (
        [_ANSWER_HELP] if answer is not None and by_answer is None else [])
    if problems:
        return None, problems
    if by_index is not None and by_answer is not None and by_index != by_answer:
        return None, [f'"answer" {answer!r} is option {by_answer} (0-based) but "answer_index" '
                      f"is {by_index}: keep the right one of them"]
    return (by_index if by_index is not None else by_answer), []


def _position(value: Any, n: int) -> int | None:
    """``value`` when it is an integer position among ``n`` options (not a bool)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n
    return value if ok else None


def _answer_position(value: Any, n: int) -> int | None:
    """lm-eval's ``answer``: an integer position, or one option letter (either case)."""
    if isinstance(value, str):
        letter = value.strip().upper()
        if len(letter) == 1 and letter in OPTION_LETTERS[:n]:
            return OPTION_LETTERS.index(letter)
        return None
    return _position(value, n)


def _question(obj: dict[str, Any], source: str) -> Question:
    choices = tuple(obj.get("choices") or ())
    index = _right_option(obj)[0]
    answers = tuple(obj.get("answers") or ())
    if not answers and index is not None:
        answers = (choices[index],)  # an lm-eval-shaped line: the right option is the reference
    return Question(
        id=_id(obj), question=obj["question"].strip(), answers=answers,
        gold_titles=tuple(t.strip() for t in obj.get("gold_titles") or ()),
        lang=obj.get("lang") or DEFAULT_LANG, tags=tuple(obj.get("tags") or ()),
        choices=choices, answer_index=index, source=source,
    )


def _bad_lines_message(bad: list[tuple[str, str]]) -> str:
    shown = [f"{where}: {why}" for where, why in bad[:MAX_DETAILED]]
    if len(bad) > MAX_DETAILED:
        shown.append(f"… and {len(bad) - MAX_DETAILED} more bad line(s): "
                     + ", ".join(where for where, _ in bad[MAX_DETAILED:]))
    return (f"{len(bad)} bad question line(s); fix them and run again:\n  "
            + "\n  ".join(shown))
