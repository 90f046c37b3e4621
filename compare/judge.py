"""LLM-as-judge: the published 1–5 rubric, reference-aware and shown the passages, plus
position-swapped A/B judging and the judge's agreement with the reference-based primary metric.

Rubric. Criteria (from the sibling study), each an integer 1–5: ``accuracy`` (against the
reference answers; 4 means correct with a minor slip), ``relevance``, ``coherence`` and
``contextual_understanding``. The last one means two things, and the prompt says which applies:

- the answer was given passages (RAG systems): the judge sees the passages that were in the
  system's prompt (``Sample.retrieved`` entries with ``in_prompt``; their ``text`` when recorded,
  else the system's own prompt, which holds them; clipped to ``PASSAGE_CHARS`` characters) and
  grades how well the answer uses them: it rests on the relevant passage, does not contradict
  it, and says so when the passages lack the answer;
- no passages were given (closed-book systems, or none fit the window): the prompt says so and
  the judge grades, on the question alone, whether the answer grasps its context (who, what,
  when it asks about) and answers that question rather than a neighbouring one.

Prompts are in the question's language; the judge must answer JSON, which is validated and
re-asked (up to ``retries`` times) when malformed; what stays malformed is counted as unparsed.
Scores written on each open-question sample: ``judge_accuracy``, ``judge_relevance``,
``judge_coherence``, ``judge_contextual_understanding`` (1–5), ``judge_overall`` (their mean) and
the binary ``judge_correct`` (1 when ``judge_accuracy >= CORRECT_AT``).

Pairwise judging asks both orders (A,B) and (B,A) against the reference; a verdict that flips
with the order counts as position-inconsistent, a reply that cannot be parsed (after the
re-asks) in either order as unparsed — the two are counted apart, and the position-bias rate is
over the pairs with both verdicts parsed.

``results["judge"]`` (built by ``judge_samples``)::

    {"model": label,                       # what was asked for (--judge)
     "identity": {...},                    # what keys its cache: the generator's identity
                                           # (model files hash...), for a server the model
                                           # card it reports under "served"
     "same_as_model_under_test": [column, ...],  # columns whose model is the judge
     "correct_at": 4,                      # judge_correct = judge_accuracy >= correct_at
     "rubric": {"scored": n, "unparsed": n},
     "pairwise": [{"a", "b", "n", "a_wins", "b_wins", "ties", "position_inconsistent",
                   "unparsed", "position_bias_rate", "inconsistent"}, ...],
     "agreement": judge_agreement(...),    # vs the reference-based primary metric
     "summary": str,                       # judge_summary(): one paragraph for the report
     "failures": n}                        # = rubric.unparsed (read by the report templates)

``inconsistent`` repeats ``position_inconsistent`` and ``failures`` repeats
``rubric.unparsed`` for the report templates that read those names.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from compare.rundir import Sample
from models.generation import Decoding, Generator

log = logging.getLogger(__name__)
CRITERIA = ("accuracy", "relevance", "coherence", "contextual_understanding")
CORRECT_AT = 4  # judge_correct: judge_accuracy at least this
PASSAGE_CHARS = 3000  # the passages shown to the judge, at most this many characters in all
_DECODING = Decoding(strategy="greedy", max_new_tokens=160)

RUBRIC = {
    "pt": ("Você é um avaliador rigoroso. Avalie a RESPOSTA à PERGUNTA comparando-a com a "
           "REFERÊNCIA (as respostas aceitas). Dê notas inteiras de 1 (péssimo) a 5 "
           "(excelente) para:\n"
           "- accuracy (exatidão factual, julgada pela REFERÊNCIA): 5 totalmente correta; "
           "4 correta com uma imprecisão menor; 3 parcialmente correta; 2 quase toda errada; "
           "1 errada, ou sem resposta;\n"
           "- relevance (relevância): responde ao que foi perguntado, sem rodeios;\n"
           "- coherence (coerência): clara e sem contradições;\n"
           "- contextual_understanding (compreensão do contexto): se TRECHOS são mostrados, o "
           "quanto a resposta os usa bem — apoia-se no trecho relevante, não os contradiz e diz "
           "quando eles não trazem a resposta; se nenhum trecho foi dado, o quanto a resposta "
           "entende o contexto da pergunta (quem, o quê, quando) e responde a essa pergunta, não "
           "a uma vizinha.\n"
           'Responda SOMENTE com JSON: {"accuracy": n, "relevance": n, "coherence": n, '
           '"contextual_understanding": n, "justification": "..."}'),
    "en": ("You are a strict grader. Grade the ANSWER to the QUESTION against the REFERENCE (the "
           "accepted answers). Give integer scores from 1 (very poor) to 5 (excellent) for:\n"
           "- accuracy (factual correctness, judged against the REFERENCE): 5 fully correct; "
           "4 correct with a minor slip; 3 partly correct; 2 mostly wrong; 1 wrong, or no "
           "answer;\n"
           "- relevance: answers what was asked, without padding;\n"
           "- coherence: clear and free of contradictions;\n"
           "- contextual_understanding: when PASSAGES are shown, how well the answer uses them — "
           "it rests on the relevant passage, does not contradict them, and says so when they "
           "lack the answer; when no passages were given, how well the answer grasps the "
           "question's context (who, what, when) and answers that question, not a neighbouring "
           "one.\n"
           'Reply ONLY with JSON: {"accuracy": n, "relevance": n, "coherence": n, '
           '"contextual_understanding": n, "justification": "..."}'),
}
PAIRWISE = {
    "pt": ("Qual resposta à PERGUNTA é melhor, considerando a REFERÊNCIA? Responda SOMENTE com "
           'JSON: {"winner": "A"} ou {"winner": "B"} ou {"winner": "empate"}.'),
    "en": ("Which answer to the QUESTION is better, given the REFERENCE? Reply ONLY with JSON: "
           '{"winner": "A"} or {"winner": "B"} or {"winner": "tie"}.'),
}
_LABELS = {"pt": ("PERGUNTA", "REFERÊNCIA", "RESPOSTA"), "en": ("QUESTION", "REFERENCE", "ANSWER")}
_PASSAGES = {
    "pt": {"given": "TRECHOS dados ao sistema", "prompt": "TRECHOS (no prompt que o sistema "
           "recebeu)", "none": "TRECHOS: nenhum trecho foi dado ao sistema; avalie "
           "contextual_understanding pela pergunta apenas.", "more": "trecho(s) a mais omitido(s)"},
    "en": {"given": "PASSAGES given to the system", "prompt": "PASSAGES (in the prompt the system "
           "was given)", "none": "PASSAGES: no passages were given to the system; judge "
           "contextual_understanding on the question alone.", "more": "more passage(s) left out"},
}


def _lang(lang: str) -> str:
    return lang if lang in RUBRIC else "en"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:max(limit - 1, 0)].rstrip() + "…"


def given_passages(retrieved: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The retrieved passages that were in the system's prompt (all, for records without the
    ``in_prompt`` flag)."""
    return [p for p in retrieved if p.get("in_prompt", True)]


def _prompt_text(prompt: Any) -> str:
    """The text of what a system was given: a plain prompt, or its chat messages' contents."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, Mapping))
    return ""


def passages_block(retrieved: Sequence[Mapping[str, Any]], lang: str, prompt: Any = "",
                   limit: int = PASSAGE_CHARS) -> str:
    """The passages section of a rubric prompt: the passages that were in the system's prompt,
    numbered as the system saw them, with their text clipped to ``limit`` characters in all (the
    system's own ``prompt`` in their place when the records carry no text), or the sentence
    saying that no passages were given."""
    words = _PASSAGES[_lang(lang)]
    given = given_passages(retrieved)
    if not given:
        return words["none"]
    if not any(p.get("text") for p in given):
        return f"{words['prompt']}:\n{_clip(_prompt_text(prompt), limit)}"
    lines, left = [f"{words['given']}:"], limit
    for i, p in enumerate(given, 1):
        if left <= 0:
            lines.append(f"(+{len(given) - i + 1} {words['more']})")
            break
        head = " — ".join(str(p[k]) for k in ("title", "section") if p.get(k))
        body = _clip(str(p.get("text", "")), left)
        left -= len(body)
        lines.append(f"[{i}] {head}\n{body}")
    return "\n".join(lines)


def rubric_prompt(question: str, references: Sequence[str], answer: str, lang: str,
                  retrieved: Sequence[Mapping[str, Any]] = (), prompt: Any = "",
                  passage_chars: int = PASSAGE_CHARS) -> list[dict[str, str]]:
    """Chat messages asking for the four 1–5 scores as JSON, showing the passages the answer
    was given (``passages_block``; "no passages were given" for a closed-book answer)."""
    lang = _lang(lang)
    q, r, a = _LABELS[lang]
    context = passages_block(retrieved, lang, prompt, passage_chars)
    user = f"{q}: {question}\n{r}: {' / '.join(references)}\n{context}\n{a}: {answer}"
    return [{"role": "system", "content": RUBRIC[lang]}, {"role": "user", "content": user}]


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object embedded in ``text`` (code fences and chatter around them allowed)."""
    decoder, found, pos = json.JSONDecoder(), [], text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        pos = text.find("{", end)
    return found


def _score(value: Any) -> int | None:
    """An integer 1–5 from 5, 5.0 or "5"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= 5 else None


def parse_rubric(text: str) -> dict[str, int] | None:
    """The four integer scores from the judge's reply (the first JSON object holding all four,
    each an integer 1–5), or None when malformed."""
    for data in _json_objects(text):
        scores = {c: _score(data.get(c)) for c in CRITERIA}
        if all(v is not None for v in scores.values()):
            return {c: int(v) for c, v in scores.items() if v is not None}
    return None


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


def is_open(s: Sample) -> bool:
    """Whether a sample answers an open question (a multiple-choice one has a choice, choice
    scores, or is scored ``mc_accuracy`` / ``mc_unparsed``)."""
    return (s.choice is None and s.choice_scores is None
            and "mc_accuracy" not in s.scores and "mc_unparsed" not in s.scores)


def judge_rubric(samples: list[Sample], judge: Generator, retries: int = 2,
                 passage_chars: int = PASSAGE_CHARS) -> dict[str, int]:
    """Add the judge_<criterion>, judge_overall and judge_correct scores to the open-question
    samples; return ``{"scored": n, "unparsed": n}``."""
    todo = [s for s in samples if is_open(s)]
    prompts = [rubric_prompt(s.question, s.references, s.output, s.lang, s.retrieved, s.prompt,
                             passage_chars) for s in todo]
    unparsed = 0
    for s, scores in zip(todo, _ask(judge, prompts, parse_rubric, retries), strict=True):
        if scores is None:
            unparsed += 1
            continue
        s.scores.update({f"judge_{c}": float(v) for c, v in scores.items()})
        s.scores["judge_overall"] = sum(scores.values()) / len(scores)
        s.scores["judge_correct"] = float(scores["accuracy"] >= CORRECT_AT)
    return {"scored": len(todo) - unparsed, "unparsed": unparsed}


def pairwise_prompt(question: str, references: Sequence[str], first: str, second: str,
                    lang: str) -> list[dict[str, str]]:
    """Chat messages asking which of two answers (A shown first) is better."""
    lang = _lang(lang)
    q, r, _ = _LABELS[lang]
    user = f"{q}: {question}\n{r}: {' / '.join(references)}\nA: {first}\nB: {second}"
    return [{"role": "system", "content": PAIRWISE[lang]}, {"role": "user", "content": user}]


def parse_winner(text: str) -> str | None:
    """"A", "B" or "tie" from the judge's reply, or None when malformed."""
    for data in _json_objects(text):
        value = data.get("winner")
        if isinstance(value, str):
            return {"a": "A", "b": "B", "tie": "tie", "empate": "tie"}.get(value.strip().lower())
    return None


def judge_pairwise(samples: list[Sample], col_a: str, col_b: str, judge: Generator,
                   retries: int = 2) -> dict[str, Any]:
    """Judge A vs B on every shared open question in both orders; count wins, ties, verdicts
    that flip with the order (``position_inconsistent``) and pairs with a reply that could not
    be parsed (``unparsed``); the position-bias rate is over the pairs with both parsed."""
    by_q: dict[str, dict[str, Sample]] = {}
    for s in samples:
        if s.column in (col_a, col_b) and is_open(s):
            by_q.setdefault(s.question_id, {})[s.column] = s
    pairs = [(v[col_a], v[col_b]) for v in by_q.values() if len(v) == 2]
    prompts = [pairwise_prompt(a.question, a.references, x.output, y.output, a.lang)
               for a, b in pairs for x, y in ((a, b), (b, a))]
    verdicts = _ask(judge, prompts, parse_winner, retries)
    tally: Counter[str] = Counter()
    for i in range(0, len(verdicts), 2):
        tally[_combine(verdicts[i], verdicts[i + 1])] += 1
    n, parsed = len(pairs), len(pairs) - tally["unparsed"]
    return {"a": col_a, "b": col_b, "n": n, "a_wins": tally["A"], "b_wins": tally["B"],
            "ties": tally["tie"], "position_inconsistent": tally["inconsistent"],
            "unparsed": tally["unparsed"],
            "position_bias_rate": tally["inconsistent"] / parsed if parsed else None,
            "inconsistent": tally["inconsistent"]}


def _combine(ab: str | None, ba: str | None) -> str:
    """A verdict in order (A,B) and one in order (B,A), mapped back to A/B/tie, "inconsistent"
    when they disagree, or "unparsed" when either is missing."""
    if ab is None or ba is None:
        return "unparsed"
    swapped = {"A": "B", "B": "A", "tie": "tie"}[ba]
    return ab if ab == swapped else "inconsistent"


def judge_agreement(samples: Sequence[Sample], primary: str = "answer_accuracy"
                    ) -> dict[str, Any]:
    """The judge against a reference-based metric, on the samples that have both scores.

    ``spearman``/``spearman_p``: ``scipy.stats.spearmanr`` of ``judge_accuracy`` (1–5)
    against ``primary``; ``kappa``: Cohen's κ (``sklearn.metrics.cohen_kappa_score``) of
    ``judge_correct`` against ``primary`` when ``primary`` is binary (0/1), with the 2×2
    ``table`` (``both_correct``, ``judge_only``, ``primary_only``, ``both_wrong``) and the
    ``observed`` share of agreement. A statistic that is undefined (fewer than 3 samples for ρ,
    a constant side, a non-binary ``primary`` for κ) is None."""
    if primary.startswith("judge_"):
        raise ValueError(f"agreement of the judge with its own score {primary!r} means nothing; "
                         "pass a reference-based metric such as answer_accuracy")
    pairs = [(s.scores["judge_accuracy"], float(s.scores[primary])) for s in samples
             if "judge_accuracy" in s.scores and primary in s.scores]
    out: dict[str, Any] = {"primary": primary, "n": len(pairs), "spearman": None,
                           "spearman_p": None, "kappa": None, "table": None, "observed": None}
    judged = [j for j, _ in pairs]
    reference = [p for _, p in pairs]
    if len(pairs) >= 3 and len(set(judged)) > 1 and len(set(reference)) > 1:
        from scipy.stats import spearmanr

        result = spearmanr(judged, reference)
        out["spearman"], out["spearman_p"] = float(result.statistic), float(result.pvalue)
    if pairs and set(reference) <= {0.0, 1.0}:
        correct = [int(j >= CORRECT_AT) for j in judged]
        truth = [int(p) for p in reference]
        cells = Counter(zip(correct, truth, strict=True))
        out["table"] = {"both_correct": cells[1, 1], "judge_only": cells[1, 0],
                        "primary_only": cells[0, 1], "both_wrong": cells[0, 0]}
        out["observed"] = (cells[1, 1] + cells[0, 0]) / len(pairs)
        if len(set(correct) | set(truth)) > 1:  # κ is 0/0 when both raters say one thing
            from sklearn.metrics import cohen_kappa_score

            kappa = float(cohen_kappa_score(correct, truth, labels=[0, 1]))
            out["kappa"] = None if math.isnan(kappa) else kappa
    return out


def _names(identity: Mapping[str, Any]) -> set[str]:
    """The model names an identity answers to: its model, and a server's reported id/root."""
    served = identity.get("served")
    names = {identity.get("model")}
    if isinstance(served, Mapping):
        names |= {served.get("id"), served.get("root")}
    return {str(n) for n in names if n}


def _core(identity: Mapping[str, Any]) -> dict[str, Any]:
    """An identity without what is not the model's (role, adapter, retrieval)."""
    return {k: v for k, v in identity.items() if k not in ("role", "adapter", "retrieval")}


def same_as_model_under_test(judge_identity: Mapping[str, Any],
                             columns: Mapping[str, tuple[str, Mapping[str, Any] | None]]
                             ) -> list[str]:
    """The columns whose model is the judge: ``columns`` maps a column to its model name and
    its generator's identity (None when unknown); a column matches on the same model name
    (the judge's model, or the id/root a server reports for it), the same model fingerprint
    (the same weights under another name) or the same identity, the adapter aside (a
    fine-tuned column is flagged when the judge is its base model)."""
    names, core = _names(judge_identity), _core(judge_identity)
    weights = judge_identity.get("fingerprint")

    def same(model: str, identity: Mapping[str, Any] | None) -> bool:
        if model in names:
            return True
        if identity is None:
            return False
        return (bool(_names(identity) & names) or _core(identity) == core
                or (weights is not None and identity.get("fingerprint") == weights))

    return [col for col, (model, identity) in columns.items() if same(model, identity)]


def judge_samples(samples: list[Sample], judge: Generator, label: str, columns: Sequence[str],
                  same_as: Sequence[str] = (), primary: str = "answer_accuracy",
                  retries: int = 2, pairwise: bool = True) -> dict[str, Any]:
    """The whole judge pass: rubric scores on the samples, pairwise verdicts for every column
    pair, agreement with ``primary`` (a reference-based metric), and the ``results["judge"]``
    entry described in the module docstring. ``same_as`` lists columns already known to share
    the judge's model (``SystemFactory.judge_same_as``); columns whose samples name the judge's
    model are added, with a logged warning. ``pairwise=False`` skips the A/B verdicts (two
    prompts per question and column pair: the bulk of a judge's cost)."""
    identity = dict(getattr(judge, "identity", None) or {"model": judge.name})
    models = {s.column: (s.model, None) for s in samples}
    flagged = set(same_as) | set(same_as_model_under_test(identity, models))
    same = [c for c in columns if c in flagged] + sorted(flagged - set(columns))
    if same:
        log.warning("the judge %s is the model under test for %s: its scores there may favour "
                    "its own answers", label, ", ".join(same))
    rubric = judge_rubric(samples, judge, retries)
    pairs = [judge_pairwise(samples, a, b, judge, retries)
             for i, a in enumerate(columns) for b in columns[i + 1:]] if pairwise else []
    info: dict[str, Any] = {
        "model": label, "identity": identity, "same_as_model_under_test": same,
        "correct_at": CORRECT_AT, "rubric": rubric, "pairwise": pairs,
        "agreement": judge_agreement(samples, primary), "failures": rubric["unparsed"]}
    info["summary"] = judge_summary(info)
    return info


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def judge_summary(info: Mapping[str, Any]) -> str:
    """One paragraph for the report from a ``results["judge"]`` entry: the self-judging
    warning first, then agreement with the primary metric, unparsed replies and the pairwise
    verdicts."""
    parts = []
    same = info.get("same_as_model_under_test") or []
    if same:
        parts.append(f"Warning: the judge ({info.get('model')}) is the model under test for "
                     f"{', '.join(same)}; its scores there may favour its own answers.")
    agree = info.get("agreement") or {}
    if agree:
        table = agree.get("table")
        cells = (f" (judge correct/primary correct {table['both_correct']}, judge only "
                 f"{table['judge_only']}, primary only {table['primary_only']}, neither "
                 f"{table['both_wrong']})") if table else ""
        parts.append(f"Agreement with {agree.get('primary')} on {agree.get('n')} answers: "
                     f"Spearman ρ = {_fmt(agree.get('spearman'))} "
                     f"(p = {_fmt(agree.get('spearman_p'), 3)}), Cohen's κ on judge_correct = "
                     f"{_fmt(agree.get('kappa'))}{cells}.")
    rubric = info.get("rubric") or {}
    if rubric:
        parts.append(f"Rubric: {rubric.get('scored')} answers scored, {rubric.get('unparsed')} "
                     "replies unparsed.")
    pairs = [f"{p['a']} vs {p['b']}: {p['a_wins']}–{p['b_wins']} ({p['ties']} ties, "
             f"{p['position_inconsistent']} flipped with the order, {p['unparsed']} unparsed)"
             for p in info.get("pairwise") or []]
    if pairs:
        parts.append("Pairwise: " + "; ".join(pairs) + ".")
    return " ".join(parts)
