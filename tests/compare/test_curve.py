"""The knowledge-injection curve with canned systems over a precomputed snapshot layout: points,
intervals, paired tests, the figure and table, resume, and the training decisions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from compare.config import ExperimentConfig
from compare.curve import (
    CURVE_JSON,
    CurveConfig,
    best_point,
    ensure_adapter,
    load_curve_config,
    plan_points,
    run_curve,
)
from compare.protocol import SystemAnswer
from compare.runner import Column, run_experiment
from compare.stats import wilson_ci
from core.errors import UserError
from core.questions import Question

N = 20
BASE_RIGHT = 2  # questions q0..q1
TUNED_RIGHT = {0.5: 4, 1.0: 8, 2.0: 14}  # by snapshot epoch
RAG_RIGHT = {1: 10, 2: 12, 3: 15, 4: 16, 5: 16}  # by k
SNAPSHOTS = {0.5: (3, 600, 250, 1.5), 1.0: (5, 1000, 420, 2.5), 2.0: (10, 2000, 840, 5.0)}


@pytest.fixture
def qfile(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i:02d}", "question": f"Quem foi a pessoa número {i}?",
             "answers": [f"Fulano{i}"]} for i in range(N)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def _write_adapter(folder: Path, manifest: dict[str, Any], weights: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    """What `finetune train` with snapshot_epochs (0.5, 1, 2) leaves: the final adapter (its
    last step is the epoch-2 snapshot's) and three snapshot dirs."""
    root = tmp_path / "adapter"
    common = {"format_version": 1, "kind": "lora", "prompt_format": {"name": "chat"},
              "base_model": {"name": "qwen2.5-coder-0.5b-instruct"}}
    _write_adapter(root, {**common, "training": {"global_step": 10, "epoch": 2.0,
                                                 "completed": True},
                          "pairs": {"path": "p.jsonl", "sha256": "0" * 64}}, b"final")
    for epoch, (step, tokens, loss, secs) in SNAPSHOTS.items():
        _write_adapter(root / "snapshots" / f"epoch-{epoch:g}", {
            **common, "training": {"global_step": step, "epoch": epoch, "completed": True},
            "snapshot": {"requested_epoch": epoch, "epoch": epoch, "step": step,
                         "tokens_seen": tokens, "loss_tokens": loss, "train_seconds": secs,
                         "cpu_seconds": 2 * secs, "device": "cpu"}}, f"w{epoch}".encode())
    return root


class Canned:
    """Right on the first ``right`` questions, wrong on the rest."""

    def __init__(self, name: str, right: int, calls: list[str]) -> None:
        self.name, self.right, self.calls = name, right, calls
        self.uses_retrieval = "rag" in name

    def answer(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        self.calls.extend(q.id for q in questions)
        return [SystemAnswer(q.id, q.answers[0] if int(q.id[1:]) < self.right else "não sei")
                for q in questions]

    def choose(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        raise AssertionError("no multiple-choice question here")

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "right": self.right}


def canned_runner(calls: list[str], fail_after: int | None = None):
    """A point runner: compare's runner with canned systems; the adapter's snapshot epoch (or k)
    decides how many questions a column gets right."""
    runs: list[str] = []

    def build(col: Column, cfg: ExperimentConfig) -> Canned:
        if col.system == "base":
            right = BASE_RIGHT
        elif col.system == "rag":
            right = RAG_RIGHT[cfg.k]
        else:
            manifest = json.loads((Path(cfg.adapters["*"]) / "manifest.json").read_text())
            right = TUNED_RIGHT[manifest["snapshot"]["requested_epoch"]]
        return Canned(col.system, right, calls)

    def run(exp: ExperimentConfig, run_dir: Path) -> Path:
        if fail_after is not None and len(runs) >= fail_after:
            raise KeyboardInterrupt
        runs.append(run_dir.name)
        return run_experiment(exp, run_dir, build, progress=False)

    run.runs = runs  # type: ignore[attr-defined]
    return run


def curve_config(qfile: Path, adapter: Path, **over: Any) -> CurveConfig:
    """An evaluation of the existing adapter dir (``train: false``) on the canned questions."""
    return CurveConfig(**{"questions": (str(qfile),), "adapter": str(adapter), "train": False,
                          **over})


def test_points_intervals_and_tests(qfile: Path, adapter: Path, tmp_path: Path) -> None:
    calls: list[str] = []
    out = tmp_path / "curve"
    record = run_curve(curve_config(qfile, adapter), out, run_point=canned_runner(calls),
                       say=lambda _: None)
    assert record["complete"] and record["primary_metric"] == "answer_accuracy"
    points = {p["label"]: p for p in record["points"]}
    assert list(points) == ["base", "finetuned@0.5ep", "finetuned@1ep", "finetuned@2ep",
                            "rag k=1", "rag k=2", "rag k=3", "rag k=4", "rag k=5"]
    expected = {"base": BASE_RIGHT, **{f"finetuned@{e:g}ep": r for e, r in TUNED_RIGHT.items()},
                **{f"rag k={k}": r for k, r in RAG_RIGHT.items()}}
    for label, right in expected.items():
        p = points[label]
        ci = wilson_ci(right, N)
        assert (p["mean"], p["n"], p["interval"]) == (right / N, N, "wilson"), label
        assert p["low"] == pytest.approx(ci.low) and p["high"] == pytest.approx(ci.high)
    # Wilson's interval for 8/20, written out: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    assert points["finetuned@1ep"]["low"] == pytest.approx(0.21881, abs=1e-5)
    assert points["finetuned@1ep"]["high"] == pytest.approx(0.61342, abs=1e-5)
    # training compute comes from the snapshot manifests; base and RAG trained nothing
    one = points["finetuned@1ep"]
    assert (one["step"], one["tokens_seen"], one["loss_tokens"], one["train_seconds"],
            one["cpu_seconds"]) == (5, 1000, 420, 2.5, 5.0)
    assert points["base"]["tokens_seen"] == 0 and points["rag k=3"]["k"] == 3
    assert Path(points["rag k=3"]["run_dir"]) == out / "runs" / "rag-k3"
    # McNemar exact, by hand: finetuned@2ep is right on q00..q13, base on q00..q01: 12
    # discordant pairs all one way, p = 2 * 0.5**12; the vs-k=3 pair has 1 discordant pair
    tests = {(t["a"], t["b"]): t for t in record["tests"]}
    assert set(tests) == {("finetuned@0.5ep", "base"), ("finetuned@1ep", "base"),
                          ("finetuned@2ep", "base"),
                          *{("finetuned@2ep", f"rag k={k}") for k in RAG_RIGHT}}
    best = tests[("finetuned@2ep", "base")]
    assert best["test"] == "mcnemar-exact"
    assert best["p_value"] == pytest.approx(2 * 0.5 ** 12)
    assert (best["wins"], best["ties"], best["losses"]) == (12, 8, 0)
    assert tests[("finetuned@1ep", "base")]["p_value"] == pytest.approx(2 * 0.5 ** 6)
    assert tests[("finetuned@2ep", "rag k=1")]["p_value"] == pytest.approx(2 * 0.5 ** 4)
    assert tests[("finetuned@2ep", "rag k=3")]["p_value"] == pytest.approx(1.0)
    # Holm over the 8 tests: the smallest p times 8, the next (0.03125) times 7
    assert record["multiplicity"]["family_size"] == 8
    assert best["p_adjusted"] == pytest.approx(8 * 2 * 0.5 ** 12)
    assert tests[("finetuned@1ep", "base")]["p_adjusted"] == pytest.approx(7 * 2 * 0.5 ** 6)
    assert best["verdict"].startswith("finetuned@2ep beats base on answer_accuracy")
    # the figure and the table
    png = (out / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (out / "curve.md").read_text(encoding="utf-8")
    assert "![answer_accuracy" in md and "(curve.png)" in md
    assert "| finetuned@1ep | finetuned | 1.00 | – | 5 | 1,000 | 420 | 2.5 | 5.0 | cpu | " \
           "0.400 [0.219, 0.613] | 20 |" in md
    assert "Holm-adjusted" in md
    on_disk = json.loads((out / CURVE_JSON).read_text(encoding="utf-8"))
    assert on_disk["points"] == record["points"]


def test_an_interrupted_curve_resumes_without_redoing_points(qfile: Path, adapter: Path,
                                                             tmp_path: Path) -> None:
    out, cfg = tmp_path / "curve", curve_config(qfile, adapter, rag_ks=(1, 2))
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_curve(cfg, out, run_point=canned_runner(calls, fail_after=2), say=lambda _: None)
    partial = json.loads((out / CURVE_JSON).read_text(encoding="utf-8"))
    assert not partial["complete"] and len(partial["points"]) == 2
    assert len(calls) == 2 * N
    runner = canned_runner(calls)
    record = run_curve(cfg, out, run_point=runner, say=lambda _: None)
    assert runner.runs == ["finetuned-epoch-1", "finetuned-epoch-2", "rag-k1", "rag-k2"]
    assert len(calls) == 6 * N  # every point answered once in all
    assert record["complete"] and len(record["points"]) == 6
    # a third run measures nothing; changed weights under a finished point are refused
    again = canned_runner(calls)
    run_curve(cfg, out, run_point=again, say=lambda _: None)
    assert again.runs == []
    (adapter / "snapshots" / "epoch-1" / "adapter_model.safetensors").write_bytes(b"retrained")
    with pytest.raises(UserError, match="adapter weights"):
        run_curve(cfg, out, run_point=canned_runner(calls), say=lambda _: None)


def test_changed_settings_under_a_finished_point_are_refused(qfile: Path, adapter: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "curve"
    run_curve(curve_config(qfile, adapter, rag_ks=(1,), finetuned_systems=()), out,
              run_point=canned_runner([]), say=lambda _: None)
    with pytest.raises(UserError, match="max_new_tokens"):
        run_curve(curve_config(qfile, adapter, rag_ks=(1,), finetuned_systems=(),
                               experiment={"max_new_tokens": 7}), out,
                  run_point=canned_runner([]), say=lambda _: None)


def test_rag_finetuned_points_share_the_snapshot_run(qfile: Path, adapter: Path) -> None:
    cfg = curve_config(qfile, adapter, finetuned_systems=("finetuned", "rag+finetuned"),
                       experiment={"k": 3}, rag_ks=(3,))
    plans = plan_points(cfg, adapter)
    labels = [(p.label, p.run, p.k) for p, _ in plans]
    assert ("rag+finetuned@1ep k=3", "finetuned-epoch-1", 3) in labels
    assert ("finetuned@1ep", "finetuned-epoch-1", None) in labels
    exp = dict((p.label, e) for p, e in plans)["rag+finetuned@1ep k=3"]
    assert exp.systems == ("finetuned", "rag+finetuned") and exp.k == 3
    assert exp.adapters == {"*": str(adapter / "snapshots" / "epoch-1")}


def test_the_final_adapter_is_a_point_when_no_snapshot_is_its_last_step(
        qfile: Path, adapter: Path) -> None:
    manifest = json.loads((adapter / "manifest.json").read_text())
    manifest["training"].update(global_step=12, epoch=2.4)
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    plans = plan_points(curve_config(qfile, adapter, rag_ks=()), adapter)
    final = [p for p, _ in plans if p.adapter == str(adapter)]
    assert [(p.label, p.run, p.step, p.epoch, p.tokens_seen) for p in final] == [
        ("finetuned@2.4ep", "finetuned-final", 12, 2.4, None)]


def test_best_point_breaks_ties_by_less_training() -> None:
    from compare.curve import Point

    points = [Point("a", "finetuned", "a", epoch=1, tokens_seen=100, mean=0.5),
              Point("b", "finetuned", "b", epoch=2, tokens_seen=200, mean=0.5),
              Point("c", "finetuned", "c", epoch=0.5, tokens_seen=50, mean=0.4)]
    assert best_point(points).label == "a"
    assert best_point(points, higher_is_better=False).label == "c"
    assert best_point([]) is None


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="set by the curve itself"):
        CurveConfig(experiment={"systems": ["rag"]})
    with pytest.raises(UserError, match="Did you mean 'max_new_tokens'"):
        CurveConfig(experiment={"max_new_token": 3})
    with pytest.raises(UserError, match="rag\\+finetuned"):
        CurveConfig(finetuned_systems=("rag-finetuned",))
    with pytest.raises(UserError, match="rag_ks"):
        CurveConfig(rag_ks=(0,))
    with pytest.raises(UserError, match="above 0"):
        CurveConfig(snapshot_epochs=(0,))
    demo = load_curve_config(Path(__file__).resolve().parents[2] / "compare" / "experiments"
                             / "curve-demo.yaml")
    assert demo.rag_ks == (1, 2, 3, 4, 5) and demo.snapshot_epochs[-1] == 3.0
    from compare.cli import build_parser

    args = build_parser().parse_args(["curve", "c.yaml", "--out", "runs/c", "--limit", "5"])
    assert (args.cmd, args.config, args.out, args.limit) == ("curve", Path("c.yaml"),
                                                            Path("runs/c"), 5)


def test_training_is_reused_resumed_or_redone(tmp_path: Path) -> None:
    from core.config import config_dict
    from core.hashing import sha256_file
    from finetune.config import train_config

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"instruction": "Quem?", "output": "Ele."}\n', encoding="utf-8")
    trained: list[tuple[Path, bool]] = []

    def fake_train(config_yaml: Path, pairs_path: Path, out: Path, resume: bool) -> None:
        config = train_config(config_yaml)  # what `finetune train --config` reads back
        trained.append((out, resume))
        _write_adapter(out, {"config": config_dict(config), "training": {"completed": True},
                             "pairs": {"sha256": sha256_file(pairs_path)}}, b"w")

    out = tmp_path / "curve"
    cfg = CurveConfig(pairs=str(pairs), snapshot_epochs=(0.5, 1))
    model = "qwen2.5-coder-0.5b-instruct"
    adapter = ensure_adapter(cfg, out, model, lambda _: None, fake_train)
    assert adapter == out / "adapter" and trained == [(adapter, False)]
    written = train_config(out / "train-config.yaml")
    assert (written.num_train_epochs, written.max_steps, written.snapshot_epochs) == (
        1.0, -1, (0.5, 1.0))
    ensure_adapter(cfg, out, model, lambda _: None, fake_train)
    assert len(trained) == 1  # same settings and pairs: reused
    changed = CurveConfig(pairs=str(pairs), snapshot_epochs=(0.5, 1),
                          train_overrides={"learning_rate": 1e-3})
    ensure_adapter(changed, out, model, lambda _: None, fake_train)
    assert trained[-1] == (adapter, False) and len(trained) == 2  # its own dir: trained again
    elsewhere = tmp_path / "mine"
    _write_adapter(elsewhere, {"config": {}, "training": {"completed": True},
                               "pairs": {"sha256": "x"}}, b"w")
    with pytest.raises(UserError, match="other settings"):
        ensure_adapter(CurveConfig(pairs=str(pairs), adapter=str(elsewhere)), out, model,
                       lambda _: None, fake_train)
    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints").mkdir(parents=True)  # stopped before its first save
    ensure_adapter(CurveConfig(pairs=str(pairs), adapter=str(interrupted)), out, model,
                   lambda _: None, fake_train)
    assert trained[-1] == (interrupted, False)  # nothing to resume from: starts over
    (interrupted / "manifest.json").unlink()
    (interrupted / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    ensure_adapter(CurveConfig(pairs=str(pairs), adapter=str(interrupted)), out, model,
                   lambda _: None, fake_train)
    assert trained[-1] == (interrupted, True)
    with pytest.raises(UserError, match="is not the curve's model"):
        ensure_adapter(CurveConfig(pairs=str(pairs), train_overrides={"model": "other"}), out,
                       model, lambda _: None, fake_train)


def test_the_command_line(qfile: Path, adapter: Path, tmp_path: Path, monkeypatch,
                          capsys) -> None:
    import compare.curve
    from compare.cli import main

    calls: list[str] = []
    monkeypatch.setattr(compare.curve, "real_point_runner", lambda progress: canned_runner(calls))
    config = tmp_path / "curve.yaml"
    config.write_text(f"questions: [{qfile}]\nadapter: {adapter}\ntrain: false\nrag_ks: [1]\n"
                      "experiment: {max_new_tokens: 16}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["curve", str(config), "--out", str(out), "--limit", "10"]) == 0
    printed = capsys.readouterr().out
    assert "[1/5] base: answering base" in printed
    # 10 questions: finetuned@2ep right on all, base on 2: p = 2 * 0.5**8 = 0.00781; rag k=1 is
    # right on all too (not testable), so the family is the 3 tests vs base: 3 * 0.00781
    assert "finetuned@2ep beats base on answer_accuracy by 0.8" in printed
    assert "Holm-adjusted p=0.0234" in printed
    assert "- not testable: finetuned@2ep and rag k=1" in printed
    assert f"curve: {out / 'curve.md'}" in printed
    record = json.loads((out / CURVE_JSON).read_text(encoding="utf-8"))
    assert {p["n"] for p in record["points"]} == {10}
    assert len(calls) == 5 * 10
    assert record["config"]["experiment"] == {"max_new_tokens": 16, "limit": 10}
