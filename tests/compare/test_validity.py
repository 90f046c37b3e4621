"""Threats to validity computed from a synthetic run: a tmp adapter dir (manifest, training log,
pairs file), hand-made questions and samples, and results with the contract's keys. Every
expected number is worked out by hand in the comments, not by the module's own formulas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from compare.rundir import Sample
from compare.validity import names_gold_title, threats_to_validity, title_split_tags
from core.questions import Question
from rag.prompts import render_prompt

SYSTEM = {"role": "system", "content": "Responda com a resposta mais curta possível."}

QUESTIONS = [
    # named: "independencia do brasil" is the gold title folded (accents and case)
    Question("q1", "Quem proclamou a independencia do brasil?", ("Dom Pedro I",),
             ("Independência do Brasil",), tags=("topic:imperio",)),
    Question("q2", "Qual é a capital da França?", ("Paris",), tags=("control",)),  # no gold
    # named: the title's parenthesised qualifier is not required
    Question("q3", "Quem foi TIRADENTES?", ("Tiradentes",), ("Tiradentes (inconfidente)",)),
    Question("q4", "Em que ano o país se tornou independente?", ("1822",),
             ("Independência do Brasil",)),  # unnamed
    Question("q5", "Quem reinava em 1850?", ("Júpiter",), ("Pedro II do Brasil",)),  # unnamed
    Question("mc1", "Qual? ", ("B",), ("Brasil",), choices=("a", "b"), answer_index=1),
]
# first references' lengths: 11, 5, 10, 4, 7 -> sorted 4 5 7 10 11 -> median 7 characters


def write_adapter(root: Path, *, log: list[dict[str, Any]] | None = None,
                  config: dict[str, Any] | None = None, prompt: dict[str, Any] | None = None,
                  leakage: dict[str, Any] | None = None, pairs: bool = True) -> Path:
    """An adapter dir as ``finetune train`` leaves it (only the files validity reads)."""
    folder = root / "adapter"
    folder.mkdir(parents=True)
    pairs_path = root / "pairs.jsonl"
    if pairs:
        rows = [{"instruction": f"p{i}", "input": "", "output": "x" * n, "split": "train"}
                for i, n in enumerate((100, 200, 300, 400))]  # median 250
        rows.append({"instruction": "v", "input": "", "output": "y" * 9, "split": "validation"})
        pairs_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    manifest: dict[str, Any] = {
        "prompt_format": {"name": "chat", "uses_chat_template": True},
        "config": config or {"max_steps": 30, "per_device_train_batch_size": 4,
                             "gradient_accumulation_steps": 2, "max_seq_length": 128,
                             "packing": False},
        "pairs": {"path": str(pairs_path), "train": 40, "validation": 1,
                  "meta": {"leakage": leakage or {
                      "enabled": True, "threshold": 0.8, "dropped": 6,
                      "by_question": {"q1": 4, "q4": 2}, "questions_path": "/data/q.jsonl",
                      "questions_sha256": "sha-of-q"}}},
        "truncation": {"train": {"examples": 40, "tokens": 2000}},
        "training": {"global_step": 30, "epoch": 6.0},
    }
    if prompt is not None:
        manifest["prompt"] = prompt
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    if log is None:
        # 30 steps x 4 x 2 = 240 sequences over 40 pairs = 6 epochs; trl's running token count
        log = [{"step": 0, "epoch": 0, "eval_loss": 2.0},
               {"step": 10, "epoch": 2.0, "loss": 1.5, "num_tokens": 1000.0},
               {"step": 20, "epoch": 4.0, "loss": 1.2, "num_tokens": 2000.0},
               {"step": 30, "epoch": 6.0, "loss": 1.0, "num_tokens": 3000.0},
               {"step": 30, "epoch": 6.0, "eval_loss": 1.1, "eval_num_tokens": 3000.0}]
    (folder / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log),
                                               encoding="utf-8")
    return folder


def sample(col: str, system: str, q: Question, *, score: float = 1.0, prompt: Any = "",
           hit: float | None = None, retrieved: bool = False) -> Sample:
    scores = {"mc_accuracy": score} if q.is_multiple_choice else {"answer_accuracy": score}
    if hit is not None:
        scores["hit@k"] = hit
    return Sample(column=col, system=system, model="m", decoding={"strategy": "greedy"},
                  question_id=q.id, question=q.question, references=list(q.answers),
                  tags=list(q.tags), prompt=prompt, scores=scores,
                  retrieved=[{"title": "T", "score": 1.0}] if retrieved else [])


def results_for(adapter: Path | None, **extra: Any) -> dict[str, Any]:
    systems = {c: {"system": c, "adapter": {"path": str(adapter)} if adapter and "finetuned" in c
                   else None} for c in ("base", "rag", "finetuned", "rag+finetuned")}
    return {"columns": list(systems), "primary_metric": "answer_accuracy",
            "higher_is_better": {"answer_accuracy": True},
            "provenance": {"systems": systems,
                           "adapters": {str(adapter): {"path": str(adapter)}} if adapter else {},
                           "questions": {"/data/q.jsonl": "sha-of-q"}},
            "config": {"questions": [], "k": 2}, **extra}


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in items}


def test_names_gold_title_folds_accents_and_case_and_needs_whole_words() -> None:
    assert names_gold_title(QUESTIONS[0])  # accents and case folded
    assert names_gold_title(QUESTIONS[2])  # "(inconfidente)" qualifier dropped
    assert not names_gold_title(QUESTIONS[3])
    assert not names_gold_title(Question("x", "Onde fica Brasília?", gold_titles=("Brasil",)))
    assert names_gold_title(Question("x", "Qual a capital do Brasil?", gold_titles=("Brasil",)))
    assert title_split_tags(QUESTIONS) == {"q1": "title:named", "q3": "title:named",
                                           "q4": "title:unnamed", "q5": "title:unnamed",
                                           "mc1": "title:unnamed"}  # q2 has no gold title


def test_training_amount_from_the_log(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path)
    t = by_id(threats_to_validity(results_for(adapter), [], QUESTIONS))["training"]
    row = t["data"][str(adapter)]
    assert (row["steps"], row["epochs"], row["tokens"]) == (30, 6.0, 3000)
    assert row["tokens_source"] == "logged" and row["columns"] == ["finetuned", "rag+finetuned"]
    assert "30 optimizer steps of 4 × 2 sequences" in t["finding"]
    assert "6.00 epochs over its 40 training pairs" in t["finding"]
    assert "3,000 training tokens (logged)" in t["finding"]
    assert t["severity"] == "info"  # six passes: not under-trained by this measure


def test_training_tokens_estimated_and_said_so(tmp_path: Path) -> None:
    # no num_tokens logged, no packing: 30 steps x 4 x 2 = 240 sequences x 2000/40 = 50 tokens
    log = [{"step": 30, "epoch": 0.5, "loss": 1.0}]
    adapter = write_adapter(tmp_path / "a", log=log)
    t = by_id(threats_to_validity(results_for(adapter), [], QUESTIONS))["training"]
    row = t["data"][str(adapter)]
    assert row["tokens"] == 12_000 and row["tokens_source"].startswith("estimate")
    assert "12,000 training tokens (estimate" in t["finding"]
    assert row["epochs"] == 0.5 and t["severity"] == "warning"  # less than one pass
    # packed: every sequence counted full, 240 x 128 = 30,720 (an upper bound)
    packed = write_adapter(tmp_path / "b", log=[{"step": 30, "epoch": 0.5}],
                           config={"max_steps": 30, "per_device_train_batch_size": 4,
                                   "gradient_accumulation_steps": 2, "max_seq_length": 128,
                                   "packing": True})
    row = by_id(threats_to_validity(results_for(packed), [], QUESTIONS))["training"]["data"]
    assert row[str(packed)]["tokens"] == 30_720
    assert "upper bound" in row[str(packed)]["tokens_source"]


def test_unreadable_adapter_is_not_measured(tmp_path: Path) -> None:
    t = by_id(threats_to_validity(results_for(tmp_path / "gone"), [], QUESTIONS))["training"]
    assert "not measured" in t["finding"] and t["data"] == {}


def test_training_answer_length_vs_reference_length(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path)
    samples = [sample("base", "base", q) for q in QUESTIONS]
    t = by_id(threats_to_validity(results_for(adapter), samples, QUESTIONS))["answer_length"]
    # training answers 100/200/300/400 chars -> median 250 (the validation pair is left out);
    # references (first answers of the 5 open questions) median 7; 250 / 7 = 35.7
    assert t["data"]["reference_median_chars"] == 7
    assert t["data"]["adapters"][str(adapter)]["median_chars"] == 250
    assert t["data"]["adapters"][str(adapter)]["train_answers"] == 4
    assert "median training answer 250 characters over 4 pairs, 35.7× the reference" in \
        t["finding"]
    assert t["severity"] == "warning"


def test_answer_length_skipped_with_a_note_when_the_pairs_file_is_gone(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path, pairs=False)
    t = by_id(threats_to_validity(results_for(adapter), [], QUESTIONS))["answer_length"]
    assert "gone or unreadable: training-answer length not measured" in t["finding"]
    assert t["data"]["adapters"] == {}


def test_prompt_mismatch_chat_adapter_trained_on_one_user_turn(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path)  # no "prompt" in the manifest: bare instruction
    open_qs = [q for q in QUESTIONS if not q.is_multiple_choice]
    samples = [sample("finetuned", "finetuned", q,
                      prompt=[SYSTEM, {"role": "user", "content": f"Pergunta: {q.question}"}])
               for q in open_qs]
    samples += [sample("rag+finetuned", "rag+finetuned", q, retrieved=True,
                       prompt=[{"role": "user", "content": q.question}]) for q in open_qs]
    t = by_id(threats_to_validity(results_for(adapter), samples, QUESTIONS))["prompt"]
    ft = t["data"]["finetuned"]
    assert ft["evaluated_shapes"] == {"system+user": 5} and ft["identical"] == 0
    assert "evaluated with system+user on 5 of 5 open questions" in t["finding"]
    assert "0 of 5 prompts are identical to the trained one (a mismatch)" in t["finding"]
    rf = t["data"]["rag+finetuned"]
    assert rf["with_passages"] == 5 and rf["identical"] is None  # passages: never trained on
    assert t["severity"] == "warning"


def test_prompt_match_when_evaluated_as_trained(tmp_path: Path) -> None:
    bare = write_adapter(tmp_path / "bare")
    open_qs = [q for q in QUESTIONS if not q.is_multiple_choice]
    samples = [sample("finetuned", "finetuned", q,
                      prompt=[{"role": "user", "content": q.question}]) for q in open_qs]
    t = by_id(threats_to_validity(results_for(bare), samples, QUESTIONS))["prompt"]
    assert t["data"]["finetuned"]["identical"] == 5 and t["severity"] == "info"
    # trained with the short template's closed-book messages (prompt parity): sent the same
    parity = write_adapter(tmp_path / "parity", prompt={
        "builder": "rag.prompts.render_prompt", "template": "short", "lang": "auto",
        "passages": False})
    samples = [sample("finetuned", "finetuned", q,
                      prompt=render_prompt(q.question, None, "auto", "short")) for q in open_qs]
    t = by_id(threats_to_validity(results_for(parity), samples, QUESTIONS))["prompt"]
    assert t["data"]["finetuned"]["identical"] == 5 and t["severity"] == "info"
    # ... and a prompt edited after training is caught
    samples[0].prompt = [SYSTEM, samples[0].prompt[1]]
    t = by_id(threats_to_validity(results_for(parity), samples, QUESTIONS))["prompt"]
    assert t["data"]["finetuned"]["identical"] == 4 and t["severity"] == "warning"


def test_gold_title_share_and_retrieval_coverage(tmp_path: Path) -> None:
    hits = {"q1": 1.0, "q3": 1.0, "q4": 0.0, "q5": 1.0}  # q2 has no gold title: no hit@k
    samples = [sample("rag", "rag", q, hit=hits.get(q.id)) for q in QUESTIONS]
    t = by_id(threats_to_validity(results_for(None), samples, QUESTIONS))["gold_titles"]
    assert (t["data"]["named"], t["data"]["unnamed"], t["data"]["open"]) == (2, 2, 5)
    assert t["data"]["share_named"] == pytest.approx(0.4)
    cov = t["data"]["hit_at_k"]["rag"]
    assert cov["named"] == {"hits": 2, "n": 2, "rate": 1.0}
    assert cov["unnamed"] == {"hits": 1, "n": 2, "rate": 0.5}
    assert "2 of 5 open questions (40%) name a gold article" in t["finding"]
    assert "1 have no gold titles" in t["finding"]
    assert ("the 2 passages of rag for 100% (2/2) of naming questions and 50% (1/2) of the "
            "others") in t["finding"]
    assert t["severity"] == "warning"


def test_gold_titles_not_measured_without_questions(tmp_path: Path) -> None:
    t = by_id(threats_to_validity(results_for(None), [], None))["gold_titles"]
    assert "not measured" in t["finding"]


def test_leakage_counts_and_which_questions_were_checked(tmp_path: Path) -> None:
    adapter = write_adapter(tmp_path / "a")  # a manifest from before the two modes: dropped
    t = by_id(threats_to_validity(results_for(adapter), [], QUESTIONS))["leakage"]
    row = t["data"][str(adapter)]
    assert (row["mode"], row["dropped"], row["questions"]) == ("strict", 6, 2)
    assert row["checked_files"] == ["q.jsonl"] and row["unchecked_files"] == []
    assert "6 training pairs ask 2 evaluation questions with the answer (q1: 4, q4: 2)" in \
        t["finding"]
    assert "dropped (strict mode" in t["finding"]
    assert "checked against every question file of this run" in t["finding"]
    assert t["severity"] == "info"
    other = write_adapter(tmp_path / "b", leakage={
        "enabled": True, "threshold": 0.9, "dropped": 0, "by_question": {},
        "questions_path": "/old/q.jsonl", "questions_sha256": "another"})
    t = by_id(threats_to_validity(results_for(other), [], QUESTIONS))["leakage"]
    assert "not checked against q.jsonl" in t["finding"] and t["severity"] == "warning"
    report = write_adapter(tmp_path / "r", leakage={
        "enabled": True, "mode": "report", "threshold": 0.5, "dropped": 0, "overlapping": 5,
        "by_question": {"q1": 5}, "question_files": [{"path": "/data/q.jsonl",
                                                       "sha256": "sha-of-q"}]})
    t = by_id(threats_to_validity(results_for(report), [], QUESTIONS))["leakage"]
    assert "5 training pairs ask 1 evaluation question with the answer (q1: 5)" in t["finding"]
    assert "kept (report mode" in t["finding"] and "overlap:trained" in t["finding"]
    assert t["severity"] == "warning"  # answers learned in the asked form are in the results
    off = write_adapter(tmp_path / "c", leakage={"enabled": False})
    t = by_id(threats_to_validity(results_for(off), [], QUESTIONS))["leakage"]
    assert "filter was off" in t["finding"] and t["severity"] == "warning"


def test_judge_is_model_under_test() -> None:
    judge = {"model": "qwen", "same_as_model_under_test": ["base", "rag"]}
    t = by_id(threats_to_validity(results_for(None, judge=judge), [], QUESTIONS))["judge"]
    assert t["severity"] == "warning" and "model under test of base, rag" in t["finding"]
    judge = {"model": "big-judge", "same_as_model_under_test": []}
    t = by_id(threats_to_validity(results_for(None, judge=judge), [], QUESTIONS))["judge"]
    assert t["severity"] == "info" and "none of the models under test" in t["finding"]
    assert "judge" not in by_id(threats_to_validity(results_for(None), [], QUESTIONS))


def test_judge_reliability_from_agreement_and_unparsed_replies() -> None:
    # the 82-question run of bench/RESULTS.md: 107 scored + 57 unparsed = 164; 57/164 = 34.8%
    # -> "35%"; agreement (26 + 51) / 107 = 0.7196 -> "72%"
    weak = {"model": "coder-1.5b", "same_as_model_under_test": [],
            "rubric": {"scored": 107, "unparsed": 57},
            "agreement": {"primary": "answer_accuracy", "n": 107, "spearman": 0.4809,
                          "kappa": 0.4368, "observed": 77 / 107,
                          "table": {"both_correct": 26, "judge_only": 27, "primary_only": 3,
                                    "both_wrong": 51}}}
    results = results_for(None, judge=weak)
    results["primary_metric"] = "judge_correct"
    t = by_id(threats_to_validity(results, [], QUESTIONS))["judge_reliability"]
    assert t["severity"] == "warning"
    assert "scored 107 of 164 answers; 57 replies (35%) gave no score" in t["finding"]
    assert "agrees with answer_accuracy on 72% (Cohen's κ = 0.44" in t["finding"]
    assert "ρ of its 1–5 accuracy = 0.48" in t["finding"]
    assert "of the 30 disagreements, 27 are answers the judge calls correct" in t["finding"]
    assert "below 0.6" in t["finding"] and "primary metric is this judge's" in t["finding"]
    # a judge that parses every reply and agrees substantially (κ 0.8): information only
    good = dict(weak, rubric={"scored": 60, "unparsed": 0},
                agreement=dict(weak["agreement"], kappa=0.8, n=60, observed=0.9))
    t = by_id(threats_to_validity(results_for(None, judge=good), [], QUESTIONS))
    assert t["judge_reliability"]["severity"] == "info"
    assert "gave no score." in t["judge_reliability"]["finding"]
    assert "do not stand alone" not in t["judge_reliability"]["finding"]
    # an agreement recorded without its 2x2 table or observed share: only what is there
    bare = dict(good, agreement={"n": 6, "spearman": 0.6, "kappa": 0.5})
    t = by_id(threats_to_validity(results_for(None, judge=bare), [], QUESTIONS))
    assert ("On the 6 answers it scored, its correct/incorrect agrees with the reference metric "
            "(Cohen's κ = 0.50; Spearman ρ of its 1–5 accuracy = 0.60).") in \
        t["judge_reliability"]["finding"]
    assert "disagreements" not in t["judge_reliability"]["finding"]
    # many unparsed replies alone are warned (30 of 100 > 20%), agreement unmeasured said so
    loose = dict(weak, rubric={"scored": 70, "unparsed": 30}, agreement={"kappa": None})
    t = by_id(threats_to_validity(results_for(None, judge=loose), [], QUESTIONS))
    assert t["judge_reliability"]["severity"] == "warning"
    assert "agreement with the reference metric is not measured" in \
        t["judge_reliability"]["finding"]
    assert "judge_reliability" not in by_id(threats_to_validity(results_for(None), [],
                                                                QUESTIONS))


def test_reproducibility_says_how_each_column_was_batched() -> None:
    whole = {"backend": "llamacpp", "slots": 1, "prefix_cache": False}
    results = results_for(None, config={"questions": [], "batch_size": 8})
    systems = results["provenance"]["systems"]
    for col in systems:
        systems[col]["generator"] = whole
    t = by_id(threats_to_validity(results, [], QUESTIONS))["reproducibility"]
    assert t["severity"] == "info"
    assert t["finding"].startswith("base, rag, finetuned, rag+finetuned: llama.cpp answered one "
                                   "prompt at a time and read each whole")
    # one column batched 8 at a time: warned, with the measured effect and the way out; one
    # reusing prefixes: said what a re-run reproduces, not warned
    systems["rag"]["generator"] = {**whole, "slots": 8, "prefix_cache": True}
    systems["base"]["generator"] = {**whole, "prefix_cache": True}
    systems["finetuned"]["generator"] = {"backend": "transformers"}
    results["judge"] = {"model": "j", "identity": {"role": "judge", **whole, "slots": 8,
                                                   "prefix_cache": True}}
    t = by_id(threats_to_validity(results, [], QUESTIONS))["reproducibility"]
    assert t["severity"] == "warning"
    assert t["data"]["backends"] == {"llamacpp-run": ["base"],
                                     "llamacpp-8": ["rag", "the judge"],
                                     "transformers": ["finetuned"],
                                     "llamacpp-prompt": ["rag+finetuned"]}
    assert "rag, the judge: llama.cpp with 8 answers in flight" in t["finding"]
    assert "16 of 82 greedy answers differed" in t["finding"]
    assert "base: llama.cpp answered one prompt at a time, reading each from where" in t["finding"]
    assert "18 of 82 answers differ from those of whole reads" in t["finding"]
    assert "finetuned: transformers, prompts in padded batches of up to 8" in t["finding"]
    assert "batches of 8 and of 1 gave the same 82 greedy answers" in t["finding"]
    # a run from before the batching was recorded: said, not guessed
    for col in ("rag", "base"):
        systems[col]["generator"] = {"backend": "llamacpp"}
    del results["judge"]
    t = by_id(threats_to_validity(results, [], QUESTIONS))["reproducibility"]
    assert t["severity"] == "info" and "how it batched was not recorded" in t["finding"]
    assert "reproducibility" not in by_id(threats_to_validity(results_for(None), [],
                                                              QUESTIONS))


def test_multiplicity_counts_overturned_verdicts() -> None:
    # Holm by hand on p = 0.01, 0.03, 0.2: 0.01*3 = 0.03; max(0.03, 0.03*2) = 0.06;
    # max(0.06, 0.2*1) = 0.2 -> 2 raw p < 0.05, 1 stays significant
    paired = [{"metric": "answer_accuracy", "a": "a", "b": "b", "p_value": p, "p_adjusted": q}
              for p, q in ((0.01, 0.03), (0.03, 0.06), (0.2, 0.2))]
    results = results_for(None, paired=paired,
                          multiplicity={"method": "holm", "family_size": 3, "alpha": 0.05})
    t = by_id(threats_to_validity(results, [], QUESTIONS))["multiplicity"]
    assert (t["data"]["raw_significant"], t["data"]["adjusted_significant"]) == (2, 1)
    assert "Holm–Bonferroni" in t["finding"] and "family of 3 tests" in t["finding"]
    assert "2 of the 3 tests have raw p < 0.05; 1 stay significant" in t["finding"]
    unadjusted = by_id(threats_to_validity(results_for(None, paired=paired), [], QUESTIONS))
    assert unadjusted["multiplicity"]["severity"] == "warning"
    assert "not adjusted" in unadjusted["multiplicity"]["finding"]


def test_control_set_forgetting() -> None:
    control = [Question(f"c{i}", f"Controle {i}?", ("x",), tags=("control",)) for i in range(6)]
    base = [1, 1, 1, 1, 1, 1]
    tuned = [0, 0, 0, 0, 1, 1]  # 4 control questions lost, none gained
    samples = [sample("base", "base", q, score=s) for q, s in zip(control, base, strict=True)]
    samples += [sample("finetuned", "finetuned", q, score=s)
                for q, s in zip(control, tuned, strict=True)]
    samples += [sample("rag", "rag", q) for q in control]
    samples += [sample("rag+finetuned", "rag+finetuned", q) for q in control]
    t = by_id(threats_to_validity(results_for(None), samples, control))["control"]
    ft, rag = t["data"]["pairs"]
    assert (ft["a"], ft["b"], ft["n"]) == ("finetuned", "base", 6)
    assert ft["mean_a"] == pytest.approx(2 / 6) and ft["mean_b"] == 1.0
    assert (ft["worse"], ft["better"]) == (4, 0)
    # McNemar exact: 4 discordant pairs, all one way: two-sided binomial p = 2 * 0.5**4
    assert ft["p_value"] == pytest.approx(binomtest(0, 4, 0.5).pvalue) == pytest.approx(0.125)
    assert (rag["a"], rag["b"], rag["diff"]) == ("rag+finetuned", "rag", 0.0)
    assert "went from 1.000 (base) to 0.333 (finetuned): 4 worse, 0 better" in t["finding"]
    assert "forgetting" in t["finding"] and t["severity"] == "warning"


def test_control_not_measured_without_control_questions() -> None:
    samples = [sample(c, c, QUESTIONS[0]) for c in ("base", "finetuned")]
    t = by_id(threats_to_validity(results_for(None), samples, QUESTIONS))["control"]
    assert "not measured" in t["finding"]


def test_items_without_input_are_left_out() -> None:
    ids = by_id(threats_to_validity({"columns": ["base"], "config": {}}, [], []))
    assert set(ids) <= {"gold_titles"}  # no adapter, judge, paired test or fine-tuned column
