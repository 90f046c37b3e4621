"""Multiple-choice questions: lm-evaluation-harness style log-likelihood scoring, or generation.

``loglikelihood`` (Belebele / ENEM tasks in lm-eval): the context is a plain-text prompt listing
the options under letters and ending with ``Resposta:``; each letter (`` A``, `` B`` …) is scored
as a continuation and the most likely one is the choice. ``cloze`` (lm-eval's ARC/HellaSwag
style, ``acc_norm``): the context is the question alone and each option's TEXT is scored,
divided by its length in bytes; small models that always prefer one letter are measured better
this way. ``generate`` asks the system to answer with the letter and parses the reply
(``parse_choice``). Scoring prompts are plain text for every system (no chat template), as
lm-eval scores a base model and a LoRA-adapted one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from compare.normalize import normalize_answer
from core.questions import Question

LETTERS = "ABCDEFGHIJ"
_LABELS = {
    "pt": ("Contexto", "Pergunta", "Resposta",
           "Responda apenas com a letra da alternativa correta."),
    "en": ("Context", "Question", "Answer", "Answer with the letter of the correct option only."),
}


def _labels(lang: str) -> tuple[str, str, str, str]:
    return _LABELS.get(lang, _LABELS["en"])


def options_block(question: Question) -> str:
    """``A. …`` lines, one per choice."""
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(question.choices))


def passages_block(passages: Sequence[Any]) -> str:
    """Numbered passages (title: text), as evidence for a retrieval system."""
    return "\n\n".join(f"[{i}] {p.title}: {p.text}" for i, p in enumerate(passages, 1))


def loglikelihood_context(question: Question, passages: Sequence[Any] | None = None) -> str:
    """The lm-eval style context: optional passages, the question, the options, ``Resposta:``."""
    ctx_label, q_label, a_label, _ = _labels(question.lang)
    head = f"{ctx_label}:\n{passages_block(passages)}\n\n" if passages else ""
    return f"{head}{q_label}: {question.question}\n{options_block(question)}\n{a_label}:"


def loglikelihood_requests(question: Question, context: str) -> list[tuple[str, str]]:
    """One (context, " X") request per option letter."""
    return [(context, f" {LETTERS[i]}") for i in range(len(question.choices))]


def cloze_context(question: Question, passages: Sequence[Any] | None = None) -> str:
    """The cloze context: optional passages, the question (no options), ``Resposta:``."""
    ctx_label, q_label, a_label, _ = _labels(question.lang)
    head = f"{ctx_label}:\n{passages_block(passages)}\n\n" if passages else ""
    return f"{head}{q_label}: {question.question}\n{a_label}:"


def cloze_requests(question: Question, context: str) -> list[tuple[str, str]]:
    """One (context, " option text") request per option."""
    return [(context, f" {c}") for c in question.choices]


def length_normalized(question: Question, scores: Sequence[float]) -> list[float]:
    """lm-eval's ``acc_norm``: each option's log-likelihood divided by its length in bytes."""
    return [s / max(len(f" {c}".encode()), 1) for s, c in zip(scores, question.choices,
                                                               strict=True)]


def generative_question(question: Question) -> str:
    """The question text for generative mode: the options and "answer with the letter"."""
    *_, instruction = _labels(question.lang)
    return f"{question.question}\n{options_block(question)}\n{instruction}"


_LETTER_PATTERNS = (
    # "B", "B)", "(B)", "B. Dom Pedro" (but not the article in "A capital")
    re.compile(r"^\W*\(?([A-J])(?:[.):*]|\s*$|\s*\n)"),
    re.compile(r"(?i:letra|alternativa|op[cç][aã]o|option|resposta|answer)"
               r"(?:\s+(?i:correta|certa|correct|final))?\s*(?i:é|e|is)?\s*:?\s*\(?([A-J])\b"),
)


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a generated reply picks: a leading letter, "letra X", or one option's text."""
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(text.strip())
        if match and LETTERS.index(match.group(1).upper()) < len(choices):
            return LETTERS.index(match.group(1).upper())
    reply = f" {normalize_answer(text)} "
    named = [i for i, c in enumerate(choices) if normalize_answer(c)
             and f" {normalize_answer(c)} " in reply]
    return named[0] if len(named) == 1 else None


def argmax(scores: Sequence[float]) -> int:
    """Index of the highest score (the first on ties, as lm-eval's ``np.argmax``)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
