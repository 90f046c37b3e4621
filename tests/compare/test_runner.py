"""The runner end to end with canned-answer systems: run dir, results, report, resume."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from compare.config import ExperimentConfig
from compare.protocol import SystemAnswer
from compare.runner import Column, columns_for, run_dir_for, run_experiment
from core.questions import Question

QUESTIONS = [
    {"id": f"q{i}", "question": f"Pergunta {i}?", "answers": [f"resposta {i}"],
     "gold_titles": [f"Artigo {i}"], "tags": ["topic:x" if i % 2 else "control"]}
    for i in range(12)
] + [{"id": "mc1", "question": "Qual?", "answers": ["B"], "choices": ["A", "B", "C", "D"],
      "answer_index": 1, "tags": ["mc"]}]


class CannedSystem:
    """Right on every question (rag) or wrong on most (base); counts calls."""

    def __init__(self, name: str, good: bool) -> None:
        self.name, self.good, self.uses_retrieval, self.calls = name, good, name == "rag", 0

    def answer(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        self.calls += len(questions)
        out = []
        for q in questions:
            text = q.answers[0] if self.good or q.id == "q0" else "<script>alert(1)</script>"
            retrieved = [{"title": q.gold_titles[0], "section": "", "score": 1.0}] if (
                self.uses_retrieval) else []
            out.append(SystemAnswer(q.id, text, prompt=q.question, retrieved=retrieved,
                                    latency_s=0.5, completion_tokens=3))
        return out

    def choose(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        self.calls += len(questions)
        return [SystemAnswer(q.id, q.choices[1], choice=1 if self.good else 0) for q in questions]

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name}


@pytest.fixture
def qfile(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n", encoding="utf-8")
    return path


def make_builder(systems: dict[str, CannedSystem]):
    def build(col: Column, cfg: ExperimentConfig) -> CannedSystem:
        return systems.setdefault(col.label, CannedSystem(col.system, col.system == "rag"))
    return build


def test_run_writes_everything_and_calls_the_winner(tmp_path: Path, qfile: Path) -> None:
    cfg = ExperimentConfig(questions=(str(qfile),), systems=("base", "rag"))
    run = run_experiment(cfg, tmp_path / "runs" / "demo", make_builder({}))
    for name in ("config.yaml", "samples.jsonl", "results.json", "report.md", "report.html"):
        assert (run / name).is_file(), name
    assert (run / "plots" / "metrics.png").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["exact_match"]["rag"]["mean"] == 1.0
    assert results["metrics"]["exact_match"]["base"]["mean"] == pytest.approx(1 / 12)
    assert results["primary_metric"] == "answer_accuracy"
    assert any(v.startswith("rag beats base on answer_accuracy") for v in results["verdicts"])
    assert any(p["verdict"].startswith("rag beats base on exact_match") for p in results["paired"])
    assert results["metrics"]["mc_accuracy"]["rag"]["mean"] == 1.0
    assert "control" in results["by_tag"]
    html = (run / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_runs_are_never_overwritten_and_unfinished_runs_resume(tmp_path: Path,
                                                               qfile: Path) -> None:
    cfg = ExperimentConfig(questions=(str(qfile),), systems=("base",))
    first = run_experiment(cfg, tmp_path / "r", make_builder({}))
    assert run_dir_for(tmp_path / "r") == tmp_path / "r-2"
    # an unfinished run: half the samples, no results.json -> continued, not redone
    unfinished = tmp_path / "u"
    unfinished.mkdir()
    lines = (first / "samples.jsonl").read_text().splitlines()[:5]
    (unfinished / "samples.jsonl").write_text("\n".join(lines) + "\n")
    systems: dict[str, CannedSystem] = {}
    run = run_experiment(cfg, unfinished, make_builder(systems))
    assert run == unfinished
    assert systems["base"].calls == len(QUESTIONS) - 5
    assert len((run / "samples.jsonl").read_text().splitlines()) == len(QUESTIONS)


def test_every_system_is_built_before_the_first_answer(tmp_path: Path, qfile: Path) -> None:
    """A column that cannot be built (here: its adapter is missing) fails the run before the
    first column spends its minutes, and nothing is answered."""
    from core.errors import UserError

    cfg = ExperimentConfig(questions=(str(qfile),), systems=("base", "rag", "finetuned"))
    systems: dict[str, CannedSystem] = {}
    build = make_builder(systems)

    def missing_adapter(col: Column, cfg: ExperimentConfig) -> CannedSystem:
        if col.system == "finetuned":
            raise UserError("no adapter at ./nowhere")
        return build(col, cfg)

    with pytest.raises(UserError, match="no adapter"):
        run_experiment(cfg, tmp_path / "run", missing_adapter, progress=False)
    assert set(systems) == {"base", "rag"} and not any(s.calls for s in systems.values())
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def test_columns_model_by_decoding_by_system() -> None:
    cfg = ExperimentConfig(models=("m1", "m2"), systems=("base", "rag"),
                           decodings=({"name": "greedy"}, {"name": "beam", "strategy": "beam"}))
    labels = [c.label for c in columns_for(cfg)]
    assert len(labels) == 8 and "m2/beam/rag" in labels


def test_questions_a_training_pair_asks_are_tagged_for_every_column(qfile: Path,
                                                                     tmp_path: Path) -> None:
    """Report mode: the adapter's overlap record splits every system's results into questions
    with and without an overlapping training pair (by_tag overlap:trained / overlap:unseen)."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({"leakage": {
        "enabled": True, "mode": "report", "overlaps": [
            {"pair": "p1", "line": 3, "question": "q1"}, {"pair": "p2", "line": 9,
                                                         "question": "q2"}]}}))
    cfg = ExperimentConfig(questions=(str(qfile),), systems=("base", "finetuned"),
                           models=("tiny",), adapters={"tiny": str(adapter)})
    run = run_experiment(cfg, tmp_path / "run", make_builder({}), progress=False)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    trained = {s["question_id"] for s in samples if "overlap:trained" in s["tags"]}
    assert trained == {"q1", "q2"}
    assert all(("overlap:unseen" in s["tags"]) == (s["question_id"] not in trained)
               for s in samples)
    by_tag = json.loads((run / "results.json").read_text())["by_tag"]
    assert by_tag["overlap:trained"]["f1"]["finetuned"]["n"] == 2
    # no overlap record (the check did not run): no tags at all
    (adapter / "manifest.json").write_text(json.dumps({"leakage": {"enabled": False}}))
    again = run_experiment(cfg, tmp_path / "run2", make_builder({}), progress=False)
    assert "overlap:trained" not in (again / "samples.jsonl").read_text()
