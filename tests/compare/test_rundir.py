"""compare.rundir: the run dir's samples.jsonl and results.json, read and written in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare.protocol import SystemAnswer
from compare.rundir import (
    RESULTS_FILE,
    SAMPLES_FILE,
    Sample,
    answered,
    append_samples,
    is_finished,
    read_results,
    read_samples,
    require_finished,
    run_dir_for,
    update_results,
    write_results,
    write_samples,
)
from compare.runner import Column, sample_record
from core.errors import UserError
from core.questions import Question


def sample(col: str = "rag", qid: str = "q1", **kw) -> Sample:
    return Sample(column=col, system=col, model="m", decoding={"strategy": "greedy"},
                  question_id=qid, question="Quem foi Tiradentes?", references=["Joaquim"],
                  **kw)


def test_a_line_keeps_the_keys_and_order_of_the_runner_record() -> None:
    q = Question("q1", "Quem foi Tiradentes?", ("Joaquim José",), tags=("t",), lang="pt")
    ans = SystemAnswer("q1", "Joaquim José", prompt=[{"role": "user", "content": "?"}],
                       retrieved=[{"title": "Tiradentes", "score": 1.0}], latency_s=0.5,
                       prompt_tokens=7, completion_tokens=3)
    line = sample_record(Column("rag", "rag", "m", {"strategy": "greedy"}), q, ans,
                         uses_retrieval=True).to_json()
    obj = json.loads(line)
    assert list(obj) == ["column", "system", "model", "decoding", "question_id", "question",
                         "references", "tags", "lang", "prompt", "retrieved", "output", "choice",
                         "choice_scores", "scores", "latency_s", "prompt_tokens",
                         "completion_tokens", "cached"]
    assert obj["references"] == ["Joaquim José"] and obj["tags"] == ["t"]
    assert obj["scores"]["exact_match"] == 1.0 and obj["choice"] is None
    assert "Joaquim José" in line  # UTF-8 kept readable, as before (ensure_ascii=False)


def test_round_trip(tmp_path: Path) -> None:
    samples = [sample(output="Joaquim", scores={"f1": 1.0}, retrieved=[{"title": "T"}]),
               sample("base", output="B", choice=1, choice_scores=[-1.0, -0.5], cached=True,
                      prompt="texto", latency_s=2, completion_tokens=0)]
    write_samples(tmp_path, samples)
    assert read_samples(tmp_path) == samples
    text = (tmp_path / SAMPLES_FILE).read_text(encoding="utf-8")
    assert text == "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples)
    append_samples(tmp_path, [sample(qid="q2")])
    assert [s.key for s in read_samples(tmp_path)] == [("rag", "q1"), ("base", "q1"),
                                                      ("rag", "q2")]
    assert answered(tmp_path) == {("rag", "q1"), ("base", "q1"), ("rag", "q2")}


def test_results_round_trip_and_update(tmp_path: Path) -> None:
    results = {"title": "T", "columns": ["base"], "metrics": {"f1": {"base": {"mean": 0.5}}},
               "note": "São Paulo"}
    write_results(tmp_path, results)
    assert (tmp_path / RESULTS_FILE).read_text(encoding="utf-8") == json.dumps(
        results, indent=2, ensure_ascii=False)  # the same bytes as before rundir existed
    assert read_results(tmp_path) == results
    assert update_results(tmp_path, {"judge": {"n": 1}})["judge"] == {"n": 1}
    assert read_results(tmp_path) == {**results, "judge": {"n": 1}}


def test_finished_and_unfinished_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert not is_finished(out) and run_dir_for(out) == out  # new
    out.mkdir()
    append_samples(out, [sample()])
    assert not is_finished(out) and run_dir_for(out) == out  # unfinished: continued
    with pytest.raises(UserError, match="not a finished run dir"):
        require_finished(out)
    with pytest.raises(UserError, match="not a finished run dir"):
        read_results(out)
    write_results(out, {"title": "done"})
    assert is_finished(out) and run_dir_for(out) == tmp_path / "run-2"  # never overwritten
    (tmp_path / "run-2").mkdir()
    write_results(tmp_path / "run-2", {})
    assert run_dir_for(out) == tmp_path / "run-3"
    require_finished(out)


def test_new_run_has_nothing_answered_and_no_samples(tmp_path: Path) -> None:
    assert answered(tmp_path) == set()
    with pytest.raises(UserError, match=f"no {SAMPLES_FILE}"):
        read_samples(tmp_path)


def test_every_bad_line_reported_with_its_number(tmp_path: Path) -> None:
    good = sample().to_json()
    missing = {k: v for k, v in sample().to_dict().items() if k != "scores"}
    wrong = {**sample().to_dict(), "latency_s": "fast", "extra": 1}
    (tmp_path / SAMPLES_FILE).write_text("\n".join(
        [good, "{torn", "", json.dumps(missing), json.dumps(wrong), "[1]", good]) + "\n",
        encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_samples(tmp_path)
    message = str(err.value)
    assert message.startswith(f"4 bad line(s) in {tmp_path / SAMPLES_FILE}")
    path = tmp_path / SAMPLES_FILE
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:4: missing 'scores'" in message
    assert f"{path}:5: 'latency_s' is not a number; unknown field(s) 'extra'" in message
    assert f"{path}:6: not a JSON object" in message
    assert f"{path}:1:" not in message and f"{path}:7:" not in message


def test_a_torn_last_line_is_dropped_when_a_run_continues(tmp_path: Path) -> None:
    path = tmp_path / SAMPLES_FILE
    whole = sample().to_json() + "\n"
    path.write_text(whole + sample(qid="q2").to_json()[:40], encoding="utf-8")  # Ctrl-C mid-write
    assert answered(tmp_path) == {("rag", "q1")}
    assert path.read_text(encoding="utf-8") == whole
    append_samples(tmp_path, [sample(qid="q2")])
    assert [s.question_id for s in read_samples(tmp_path)] == ["q1", "q2"]
    path.write_text(whole.rstrip("\n"), encoding="utf-8")  # whole, only the newline missing
    assert answered(tmp_path) == {("rag", "q1")}
    assert path.read_text(encoding="utf-8") == whole
