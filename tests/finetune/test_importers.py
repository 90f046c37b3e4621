"""Importers (alpaca / dolly / guanaco / jsonl) and the pairs file reader's bad-line reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from finetune.importers import guanaco_turns, import_file, import_pairs
from finetune.records import Pair, compact_ranges, read_meta, read_pairs, write_pairs


def _jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_alpaca_json_array_and_jsonl(tmp_path: Path) -> None:
    rows = [{"instruction": "Quem foi Vargas?", "input": "", "output": "Um presidente."},
            {"instruction": "Resuma.", "input": "Texto longo.", "output": "Resumo."}]
    array = tmp_path / "alpaca.json"
    array.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    pairs, unit = import_pairs(array, "alpaca", val_fraction=0.0)
    assert unit == "item"
    assert pairs == [Pair("Quem foi Vargas?", "", "Um presidente.", kind="alpaca"),
                     Pair("Resuma.", "Texto longo.", "Resumo.", kind="alpaca")]
    jsonl_pairs, unit = import_pairs(_jsonl(tmp_path / "a.jsonl", rows), "alpaca", 0.0)
    assert unit == "line" and jsonl_pairs == pairs


def test_dolly_maps_context_and_category(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Quando?", "context": "Em 1822.", "response": "1822",
         "category": "closed_qa"}])
    [pair], _ = import_pairs(path, "dolly", 0.0)
    assert (pair.instruction, pair.input, pair.output, pair.source, pair.kind) == (
        "Quando?", "Em 1822.", "1822", "closed_qa", "dolly")


def test_guanaco_last_exchange_with_history(tmp_path: Path) -> None:
    text = ("### Human: Olá ### Assistant: Oi! ### Human: Quem foi Cabral? "
            "### Assistant: Um navegador português.")
    path = _jsonl(tmp_path / "g.jsonl",
                  [{"text": text}, {"text": "### Human: Oi### Assistant: Olá"}])
    pairs, _ = import_pairs(path, "guanaco", 0.0)
    assert pairs[0].instruction == "Quem foi Cabral?"
    assert pairs[0].output == "Um navegador português."
    assert pairs[0].input == "Human: Olá\nAssistant: Oi!"
    assert (pairs[1].instruction, pairs[1].input, pairs[1].output) == ("Oi", "", "Olá")
    assert guanaco_turns("### Human:  ### Assistant: x") == [("assistant", "x")]


def test_jsonl_keeps_its_split_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_pairs([Pair("a?", "", "b", source="A", split="validation"),
                 Pair("c?", "", "d", source="B")], path)
    pairs, _ = import_pairs(path, "jsonl")
    assert [p.split for p in pairs] == ["validation", "train"]
    resplit, _ = import_pairs(path, "jsonl", val_fraction=0.0)
    assert [p.split for p in resplit] == ["train", "train"]


def test_every_bad_line_is_reported_once(tmp_path: Path) -> None:
    good = {"instruction": "Quem?", "input": "", "output": "Ele."}
    rows = [good, "{not json", {"instruction": "", "output": "x"}, good, [1, 2],
            {"instruction": "Q", "output": 3}, good, {"output": "sem instrução"}]
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError) as err:
        import_pairs(path, "alpaca")
    msg = str(err.value)
    assert "4 bad lines (lines 2-3, 5-6" not in msg  # line 8 must be there too
    assert "5 bad lines (lines 2-3, 5-6, 8)" in msg
    assert "line 2: not valid JSON" in msg and "line 5: not a JSON object" in msg
    assert str(path) in msg and "Fix or remove them" in msg


def test_many_bad_lines_all_numbered(tmp_path: Path) -> None:
    rows = ['{"instruction": "ok", "output": "ok"}'] + ["oops"] * 12 + ["{}"]
    path = _jsonl(tmp_path / "many.jsonl", rows)
    with pytest.raises(UserError, match=r"13 bad lines \(lines 2-14\).*\(13 in all\)"):
        read_pairs(path)


def test_bad_array_items_are_numbered_as_items(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "a"}]))
    with pytest.raises(UserError, match=r"1 bad items \(items 2\).*item 2: missing or empty "
                                        r"'output'"):
        import_pairs(path, "alpaca")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no records"):
        import_pairs(empty, "alpaca")
    with pytest.raises(UserError, match="does not exist"):
        import_pairs(tmp_path / "nope.jsonl", "dolly")
    with pytest.raises(UserError, match="unknown import format 'alpacca'.*'alpaca'"):
        import_pairs(empty, "alpacca")
    assert read_pairs(empty) == []


def test_pairs_reader_checks_split_and_types(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [
        {"instruction": "a", "output": "b", "split": "test"},
        {"instruction": "a", "output": "b", "input": 5}])
    with pytest.raises(UserError, match="line 1: split 'test' is not one of train, "
                                        "validation; line 2: 'input' is not a string"):
        read_pairs(path)


def test_import_file_writes_pairs_meta_and_filters_leaks(tmp_path: Path,
                                                        questions_file: Path) -> None:
    rows = [{"instruction": "O que é a Lei Áurea?", "input": "", "output": "A abolição."},
            {"instruction": "Quem foi Cabral?", "input": "", "output": "Um navegador."}]
    out = tmp_path / "out.jsonl"
    meta = import_file(_jsonl(tmp_path / "a.jsonl", rows), "alpaca", out, 0.0, 0,
                       questions_file)
    assert [p.instruction for p in read_pairs(out)] == ["Quem foi Cabral?"]
    assert meta["leakage"]["enabled"] and meta["leakage"]["dropped"] == 1
    assert meta["counts"]["imported"] == 2 and meta["counts"]["pairs"] == 1
    assert read_meta(out)["leakage"]["by_question"] == {"q1": 1}


def test_compact_ranges() -> None:
    assert compact_ranges([9, 3, 4, 5, 5, 11, 12]) == "3-5, 9, 11-12"
    assert compact_ranges([]) == ""
