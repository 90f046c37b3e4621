"""Our metric functions against cases taken from public reference implementations.

Each block names its source. Inputs and expected outputs are the references' published facts
(their own tests, documented examples, or what their code computes by its stated rules, worked
out by hand in the comments); no code is copied.
"""

from __future__ import annotations

import pytest

from compare.metrics import (
    METRICS,
    MetricInput,
    exact_match_score,
    rouge_scores,
    sentence_bleu,
    sentence_chrf,
    token_f1,
)
from compare.normalize import normalize_answer
from core.questions import Question

# --- (a) SQuAD v1.1 official evaluation script -------------------------------------------------
# Source: the official "evaluate-v1.1.py", as vendored by huggingface/evaluate in
# metrics/squad/compute_score.py; examples from huggingface/evaluate metrics/squad/README.md.
# Its normalize_answer: lower(), delete every char of string.punctuation, replace \b(a|an|the)\b
# with a space, " ".join(split()). f1_score returns 0 when no token is shared.


@pytest.mark.parametrize("prediction,reference,em,f1", [
    # README "Maximal values": '1976' vs ['1976'] -> exact_match 100, f1 100
    ("1976", "1976", True, 1.0),
    # README "Minimal values": '1999' vs ['1976'] -> 0, 0
    ("1999", "1976", False, 0.0),
    # README "Partial match": 'Beyonce' vs ['Beyoncé and Bruno Mars'] scores 0 (no accent
    # folding in the script: "beyonce" != "beyoncé"), 'climate change' scores 1; mean 66.67
    ("Beyonce", "Beyoncé and Bruno Mars", False, 0.0),
    ("climate change", "climate change", True, 1.0),
    # the script's rules by hand: "the cat sat on the mat" -> [cat, sat, on, mat],
    # "a cat on a mat" -> [cat, on, mat]; 3 shared, P = 3/4, R = 1, F1 = 2PR/(P+R) = 6/7
    ("the cat sat on the mat", "a cat on a mat", False, 6 / 7),
    # articles and punctuation go: both sides become "beatles"
    ("The Beatles!", "beatles", True, 1.0),
    # v1.1 returns 0 when nothing is shared, even for two empty answers
    ("", "", True, 0.0),
])
def test_squad_v11_em_and_f1(prediction: str, reference: str, em: bool, f1: float) -> None:
    assert exact_match_score(prediction, reference, portuguese=False) is em
    assert token_f1(prediction, reference, portuguese=False) == pytest.approx(f1)


def test_squad_partial_match_example_mean() -> None:
    # huggingface/evaluate metrics/squad/README.md: the three-question example gives
    # {'exact_match': 66.666..., 'f1': 66.666...}
    pairs = [("1976", "1976"), ("Beyonce", "Beyoncé and Bruno Mars"),
             ("climate change", "climate change")]
    em = 100 * sum(exact_match_score(p, r, portuguese=False) for p, r in pairs) / 3
    f1 = 100 * sum(token_f1(p, r, portuguese=False) for p, r in pairs) / 3
    assert em == pytest.approx(66.66666666666667)
    assert f1 == pytest.approx(66.66666666666667)


@pytest.mark.parametrize("raw,expected", [
    ("The Beatles!", "beatles"),
    ("An apple a day", "apple day"),
    ("the theater", "theater"),            # \b: "the" inside a word stays
    ("well-known", "wellknown"),           # punctuation is deleted, not turned into a space
    ("Brasília", "brasília"),              # no accent folding
    ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # curly quotes are not string.punctuation
    ("  several   spaces\tand\ttabs ", "several spaces and tabs"),
])
def test_squad_normalization_exactly(raw: str, expected: str) -> None:
    assert normalize_answer(raw, portuguese=False) == expected


# --- (b) MKQA (apple/ml-mkqa) -------------------------------------------------------------------
# Source: apple/ml-mkqa mkqa_eval_util.py (normalize_answer_by_language: lower, strip
# string.punctuation, remove ARTICLE_REGEX_BY_LANG["pt"] = \b(o|a|os|as|um|uma|uns|umas)\b,
# whitespace-split; calculate_f1 gives int(gold == pred) when either side is empty) and its tests
# tests/test_mkqa_eval.py (test_compute_mkqa_scores cases 1-5 and 10; the language-specific
# case of test_compute_mkqa_scores_in_different_languages, carried over to pt's article list).


@pytest.mark.parametrize("prediction,answers,em,f1", [
    # test_compute_mkqa_scores, Test 1: perfect textual prediction
    ("first dummy answer", ["first dummy answer", "second dummy answer"], 1.0, 1.0),
    # Test 2: partially correct prediction -> F1 0.8 (vs "alternative answer two": P 1, R 2/3)
    ("alternative answer", ["dummy answer one", "alternative answer two"], 0.0, 0.8),
    # Test 3: stopword and punctuation removal
    ("an answer ?? without stopwords", ["answer -- without, stopwords!!"], 1.0, 1.0),
    # Test 4: correct No Answer prediction
    ("", [""], 1.0, 1.0),
    # Test 5: incorrect No Answer prediction
    ("", ["first dummy answer", "second dummy answer"], 0.0, 0.0),
    # Test 10: the best of several answers
    ("final prediction", ["penultimate", "final prediction"], 1.0, 1.0),
    # "different languages" Test 1 (es: "esto es manzana" vs "esto es una manzana" -> 1, 1),
    # the same fact with the pt article list: "uma" is removed
    ("isto é maçã", ["isto é uma maçã", "esta é outra maçã"], 1.0, 1.0),
])
def test_mkqa_em_and_f1_cases(prediction: str, answers: list[str], em: float, f1: float) -> None:
    assert max(float(exact_match_score(prediction, a)) for a in answers) == em
    assert max(token_f1(prediction, a) for a in answers) == pytest.approx(f1)


@pytest.mark.parametrize("text,reference", [
    # each pt article of ARTICLE_REGEX_BY_LANG["pt"] is removed as a whole word
    ("O Brasil", "Brasil"), ("A Lei Áurea", "Lei Áurea"), ("os bandeirantes", "bandeirantes"),
    ("As capitanias", "capitanias"), ("um tratado", "tratado"), ("Uma revolta", "revolta"),
    ("uns navios", "navios"), ("umas ilhas", "ilhas"),
    # lower-casing and punctuation removal
    ("Brasília!", "brasília"), ("Tiradentes.", "tiradentes"),
])
def test_mkqa_portuguese_normalization_equivalences(text: str, reference: str) -> None:
    assert exact_match_score(text, reference)


@pytest.mark.parametrize("text,other", [
    ("Oscar Niemeyer", "Niemeyer"),     # "o" inside a word is not an article (\b)
    ("Asa Norte", "Norte"),             # nor is "as" inside "Asa"
])
def test_mkqa_articles_only_as_whole_words(text: str, other: str) -> None:
    assert not exact_match_score(text, other)


# --- (c) sacrebleu's own test vectors --------------------------------------------------------
# Source: mjpost/sacrebleu test/test_sentence_bleu.py, test/test_bleu.py, test/test_chrf.py.
# Our sentence_bleu is BLEU(effective_order=True) with sacrebleu's defaults (13a, exp smoothing,
# case-sensitive); sentence_chrf is CHRF() defaults (char order 6, word order 0, beta 2, no eps
# smoothing). Only vectors computed under those settings (or independent of beta) are used.

_REF_98 = "producţia de zahăr brut se exprimă în zahăr alb;"
_SYS_98 = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;"


@pytest.mark.parametrize("hypothesis,reference,expected", [
    # test_sentence_bleu.py, issue #98 example, ('exp', None, False, '13a', 8.493)
    (_SYS_98, _REF_98, 8.493),
    # test_sentence_bleu.py, issue #141 example: zero BLEU
    ("this is a cat", "okay thanks", 0.0),
    # test_bleu.py test_case_effective_order: ["test"] vs ["a test"] -> 0.36788 (brevity penalty
    # e^(1-2/1) alone: the only n-gram order present matches), ["a test"] vs ["a test"] -> 1.0
    ("test", "a test", 36.78794411714425),
    ("a test", "a test", 100.0),
    # test_bleu.py test_raw_bleu_cases: "this is a test" vs itself -> 1.0
    ("this is a test", "this is a test", 100.0),
])
def test_sacrebleu_sentence_bleu_vectors(hypothesis: str, reference: str,
                                         expected: float) -> None:
    assert sentence_bleu(hypothesis, [reference]) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("hypothesis,reference,expected", [
    # test_chrf.py test_cases_effective_order (no eps smoothing); each is independent of beta
    # (perfect, empty, or precision == recall)
    ("a", "a", 100.0),
    ("", "reference", 0.0),
    ("a b c", "a b c", 100.0),
    ("a b c", "abc", 100.0),            # whitespace is not scored
    ("", "c", 0.0),
    ("aa", "ab", 25.0),                 # 1-grams P = R = 1/2, 2-grams 0: mean over 2 orders
])
def test_sacrebleu_chrf_vectors(hypothesis: str, reference: str, expected: float) -> None:
    assert sentence_chrf(hypothesis, [reference]) == pytest.approx(expected, abs=1e-4)


# --- (d) rouge-score's own cases -------------------------------------------------------------
# Source: google-research/google-research rouge/rouge_scorer_test.py (shipped with the
# rouge_score package as rouge_score/rouge_scorer_test.py). rouge_score scores (target,
# prediction); rouge_scores takes (prediction, references).


@pytest.mark.parametrize("target,prediction,rouge1,rouge_l", [
    ("testing one two", "testing", 1 / 2, 1 / 2),          # testRouge1
    ("testing one two", "testing one", 4 / 5, 4 / 5),      # testMultipleRougeTypes
    ("testing one two", "testing two", 4 / 5, 4 / 5),      # testRougeLNonConsecutive
    ("testing one two", "", 0.0, 0.0),                     # testRougeEmpty
])
def test_rouge_score_cases(target: str, prediction: str, rouge1: float, rouge_l: float) -> None:
    scores = rouge_scores(prediction, [target])
    assert scores["rouge1"] == pytest.approx(rouge1)
    assert scores["rougeL"] == pytest.approx(rouge_l)


def test_rouge_score_multi_reference_case() -> None:
    # testRougeAllMulti: score_multi(["first text", "first something"], "text first") ->
    # rouge1 F 1, rougeL F 0.5 (the best reference per score, as our max over references)
    scores = rouge_scores("text first", ["first text", "first something"])
    assert scores["rouge1"] == pytest.approx(1.0)
    assert scores["rougeL"] == pytest.approx(0.5)


# --- the metrics call the same functions, after cleaning and normalizing ----------------------

def _q(*answers: str) -> Question:
    return Question(id="q", question="Quem assinou a Lei Áurea?", answers=answers)


@pytest.mark.parametrize("output", ["Princesa Isabel [1]", "Resposta: Princesa Isabel",
                                    "Princesa Isabel.", "A princesa Isabel [2, 3]"])
def test_bleu_and_chrf_score_cleaned_answers_like_em(output: str) -> None:
    question = _q("Princesa Isabel")
    assert METRICS.get("exact_match").fn(MetricInput(output, question)) == 1.0
    assert METRICS.get("bleu").fn(MetricInput(output, question)) == pytest.approx(100.0)
    assert METRICS.get("chrf").fn(MetricInput(output, question)) == pytest.approx(100.0)
    assert METRICS.get("rougeL").fn(MetricInput(output, question)) == pytest.approx(1.0)
