"""The whole CLI end to end on the bundled 135M model: a small store from the sample dump, a
two-step adapter, ``compare run`` of all four systems, then report, diff and the rating round
trip; a second run is served entirely from the generation cache."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from core.paths import sample_dump
from models.sources import TEST_GENERATOR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ingest.store") is None
                       or importlib.util.find_spec("ingest.cli") is None,
                       reason="the ingest stage is not in this checkout yet"),
]

QUESTIONS = [
    {"id": "q1", "question": "Qual a capital do Brasil?", "answers": ["Brasília"],
     "gold_titles": ["Brasília"], "tags": ["topic:geografia"]},
    {"id": "q2", "question": "Quem foi Tiradentes?", "answers": ["Joaquim José da Silva Xavier"],
     "gold_titles": ["Tiradentes"], "tags": ["topic:inconfidencia"]},
    {"id": "c1", "question": "Qual é a capital da França?", "answers": ["Paris"],
     "tags": ["control"]},
    {"id": "mc1", "question": "Qual foi a primeira capital do Brasil?", "answers": ["Salvador"],
     "choices": ["Rio de Janeiro", "Salvador", "Brasília", "Recife"], "answer_index": 1,
     "tags": ["mc"]},
]


@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store of the first sample pages, pairs from 4 of them and a one-step adapter on the 135M
    model (no validation split: no eval pass)."""
    from finetune.cli import main as finetune_main
    from ingest.cli import main as ingest_main

    tmp = tmp_path_factory.mktemp("e2e")
    store, pairs, adapter = tmp / "store", tmp / "pairs.jsonl", tmp / "adapter"
    assert ingest_main(["build", str(sample_dump()), "--store", str(store), "--limit", "12",
                        "--quiet"]) == 0
    assert finetune_main(["pairs", "--store", str(store), "--out", str(pairs), "--max-pages",
                          "4", "--val-fraction", "0", "--quiet"]) == 0
    assert finetune_main(["train", "--config", "cpu-demo", "--model", TEST_GENERATOR,
                          "--max-steps", "1", "--pairs", str(pairs), "--out", str(adapter),
                          "--quiet"]) == 0
    questions = tmp / "q.jsonl"
    questions.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS),
                         encoding="utf-8")
    return {"tmp": tmp, "store": store, "adapter": adapter, "questions": questions}


def compare(*argv: str) -> int:
    from compare.cli import main

    return main(list(argv))


def test_compare_cli_end_to_end(pipeline_inputs: dict[str, Path], capsys) -> None:
    p = pipeline_inputs
    runs, cache = p["tmp"] / "runs", p["tmp"] / "generations.sqlite"
    common = [str(p["questions"]), "--model", TEST_GENERATOR, "--store", str(p["store"]),
              "--adapter", str(p["adapter"]), "--max-new-tokens", "12", "--batch-size", "4",
              "--cache", str(cache), "--quiet"]
    assert compare("run", *common, "--out", str(runs / "e2e")) == 0
    run = runs / "e2e"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert results["columns"] == ["base", "rag", "finetuned", "rag+finetuned"]
    assert "hit@k" in results["metrics"] and "mc_accuracy" in results["metrics"]
    assert "control" in results["by_tag"] and results["paired"]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * len(QUESTIONS)
    rag = [s for s in samples if s["system"] == "rag" and s["question_id"] == "q1"][0]
    assert rag["retrieved"] and all("chunk_id" in r for r in rag["retrieved"])
    fp = results["provenance"]["systems"]["finetuned"]
    assert fp["adapter"]["sha256"] and fp["generator"]["fingerprint"]
    html = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="plot-train-loss"' in html  # the adapter's loss.png, embedded
    # a second run: a new run dir, nothing generated
    assert compare("run", *common, "--out", str(runs / "e2e")) == 0
    again = json.loads((runs / "e2e-2" / "results.json").read_text(encoding="utf-8"))
    assert all(c["cached"] == c["n"] for c in again["latency"].values())
    # report, diff, rating round trip
    assert compare("report", str(run)) == 0
    assert compare("diff", str(run), str(runs / "e2e-2")) == 0
    assert "| rag | f1 |" in capsys.readouterr().out
    sheet = p["tmp"] / "sheet.csv"
    assert compare("rate", str(run), "--export", str(sheet)) == 0
    with open(sheet, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 3 and "rag" not in sheet.read_text(encoding="utf-8")
    for row in rows:
        row.update(accuracy="3", relevance="4", coherence="5", contextual_understanding="2")
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert compare("rate", str(run), "--import", str(sheet)) == 0
    rated = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert rated["metrics"]["human_overall"]["rag"]["mean"] == pytest.approx(3.5)
    assert rated["provenance"] == results["provenance"]

