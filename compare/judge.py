"""LLM-as-judge: the published 1–5 rubric, reference-aware, plus position-swapped A/B judging.

Criteria (from the sibling study): accuracy, relevance, coherence, contextual understanding, each
1–5. Prompts are in the question's language; the judge must answer JSON, which is validated and
re-asked (up to ``retries`` times) when malformed. Pairwise judging asks both orders (A,B) and
(B,A); a verdict that flips with the order counts as position bias.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from compare.rundir import Sample
from models.generation import Decoding, Generator

log = logging.getLogger(__name__)
CRITERIA = ("accuracy", "relevance", "coherence", "contextual_understanding")
_DECODING = Decoding(strategy="greedy", max_new_tokens=160)

RUBRIC = {
    "pt": ("Você é um avaliador rigoroso. Avalie a RESPOSTA à PERGUNTA comparando-a com a "
           "REFERÊNCIA. Dê notas inteiras de 1 (péssimo) a 5 (excelente) para: accuracy "
           "(exatidão factual), relevance (relevância), coherence (coerência) e "
           "contextual_understanding (compreensão do contexto). Responda SOMENTE com JSON: "
           '{"accuracy": n, "relevance": n, "coherence": n, "contextual_understanding": n, '
           '"justification": "..."}'),
    "en": ("You are a strict grader. Grade the ANSWER to the QUESTION against the REFERENCE. "
           "Give integer scores from 1 (very poor) to 5 (excellent) for: accuracy, relevance, "
           "coherence and contextual_understanding. Reply ONLY with JSON: "
           '{"accuracy": n, "relevance": n, "coherence": n, "contextual_understanding": n, '
           '"justification": "..."}'),
}
PAIRWISE = {
    "pt": ("Qual resposta à PERGUNTA é melhor, considerando a REFERÊNCIA? Responda SOMENTE com "
           'JSON: {"winner": "A"} ou {"winner": "B"} ou {"winner": "empate"}.'),
    "en": ("Which answer to the QUESTION is better, given the REFERENCE? Reply ONLY with JSON: "
           '{"winner": "A"} or {"winner": "B"} or {"winner": "tie"}.'),
}
_LABELS = {"pt": ("PERGUNTA", "REFERÊNCIA", "RESPOSTA"), "en": ("QUESTION", "REFERENCE", "ANSWER")}


def _lang(lang: str) -> str:
    return lang if lang in RUBRIC else "en"


def rubric_prompt(question: str, references: Sequence[str], answer: str, lang: str
                  ) -> list[dict[str, str]]:
    """Chat messages asking for the four 1–5 scores as JSON."""
    lang = _lang(lang)
    q, r, a = _LABELS[lang]
    user = f"{q}: {question}\n{r}: {' / '.join(references)}\n{a}: {answer}"
    return [{"role": "system", "content": RUBRIC[lang]}, {"role": "user", "content": user}]


def parse_rubric(text: str) -> dict[str, int] | None:
    """The four integer scores from the judge's reply, or None when malformed."""
    match = re.search(r"\{.*\}", text, re.S)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    scores = {c: data.get(c) for c in CRITERIA}
    if not all(isinstance(v, int) and 1 <= v <= 5 for v in scores.values()):
        return None
    return scores


def _ask(judge: Generator, prompts: list[Any], parse: Any, retries: int) -> list[Any]:
    """Ask all prompts, re-asking the malformed ones up to ``retries`` more times."""
    results: list[Any] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not pending:
            break
        asked = [prompts[i] if attempt == 0 else _reminder(prompts[i]) for i in pending]
        outs = judge.generate(asked, _DECODING)
        for i, out in zip(pending, outs, strict=True):
            results[i] = parse(out.text)
        pending = [i for i in pending if results[i] is None]
    if pending:
        log.warning("judge gave no valid JSON for %d of %d prompts", len(pending), len(prompts))
    return results


def _reminder(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    note = "\n\nReply with the JSON object only, no other text."
    return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + note}]


def judge_rubric(samples: list[Sample], judge: Generator, retries: int = 2) -> int:
    """Add judge_<criterion> and judge_overall scores to open-question samples; return failures."""
    todo = [s for s in samples if s.choice is None]
    prompts = [rubric_prompt(s.question, s.references, s.output, s.lang) for s in todo]
    failures = 0
    for s, scores in zip(todo, _ask(judge, prompts, parse_rubric, retries), strict=True):
        if scores is None:
            failures += 1
            continue
        s.scores.update({f"judge_{c}": float(v) for c, v in scores.items()})
        s.scores["judge_overall"] = sum(scores.values()) / len(scores)
    return failures


def pairwise_prompt(question: str, references: Sequence[str], first: str, second: str,
                    lang: str) -> list[dict[str, str]]:
    """Chat messages asking which of two answers (A shown first) is better."""
    lang = _lang(lang)
    q, r, _ = _LABELS[lang]
    user = f"{q}: {question}\n{r}: {' / '.join(references)}\nA: {first}\nB: {second}"
    return [{"role": "system", "content": PAIRWISE[lang]}, {"role": "user", "content": user}]


def parse_winner(text: str) -> str | None:
    """"A", "B" or "tie" from the judge's reply, or None when malformed."""
    match = re.search(r'"winner"\s*:\s*"([^"]+)"', text)
    if not match:
        return None
    value = match.group(1).strip().lower()
    return {"a": "A", "b": "B", "tie": "tie", "empate": "tie"}.get(value)


def judge_pairwise(samples: list[Sample], col_a: str, col_b: str, judge: Generator,
                   retries: int = 2) -> dict[str, Any]:
    """Judge A vs B on every shared open question in both orders; count wins and flips."""
    by_q: dict[str, dict[str, Sample]] = {}
    for s in samples:
        if s.column in (col_a, col_b) and s.choice is None:
            by_q.setdefault(s.question_id, {})[s.column] = s
    pairs = [(v[col_a], v[col_b]) for v in by_q.values() if len(v) == 2]
    prompts = [pairwise_prompt(a.question, a.references, x.output, y.output, a.lang)
               for a, b in pairs for x, y in ((a, b), (b, a))]
    verdicts = _ask(judge, prompts, parse_winner, retries)
    tally: Counter[str] = Counter()
    for i in range(0, len(verdicts), 2):
        tally[_combine(verdicts[i], verdicts[i + 1])] += 1
    n = len(pairs)
    return {"a": col_a, "b": col_b, "n": n, "a_wins": tally["A"], "b_wins": tally["B"],
            "ties": tally["tie"], "inconsistent": tally["inconsistent"],
            "position_bias_rate": tally["inconsistent"] / n if n else None}


def _combine(ab: str | None, ba: str | None) -> str:
    """A verdict in order (A,B) and one in order (B,A), mapped back to A/B/tie/inconsistent."""
    swapped = {"A": "B", "B": "A", "tie": "tie"}.get(ba or "")
    if ab is None or swapped is None or ab != swapped:
        return "inconsistent"
    return ab
