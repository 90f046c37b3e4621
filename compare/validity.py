"""Threats to validity, computed from the run itself: the report's caveats with this run's numbers.

``threats_to_validity(results, samples, questions)`` returns one item per threat::

    {"id": "training", "title": "How much training each adapter had",
     "finding": "Adapter cpu-demo (columns finetuned, rag+finetuned): 40 optimizer steps, …",
     "severity": "warning", "data": {...}}

Each finding is read off the run: the adapter folders its provenance names (``manifest.json``,
``training_log.jsonl``, the pairs file the manifest points to), the samples (prompts as sent,
scores), the questions (gold titles) and ``results.json`` (judge identity, multiplicity). Where
an input is missing the item says "not measured" or is left out; nothing is assumed.

The items, by ``id``:

- ``training``: optimizer steps, epochs and tokens each adapter was trained on (tokens as
  logged by the trainer, else an estimate stated as such);
- ``answer_length``: median length of the adapter's training answers vs the run's references;
- ``prompt``: whether each fine-tuned column was evaluated with the prompt it was trained on
  (the trained prompt is rebuilt for every evaluated question and compared with what was sent);
- ``gold_titles``: the share of open questions that name a gold article, and retrieval's
  coverage of gold articles (hit@k) on both splits: RAG's upper bound;
- ``leakage``: what the training-pair leakage filter dropped, and against which questions;
- ``judge``: whether the judge is a model under test;
- ``judge_reliability``: how many of the judge's replies gave a score, and how far its verdicts
  agree with the reference-based metric (Cohen's κ, Spearman ρ, which way it disagrees);
- ``reproducibility``: whether a re-run would give the same greedy answers: how each column's
  backend batched them (llama.cpp with several answers in flight is not batch-invariant);
- ``multiplicity``: the correction, its family size and how many raw verdicts it overturned;
- ``control``: the change on questions outside the fine-tuning data (forgetting).

``title_split_tags`` gives the derived split tags (``title:named`` / ``title:unnamed``) the
report breaks every metric down by.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from compare.rundir import Sample
from core.errors import UserError
from core.questions import Question, read_questions
from core.text import fold
from finetune.records import TRAINING_LOG, read_log

NAMED, UNNAMED = "title:named", "title:unnamed"
FINETUNED_SYSTEMS = {"finetuned": "base", "rag+finetuned": "rag"}  # adapter system -> its control
MIN_EPOCHS = 1.0  # fewer passes over the training pairs than this: warned
LENGTH_RATIO = 3.0  # training answers this many times longer (or shorter) than references: warned
NAMED_SHARE = 0.1  # this share of open questions naming a gold title or more: warned
ALPHA = 0.05
KAPPA_TRUSTED = 0.6  # judge vs reference metric: κ above this is "substantial" (Landis & Koch)
UNPARSED_SHARE = 0.2  # more of the judge's rubric replies than this without a score: warned
METHOD_NAMES = {"holm": "Holm–Bonferroni (family-wise error rate)",
                "bh": "Benjamini–Hochberg (false discovery rate)"}

Threat = dict[str, Any]


def _n(count: int, noun: str) -> str:
    """``3 pairs``, ``1 pair`` (the regular English plural)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def threats_to_validity(results: dict[str, Any], samples: list[Sample],
                        questions: list[Question] | None = None) -> list[Threat]:
    """The run's threats to validity (see the module docstring), in report order.

    ``questions``: the run's questions; ``None`` reads them from ``results["config"]
    ["questions"]`` (the gold-title item is left out when they cannot be read).
    """
    if questions is None:
        questions = run_questions(results)
    adapters = _adapters(results)
    items = [
        _training(adapters),
        _answer_length(adapters, samples, questions),
        _prompt(adapters, samples),
        _gold_titles(results, samples, questions),
        _leakage(adapters, results, samples),
        _judge(results),
        _judge_reliability(results),
        _reproducibility(results),
        _multiplicity(results),
        _control(results, samples),
    ]
    return [item for item in items if item is not None]


def run_questions(results: dict[str, Any]) -> list[Question] | None:
    """The run's questions read again from the files its config names (``None`` when they are
    not named or cannot be read)."""
    paths = (results.get("config") or {}).get("questions")
    if not paths:
        return None
    try:
        return read_questions(list(paths) if isinstance(paths, list) else paths)
    except UserError:
        return None


def names_gold_title(question: Question) -> bool:
    """Whether the question's text names one of its gold titles (accent- and case-folded, whole
    words; a title's parenthesised qualifier, "Tiradentes (filme)", is not required)."""
    text = fold(question.question)
    for title in question.gold_titles:
        bare = fold(re.sub(r"\s*\([^)]*\)\s*$", "", title)).strip()
        if bare and re.search(rf"(?<!\w){re.escape(bare)}(?!\w)", text):
            return True
    return False


def title_split_tags(questions: Iterable[Question]) -> dict[str, str]:
    """question id -> ``title:named`` or ``title:unnamed``, for questions with gold titles."""
    return {q.id: NAMED if names_gold_title(q) else UNNAMED
            for q in questions if q.gold_titles}


# ------------------------------------------------------------------------------ adapters


class _Adapter:
    """One adapter folder the run used: manifest, training log, columns (read once)."""

    def __init__(self, path: str, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        self.name = Path(path).name
        self.manifest: dict[str, Any] | None = _read_json(Path(path) / "manifest.json")
        self.log = read_log(Path(path) / TRAINING_LOG)
        self._pairs: list[Any] | None | bool = False  # False: not read yet

    @property
    def label(self) -> str:
        cols = f" (columns {', '.join(self.columns)})" if self.columns else ""
        return f"Adapter {self.name}{cols}"

    def pairs(self) -> list[Any] | None:
        """The adapter's training pairs (``None`` when its pairs file cannot be read)."""
        if self._pairs is False:
            from finetune.records import read_pairs

            path = ((self.manifest or {}).get("pairs") or {}).get("path")
            try:
                self._pairs = read_pairs(Path(path)) if path else None
            except UserError:
                self._pairs = None
        return self._pairs  # type: ignore[return-value]

    @property
    def pairs_path(self) -> str:
        return str(((self.manifest or {}).get("pairs") or {}).get("path") or "(not recorded)")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _column_adapters(results: dict[str, Any]) -> dict[str, str]:
    """column -> adapter folder, from the systems' fingerprints in the provenance."""
    out = {}
    for col, fp in ((results.get("provenance") or {}).get("systems") or {}).items():
        adapter = (fp or {}).get("adapter")
        if isinstance(adapter, dict) and adapter.get("path"):
            out[col] = str(adapter["path"])
    return out


def _adapters(results: dict[str, Any]) -> list[_Adapter]:
    by_col = _column_adapters(results)
    paths = [str(a["path"]) for a in
             ((results.get("provenance") or {}).get("adapters") or {}).values()
             if isinstance(a, dict) and a.get("path")]
    paths += [p for p in by_col.values() if p not in paths]
    return [_Adapter(p, [c for c, q in by_col.items() if q == p]) for p in dict.fromkeys(paths)]


def _item(id_: str, title: str, findings: Sequence[str], warn: bool,
          data: dict[str, Any]) -> Threat:
    return {"id": id_, "title": title, "finding": " ".join(findings),
            "severity": "warning" if warn else "info", "data": data}


def _not_read(adapter: _Adapter, what: str) -> str:
    return f"{adapter.label}: {adapter.path} has no readable manifest.json: {what} not measured."


# ------------------------------------------------------------------------------ (a) training


def _last(log: list[dict[str, Any]], key: str) -> float | None:
    """The value of ``key`` at the highest logged step (a resumed run's log is appended)."""
    rows = [r for r in log if isinstance(r.get(key), (int, float)) and not isinstance(
        r.get(key), bool)]
    if not rows:
        return None
    return float(max(rows, key=lambda r: (r.get("step") or 0, r[key]))[key])


def training_amount(manifest: dict[str, Any], log: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, epochs and tokens of one adapter's training (``*_source`` says where each came
    from: the trainer's log, the manifest, or an estimate from the training config)."""
    cfg = manifest.get("config") or {}
    outcome = manifest.get("training") or {}
    pairs = manifest.get("pairs") or {}
    dataset = ((manifest.get("truncation") or {}).get("train") or {})
    batch = int(cfg.get("per_device_train_batch_size") or 1)
    accum = int(cfg.get("gradient_accumulation_steps") or 1)
    seq_len, packing = cfg.get("max_seq_length"), bool(cfg.get("packing"))
    out: dict[str, Any] = {"max_steps": cfg.get("max_steps"), "batch_size": batch,
                           "grad_accum": accum, "max_seq_length": seq_len, "packing": packing,
                           "train_pairs": pairs.get("train"),
                           "dataset_tokens": dataset.get("tokens")}
    steps = _last(log, "step")
    out["steps"], out["steps_source"] = (int(steps), "log") if steps is not None else (
        (outcome.get("global_step"), "manifest") if outcome.get("global_step") is not None
        else (None, None))
    sequences = out["steps"] * batch * accum if out["steps"] is not None else None
    out["sequences"] = sequences
    tokens = _last(log, "num_tokens")
    if tokens is not None:
        out["tokens"], out["tokens_source"] = int(tokens), "logged"
    elif sequences is not None and seq_len and (packing or not dataset.get("examples")):
        out["tokens"] = int(sequences * int(seq_len))
        out["tokens_source"] = ("estimate: steps × batch × accumulation × max_seq_length "
                                "(an upper bound: every sequence full)")
    elif sequences is not None and dataset.get("examples") and dataset.get("tokens"):
        out["tokens"] = round(sequences * dataset["tokens"] / dataset["examples"])
        out["tokens_source"] = ("estimate: steps × batch × accumulation × mean tokens per "
                                "training example")
    else:
        out["tokens"], out["tokens_source"] = None, None
    epoch = _last(log, "epoch")
    if epoch is not None:
        out["epochs"], out["epochs_source"] = epoch, "log"
    elif isinstance(outcome.get("epoch"), (int, float)):
        out["epochs"], out["epochs_source"] = float(outcome["epoch"]), "manifest"
    elif packing and out["tokens"] is not None and dataset.get("tokens"):
        out["epochs"], out["epochs_source"] = out["tokens"] / dataset["tokens"], "estimate"
    elif not packing and sequences is not None and pairs.get("train"):
        out["epochs"], out["epochs_source"] = sequences / pairs["train"], "estimate"
    else:
        out["epochs"], out["epochs_source"] = None, None
    return out


def _training(adapters: list[_Adapter]) -> Threat | None:
    if not adapters:
        return None
    findings: list[str] = []
    data: dict[str, Any] = {}
    warn = False
    for a in adapters:
        if a.manifest is None:
            findings.append(_not_read(a, "training"))
            continue
        t = training_amount(a.manifest, a.log)
        data[a.path] = {**t, "columns": a.columns}
        parts = []
        if t["steps"] is not None:
            parts.append(f"{_n(t['steps'], 'optimizer step')} of {t['batch_size']} × "
                         f"{t['grad_accum']} sequences")
        if t["epochs"] is not None:
            est = " (estimated)" if t["epochs_source"] == "estimate" else ""
            over = f" over its {_n(t['train_pairs'], 'training pair')}" if t["train_pairs"] else ""
            parts.append(f"{t['epochs']:.2f} epochs{est}{over}")
            warn |= t["epochs"] < MIN_EPOCHS
        if t["tokens"] is not None:
            how = "logged" if t["tokens_source"] == "logged" else t["tokens_source"]
            parts.append(f"{t['tokens']:,} training tokens ({how})")
        findings.append(f"{a.label}: " + (", ".join(parts) if parts else
                                          "training not measured (no log, no outcome)") + ".")
        if t["epochs"] is not None and t["epochs"] < MIN_EPOCHS:
            findings.append(f"Less than one pass over the training data: a null result for "
                            f"{a.name} may be under-training, not a limit of fine-tuning.")
    return _item("training", "How much training each adapter had", findings, warn, data)


# ------------------------------------------------------------------------ (b) answer length


def _is_mc(sample: Sample) -> bool:
    """A multiple-choice sample (scored by option, or with a picked or unparsed option)."""
    return ("mc_accuracy" in sample.scores or "mc_unparsed" in sample.scores
            or sample.choice is not None or sample.choice_scores is not None)


def _open_references(samples: list[Sample], questions: list[Question] | None
                     ) -> dict[str, str]:
    """question id -> its first (canonical) reference, for the run's open questions."""
    asked = {s.question_id for s in samples}
    if questions is not None:
        return {q.id: q.answers[0] for q in questions
                if not q.is_multiple_choice and q.answers and (not asked or q.id in asked)}
    return {s.question_id: s.references[0] for s in samples if not _is_mc(s) and s.references}


def _answer_length(adapters: list[_Adapter], samples: list[Sample],
                   questions: list[Question] | None) -> Threat | None:
    refs = _open_references(samples, questions)
    if not adapters or not refs:
        return None
    ref_median = statistics.median(len(r) for r in refs.values())
    findings = [f"The run's {_n(len(refs), 'open question')} have a median (first) reference of "
                f"{ref_median:g} characters."]
    data: dict[str, Any] = {"reference_median_chars": ref_median, "references": len(refs),
                            "adapters": {}}
    warn = False
    for a in adapters:
        if a.manifest is None:
            findings.append(_not_read(a, "training-answer length"))
            continue
        pairs = a.pairs()
        if pairs is None:
            findings.append(f"{a.label}: its pairs file {a.pairs_path} is gone or unreadable: "
                            "training-answer length not measured.")
            continue
        train = [p for p in pairs if p.split == "train"]
        if not train:
            continue
        median = statistics.median(len(p.output) for p in train)
        ratio = median / ref_median if ref_median else None
        data["adapters"][a.path] = {"train_answers": len(train), "median_chars": median,
                                    "ratio": ratio}
        text = (f"{a.label}: median training answer {median:g} characters over "
                f"{_n(len(train), 'pair')}")
        if ratio is not None:
            text += f", {ratio:.1f}× the reference length"
            if ratio >= LENGTH_RATIO or ratio <= 1 / LENGTH_RATIO:
                warn = True
                text += (" — the adapter learned another answer length than the metrics reward, "
                         "so format, not knowledge, can decide its scores")
        findings.append(text + ".")
    return _item("answer_length", "Training-answer length vs reference length", findings, warn,
                 data)


# ------------------------------------------------------------------------------ (c) prompt


def _shape(prompt: Any) -> str:
    """What a prompt is made of: chat roles joined with "+", or "text"."""
    if isinstance(prompt, list):
        return "+".join(str(m.get("role")) for m in prompt if isinstance(m, dict)) or "empty"
    return "text" if isinstance(prompt, str) else type(prompt).__name__


def _trained_prompt(manifest: dict[str, Any]) -> tuple[str, Any]:
    """(a description of the prompt the adapter was trained on, a function question -> that
    prompt as the generator receives it, or ``None`` when it cannot be rebuilt)."""
    from models.formats import get_format

    fmt_rec = manifest.get("prompt_format") or {}
    fmt_name = str(fmt_rec.get("name") if isinstance(fmt_rec, dict) else fmt_rec or "chat")
    try:
        fmt = get_format(fmt_name)
    except UserError:
        return f"the {fmt_name!r} format (unknown here)", None
    recorded = manifest.get("prompt")
    prompt: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    template = prompt.get("template")
    if not template:
        where = "one user turn" if fmt.uses_chat_template else "its text template"
        return (f"the bare instruction as {where} ({fmt_name} format)",
                lambda q, lang: fmt.inference_prompt(q))
    from rag.prompts import render_prompt, template_version

    desc = (f"the {template!r} template's closed-book messages "
            f"({prompt.get('closed_book_version') or '?'}, {fmt_name} format)")
    try:
        current = template_version(str(template), closed_book=True)
    except UserError:
        return desc, None
    if prompt.get("closed_book_version") and current != prompt["closed_book_version"]:
        return desc + f"; the template is now {current}", None
    lang = str(prompt.get("lang") or "auto")
    return desc, lambda q, q_lang: fmt.adapt(render_prompt(q, None, lang, str(template)))


def _prompt(adapters: list[_Adapter], samples: list[Sample]) -> Threat | None:
    findings: list[str] = []
    data: dict[str, Any] = {}
    warn = False
    for a in adapters:
        for col in a.columns:
            rows = [s for s in samples if s.column == col and not _is_mc(s)]
            if not rows:
                continue
            if a.manifest is None:
                findings.append(_not_read(a, f"{col}'s training prompt"))
                continue
            if not any(s.prompt for s in rows):
                findings.append(f"{col}: the samples do not record their prompts: not measured.")
                continue
            trained, rebuild = _trained_prompt(a.manifest)
            shapes = Counter(_shape(s.prompt) for s in rows)
            with_passages = sum(bool(s.retrieved) for s in rows)
            trained_passages = bool((a.manifest.get("prompt") or {}).get("passages")) if \
                isinstance(a.manifest.get("prompt"), dict) else False
            same = None
            if rebuild is not None and not with_passages:
                same = sum(_same_prompt(rebuild(s.question, s.lang), s.prompt) for s in rows)
            row = {"adapter": a.path, "trained": trained, "evaluated_shapes": dict(shapes),
                   "n": len(rows), "identical": same, "with_passages": with_passages,
                   "trained_with_passages": trained_passages}
            data[col] = row
            shown = ", ".join(f"{shape} on {n}" for shape, n in shapes.most_common())
            text = (f"{col}: trained on {trained}; evaluated with {shown} of {len(rows)} open "
                    "questions")
            if with_passages and not trained_passages:
                warn = True
                text += (f", {with_passages} of them with retrieved passages the adapter never "
                         "saw in training (a prompt it was not trained on)")
            elif same is not None:
                text += f"; {same} of {len(rows)} prompts are identical to the trained one"
                if same < len(rows):
                    warn = True
                    text += " (a mismatch)"
            else:
                text += "; the trained prompt cannot be rebuilt here: identity not measured"
            findings.append(text + ".")
    if not findings:
        return None
    return _item("prompt", "Evaluated with the prompt it was trained on?", findings, warn, data)


def _same_prompt(expected: Any, sent: Any) -> bool:
    if isinstance(expected, list) and isinstance(sent, list):
        return [(m.get("role"), m.get("content")) for m in expected] == [
            (m.get("role"), m.get("content")) for m in sent if isinstance(m, dict)]
    return bool(expected == sent)


# ------------------------------------------------------------------------ (d) gold titles


def _gold_titles(results: dict[str, Any], samples: list[Sample],
                 questions: list[Question] | None) -> Threat | None:
    if questions is None:
        return _item("gold_titles", "Questions that name their gold article", [
            "The run's question files cannot be read again: the share of questions naming a "
            "gold title and retrieval's coverage are not measured."], False, {})
    asked = {s.question_id for s in samples}
    open_qs = [q for q in questions if not q.is_multiple_choice and (not asked or q.id in asked)]
    if not open_qs:
        return None
    split = title_split_tags(open_qs)
    named = sorted(q for q, t in split.items() if t == NAMED)
    unnamed = sorted(q for q, t in split.items() if t == UNNAMED)
    share = len(named) / len(open_qs)
    k = (results.get("config") or {}).get("k")
    findings = [f"{len(named)} of {_n(len(open_qs), 'open question')} ({share:.0%}) name a gold "
                "article in their text, which lexical and title-boosted retrieval find easily."]
    if len(open_qs) - len(split):
        findings.append(f"{len(open_qs) - len(split)} have no gold titles (coverage not "
                        "measured on them).")
    coverage: dict[str, Any] = {}
    for col in dict.fromkeys(s.column for s in samples if "hit@k" in s.scores):
        hits = {s.question_id: s.scores["hit@k"] for s in samples
                if s.column == col and "hit@k" in s.scores}
        row = {}
        for name, ids in (("named", named), ("unnamed", unnamed)):
            xs = [hits[q] for q in ids if q in hits]
            row[name] = {"hits": int(sum(x > 0.5 for x in xs)), "n": len(xs),
                         "rate": sum(xs) / len(xs) if xs else None}
        coverage[col] = row
    same: dict[str, list[str]] = {}  # columns sharing a retrieval are stated once
    for col, row in coverage.items():
        same.setdefault(json.dumps(row, sort_keys=True), []).append(col)
    for cols in same.values():
        row = coverage[cols[0]]
        parts = [f"{row[n]['rate']:.0%} ({row[n]['hits']}/{row[n]['n']}) of {label}"
                 for n, label in (("named", "naming questions"), ("unnamed", "the others"))
                 if row[n]["n"]]
        if parts:
            findings.append(f"Retrieval put a gold article among the {k if k else 'k'} "
                            f"passages of {' and '.join(cols)} for " + " and ".join(parts)
                            + ".")
    if coverage:
        findings.append("A RAG column cannot answer from its passages beyond that coverage; "
                        f"its scores are reported on both splits (tags {NAMED} / {UNNAMED}).")
    data = {"open": len(open_qs), "named": len(named), "unnamed": len(unnamed),
            "share_named": share, "named_ids": named, "hit_at_k": coverage}
    return _item("gold_titles", "Questions that name their gold article; retrieval coverage",
                 findings, share >= NAMED_SHARE, data)


# ---------------------------------------------------------------------------- (e) leakage


def _leakage(adapters: list[_Adapter], results: dict[str, Any],
             samples: list[Sample]) -> Threat | None:
    if not adapters:
        return None
    run_shas = {v: k for k, v in ((results.get("provenance") or {}).get("questions") or {}
                                  ).items()}
    asked = {s.question_id for s in samples}
    findings: list[str] = []
    data: dict[str, Any] = {}
    warn = False
    for a in adapters:
        if a.manifest is None:
            findings.append(_not_read(a, "leakage"))
            continue
        leak = a.manifest.get("leakage") or ((a.manifest.get("pairs") or {}).get("meta") or {}
                                             ).get("leakage")
        if not isinstance(leak, dict):
            warn = True
            findings.append(f"{a.label}: its manifest records no leakage filter: overlap between "
                            "training pairs and evaluation questions not measured.")
            continue
        if not leak.get("enabled", True):
            warn = True
            findings.append(f"{a.label}: the leakage filter was off: training pairs may repeat "
                            "evaluation questions (not measured).")
            data[a.path] = {"enabled": False}
            continue
        by_q = {str(q): int(n) for q, n in (leak.get("by_question") or {}).items()}
        in_run = {q: n for q, n in by_q.items() if not asked or q in asked}
        mode = str(leak.get("mode") or "strict")  # before the two modes, pairs were dropped
        dropped = int(leak.get("dropped") or 0)
        overlapping = int(leak.get("overlapping", dropped) or 0)
        files = leak.get("question_files") or (
            [{"path": leak.get("questions_path"), "sha256": leak.get("questions_sha256")}]
            if leak.get("questions_sha256") else [])
        checked = [run_shas[str(f.get("sha256"))] for f in files
                   if str(f.get("sha256")) in run_shas]
        unchecked = sorted(set(run_shas.values()) - set(checked))
        row: dict[str, Any] = {
            "enabled": True, "mode": mode, "threshold": leak.get("threshold"),
            "overlapping": overlapping, "dropped": dropped, "questions": len(by_q),
            "by_question": by_q, "in_this_run": len(in_run),
            "checked_files": [Path(c).name for c in checked],
            "unchecked_files": [Path(u).name for u in unchecked]}
        data[a.path] = row
        top = ", ".join(f"{q}: {n}" for q, n in sorted(by_q.items(), key=lambda x: (-x[1], x[0]))
                        [:5])
        kept = ("dropped (strict mode: only unseen forms of these answers were trained)"
                if mode == "strict" else
                "kept (report mode: every system's results are also shown on questions "
                "with and without an overlapping pair, tags overlap:trained / overlap:unseen)")
        text = (f"{a.label}: {_n(overlapping, 'training pair')} "
                f"{'asks' if overlapping == 1 else 'ask'} "
                f"{_n(len(by_q), 'evaluation question')} with the answer"
                + (f" ({top}{', …' if len(by_q) > 5 else ''})" if by_q else "")
                + f", {_n(len(in_run), 'question')} of this run; {kept}")
        if unchecked:
            warn = True
            text += (f"; not checked against {', '.join(Path(u).name for u in unchecked)}: "
                     "those questions' overlap is not measured")
        elif checked:
            text += "; checked against every question file of this run"
        if mode == "report" and in_run:
            warn = True
        findings.append(text + ".")
    return _item("leakage", "Leakage between training pairs and evaluation questions", findings,
                 warn, data)


# ------------------------------------------------------------------------------ (f) judge


def _judge(results: dict[str, Any]) -> Threat | None:
    judge = results.get("judge")
    if not isinstance(judge, dict):
        return None
    model = judge.get("model") or "the judge"
    same = judge.get("same_as_model_under_test")
    if same is None:
        return _item("judge", "Judge = model under test?", [
            f"Whether {model} is a model under test was not recorded: not measured."],
            False, {"model": model})
    data = {"model": model, "columns": list(same)}
    if same:
        return _item("judge", "Judge = model under test?", [
            f"The judge ({model}) is the model under test of {', '.join(same)}: it grades its "
            "own answers, and self-preference can inflate those columns' judge scores."],
            True, data)
    return _item("judge", "Judge = model under test?", [
        f"The judge ({model}) is none of the models under test."], False, data)


def _judge_reliability(results: dict[str, Any]) -> Threat | None:
    judge = results.get("judge")
    if not isinstance(judge, dict) or not (judge.get("rubric") or judge.get("agreement")):
        return None
    model = judge.get("model") or "the judge"
    rubric, agreement = judge.get("rubric") or {}, judge.get("agreement") or {}
    scored, unparsed = int(rubric.get("scored") or 0), int(rubric.get("unparsed") or 0)
    findings, warn = [], False
    data: dict[str, Any] = {"scored": scored, "unparsed": unparsed}
    if scored + unparsed:
        share = unparsed / (scored + unparsed)
        data["unparsed_share"] = share
        text = (f"{model} scored {scored} of {scored + unparsed} answers; {unparsed} "
                f"{'reply' if unparsed == 1 else 'replies'} ({share:.0%}) gave no score.")
        if unparsed:
            text += (" Its metrics cover the scored answers only (n per column in the headline), "
                     "and a paired test on them uses the questions scored in both columns.")
        findings.append(text)
        warn = share > UNPARSED_SHARE
    reference, kappa = agreement.get("primary") or "the reference metric", agreement.get("kappa")
    data.update(reference=reference, kappa=kappa, spearman=agreement.get("spearman"))
    if kappa is None:
        findings.append(f"Its agreement with {reference} is not measured (too few answers "
                        "scored, or the reference metric is not binary).")
    else:
        table, rho = agreement.get("table"), agreement.get("spearman")
        observed = agreement.get("observed")
        text = (f"On the {agreement.get('n')} answers it scored, its correct/incorrect agrees "
                f"with {reference}" + (f" on {float(observed):.0%}" if observed is not None
                                       else "")
                + f" (Cohen's κ = {float(kappa):.2f}"
                + (f"; Spearman ρ of its 1–5 accuracy = {float(rho):.2f}" if rho is not None
                   else "") + ")")
        if isinstance(table, dict):
            judge_only, ref_only = int(table.get("judge_only", 0)), int(table.get("primary_only",
                                                                                  0))
            text += (f"; of the {judge_only + ref_only} disagreements, {judge_only} are answers "
                     f"the judge calls correct and {reference} wrong, {ref_only} the other way")
            data.update(judge_only=judge_only, reference_only=ref_only)
        findings.append(text + ".")
        if float(kappa) < KAPPA_TRUSTED:
            warn = True
            findings.append(f"κ is below {KAPPA_TRUSTED}: the judge's verdicts do not stand "
                            f"alone; read them beside {reference}.")
    primary = primary_metric(results)
    if warn and primary.startswith("judge_"):
        findings.append(f"The headline's primary metric is this judge's ({primary}): its "
                        "verdicts carry these limits.")
    return _item("judge_reliability", "How far the judge can be trusted", findings, warn, data)


# -------------------------------------------------------------------- (f3) reproducibility

# measured with the default model on the default open set (bench/llamacpp_determinism.py)
BATCHED_DIFFER = "16 of 82 greedy answers differed between two fresh 8-slot servers"
PREFIX_DIFFER = "18 of 82 answers differ from those of whole reads"
TRANSFORMERS_BATCHES = ("in fp32 on a CPU, batches of 8 and of 1 gave the same 82 greedy "
                        "answers; other devices and dtypes not measured")


def _reproducibility(results: dict[str, Any]) -> Threat | None:
    """How each column's answers were batched, from the generator identities in the
    provenance (and the judge's); left out for a run that did not record them."""
    found = {col: (fp or {}).get("generator") for col, fp in
             ((results.get("provenance") or {}).get("systems") or {}).items()}
    judge = results.get("judge")
    if isinstance(judge, dict):
        found["the judge"] = judge.get("identity")
    gens: dict[str, dict[str, Any]] = {col: g for col, g in found.items()
                                       if isinstance(g, dict) and g.get("backend")}
    if not gens:
        return None
    batch = (results.get("config") or {}).get("batch_size")
    groups: dict[str, list[str]] = {}
    for col, g in gens.items():
        if g["backend"] != "llamacpp":
            kind = str(g["backend"])
        elif "slots" not in g or "prefix_cache" not in g:
            kind = "llamacpp-unrecorded"
        elif g["slots"] != 1:
            kind = f"llamacpp-{g['slots']}"
        else:
            kind = "llamacpp-run" if g["prefix_cache"] else "llamacpp-prompt"
        groups.setdefault(kind, []).append(col)
    findings, warn = [], False
    for kind, cols in groups.items():
        names = ", ".join(cols)
        if kind == "llamacpp-prompt":
            findings.append(f"{names}: llama.cpp answered one prompt at a time and read each "
                            "whole, so each greedy answer depends on its prompt alone: "
                            "answered again on the same build and model, it is the same.")
        elif kind == "llamacpp-run":
            findings.append(
                f"{names}: llama.cpp answered one prompt at a time, reading each from where it "
                "parts from the previous one (the shared system prompt is reused), so an answer "
                "can depend on the prompt answered before it: a fresh re-run of the same "
                "questions gives the same answers, but answers generated after a stretch found "
                f"in the cache may differ ({PREFIX_DIFFER} on the default set). "
                "reproducible: prompt reads every prompt whole.")
        elif kind == "llamacpp-unrecorded":
            findings.append(f"{names}: llama.cpp; how it batched was not recorded (a run "
                            "from before it was): not measured.")
        elif kind.startswith("llamacpp-"):
            warn = True
            findings.append(
                f"{names}: llama.cpp with {kind.removeprefix('llamacpp-')} answers in flight. "
                "Its kernels are not batch-invariant, and which answers share a batch depends "
                f"on timing, so a re-run can change greedy answers ({BATCHED_DIFFER} on the "
                "default set). reproducible: run (the default) answers one at a time.")
        elif kind == "transformers":
            findings.append(f"{names}: transformers, prompts in padded batches of up to "
                            f"{batch or 'batch_size'}; the same batches on a re-run from an "
                            f"empty cache ({TRANSFORMERS_BATCHES} on the default set).")
        else:
            findings.append(f"{names}: answered by a {kind} server, which batches as it "
                            "pleases: not measured.")
    return _item("reproducibility", "Whether a re-run gives the same answers", findings, warn,
                 {"backends": groups})


# ----------------------------------------------------------------------- (g) multiplicity


def _multiplicity(results: dict[str, Any]) -> Threat | None:
    paired = results.get("paired") or []
    if not paired:
        return None
    mult = results.get("multiplicity")
    raw = sum(p["p_value"] < ALPHA for p in paired)
    if not isinstance(mult, dict):
        return _item("multiplicity", "Multiple comparisons", [
            f"The {len(paired)} paired tests are not adjusted for multiplicity: at α = {ALPHA} "
            f"about {len(paired) * ALPHA:.1f} of them may come out significant by chance alone; "
            f"{raw} have p < {ALPHA}."], True, {"tests": len(paired), "raw_significant": raw})
    alpha = float(mult.get("alpha") or ALPHA)
    adjusted = [p for p in paired if p.get("p_adjusted") is not None]
    raw = sum(p["p_value"] < alpha for p in adjusted)
    kept = sum(p["p_adjusted"] < alpha for p in adjusted)
    method = str(mult.get("method"))
    family = mult.get("family_size", len(adjusted))
    text = (f"p-values are adjusted by {METHOD_NAMES.get(method, method)} over a family of "
            f"{family} tests (α = {alpha}); verdicts use the adjusted p.")
    text += (f" {raw} of the {_n(len(adjusted), 'test')} have raw p < {alpha}; {kept} stay "
             "significant after adjustment.") if adjusted else " No adjusted p-values are recorded."
    if len(paired) > len(adjusted) and adjusted:
        text += (f" {len(paired) - len(adjusted)} comparisons were not testable (both systems "
                 "constant) and stay out of the family.")
    return _item("multiplicity", "Multiple comparisons", [text], not adjusted,
                 {"method": method, "family_size": family, "alpha": alpha,
                  "tests": len(paired), "raw_significant": raw,
                  "adjusted_significant": kept if adjusted else None})


# ---------------------------------------------------------------------------- (h) control


def primary_metric(results: dict[str, Any]) -> str:
    """The run's declared primary metric (``results["primary_metric"]``; for a run from before
    it was declared, the first headline metric, else ``answer_accuracy``)."""
    head = (results.get("headline") or {}).get("metrics") or []
    return str(results.get("primary_metric") or (head[0] if head else "answer_accuracy"))


def _control_pairs(samples: list[Sample]) -> list[tuple[str, str]]:
    """(fine-tuned column, its control column): finetuned vs base, rag+finetuned vs rag, for
    the same model and decoding."""
    cols: dict[tuple[str, str, str], str] = {}
    for s in samples:
        cols.setdefault((s.model, json.dumps(s.decoding, sort_keys=True), s.system), s.column)
    return [(col, cols[(model, dec, FINETUNED_SYSTEMS[system])])
            for (model, dec, system), col in cols.items()
            if system in FINETUNED_SYSTEMS and (model, dec, FINETUNED_SYSTEMS[system]) in cols]


def _control(results: dict[str, Any], samples: list[Sample]) -> Threat | None:
    control = [s for s in samples if "control" in s.tags]
    pairs = _control_pairs(samples)
    if not pairs:
        return None
    metric = primary_metric(results)
    title = "Control questions: did fine-tuning make the model forget?"
    if not control:
        return _item("control", title, ["The run has no questions tagged `control`: forgetting "
                                        "is not measured."], False, {"metric": metric})
    scores: dict[str, dict[str, float]] = {}
    for s in control:
        if metric in s.scores:
            scores.setdefault(s.column, {})[s.question_id] = float(s.scores[metric])
    higher = bool((results.get("higher_is_better") or {}).get(metric, True))
    findings, rows, warn = [], [], False
    n_control = len({s.question_id for s in control})
    for ft, ctrl in pairs:
        common = sorted(set(scores.get(ft, {})) & set(scores.get(ctrl, {})))
        if not common:
            findings.append(f"{ft} vs {ctrl}: no control question has {metric}: not measured.")
            continue
        a = [scores[ft][q] for q in common]
        b = [scores[ctrl][q] for q in common]
        mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
        worse = sum((x < y) if higher else (x > y) for x, y in zip(a, b, strict=True))
        better = sum((x > y) if higher else (x < y) for x, y in zip(a, b, strict=True))
        row = {"a": ft, "b": ctrl, "n": len(common), "mean_a": mean_a, "mean_b": mean_b,
               "diff": mean_a - mean_b, "worse": worse, "better": better}
        test = _paired_test(metric, ft, a, ctrl, b, higher)
        row.update(test)
        rows.append(row)
        lost = (mean_a < mean_b) if higher else (mean_a > mean_b)
        warn |= lost
        p = (f" ({test['test']} p = {test['p_value']:.3g}; a raw p, outside the corrected "
             "family)" if test else "")
        findings.append(f"On {_n(len(common), 'control question')}, {metric} went from "
                        f"{mean_b:.3f} ({ctrl}) to {mean_a:.3f} ({ft}): {worse} worse, "
                        f"{better} better{p}"
                        + (" — forgetting." if lost else "."))
    data = {"metric": metric, "control_questions": n_control, "pairs": rows}
    return _item("control", title, findings, warn, data)


def _paired_test(metric: str, a_name: str, a: list[float], b_name: str, b: list[float],
                 higher: bool) -> dict[str, Any]:
    """The report's own paired test on the control questions (empty below two questions)."""
    if len(a) < 2:
        return {}
    from compare.metrics import METRICS
    from compare.stats import TEST_NAMES, paired_compare

    binary = METRICS.get(metric).binary if metric in METRICS else all(
        x in (0.0, 1.0) for x in (*a, *b))
    res = paired_compare(metric, a_name, a, b_name, b, binary, higher)
    return {"test": TEST_NAMES.get(res.test, res.test), "p_value": float(res.p_value)}
