"""LLM judge (with a scripted fake judge) and the human rating round trip."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compare.cache import GenerationCache, cache_key
from compare.config import ExperimentConfig
from compare.judge import (
    _combine,
    judge_agreement,
    judge_pairwise,
    judge_rubric,
    judge_samples,
    parse_rubric,
    parse_winner,
    rubric_prompt,
    same_as_model_under_test,
)
from compare.rating import KEY_FILE, agreement, export_sheet, fold_ratings, read_sheet
from compare.rundir import Sample
from compare.systems import SystemFactory
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
    assert judge_rubric(samples, judge) == {"scored": 1, "unparsed": 0}
    assert samples[0].scores["judge_overall"] == pytest.approx(4.5)
    assert samples[0].scores["judge_correct"] == 1.0  # accuracy 5 >= 4
    assert len(judge.asked) == 2
    assert "PERGUNTA" in judge.asked[0][1]["content"]
    assert "JSON object only" in judge.asked[1][1]["content"]


def test_rubric_gives_up_after_retries() -> None:
    samples = [sample("rag", "q1", "x")]
    assert judge_rubric(samples, ScriptedJudge(["a", "b", "c"]), retries=2) == {
        "scored": 0, "unparsed": 1}
    assert "judge_overall" not in samples[0].scores and "judge_correct" not in samples[0].scores


def test_pairwise_swaps_positions_and_detects_bias() -> None:
    samples = [sample("rag", "q1", "certo"), sample("base", "q1", "errado"),
               sample("rag", "q2", "x"), sample("base", "q2", "y")]
    # q1: A then (swapped) B -> consistent win for rag; q2: "A" both times -> position bias
    judge = ScriptedJudge(['{"winner": "A"}', '{"winner": "B"}',
                           '{"winner": "A"}', '{"winner": "A"}'])
    res = judge_pairwise(samples, "rag", "base", judge)
    assert res["a_wins"] == 1 and res["position_inconsistent"] == 1 and res["unparsed"] == 0
    assert res["position_bias_rate"] == 0.5
    first, swapped = judge.asked[0][1]["content"], judge.asked[1][1]["content"]
    assert first.index("certo") < first.index("errado")
    assert swapped.index("errado") < swapped.index("certo")


def test_winner_parsing_and_combination() -> None:
    assert parse_winner('{"winner": "empate"}') == "tie"
    assert _combine("tie", "tie") == "tie" and _combine("B", "A") == "B"
    assert _combine("A", "A") == "inconsistent"  # A first, then A again once swapped
    assert _combine(None, "A") == "unparsed" and _combine("B", None) == "unparsed"


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


# --- passages in the rubric prompt ---------------------------------------------------------

TIRADENTES = {"title": "Tiradentes", "section": "Vida", "in_prompt": True,
              "text": "Joaquim José da Silva Xavier, o Tiradentes, foi alferes e dentista."}


def test_rubric_prompt_shows_the_passages_that_were_in_the_prompt() -> None:
    left_out = {"title": "Inconfidência", "text": "NÃO COUBE NO PROMPT", "in_prompt": False}
    [system, user] = rubric_prompt("Quem foi Tiradentes?", ["Joaquim José da Silva Xavier"],
                                   "Um alferes.", "pt", [TIRADENTES, left_out])
    content = user["content"]
    assert "TRECHOS dados ao sistema:\n[1] Tiradentes — Vida\nJoaquim José" in content
    assert "foi alferes e dentista." in content and "NÃO COUBE" not in content
    assert content.index("REFERÊNCIA") < content.index("TRECHOS") < content.index("RESPOSTA")
    assert "contextual_understanding" in system["content"] and "TRECHOS" in system["content"]


def test_passages_are_clipped_to_the_budget() -> None:
    long = {"title": "Longo", "text": "palavra " * 2000, "in_prompt": True}
    [_, user] = rubric_prompt("Q?", ["R"], "A", "pt", [long, TIRADENTES], passage_chars=200)
    block = user["content"].split("TRECHOS dados ao sistema:\n", 1)[1]
    body = block.split("\n")[1]
    assert len(body) == 200 and body.endswith("…")
    assert "(+1 trecho(s) a mais omitido(s))" in block and "Tiradentes" not in block


def test_closed_book_prompt_says_no_passages_were_given() -> None:
    [system, user] = rubric_prompt("Who was Tiradentes?", ["Joaquim José da Silva Xavier"],
                                   "A dentist.", "en")
    assert ("PASSAGES: no passages were given to the system; judge contextual_understanding "
            "on the question alone.") in user["content"]
    assert "when no passages were given" in system["content"]
    # a RAG answer whose passages all fell outside the window was given none either
    out = {**TIRADENTES, "in_prompt": False}
    assert "no passages were given" in rubric_prompt("Q?", ["R"], "A", "en", [out])[1]["content"]


def test_records_without_text_show_the_prompt_the_system_got() -> None:
    prompt = [{"role": "system", "content": "Responda com base nos trechos."},
              {"role": "user", "content": "[1] Tiradentes: foi alferes.\nPergunta: Quem?"}]
    [_, user] = rubric_prompt("Quem?", ["R"], "A", "pt", [{"title": "Tiradentes",
                                                          "in_prompt": True}], prompt)
    assert "TRECHOS (no prompt que o sistema recebeu):\nResponda com base nos trechos. " \
           "[1] Tiradentes: foi alferes. Pergunta: Quem?" in user["content"]


def test_judge_rubric_shows_each_sample_its_passages_and_skips_multiple_choice() -> None:
    rag = sample("rag", "q1", "Um alferes")
    rag.retrieved = [TIRADENTES]
    base = sample("base", "q1", "Um dentista")
    unparsed_mc = sample("base", "mc1", "talvez")
    unparsed_mc.scores.update({"mc_accuracy": 0.0, "mc_unparsed": 1.0})
    judge = ScriptedJudge([GOOD, GOOD.replace('"accuracy": 5', '"accuracy": 3')])
    assert judge_rubric([rag, base, unparsed_mc], judge) == {"scored": 2, "unparsed": 0}
    assert len(judge.asked) == 2
    assert "foi alferes e dentista" in judge.asked[0][1]["content"]
    assert "nenhum trecho foi dado" in judge.asked[1][1]["content"]
    assert rag.scores["judge_correct"] == 1.0 and base.scores["judge_correct"] == 0.0
    assert base.scores["judge_accuracy"] == 3.0 and "judge_overall" not in unparsed_mc.scores


def test_parse_rubric_reads_fenced_and_string_scores() -> None:
    fenced = ('Claro! {"nota": "veja abaixo"}\n```json\n{"accuracy": "4", "relevance": 5.0, '
              '"coherence": 3, "contextual_understanding": 2}\n```')
    assert parse_rubric(fenced) == {"accuracy": 4, "relevance": 5, "coherence": 3,
                                    "contextual_understanding": 2}
    assert parse_rubric(GOOD.replace("5", "true", 1)) is None
    assert parse_rubric(GOOD.replace("5", "4.5", 1)) is None


# --- pairwise: unparsed apart from position inconsistency ----------------------------------

def test_pairwise_counts_unparsed_apart_from_position_inconsistency() -> None:
    samples = [sample(col, q, f"{col}-{q}") for q in ("q1", "q2", "q3") for col in ("rag", "base")]
    judge = ScriptedJudge(['{"winner": "A"}', '{"winner": "B"}',  # q1: rag wins both orders
                           '{"winner": "A"}', '{"winner": "A"}',  # q2: flips with the order
                           "não sei", '{"winner": "B"}'])         # q3: first reply unparsed
    res = judge_pairwise(samples, "rag", "base", judge, retries=0)
    assert (res["n"], res["a_wins"], res["b_wins"], res["ties"]) == (3, 1, 0, 0)
    assert res["position_inconsistent"] == 1 and res["unparsed"] == 1
    assert res["position_bias_rate"] == 0.5  # 1 flip over the 2 pairs with both verdicts


# --- agreement with the primary metric -----------------------------------------------------

def scored(judge_accuracy: float, primary: float) -> Sample:
    s = sample("rag", f"q{judge_accuracy}{primary}", "x")
    s.scores.update({"judge_accuracy": judge_accuracy, "answer_accuracy": primary})
    return s


def test_kappa_and_table_by_hand() -> None:
    # judge_correct (accuracy >= 4) vs answer_accuracy:
    #                  primary 1   primary 0
    #   judge 1            4           1
    #   judge 0            2           3          n = 10
    # observed agreement po = (4 + 3) / 10 = 0.7
    # chance pe = P(judge 1) P(primary 1) + P(judge 0) P(primary 0) = 0.5*0.6 + 0.5*0.4 = 0.5
    # kappa = (po - pe) / (1 - pe) = (0.7 - 0.5) / 0.5 = 0.4
    samples = ([scored(5, 1) for _ in range(3)] + [scored(4, 1)] + [scored(4, 0)]
               + [scored(2, 1) for _ in range(2)] + [scored(1, 0) for _ in range(3)])
    agree = judge_agreement(samples)
    assert agree["n"] == 10 and agree["primary"] == "answer_accuracy"
    assert agree["table"] == {"both_correct": 4, "judge_only": 1, "primary_only": 2,
                              "both_wrong": 3}
    assert agree["observed"] == pytest.approx(0.7)
    assert agree["kappa"] == pytest.approx(0.4)


def test_spearman_by_hand() -> None:
    # judge 5,4,3,2,1 -> ranks 5,4,3,2,1 (mean 3, deviations 2,1,0,-1,-2, squares sum 10)
    # primary 1,1,0,1,0 -> tied ranks 4,4,1.5,4,1.5 (mean 3, deviations 1,1,-1.5,1,-1.5,
    #   squares sum 7.5); cross products 2+1+0-1+3 = 5
    # rho = 5 / sqrt(10 * 7.5) = 1/sqrt(3) = 0.5773503
    # p: t = rho sqrt((n-2)/(1-rho^2)) = sqrt(1.5) with 3 df; Student's t CDF for 3 df is
    #   1/2 + (x/(1+x^2) + atan x)/pi with x = t/sqrt(3) = 1/sqrt(2):
    #   x/(1+x^2) = 0.4714045, atan x = 0.6154797 -> F = 0.5 + 1.0868842/pi = 0.8459660
    #   two-sided p = 2 (1 - F) = 0.3080680
    agree = judge_agreement([scored(5, 1), scored(4, 1), scored(3, 0), scored(2, 1),
                             scored(1, 0)])
    assert agree["spearman"] == pytest.approx(0.5773503, abs=1e-6)
    assert agree["spearman_p"] == pytest.approx(0.3080680, abs=1e-6)


def test_agreement_undefined_cases() -> None:
    same = judge_agreement([scored(5, 1) for _ in range(4)])
    assert same["n"] == 4 and same["spearman"] is None and same["kappa"] is None
    assert same["table"]["both_correct"] == 4 and same["observed"] == 1.0
    continuous = [scored(5, 0.9), scored(1, 0.2), scored(3, 0.5)]
    for s in continuous:
        s.scores["f1"] = s.scores["answer_accuracy"]
    res = judge_agreement(continuous, primary="f1")
    assert res["spearman"] == pytest.approx(1.0) and res["kappa"] is None
    assert judge_agreement([sample("rag", "q", "x")])["n"] == 0
    with pytest.raises(ValueError, match="its own score"):
        judge_agreement(continuous, primary="judge_correct")


# --- the judge is the model under test -----------------------------------------------------

def test_same_as_model_under_test_by_name_weights_and_served_id() -> None:
    local = {"role": "judge", "backend": "transformers", "model": "qwen", "fingerprint": "abc",
             "adapter": None}
    columns = {
        "qwen/base": ("qwen", {**local, "role": None}),
        "qwen/finetuned": ("qwen", {**local, "adapter": {"sha256": "f00"}}),
        "copy/base": ("/models/qwen-copy", {"model": "/models/qwen-copy", "fingerprint": "abc"}),
        "llama/base": ("llama", {"backend": "transformers", "model": "llama",
                                 "fingerprint": "def", "adapter": None}),
        "unknown/base": ("mistral", None),
    }
    assert same_as_model_under_test(local, columns) == ["qwen/base", "qwen/finetuned",
                                                        "copy/base"]
    served = {"role": "judge", "backend": "openai", "base_url": "http://h:8000",
              "model": "judge", "served": {"id": "judge", "root": "Qwen/Qwen2.5-7B-Instruct"}}
    assert same_as_model_under_test(served, {"a": ("Qwen/Qwen2.5-7B-Instruct", None),
                                             "b": ("llama", None)}) == ["a"]


class RuleJudge(ScriptedJudge):
    """Grades "certo" answers 5 and the rest 2; prefers the answer saying "certo"."""

    def __init__(self, name: str = "judge-model") -> None:
        super().__init__([])
        self.name = name
        self.identity = {"role": "judge", "model": name}

    def generate(self, prompts, decoding=None):
        self.asked.extend(prompts)
        outs = []
        for p in prompts:
            user = p[-1]["content"]
            if "contextual_understanding" in p[0]["content"]:
                acc = 5 if user.rsplit("RESPOSTA:", 1)[1].strip() == "certo" else 2
                outs.append(Out(f'{{"accuracy": {acc}, "relevance": 4, "coherence": 4, '
                                f'"contextual_understanding": 3}}'))
            else:
                first = user.split("\nA: ", 1)[1].split("\nB: ", 1)[0]
                outs.append(Out('{"winner": "%s"}' % ("A" if first == "certo" else "B")))
        return outs


def test_judge_samples_builds_the_results_entry_and_warns_on_self_judging(caplog) -> None:
    samples = []
    for i, (rag_out, base_out) in enumerate([("certo", "errado"), ("certo", "certo"),
                                             ("errado", "certo"), ("certo", "errado")]):
        for col, out, model in (("rag", rag_out, "m"), ("base", base_out, "judge-model")):
            s = sample(col, f"q{i}", out)
            s.model = model
            s.scores["answer_accuracy"] = float(out == "certo")
            samples.append(s)
    info = judge_samples(samples, RuleJudge(), "judge-model", ["rag", "base"],
                         same_as=["rag"])
    assert info["same_as_model_under_test"] == ["rag", "base"]  # given + found by model name
    assert "is the model under test for rag, base" in caplog.text
    assert info["identity"] == {"role": "judge", "model": "judge-model"}
    assert info["rubric"] == {"scored": 8, "unparsed": 0} and info["failures"] == 0
    [pair] = info["pairwise"]
    # q0, q3: rag "certo" wins both orders; q2: base wins; q1: both "certo", A wins each order
    assert (pair["a_wins"], pair["b_wins"], pair["position_inconsistent"]) == (2, 1, 1)
    agree = info["agreement"]  # the rule judge agrees with answer_accuracy on every answer
    assert agree["n"] == 8 and agree["kappa"] == pytest.approx(1.0)
    assert agree["spearman"] == pytest.approx(1.0)
    assert info["summary"].startswith("Warning: the judge (judge-model) is the model under test")
    assert "1 flipped with the order, 0 unparsed" in info["summary"]
    json.dumps(info)  # results.json material


# --- the judge's identity in the cache (SystemFactory.judge_generator) ----------------------

@pytest.fixture
def models_server(serve_json: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """A local server answering GET /v1/models from ``state["cards"]`` (404 when None)."""
    state: dict[str, Any] = {"cards": []}

    def handle(method: str, path: str, body: dict[str, Any], headers: dict[str, str]
               ) -> tuple[int, Any]:
        cards = state["cards"]
        if cards is None or path != "/v1/models":
            return 404, {"error": "not found"}
        return 200, {"object": "list", "data": cards}

    with serve_json(handle) as url:
        yield state, f"{url}/v1"


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def factory(tmp_path: Path, models: tuple[str, ...] = ("m",)) -> SystemFactory:
    cfg = ExperimentConfig(models=models, systems=("base",), cache=str(tmp_path / "c.db"))

    def generator_for(model: str, adapter: Path | None) -> tuple[Any, dict[str, Any]]:
        return Named(model), {"backend": "fake", "model": model, "fingerprint": f"fp-{model}",
                              "adapter": None}

    return SystemFactory(cfg, progress=False, generator_for=generator_for,
                         cache=GenerationCache(cfg.cache_path()))


def key_of(judge: Any) -> str:
    return cache_key("gen", judge.identity, "prompt", {})


def test_served_judge_is_keyed_by_the_model_the_server_reports(tmp_path, models_server) -> None:
    state, url = models_server
    state["cards"] = [{"id": "judge", "owned_by": "vllm", "root": "org/judge-7b"}]
    f = factory(tmp_path)
    first = f.judge_generator(f"judge@{url}")
    assert first.identity["served"] == {"id": "judge", "owned_by": "vllm", "root": "org/judge-7b"}
    assert first.inner.name == "judge" and f.judge_same_as == []
    again = f.judge_generator(f"judge@{url}")
    assert key_of(again) == key_of(first)  # the same model: the cache answers
    state["cards"] = [{"id": "judge", "owned_by": "vllm", "root": "org/judge-1b"}]
    assert key_of(f.judge_generator(f"judge@{url}")) != key_of(first)  # same name and URL
    # a bare URL judges with the one model served
    state["cards"] = [{"id": "org/only-model", "owned_by": "vllm"}]
    assert f.judge_generator(url).inner.name == "org/only-model"
    f.close()


def test_server_without_model_list_is_never_served_from_the_cache(tmp_path, models_server,
                                                                   caplog) -> None:
    state, url = models_server
    state["cards"] = None
    f = factory(tmp_path)
    one, two = f.judge_generator(f"judge@{url}"), f.judge_generator(f"judge@{url}")
    assert one.identity["served"]["id"] is None and key_of(one) != key_of(two)
    assert "cannot say which model it serves" in caplog.text
    state["cards"] = [{"id": "other"}]
    with pytest.raises(UserError, match="does not serve 'judge'"):
        f.judge_generator(f"judge@{url}")
    f.close()


def test_factory_flags_the_judge_that_is_a_compared_model(tmp_path, models_server) -> None:
    f = factory(tmp_path, models=("m", "n"))
    judge = f.judge_generator("m")
    assert judge.identity == {"role": "judge", "backend": "fake", "model": "m",
                              "fingerprint": "fp-m", "adapter": None}
    assert f.judge_same_as == ["m/base"]
    state, url = models_server
    state["cards"] = [{"id": "served-judge", "root": "n"}]  # the server runs model n
    f.judge_generator(f"served-judge@{url}")
    assert f.judge_same_as == ["n/base"]
    f.close()
