"""Import existing instruction datasets into the pairs format (alpaca | dolly | guanaco | jsonl).

Each importer turns one decoded record into a ``Pair`` or raises ``ValueError`` saying what is
wrong; every bad line (or array item) is collected and reported in one ``UserError``.

- ``alpaca``: ``instruction`` / ``input`` / ``output`` — a JSON array (``alpaca_data.json``,
  items numbered from 1) or JSONL.
- ``dolly``: ``instruction`` / ``context`` / ``response`` (databricks-dolly-15k JSONL).
- ``guanaco``: ``text`` = ``### Human: … ### Assistant: …`` (openassistant-guanaco); in a
  multi-turn record the last exchange becomes the pair and the earlier turns its ``input``.
- ``jsonl``: this project's own pairs JSONL (validated).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.registry import Registry
from finetune.records import Pair, convert_records, iter_jsonl, pair_from_dict, split_of

Importer = Callable[[Any], Pair]
IMPORTERS: Registry[Importer] = Registry("import format")
DEFAULT_VAL_FRACTION = 0.1
_TURN = re.compile(r"###\s*(Human|Assistant)\s*:", re.IGNORECASE)


def _text(obj: dict[str, Any], key: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"missing or empty {key!r}")
    return value.strip()


def _object(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


@IMPORTERS.register("alpaca")
def from_alpaca(obj: Any) -> Pair:
    """Alpaca ``instruction`` / ``input`` / ``output``."""
    obj = _object(obj)
    return Pair(instruction=_text(obj, "instruction"), input=_text(obj, "input", False),
                output=_text(obj, "output"), kind="alpaca")


@IMPORTERS.register("dolly")
def from_dolly(obj: Any) -> Pair:
    """Dolly ``instruction`` / ``context`` / ``response`` (``category`` kept as the source)."""
    obj = _object(obj)
    return Pair(instruction=_text(obj, "instruction"), input=_text(obj, "context", False),
                output=_text(obj, "response"), source=str(obj.get("category") or ""),
                kind="dolly")


@IMPORTERS.register("guanaco")
def from_guanaco(obj: Any) -> Pair:
    """Guanaco ``### Human: … ### Assistant: …`` text; the last exchange is the pair."""
    text = _text(_object(obj), "text")
    turns = guanaco_turns(text)
    if len(turns) < 2 or turns[-1][0] != "assistant" or turns[-2][0] != "human":
        raise ValueError("no '### Human: … ### Assistant: …' exchange in 'text'")
    history = "\n".join(f"{role.capitalize()}: {body}" for role, body in turns[:-2])
    return Pair(instruction=turns[-2][1], input=history, output=turns[-1][1], kind="guanaco")


def guanaco_turns(text: str) -> list[tuple[str, str]]:
    """(role, text) turns of a Guanaco conversation, empty turns skipped."""
    parts = _TURN.split(text)
    turns = []
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        if body.strip():
            turns.append((role.lower(), body.strip()))
    return turns


@IMPORTERS.register("jsonl")
def from_pairs_jsonl(obj: Any) -> Pair:
    """This project's pairs format, validated."""
    return pair_from_dict(obj)


def records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or item number, decoded record or its ``ValueError``): JSON array or JSONL."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        try:
            items = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON at line {exc.lineno} ({exc.msg})") from None
        yield from enumerate(items, start=1)
        return
    yield from iter_jsonl(path)


def import_pairs(path: Path, fmt: str, val_fraction: float | None = None, seed: int = 0
                 ) -> tuple[list[Pair], str]:
    """All pairs of ``path`` in format ``fmt``; bad records make one error listing them all.

    Returns the pairs and the unit the numbers count ("line" or "item"). Pairs are split by a
    hash of their source (or instruction) at ``val_fraction``; ``None`` keeps a ``jsonl``
    file's own ``split`` field and means 0.1 for the other formats.
    """
    importer = IMPORTERS.get(fmt)
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist")
    unit = "item" if _is_array(path) else "line"
    pairs = convert_records(path, records(path), importer, unit)
    if not pairs:
        raise UserError(f"{path} holds no records; nothing to import")
    return [_with_split(p, fmt, val_fraction, seed) for p in pairs], unit


def _with_split(pair: Pair, fmt: str, val_fraction: float | None, seed: int) -> Pair:
    if val_fraction is None:
        if fmt == "jsonl":
            return pair
        val_fraction = DEFAULT_VAL_FRACTION
    key = pair.source if fmt == "jsonl" and pair.source else pair.instruction
    return dataclasses.replace(pair, split=split_of(key, val_fraction, seed))


def _is_array(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read(4096).lstrip().startswith("[")


def import_file(path: Path, fmt: str, out: Path, val_fraction: float | None = None,
                seed: int = 0, questions: Path | None = None,
                threshold: float | None = None) -> dict[str, Any]:
    """``finetune import``: convert, filter leakage, write ``out`` and its ``.meta.json``."""
    from finetune.leakage import DEFAULT_THRESHOLD, filter_pairs
    from finetune.pairs import pairs_meta
    from finetune.records import write_meta, write_pairs

    pairs, _ = import_pairs(path, fmt, val_fraction, seed)
    kept, leakage = filter_pairs(pairs, questions, threshold or DEFAULT_THRESHOLD)
    if not kept:
        raise UserError(f"every pair of {path} restates a question of {questions}; "
                        "nothing left to write (raise --leakage-threshold?)")
    config = {"imported_from": str(path), "format": fmt, "val_fraction": val_fraction,
              "seed": seed}
    meta = pairs_meta(kept, config, {"imported": len(pairs)}, leakage.to_dict())
    write_pairs(kept, out)
    write_meta(out, meta)
    return meta
