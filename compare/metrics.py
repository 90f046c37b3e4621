"""Metrics as a registry of small pure functions, each declaring ``higher_is_better``.

A metric takes the model output and the question (plus what the system reported, e.g. the
retrieved titles) and returns a float, or ``None`` where it does not apply (hit@k for a system
without retrieval, language fidelity on an answer too short to identify).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from compare.normalize import answer_tokens, normalize_answer
from core.questions import Question
from core.registry import Registry
from core.text import fold_accents, identify_language


@dataclass(frozen=True)
class MetricInput:
    """What one metric sees of one (question, system) sample."""

    output: str
    question: Question
    retrieved_titles: tuple[str, ...] = ()
    has_retrieval: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A named scoring function with its direction and whether its scores are binary."""

    name: str
    fn: Callable[[MetricInput], float | None]
    higher_is_better: bool = True
    binary: bool = False
    description: str = ""


METRICS: Registry[Metric] = Registry("metric")


def metric(name: str, *, higher_is_better: bool = True, binary: bool = False,
           description: str = "") -> Callable[[Callable[[MetricInput], float | None]],
                                              Callable[[MetricInput], float | None]]:
    """Decorator registering a metric function."""

    def deco(fn: Callable[[MetricInput], float | None]) -> Callable[[MetricInput], float | None]:
        doc = description or fn.__doc__ or ""
        METRICS.add(name, Metric(name, fn, higher_is_better, binary, doc))
        return fn

    return deco


def _open(inp: MetricInput) -> bool:
    return not inp.question.is_multiple_choice


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two strings after Portuguese normalization."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> bool:
    """True when the normalized reference appears as whole words in the normalized prediction."""
    ref = normalize_answer(reference)
    return bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} "


@metric("exact_match", binary=True)
def exact_match(inp: MetricInput) -> float | None:
    """1 when the normalized output equals a normalized reference."""
    if not _open(inp):
        return None
    out = normalize_answer(inp.output)
    return float(any(out == normalize_answer(a) for a in inp.question.answers))


@metric("f1")
def f1(inp: MetricInput) -> float | None:
    """Best token F1 against any reference."""
    return max(token_f1(inp.output, a) for a in inp.question.answers) if _open(inp) else None


@metric("contains", binary=True)
def containment(inp: MetricInput) -> float | None:
    """1 when some reference appears in the output (long answers that are right)."""
    if not _open(inp):
        return None
    return float(any(contains(inp.output, a) for a in inp.question.answers))


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


def _rouge(inp: MetricInput, key: str) -> float | None:
    if not _open(inp):
        return None
    out = normalize_answer(inp.output)
    scores = [_rouge_scorer().score(normalize_answer(a), out)[key].fmeasure
              for a in inp.question.answers]
    return max(scores)


@metric("rouge1")
def rouge1(inp: MetricInput) -> float | None:
    """ROUGE-1 F (rouge-score, on accent-folded normalized text)."""
    return _rouge(inp, "rouge1")


@metric("rougeL")
def rouge_l(inp: MetricInput) -> float | None:
    """ROUGE-L F (rouge-score, on accent-folded normalized text)."""
    return _rouge(inp, "rougeL")


@metric("bleu")
def bleu(inp: MetricInput) -> float | None:
    """Sentence BLEU (sacrebleu, effective order) against all references, 0-100."""
    if not _open(inp):
        return None
    from sacrebleu.metrics import BLEU

    scorer = BLEU(effective_order=True)
    return float(scorer.sentence_score(inp.output, list(inp.question.answers)).score)


@metric("chrf")
def chrf(inp: MetricInput) -> float | None:
    """Sentence chrF (sacrebleu) against all references, 0-100."""
    if not _open(inp):
        return None
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(inp.output, list(inp.question.answers)).score)


_REFUSALS = tuple(fold_accents(p) for p in (
    "não contém", "nao contem", "não há informação", "não sei", "não é possível responder",
    "não tenho informação", "não encontrei", "não consta", "does not contain",
    "i don't know", "i do not know", "no information", "cannot answer", "not mentioned",
    "não menciona", "não fornece",
))


def is_refusal(text: str) -> bool:
    """True when the output declines: the prompt templates' fixed refusal sentences (rag's and
    compare's), or a common pt/en phrasing of "I cannot answer"."""
    from rag.prompts import is_refusal as template_refusal

    folded = fold_accents(text.lower())  # lower(), as the metric was defined (not fold())
    return template_refusal(text, _template_refusals()) or any(p in folded for p in _REFUSALS)


@lru_cache(maxsize=1)
def _template_refusals() -> tuple[str, ...]:
    from rag.prompts import CLOSED_BOOK_REFUSALS, REFUSALS, TEMPLATES, load_template

    own = [lang.refusal for name in TEMPLATES.names()
           for lang in load_template(name).languages.values()]
    return tuple(dict.fromkeys([*REFUSALS.values(), *CLOSED_BOOK_REFUSALS.values(), *own]))


@metric("refusal", higher_is_better=False, binary=True)
def refusal(inp: MetricInput) -> float | None:
    """1 when the answer declines ("o contexto não contém ..."); lower is better."""
    return float(is_refusal(inp.output)) if _open(inp) else None


_LANGS = ("pt", "en", "es", "fr", "it", "de")
MIN_WORDS_FOR_LANGID = 4


def detect_language(text: str) -> str:
    """ISO code of the text's language among pt/en/es/fr/it/de (py3langid)."""
    return identify_language(text, _LANGS)


@metric("language_fidelity", binary=True)
def language_fidelity(inp: MetricInput) -> float | None:
    """1 when the answer is in the question's language (open answers of 4+ words: shorter ones
    are too short to identify)."""
    if not _open(inp) or len(re.findall(r"\w+", inp.output)) < MIN_WORDS_FOR_LANGID:
        return None
    return float(detect_language(inp.output) == inp.question.lang)


@metric("hit@k", binary=True)
def hit_at_k(inp: MetricInput) -> float | None:
    """1 when a gold title is among the retrieved titles (RAG systems with gold titles only)."""
    if not inp.has_retrieval or not inp.question.gold_titles:
        return None
    gold = {t.casefold() for t in inp.question.gold_titles}
    return float(any(t.casefold() in gold for t in inp.retrieved_titles))


@metric("mc_accuracy", binary=True)
def mc_accuracy(inp: MetricInput) -> float | None:
    """1 when the chosen option (``extra['choice']``) is the correct one."""
    if not inp.question.is_multiple_choice or "choice" not in inp.extra:
        return None
    return float(inp.extra["choice"] == inp.question.answer_index)


DEFAULT_METRICS = ("exact_match", "f1", "contains", "rouge1", "rougeL", "bleu", "chrf",
                   "language_fidelity", "refusal", "hit@k", "mc_accuracy")


def score_sample(inp: MetricInput, names: tuple[str, ...] = DEFAULT_METRICS) -> dict[str, float]:
    """All applicable metrics for one sample (metrics that return None are left out)."""
    scores = {}
    for name in names:
        value = METRICS.get(name).fn(inp)
        if value is not None:
            scores[name] = value
    return scores


@metric("semantic_sim")
def semantic_sim(inp: MetricInput) -> float | None:
    """Cosine similarity of answer and closest reference in the embedder's space (batch pass)."""
    value = inp.extra.get("semantic_sim")
    return None if value is None else float(value)


def _extra_score(key: str) -> Callable[[Any], float | None]:
    """A metric reading a score added after generation (judge or human) from ``extra``."""
    return lambda inp: inp.extra.get(key)


for _criterion in ("accuracy", "relevance", "coherence", "contextual_understanding", "overall"):
    for _who in ("judge", "human"):
        METRICS.add(f"{_who}_{_criterion}", Metric(
            f"{_who}_{_criterion}", _extra_score(f"{_who}_{_criterion}"),
            description=f"{_who} rubric score 1–5 ({_criterion}); added after generation"))
