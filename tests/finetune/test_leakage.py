"""The overlap check: a pair asking an evaluation question WITH its answer is flagged, a pair
merely sharing the topic is not; every question file is checked; report vs strict mode.

The labelled set ``data/overlap_labelled.jsonl`` holds (pair, question) couples labelled by hand:
the questions are copies of real ones from ``data/questions`` (brazil_history.jsonl, open;
multiple_choice.jsonl, MC), the pairs are real template pairs of the sample store (``why``
starting with "T", with their ``source`` title and real output) or short-answer paraphrases in
the style of the templates and the generator. Half are overlaps (paraphrases included), half
same-topic non-overlaps: the same entity asked something else, the same question form about
something else, reverse questions (the answer is the pair's subject), definitional pairs whose
long output happens to state the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from core.questions import Question, read_questions
from finetune.leakage import (
    OverlapDetector,
    check_pairs,
    filter_pairs,
    is_overlap,
    labelled_scores,
    overlapping_question_ids,
    pair_id,
    read_labelled,
    similarity,
)
from finetune.records import Pair

REPO = Path(__file__).resolve().parents[2]
OPEN = REPO / "data" / "questions" / "brazil_history.jsonl"
MC = REPO / "data" / "questions" / "multiple_choice.jsonl"
LABELLED = Path(__file__).resolve().parent / "data" / "overlap_labelled.jsonl"


def _question(qid: str) -> Question:
    return next(q for q in read_questions([OPEN, MC]) if q.id == qid)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


# --- the three examples, against the real question files ---------------------------

def test_independence_paraphrase_with_its_date_is_flagged() -> None:
    hist004 = _question("hist-004")
    assert hist004.question == "Quando foi proclamada a independência do Brasil?"
    pair = Pair("Quando ocorreu a Independência do Brasil?", "",
                "A Independência do Brasil ocorreu em 7 de setembro de 1822.",
                source="Independência do Brasil", kind="dates")
    assert is_overlap(pair, hist004)
    # the same question form answered with another event's date is not
    other = Pair("Quando ocorreu a Independência do Brasil?", "", "Em 29 de agosto de 1825.")
    assert not is_overlap(other, hist004)


def test_constitution_of_1891_is_not_the_constitution_in_force() -> None:
    in_force = _question("hist-034")
    assert in_force.question == "Quando foi promulgada a Constituição brasileira em vigor?"
    pair = Pair("Quando foi promulgada a Constituição brasileira de 1891?", "",
                "A promulgação da Constituição brasileira de 1891 ocorreu em 24 de fevereiro de "
                "1891.", source="Constituição brasileira de 1891", kind="dates")
    assert not is_overlap(pair, in_force)
    assert not is_overlap(pair, _question("mc-005"))  # 1891 is one of its wrong choices
    # even with the in-force date in the output, 1891 is not a number the question uses
    wrong = Pair("Quando foi promulgada a Constituição brasileira de 1891?", "",
                 "Em 5 de outubro de 1988.")
    assert not is_overlap(wrong, in_force)


def test_capital_of_colonial_brazil_overlaps_the_mc_question_and_is_kept_in_report_mode(
        ) -> None:
    pair = Pair("Qual era a capital de Brasil Colônia?", "",
                "A capital de Brasil Colônia era Salvador (1549–1763); Rio de Janeiro "
                "(1763–1815).", source="Brasil Colônia", kind="facts")
    other = Pair("Quem foi Tiradentes?", "", "Um dentista.", source="Tiradentes")
    per_pair, report = check_pairs([pair, other], [OPEN, MC], mode="report")
    assert {m.question.id for m in per_pair[0]} == {"mc-001", "hist-018"}  # MC and open
    assert per_pair[1] == []
    kept, _ = filter_pairs([pair, other], [OPEN, MC], mode="report")
    assert kept == [pair, other] and report.dropped == 0 and report.overlapping == 1
    kept, strict = filter_pairs([pair, other], [OPEN, MC], mode="strict")
    assert kept == [other] and strict.dropped == 1


# --- the two halves of the rule -------------------------------------------------------------

@pytest.mark.parametrize(("pair", "qid", "overlap"), [
    # the question asked, but the answer is about something else
    (("Qual era a capital do Império do Brasil?", "Rio de Janeiro."), "hist-001", False),
    (("Qual era a capital do Brasil?", "Brasília."), "hist-001", True),
    # the answer present, but another question asked
    (("Qual foi o resultado da Inconfidência Mineira?", "Movimento desarticulado; execução "
      "de Tiradentes em 21 de abril de 1792."), "hist-021", False),
    (("Quando morreu Tiradentes?", "Em 21 de abril de 1792."), "hist-021", True),
    # a multiple-choice question: the correct choice's text, not a wrong one
    (("Que regime Getúlio Vargas instaurou em 1937?", "O Estado Novo."), "mc-007", True),
    (("Que regime Getúlio Vargas instaurou em 1937?", "A República Velha."), "mc-007", False),
    # the pair's own question states the answer: a reverse question teaches nothing of it
    (("Quem é Fernando Collor de Mello?", "O primeiro presidente brasileiro a sofrer um "
                                           "processo de impeachment."), "hist-043", False),
    # a roman ordinal is a number: Pedro I is not Pedro II
    (("Onde morreu Pedro I do Brasil?", "Em Paris."), "hist-024", False),
    (("Onde morreu Pedro II do Brasil?", "Em Paris."), "hist-024", True),
])
def test_overlap_needs_the_question_and_its_answer(pair: tuple[str, str], qid: str,
                                                   overlap: bool) -> None:
    assert is_overlap(Pair(pair[0], "", pair[1]), _question(qid)) is overlap


def test_similarity_ignores_case_accents_order_and_function_words() -> None:
    a = "Em que ano foi proclamada a independência do Brasil?"
    assert similarity(a, "Em que ano a INDEPENDENCIA do Brasil foi proclamada?") == 1.0
    assert similarity(a, "Quando foi proclamada a independência do Brasil?") == 1.0
    # {independencia, brasil} vs {proclamada, independencia, brasil}: 2*2 / (2+3)
    assert similarity("Quando ocorreu a Independência do Brasil?", a) == pytest.approx(0.8)
    assert similarity("Onde foi proclamada a independência do Brasil?", a) == 0.0  # where/when
    assert similarity(a, "Quem foi Getúlio Vargas?") == 0.0


def test_input_field_and_threshold() -> None:
    hist004 = _question("hist-004")
    asked_in_input = Pair("Responda à pergunta.", "Quando foi proclamada a independência do "
                          "Brasil?", "7 de setembro de 1822.")
    assert is_overlap(asked_in_input, hist004)
    pair = Pair("Quando ocorreu a Independência do Brasil?", "", "7 de setembro de 1822.")
    assert is_overlap(pair, hist004, threshold=0.8)  # similarity 0.8 (hand count above)
    assert not is_overlap(pair, hist004, threshold=0.9)
    with pytest.raises(UserError, match="threshold"):
        OverlapDetector([hist004], 0.0)


def test_question_without_answers_is_matched_on_its_text() -> None:
    bare = Question("q1", "Em que cidade nasceu Getúlio Vargas?")
    assert is_overlap(Pair("Onde nasceu Getúlio Vargas?", "", "Em algum lugar."), bare)
    assert not is_overlap(Pair("Onde morreu Getúlio Vargas?", "", "No Rio."), bare)


# --- the labelled set -----------------------------------------------------------------------

def test_labelled_set_precision_and_recall() -> None:
    couples = read_labelled(LABELLED)
    overlaps = sum(c.overlap for c in couples)
    assert len(couples) >= 60 and overlaps == len(couples) - overlaps  # half and half
    assert any(c.question.is_multiple_choice and c.overlap for c in couples)
    assert any(c.question.is_multiple_choice and not c.overlap for c in couples)
    precision, recall, n = labelled_scores(LABELLED)
    print(f"overlap detector on {n} labelled couples: precision {precision:.3f}, "
          f"recall {recall:.3f}")
    assert n == len(couples)
    assert precision >= 0.9 and recall >= 0.9


def test_labelled_set_uses_the_real_questions() -> None:
    real = {q.id: q for q in read_questions([OPEN, MC])}
    for couple in read_labelled(LABELLED):
        q = real[couple.question.id]
        assert couple.question.question == q.question
        assert couple.question.choices == q.choices
        assert couple.question.answer_index == q.answer_index


def test_labelled_scores_count_by_hand(tmp_path: Path) -> None:
    q = {"id": "hist-031", "question": "Em que cidade nasceu Getúlio Vargas?",
         "answers": ["São Borja"]}
    rows = [  # detector: flags 1 and 2 (2 is labelled wrong on purpose), not 3 nor 4
        {"pair": {"instruction": "Onde nasceu Getúlio Vargas?", "output": "São Borja."},
         "question": q, "overlap": True},
        {"pair": {"instruction": "Em que lugar nasceu Getúlio Vargas?",
                  "output": "Em São Borja."}, "question": q, "overlap": False},
        {"pair": {"instruction": "Quem delatou os inconfidentes?", "output": "São Borja."},
         "question": q, "overlap": True},
        {"pair": {"instruction": "Onde morreu Getúlio Vargas?", "output": "Rio."},
         "question": q, "overlap": False},
    ]
    # tp = 1, fp = 1, fn = 1: precision 1/2, recall 1/2
    assert labelled_scores(_write(tmp_path / "l.jsonl", rows)) == (0.5, 0.5, 4)
    _write(tmp_path / "bad.jsonl", [{"pair": {"instruction": "x"}}])
    with pytest.raises(UserError, match="bad.jsonl:1"):
        labelled_scores(tmp_path / "bad.jsonl")


# --- the report: every file, counts, pair refs, modes ----------------------------------------

def _experiment_pairs() -> list[Pair]:
    return [
        Pair("Quando ocorreu a Independência do Brasil?", "", "7 de setembro de 1822"),  # 004
        Pair("Quem foi Tiradentes?", "", "Um dentista."),  # same topic
        Pair("Qual era a capital de Brasil Colônia?", "", "Salvador"),  # hist-018 and mc-001
        Pair("Quando nasceu Getúlio Vargas?", "", "19 de abril de 1882"),  # same topic
    ]


def test_report_mode_records_which_pairs_overlap_which_questions() -> None:
    pairs = _experiment_pairs()
    per_pair, report = check_pairs(pairs, [OPEN, MC], mode="report")
    assert [len(h) for h in per_pair] == [1, 0, 2, 0]
    assert report.enabled and report.mode == "report" and report.dropped == 0
    assert report.overlapping == 2 and report.overlapped_questions == 3
    assert report.by_question == {"hist-004": 1, "hist-018": 1, "mc-001": 1}
    n_open, n_mc = len(read_questions(OPEN)), len(read_questions(MC))
    assert report.n_questions == n_open + n_mc
    by_file = {Path(f["path"]).name: f for f in report.question_files}
    assert by_file["brazil_history.jsonl"]["questions"] == n_open
    assert by_file["multiple_choice.jsonl"]["multiple_choice"] == n_mc
    assert by_file["brazil_history.jsonl"]["overlapped_questions"] == 2
    assert by_file["multiple_choice.jsonl"]["overlapped_questions"] == 1
    assert by_file["multiple_choice.jsonl"]["overlapping_pairs"] == 1
    assert all(len(f["sha256"]) == 64 for f in report.question_files)
    rows = {(o["line"], o["question"]) for o in report.overlaps}
    assert rows == {(0, "hist-004"), (2, "hist-018"), (2, "mc-001")}
    assert {o["pair"] for o in report.overlaps if o["line"] == 2} == {pair_id(pairs[2])}
    ids = overlapping_question_ids({"leakage": report.to_dict()})
    assert ids == {"hist-004": [pair_id(pairs[0])], "hist-018": [pair_id(pairs[2])],
                   "mc-001": [pair_id(pairs[2])]}
    assert overlapping_question_ids(report.to_dict()) == ids  # the record itself works too
    json.dumps(report.to_dict())  # JSON-ready


def test_strict_mode_drops_and_says_so() -> None:
    pairs = _experiment_pairs()
    kept, report = filter_pairs(pairs, [OPEN, MC], mode="strict")
    assert kept == [pairs[1], pairs[3]]
    assert report.mode == "strict" and report.dropped == 2 and report.overlapping == 2
    assert all(o["line"] is None for o in report.overlaps)  # not in the written file
    meta = {"leakage": report.to_dict()}
    assert overlapping_question_ids(meta) == {}  # nothing overlapping was trained on
    assert set(overlapping_question_ids(meta, include_dropped=True)) == {"hist-004", "hist-018",
                                                                         "mc-001"}


def test_no_questions_means_off() -> None:
    pairs = _experiment_pairs()
    kept, report = filter_pairs(pairs, None)
    assert kept == pairs and not report.enabled and report.dropped == 0
    assert overlapping_question_ids({"leakage": report.to_dict()}) == {}
    with pytest.raises(UserError, match="overlap mode"):
        check_pairs(pairs, [OPEN], mode="lenient")


def test_question_objects_and_duplicate_ids(tmp_path: Path) -> None:
    given = Question("x1", "Qual era a capital do Brasil?", answers=("Brasília",))
    per_pair, report = check_pairs([Pair("Qual a capital do Brasil?", "", "Brasília")],
                                   [given], mode="report")
    assert [m.question.id for m in per_pair[0]] == ["x1"]
    assert report.question_files == [{"path": None, "sha256": None, "questions": 1,
                                      "multiple_choice": 0, "overlapped_questions": 1,
                                      "overlapping_pairs": 1}]
    with pytest.raises(UserError, match="appears twice"):
        check_pairs([], [OPEN, _question("hist-001")])


def test_questions_file_errors(tmp_path: Path) -> None:
    """The questions files are read with core.questions: every bad line reported before work."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "ok?"}\n{"id": "b"}\nnot json\n', "utf-8")
    pairs = [Pair("Quem foi Tiradentes?", "", "Um dentista.")]
    with pytest.raises(UserError, match=r"2 bad question line\(s\)") as err:
        filter_pairs(pairs, [OPEN, bad])
    assert "bad.jsonl:2:" in str(err.value) and "bad.jsonl:3:" in str(err.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", "utf-8")
    with pytest.raises(UserError, match="holds no questions"):
        filter_pairs(pairs, empty)


# --- the command line ------------------------------------------------------------------------

def test_pairs_flags_take_several_files_and_a_mode() -> None:
    from finetune.cli import build_parser

    args = build_parser().parse_args(["pairs", "--out", "p.jsonl", "--questions", "a.jsonl",
                                      "b.jsonl", "--exclude-questions", "c.jsonl",
                                      "--overlap", "strict", "--leakage-threshold", "0.6"])
    assert args.questions == [Path("a.jsonl"), Path("b.jsonl"), Path("c.jsonl")]
    assert args.overlap == "strict" and args.leakage_threshold == 0.6
    old = build_parser().parse_args(["pairs", "--out", "p.jsonl", "--exclude-questions",
                                     "a.jsonl"])  # the old spelling still works
    assert old.questions == [Path("a.jsonl")] and old.overlap is None


def test_printed_lines_name_the_mode() -> None:
    from finetune.cli import overlap_lines, training_summary

    pairs = _experiment_pairs()
    _, report = check_pairs(pairs, [OPEN, MC], mode="report")
    [line] = overlap_lines(report.to_dict())
    assert "report mode" in line and "2 pairs overlap 3 of" in line
    assert "brazil_history.jsonl: 2 of" in line and "multiple_choice.jsonl: 1 of" in line
    _, strict = check_pairs(pairs, [OPEN, MC], mode="strict")
    assert "dropped 2 pairs" in overlap_lines(strict.to_dict())[0]
    assert "off" in overlap_lines(check_pairs(pairs, None)[1].to_dict())[0]
    manifest = {"kind": "lora", "leakage": report.to_dict(), "truncation": {
        "max_seq_length": 8, **{s: {"truncated": 0, "examples": 1, "dropped_prompt_too_long": 0}
                                for s in ("train", "validation")}},
        "training": {"global_step": 1, "train_runtime_s": 1.0, "first_loss": 1.0,
                     "last_loss": 0.5, "first_eval_loss": None, "last_eval_loss": None}}
    assert training_summary(manifest)[-1] == ("leakage filter: on, 0 pairs dropped (report "
                                              "mode: 2 training pairs overlap 3 evaluation "
                                              "questions)")
