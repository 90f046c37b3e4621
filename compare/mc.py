"""Multiple-choice questions: lm-evaluation-harness style log-likelihood scoring, or generation.

``loglikelihood`` (Belebele / ENEM tasks in lm-eval): the context is a plain-text prompt listing
the options under letters and ending with ``Resposta:``; each letter (`` A``, `` B`` …) is scored
as a continuation and the most likely one is the choice. ``cloze`` (lm-eval's ARC/HellaSwag
style, ``acc_norm``): the context is the question alone and each option's TEXT is scored,
divided by the option's length in characters (lm-eval's ``process_results``: ``len(choice)``,
without the leading space, not bytes); small models that always prefer one letter are measured
better this way. ``generate`` asks the system to answer with the letter and parses the reply
(``parse_choice``); a reply it cannot parse keeps ``choice`` None and is scored wrong.
``choice_distribution`` counts the letters each column picked.

Where the contexts come from (``mc_prompt``): ``chat`` (the default for a chat model, "auto") asks
each system the way it answers open questions — its rag template (with passages for a RAG
system), the adapter's trained format, the chat template with the answer turn open — with the
question, its options and "answer with the letter" as the question (``generative_question``), and
scores each letter as the answer's first token (``answer_requests``); ``plain`` is lm-eval's
plain text ending in ``Resposta:`` (``loglikelihood_context``), for base models.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from compare.normalize import normalize_answer
from core.questions import OPTION_LETTERS, Question

if TYPE_CHECKING:
    from compare.rundir import Sample

LETTERS = OPTION_LETTERS  # "A" is the first option
UNPARSED = "unparsed"  # choice_distribution's count of replies with no parsable choice
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


def answer_requests(question: Question, context: str, prefix: str = "",
                    cloze: bool = False) -> list[tuple[str, str]]:
    """One (context, answer) request per option when the context is the system's own prompt
    with the answer turn open: the option's letter (or, ``cloze``, its text) after the
    format's answer prefix ("" for a chat template, " " after Llama-2's ``[/INST]``)."""
    answers = question.choices if cloze else [LETTERS[i] for i in range(len(question.choices))]
    return [(context, f"{prefix}{a}") for a in answers]


def length_normalized(question: Question, scores: Sequence[float]) -> list[float]:
    """lm-eval's ``acc_norm``: each option's log-likelihood divided by the option's length in
    characters (``len(choice)``, as ``lm_eval.api.task.ConfigurableTask.process_results``; an
    empty option counts as 1)."""
    return [s / max(len(c), 1) for s, c in zip(scores, question.choices, strict=True)]


def generative_question(question: Question) -> str:
    """The question text for generative mode: the options and "answer with the letter"."""
    *_, instruction = _labels(question.lang)
    return f"{question.question}\n{options_block(question)}\n{instruction}"


# What may follow an option letter for it to be one: a closing bracket, markdown emphasis, a
# period/colon, a dash, or the end. "A capital é …" and "a resposta" are words, not options.
_END = r"(?=[*_]*\s*(?:[)\]]|[.:,;!?](?!\w)|[-–—]\s|\n|$))"
_OPEN = r"[\s*_(\[]*"
_KEYWORD = r"\b(?:letra|alternativa|op[cç][aã]o|resposta|gabarito|answer|option|choice|letter)"
_FILLER = (r"(?:\s+(?:correta|certa|correto|certo|final|correct|right|é|e|seria|será|is|would"
           r"|be|a|o|the|letra|alternativa|op[cç][aã]o|letter|option))*")
# the reply starts with the letter: "B", "b)", "(C)", "**D**", "C. Deodoro", "A) Salvador"
# (not before a comma: "A, B ou C" hedges)
_LEADING = re.compile(rf"^{_OPEN}([A-Ja-j])(?=[*_]*\s*(?:[)\]]|[.:](?!\w)|[-–—]\s|\n|$))")
_LETTER_PATTERNS = (
    # a keyword names it: "A resposta correta é a letra C.", "Alternativa (b)", "Answer: d"
    re.compile(rf"{_KEYWORD}{_FILLER}\s*[:=–-]?{_OPEN}([A-Ja-j]){_END}", re.IGNORECASE),
    # … or is followed by a word: "A resposta é C porque …"; not A or E, which start
    # Portuguese sentences ("Resposta: A capital …", "… é E então")
    re.compile(rf"(?i:{_KEYWORD}{_FILLER})\s*[:=–-]?{_OPEN}([B-DF-J])(?=\s+\w)"),
    # "… é a B.", "… is C": upper case only, so that "é a capital" is no option
    re.compile(rf"\b(?:é|seria|será|is)\s+(?:a\s+|the\s+)?{_OPEN}([A-J]){_END}"),
)
_AFTER_PERIOD = re.compile(r"[*_]*\s*\.\s*(\S.*)", re.DOTALL)


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a generated reply picks, or None when it names none (or several).

    In order: a reply that starts with a letter ("B", "(c)", "**D**", "C) Dom Pedro I"); a
    letter a keyword names ("A resposta correta é a letra C.", "Alternativa (b)",
    "Answer: d"); an upper-case letter after "é"/"is" ("Acho que é a B."); else the one option
    whose text the reply contains as whole words (the longest, when one option's text holds
    another's). A letter counts only when a bracket, markdown, punctuation or the end follows
    it, so the Portuguese article in "A capital é …" is not option A; a leading "X." followed by
    text counts only when that text begins option X's (so "D. Pedro II" is Dom Pedro II, not D).
    """
    reply = text.strip()
    match = _LEADING.search(reply)
    if match and _option_letter(match.group(1), choices) is not None:
        index = LETTERS.index(match.group(1).upper())
        rest = _AFTER_PERIOD.match(reply, match.end())
        if rest is None or _begins_option(rest.group(1), choices[index]):
            return index
    for pattern in _LETTER_PATTERNS:
        for match in pattern.finditer(reply):
            found = _option_letter(match.group(1), choices)
            if found is not None:
                return found
    said = f" {normalize_answer(reply)} "
    texts = [normalize_answer(c) for c in choices]
    named = [i for i, t in enumerate(texts) if t and f" {t} " in said]
    named = [i for i in named if not any(j != i and texts[i] != texts[j]
                                         and f" {texts[i]} " in f" {texts[j]} " for j in named)]
    return named[0] if len(named) == 1 else None


def _option_letter(letter: str, choices: Sequence[str]) -> int | None:
    index = LETTERS.index(letter.upper())
    return index if index < len(choices) else None


def _begins_option(rest: str, option: str) -> bool:
    """Whether ``rest`` (what follows "X.") starts like ``option``, word for word (either may
    be the shorter: "C. Deodoro" for "Deodoro da Fonseca")."""
    said, text = normalize_answer(rest).split(), normalize_answer(option).split()
    n = min(len(said), len(text))
    return n > 0 and said[:n] == text[:n]


def choice_distribution(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """How often each column picked each option letter, and how many of its multiple-choice
    replies had no parsable choice: ``{column: {"A": n, "B": n, …, "unparsed": n}}``.

    A sample is a multiple-choice one when it has a ``choice``, ``choice_scores`` or an
    ``mc_accuracy``/``mc_unparsed`` score; open questions are left out, and a column with no
    multiple-choice sample is absent. Every column lists the same letters, A up to the last
    option seen in any column (``choice_scores`` tells how many options a question had), zeros
    included, so that a model that always answers "D" shows A–C at 0.
    """
    picks: dict[str, list[int | None]] = {}
    n_options = 0
    for s in samples:
        if not (s.choice is not None or s.choice_scores is not None
                or "mc_accuracy" in s.scores or "mc_unparsed" in s.scores):
            continue
        picks.setdefault(s.column, []).append(s.choice)
        n_options = max(n_options, len(s.choice_scores or ()),
                        s.choice + 1 if s.choice is not None else 0)
    labels = [_label(i) for i in range(n_options)]
    out: dict[str, dict[str, int]] = {}
    for column, chosen in picks.items():
        counts = dict.fromkeys(labels, 0) | {UNPARSED: 0}
        for c in chosen:
            counts[UNPARSED if c is None else _label(c)] += 1
        out[column] = counts
    return out


def _label(index: int) -> str:
    """Option ``index``'s letter (A for 0; "option 27" past Z: cloze has no letter limit)."""
    return string.ascii_uppercase[index] if index < 26 else f"option {index + 1}"


def argmax(scores: Sequence[float]) -> int:
    """Index of the highest score (the first on ties, as lm-eval's ``np.argmax``)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
