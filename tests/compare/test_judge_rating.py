"""LLM judge (with a scripted fake judge) and the human rating round trip."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from compare.judge import _combine, judge_pairwise, judge_rubric, parse_rubric, parse_winner
from compare.rating import KEY_FILE, agreement, export_sheet, fold_ratings, read_sheet
from compare.rundir import Sample
from core.errors import UserError


@dataclass
class Out:
    text: str


class ScriptedJudge:
    """Replies from a list in order; records what it was asked."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.asked = list(replies), []

    def generate(self, prompts, decoding=None):
        self.asked.extend(prompts)
        return [Out(self.replies.pop(0)) for _ in prompts]


def sample(col: str, qid: str, output: str) -> Sample:
    return Sample(column=col, system=col, model="m", decoding={}, question_id=qid,
                  question="Quem foi Tiradentes?", references=["Joaquim José da Silva Xavier"],
                  output=output, lang="pt")


GOOD = '{"accuracy": 5, "relevance": 4, "coherence": 5, "contextual_understanding": 4}'


def test_parse_rubric_validates_range_and_type() -> None:
    assert parse_rubric(f"Aqui: {GOOD} fim") == {"accuracy": 5, "relevance": 4, "coherence": 5,
                                                 "contextual_understanding": 4}
    assert parse_rubric(GOOD.replace("5", "7", 1)) is None
    assert parse_rubric("nota 5") is None


def test_rubric_retries_malformed_json_and_prompts_in_question_language() -> None:
    judge = ScriptedJudge(["não sei", GOOD])
    samples = [sample("rag", "q1", "Joaquim José da Silva Xavier")]
    assert judge_rubric(samples, judge) == 0
    assert samples[0].scores["judge_overall"] == pytest.approx(4.5)
    assert len(judge.asked) == 2
    assert "PERGUNTA" in judge.asked[0][1]["content"]
    assert "JSON object only" in judge.asked[1][1]["content"]


def test_rubric_gives_up_after_retries() -> None:
    samples = [sample("rag", "q1", "x")]
    assert judge_rubric(samples, ScriptedJudge(["a", "b", "c"]), retries=2) == 1
    assert "judge_overall" not in samples[0].scores


def test_pairwise_swaps_positions_and_detects_bias() -> None:
    samples = [sample("rag", "q1", "certo"), sample("base", "q1", "errado"),
               sample("rag", "q2", "x"), sample("base", "q2", "y")]
    # q1: A then (swapped) B -> consistent win for rag; q2: "A" both times -> position bias
    judge = ScriptedJudge(['{"winner": "A"}', '{"winner": "B"}',
                           '{"winner": "A"}', '{"winner": "A"}'])
    res = judge_pairwise(samples, "rag", "base", judge)
    assert res["a_wins"] == 1 and res["inconsistent"] == 1 and res["position_bias_rate"] == 0.5
    first, swapped = judge.asked[0][1]["content"], judge.asked[1][1]["content"]
    assert first.index("certo") < first.index("errado")
    assert swapped.index("errado") < swapped.index("certo")


def test_winner_parsing_and_combination() -> None:
    assert parse_winner('{"winner": "empate"}') == "tie"
    assert _combine("tie", "tie") == "tie" and _combine("B", "A") == "B"
    assert _combine(None, "A") == "inconsistent"


def test_rating_round_trip_and_agreement(tmp_path: Path) -> None:
    samples = [sample(col, f"q{i}", f"{col} {i}") for i in range(6) for col in ("rag", "base")]
    for i, s in enumerate(samples):
        s.scores.update({f"judge_{c}": float(1 + i % 5) for c in
                            ("accuracy", "relevance", "coherence", "contextual_understanding")})
    sheet = tmp_path / "sheet.csv"
    assert export_sheet(samples, tmp_path, sheet, seed=1) == 12
    text = sheet.read_text()
    assert "rag" not in text.split("\n")[0] and "column" not in text  # blind
    key = json.loads((tmp_path / KEY_FILE).read_text())
    with open(sheet, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_item = {s.key: s for s in samples}
    for row in rows:  # the human agrees exactly with the judge
        s = by_item[(key[row["item"]]["column"], key[row["item"]]["question_id"])]
        for c in ("accuracy", "relevance", "coherence", "contextual_understanding"):
            row[c] = str(int(s.scores[f"judge_{c}"]))
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert fold_ratings(samples, read_sheet(sheet, key), key) == 12
    agree = agreement(samples)
    assert agree["accuracy"]["spearman"] == pytest.approx(1.0)
    assert agree["accuracy"]["kappa_quadratic"] == pytest.approx(1.0)


def test_bad_rating_rows_all_reported(tmp_path: Path) -> None:
    sheet = tmp_path / "s.csv"
    sheet.write_text("item,accuracy,relevance,coherence,contextual_understanding\n"
                     "item-0001,5,5,5,9\nitem-9999,1,1,1,1\nitem-0002,,,,\n", encoding="utf-8")
    key = {"item-0001": {}, "item-0002": {}}
    with pytest.raises(UserError) as err:
        read_sheet(sheet, key)
    assert "s.csv:2" in str(err.value) and "s.csv:3" in str(err.value)
