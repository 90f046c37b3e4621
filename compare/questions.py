"""Question sets (the questions JSONL contract): load, validate the whole file, report bad lines.

Fields: ``id``, ``question``, ``answers`` (acceptable references), optional ``choices`` +
``answer_index`` (multiple choice), ``gold_titles``, ``lang``, ``tags``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError

_LIST_FIELDS = ("answers", "gold_titles", "tags", "choices")


@dataclass(frozen=True)
class Question:
    """One evaluation question."""

    id: str
    question: str
    answers: tuple[str, ...]
    gold_titles: tuple[str, ...] = ()
    lang: str = "pt"
    tags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    source: str = field(default="", compare=False)

    @property
    def is_multiple_choice(self) -> bool:
        """True when the question has choices and a correct index."""
        return bool(self.choices) and self.answer_index is not None


def _problems(obj: Any) -> list[str]:
    """What is wrong with one parsed line (empty when it is fine)."""
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    out = [f"missing {k!r}" for k in ("id", "question", "answers") if k not in obj]
    if "question" in obj and (not isinstance(obj["question"], str) or not obj["question"].strip()):
        out.append("'question' must be a non-empty string")
    for key in _LIST_FIELDS:
        value = obj.get(key)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(v, str) for v in value)):
            out.append(f"{key!r} must be a list of strings")
    if "answers" in obj and isinstance(obj["answers"], list) and not obj["answers"]:
        out.append("'answers' is empty")
    out += _choice_problems(obj)
    unknown = set(obj) - {"id", "question", "answers", "gold_titles", "lang", "tags", "choices",
                          "answer_index"}
    if unknown:
        out.append(f"unknown field(s) {sorted(unknown)}")
    return out


def _choice_problems(obj: dict[str, Any]) -> list[str]:
    has_choices, has_index = "choices" in obj, "answer_index" in obj
    if has_choices != has_index:
        return ["'choices' and 'answer_index' go together"]
    if not has_choices:
        return []
    idx, choices = obj["answer_index"], obj["choices"]
    if not isinstance(idx, int) or not isinstance(choices, list) or not 0 <= idx < len(choices):
        return ["'answer_index' must be an integer index into 'choices'"]
    return []


def _to_question(obj: dict[str, Any], source: str) -> Question:
    return Question(
        id=str(obj["id"]), question=obj["question"].strip(), answers=tuple(obj["answers"]),
        gold_titles=tuple(obj.get("gold_titles") or ()), lang=obj.get("lang") or "pt",
        tags=tuple(obj.get("tags") or ()), choices=tuple(obj.get("choices") or ()),
        answer_index=obj.get("answer_index"), source=source,
    )


def load_questions(paths: Path | Sequence[Path]) -> list[Question]:
    """Read one or more questions files; raise one ``UserError`` listing every bad line."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    questions: list[Question] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for path in paths:
        for lineno, obj, err in _read_lines(path):
            where = f"{path}:{lineno}"
            problems = [err] if err else _problems(obj)
            if not problems and str(obj["id"]) in seen:
                problems = [f"duplicate id {obj['id']!r} (first at {seen[str(obj['id'])]})"]
            if problems:
                errors.append(f"{where}: {'; '.join(problems)}")
                continue
            seen[str(obj["id"])] = where
            questions.append(_to_question(obj, where))
    if errors:
        raise UserError(f"{len(errors)} bad question line(s); fix them and re-run:\n  "
                        + "\n  ".join(errors))
    if not questions:
        raise UserError(f"no questions in {', '.join(map(str, paths))}")
    return questions


def _read_lines(path: Path) -> Iterable[tuple[int, Any, str | None]]:
    if not path.is_file():
        raise UserError(f"questions file {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON ({exc.msg})"
