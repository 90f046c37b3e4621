"""``compare run`` records a bundled model under its current name, whatever name it was given."""

from __future__ import annotations

from pathlib import Path

from compare.cli import _config, build_parser

OLD, NEW = "qwen2.5-0.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def test_a_former_model_name_on_the_command_line_becomes_the_current_one() -> None:
    args = build_parser().parse_args(["run", "q.jsonl", "--model", OLD, "--adapter", "/adapters/a"])
    cfg = _config(args)
    assert cfg.models == (NEW,) and cfg.adapters == {NEW: "/adapters/a"}
    assert cfg.adapter_for(NEW) == "/adapters/a"


def test_a_former_model_name_in_an_experiment_yaml_becomes_the_current_one(tmp_path: Path
                                                                           ) -> None:
    yaml = tmp_path / "exp.yaml"
    yaml.write_text(f"models: [{OLD}, smollm2-135m-instruct]\nadapters: {{{OLD}: /a}}\n",
                    encoding="utf-8")
    cfg = _config(build_parser().parse_args(["run", "q.jsonl", "--config", str(yaml)]))
    assert cfg.models == (NEW, "smollm2-135m-instruct") and cfg.adapters == {NEW: "/a"}
    unchanged = _config(build_parser().parse_args(["run", "q.jsonl", "--model", "org/model"]))
    assert unchanged.models == ("org/model",)


def test_configs_made_in_python_record_the_current_name() -> None:
    from compare.config import ExperimentConfig
    from rag.pipeline import RagConfig

    cfg = ExperimentConfig(models=(OLD,), adapters={OLD: "/adapters/a"})
    assert cfg.models == (NEW,) and cfg.adapters == {NEW: "/adapters/a"}
    assert RagConfig(model=OLD).model_name() == NEW
