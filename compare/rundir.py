"""A ``compare run`` directory's data files, read and written only here.

A run dir holds ``config.yaml`` (the experiment's settings), ``samples.jsonl`` (one ``Sample``
a line: one column's answer to one question with its scores; appended after every batch, so an
interrupted run keeps what it answered), ``results.json`` (aggregates and provenance; written
last, so its presence marks the run finished), and the rendered ``report.md`` /
``report.html`` / ``plots/``.

Runs are never overwritten: ``run_dir_for`` picks ``out`` itself when it is new or unfinished
(an unfinished run is continued) and otherwise the first ``out-2``, ``out-3`` … that is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.jsonl import iter_jsonl

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
MAX_LISTED = 20  # bad sample lines described one by one


@dataclass(kw_only=True)
class Sample:
    """One line of ``samples.jsonl``: a column's answer to one question, with its scores.

    Field order is the key order of the JSON line. Score passes (semantic similarity, the LLM
    judge, human ratings) add entries to ``scores`` in place.
    """

    column: str  # report column label (model / decoding / system, as short as unambiguous)
    system: str
    model: str
    decoding: dict[str, Any]
    question_id: str
    question: str
    references: list[str]  # the question's acceptable answers
    tags: list[str] = field(default_factory=list)
    lang: str = "pt"
    prompt: Any = ""  # what the model was given: chat messages or a plain string
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""
    choice: int | None = None  # the picked option of a multiple-choice question
    choice_scores: list[float] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(column, question id): what a run answers once."""
        return self.column, self.question_id

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of its ``samples.jsonl`` line."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """Its ``samples.jsonl`` line (without the newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, obj: Any) -> Sample:
        """A sample from a decoded line; ``ValueError`` says what is wrong with it."""
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        problems = [f"missing {name!r}" for name in _FIELD_TYPES if name not in obj]
        problems += [f"{name!r} is not {_TYPE_NAMES[kinds]}"
                     for name, kinds in _FIELD_TYPES.items()
                     if name in obj and not _is(obj[name], kinds)]
        if isinstance(obj.get("scores"), dict) and not all(
                isinstance(k, str) and _is(v, (float,)) for k, v in obj["scores"].items()):
            problems.append("'scores' must map names to numbers")
        unknown = sorted(set(obj) - set(_FIELD_TYPES))
        if unknown:
            problems.append(f"unknown field(s) {', '.join(map(repr, unknown))}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**obj)


# JSON types of each field (``float`` also accepts an integer; ``None`` an explicit null)
_FIELD_TYPES: dict[str, tuple[type | None, ...]] = {
    "column": (str,), "system": (str,), "model": (str,), "decoding": (dict,),
    "question_id": (str,), "question": (str,), "references": (list,), "tags": (list,),
    "lang": (str,), "prompt": (str, list, dict, None), "retrieved": (list,), "output": (str,),
    "choice": (int, None), "choice_scores": (list, None), "scores": (dict,),
    "latency_s": (float,), "prompt_tokens": (int, None), "completion_tokens": (int, None),
    "cached": (bool,),
}
_KIND_NAMES: dict[type | None, str] = {
    str: "a string", dict: "an object", list: "a list", int: "an integer", float: "a number",
    bool: "true/false", None: "null"}
_TYPE_NAMES = {kinds: " or ".join(_KIND_NAMES[k] for k in kinds)
               for kinds in set(_FIELD_TYPES.values())}


def _is(value: Any, kinds: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in kinds
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return any(k is not None and isinstance(value, k) for k in kinds)


# --------------------------------------------------------------------------- the run dir


def run_dir_for(out: Path) -> Path:
    """The dir a run writes: ``out`` itself if new or unfinished, else the first sibling
    ``out-2``, ``out-3`` … that is new or unfinished (finished runs are never overwritten)."""
    if not is_finished(out):
        return out
    n = 2
    while is_finished(out.parent / f"{out.name}-{n}"):
        n += 1
    return out.parent / f"{out.name}-{n}"


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (its ``results.json`` is written last)."""
    return (Path(run_dir) / RESULTS_FILE).is_file()


def require_finished(run_dir: Path) -> None:
    """``UserError`` unless ``run_dir`` is a finished run dir."""
    if not is_finished(run_dir):
        raise UserError(f"{run_dir} is not a finished run dir (no {RESULTS_FILE}); pass the "
                        "folder `compare run` reported, or finish the run by re-running it")


# ------------------------------------------------------------------------------- samples


def read_samples(run_dir: Path) -> list[Sample]:
    """Every sample of the run, in file order; one ``UserError`` naming every bad line."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} has no {SAMPLES_FILE}: it is not a compare run dir, or the "
                        "run never answered a question")
    samples: list[Sample] = []
    bad: list[str] = []
    for lineno, obj in iter_jsonl(path):
        try:
            if isinstance(obj, ValueError):
                raise obj
            samples.append(Sample.from_dict(obj))
        except ValueError as exc:
            bad.append(f"{path}:{lineno}: {exc}")
    if bad:
        more = f"\n  … and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise UserError(f"{len(bad)} bad line(s) in {path} (written by `compare run`; restore "
                        "the file or delete the bad lines and re-run to answer them again):\n  "
                        + "\n  ".join(bad[:MAX_LISTED]) + more)
    return samples


def answered(run_dir: Path) -> set[tuple[str, str]]:
    """(column, question id) of every sample already in the run (empty for a new run).

    An interrupted write can leave a last line without its newline: that line is dropped from
    the file, so the question is answered again and the next append starts on a fresh line.
    """
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return set()
    _drop_torn_tail(path)
    return {s.key for s in read_samples(run_dir)}


def append_samples(run_dir: Path, samples: Iterable[Sample]) -> None:
    """Append samples to the run's ``samples.jsonl`` and flush (called after every batch)."""
    with open(Path(run_dir) / SAMPLES_FILE, "a", encoding="utf-8") as fh:
        fh.writelines(s.to_json() + "\n" for s in samples)
        fh.flush()


def write_samples(run_dir: Path, samples: Iterable[Sample]) -> None:
    """Rewrite the run's ``samples.jsonl`` (after score passes added scores), atomically."""
    _write_atomic(Path(run_dir) / SAMPLES_FILE, "".join(s.to_json() + "\n" for s in samples))


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        with open(path, "r+b") as fh:
            fh.truncate(start)
        return
    with open(path, "ab") as fh:  # a whole last line that only lacks its newline
        fh.write(b"\n")


# ------------------------------------------------------------------------------- results


def read_results(run_dir: Path) -> dict[str, Any]:
    """The run's ``results.json`` (``UserError`` when the run is not finished)."""
    require_finished(run_dir)
    path = Path(run_dir) / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-run `compare run` to rewrite "
                        "it") from None
    if not isinstance(results, dict):
        raise UserError(f"{path} is not a JSON object; re-run `compare run` to rewrite it")
    return results


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` (indented, UTF-8 kept readable), atomically."""
    _write_atomic(Path(run_dir) / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False))


def update_results(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Add or replace top-level entries of a finished run's results; returns the new results."""
    results = read_results(run_dir)
    results.update(extra)
    write_results(run_dir, results)
    return results


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
