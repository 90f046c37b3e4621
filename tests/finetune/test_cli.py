"""``finetune`` end to end on the tiny model: import, train, info, merge; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune.cli import main


def _alpaca(path: Path, n: int = 16) -> Path:
    rows = [{"instruction": f"Quem foi Pedro {i}?", "input": "",
             "output": f"Pedro {i} foi um imperador do Brasil."} for i in range(n)]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def test_cli_end_to_end(tiny_llama_dir: Path, tmp_path: Path, questions_file: Path,
                        capsys) -> None:
    pairs = tmp_path / "pairs.jsonl"
    assert main(["import", str(_alpaca(tmp_path / "a.json")), "--format", "alpaca",
                 "--out", str(pairs), "--val-fraction", "0.25",
                 "--exclude-questions", str(questions_file), "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote 16 pairs" in out and "leakage filter: dropped 0 pairs" in out
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"lora_r": 4, "lora_alpha": 8, "max_seq_length": 200,
                                      "logging_steps": 1, "save_steps": 100,
                                      "precision": "no", "format": "alpaca"}))
    template = tmp_path / "brief.yaml"  # a short prompt set: the tiny model has 256 positions
    template.write_text(yaml.safe_dump({"name": "brief", "version": "brief-1", "languages": {
        "pt": {"system": "Responda curto.", "user": "P: {{ question }}", "refusal": "Não sei."},
        "en": {"system": "Be brief.", "user": "Q: {{ question }}", "refusal": "No idea."}}}))
    adapter = tmp_path / "adapter"
    assert main(["train", "--model", str(tiny_llama_dir), "--pairs", str(pairs),
                 "--out", str(adapter), "--config", str(config), "--max-steps", "3",
                 "--seed", "3", "--packing", "--prompt-template", str(template), "-q"]) == 0
    out = capsys.readouterr().out
    assert "adapter written: 3 steps" in out and "leakage filter: on, 0 pairs dropped" in out
    assert main(["info", str(adapter), "--check"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[:out.rindex("}") + 1])
    assert info["prompt_format"] == "alpaca" and info["steps"] == 3
    assert info["leakage_filter"].startswith("on (threshold 0.5, dropped 0)")  # import: strict
    assert "ok: the adapter loads on its base model" in out
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["config"]["packing"] and manifest["config"]["seed"] == 3
    assert manifest["prompt"]["template"] == str(template)  # prompt parity, recorded
    assert manifest["prompt"]["template_version"] == "brief-1"
    assert main(["merge", str(adapter), "--out", str(tmp_path / "merged"), "-q"]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("oops\n{}\n")
    assert main(["import", str(bad), "--format", "dolly", "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lines 1-2" in err and "Traceback" not in err
    assert main(["train", "--model", str(tiny_llama_dir), "--pairs", str(bad),
                 "--out", str(tmp_path / "x"), "--config", "cpu-dem"]) == 2
    assert "Did you mean 'cpu-demo'" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_cli_lists_and_help(capsys) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "cpu-demo" in out and "finetune train --config cpu-demo" in out
    assert main(["formats"]) == 0
    assert "llama2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    assert "never into 4-bit" in " ".join(capsys.readouterr().out.split())
