"""The pairs JSONL contract: one instruction pair a line, read with every bad line reported.

Fields: ``instruction``, ``input`` (may be empty), ``output``, ``source`` (page title or chunk
id), plus ``split`` (``train`` | ``validation``, missing means train) and ``kind`` (which
template or importer made the pair).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.jsonl import iter_jsonl as read_jsonl_lines

TRAINING_LOG = "training_log.jsonl"  # what ``finetune train`` logs into the adapter folder

SPLITS = ("train", "validation")
REQUIRED = ("instruction", "output")
MAX_LISTED_REASONS = 5


@dataclass(frozen=True)
class Pair:
    """One instruction pair."""

    instruction: str
    input: str
    output: str
    source: str = ""
    split: str = "train"
    kind: str = ""
    fact: str = ""  # the fact a short-answer pair teaches ("<title>:<field>"), shared by its
    # paraphrases; empty for other pairs (and then left out of the JSON line)
    context: tuple[dict[str, Any], ...] = ()  # passages shown with the question (context-aware
    # pairs, ``finetune.raft``: title, section, text, chunk_id, page_id); empty: closed book

    def to_json(self) -> str:
        """One JSONL line (UTF-8 kept readable; empty optional fields left out)."""
        record = asdict(self)
        for key in ("fact", "context"):
            if not record[key]:
                del record[key]
        if "context" in record:
            record["context"] = list(record["context"])
        return json.dumps(record, ensure_ascii=False)


def pair_from_dict(obj: Any) -> Pair:
    """Validate one decoded line; ``ValueError`` says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    for key in REQUIRED:
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise ValueError(f"missing or empty {key!r}")
    for key in ("input", "source", "split", "kind", "fact"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"{key!r} is not a string")
    context = obj.get("context") or []
    if not isinstance(context, list) or not all(
            isinstance(c, dict) and isinstance(c.get("title"), str)
            and isinstance(c.get("text"), str) for c in context):
        raise ValueError("'context' is not a list of passages with 'title' and 'text'")
    split = obj.get("split") or "train"
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return Pair(instruction=obj["instruction"], input=obj.get("input") or "",
                output=obj["output"], source=obj.get("source") or "", split=split,
                kind=obj.get("kind") or "", fact=obj.get("fact") or "",
                context=tuple(context))


def compact_ranges(numbers: Iterable[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"`` (every number listed, in little space)."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(set(numbers)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def bad_lines_error(path: Path, bad: dict[int, str], unit: str = "line") -> UserError:
    """One message naming every bad line number and the first few reasons."""
    reasons = "; ".join(f"{unit} {n}: {why}" for n, why in sorted(bad.items())[:MAX_LISTED_REASONS])
    more = "" if len(bad) <= MAX_LISTED_REASONS else f"; … ({len(bad)} in all)"
    return UserError(f"{path}: {len(bad)} bad {unit}s ({unit}s {compact_ranges(bad)}): "
                     f"{reasons}{more}. Fix or remove them and run again.")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any | ValueError]]:
    """(line number, decoded object or the decoding error) for each non-blank line
    (``core.jsonl.iter_jsonl``), with one clear error for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    yield from read_jsonl_lines(path)


def convert_records(path: Path, numbered: Iterable[tuple[int, Any]],
                    convert: Callable[[Any], Pair], unit: str = "line") -> list[Pair]:
    """``convert`` applied to every (number, record) of ``numbered`` (a record may be the
    ``ValueError`` its reader met); every record that fails makes one ``UserError`` naming all
    of them (``bad_lines_error``)."""
    pairs: list[Pair] = []
    bad: dict[int, str] = {}
    for number, obj in numbered:
        try:
            if isinstance(obj, ValueError):
                raise obj
            pairs.append(convert(obj))
        except ValueError as exc:
            bad[number] = str(exc)
    if bad:
        raise bad_lines_error(Path(path), bad, unit)
    return pairs


def read_pairs(path: Path) -> list[Pair]:
    """All pairs of a pairs JSONL; any bad line makes one ``UserError`` listing all of them."""
    return convert_records(path, iter_jsonl(path), pair_from_dict)


def write_pairs(pairs: Iterable[Pair], path: Path) -> int:
    """Write pairs as JSONL (atomically: a temp file renamed); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(pair.to_json() + "\n")
            count += 1
    tmp.replace(path)
    return count


def split_of(key: str, val_fraction: float, seed: int) -> str:
    """Deterministic split by a key (an article title): sha256(seed:key) as a fraction."""
    if val_fraction <= 0:
        return "train"
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    value = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if value < val_fraction else "train"


def meta_path(pairs_path: Path) -> Path:
    """The sidecar beside a pairs file: ``pairs.jsonl`` -> ``pairs.meta.json``."""
    pairs_path = Path(pairs_path)
    name = pairs_path.name
    stem = name[:-len(".jsonl")] if name.endswith(".jsonl") else name
    return pairs_path.with_name(stem + ".meta.json")


def read_meta(pairs_path: Path) -> dict[str, Any]:
    """The sidecar's contents, or ``{}`` when the pairs file has none (e.g. hand-written)."""
    path = meta_path(pairs_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}); delete it or re-run "
                        "`finetune pairs`") from None
    return data if isinstance(data, dict) else {}


def write_meta(pairs_path: Path, meta: dict[str, Any]) -> Path:
    """Write the sidecar beside ``pairs_path``."""
    path = meta_path(pairs_path)
    path.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path



def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a training log (empty when the file is absent); a torn last line (a
    training killed while writing) or any other unreadable line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    return [obj for _, obj in read_jsonl_lines(path) if isinstance(obj, dict)]
