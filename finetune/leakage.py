"""Overlap control: which training pairs teach an evaluation question's answer in the asked form.

A pair *overlaps* a question when both hold:

1. **it asks that question** (or a paraphrase). Texts are reduced to signatures: accents and
   case folded, the interrogative frame turned into one token ("quando" / "em que data" ->
   ``_when_``, "onde" / "em que cidade" -> ``_where_``, "quem" -> ``_who_`` ...), function words
   and template boilerplate dropped. Frames must be compatible (shared, or one side only a
   generic "qual"), every number of the pair's question must be one the question or its answers
   use ("Constituição de 1891" is not "a Constituição em vigor", 1988; "Pedro I" is not "Pedro
   II"), and the content words must reach ``threshold`` as a Dice coefficient with fuzzy word
   equality (same light stem, "proclamada" / "proclamação" / "proclamou", or difflib ratio
   >= 0.8; "capitanias" does not meet "capital"). Below ``STRONG_MATCH``, whenever the pair is
   a definitional "Quem foi X?" / "Resuma o artigo X." naming only its subject (its capitalised
   words and its source title), and whenever the question asks when / where / how many and the
   pair does not, the pair must also share what is asked, not only the subject: a predicate word
   on both sides (a content word written in lower case) or that answer-typed frame. "Quem foi
   Getúlio Vargas?" does not ask "Qual foi o período do governo de Getúlio Vargas?" although its
   lead states the period.
2. **its answer carries the question's answer**: some gold answer or alias (for a
   multiple-choice question, also the correct choice's text) appears in the pair's output as
   whole words, or at least ``ANSWER_COVERAGE`` of its content words do with every number exact,
   or the output is a short answer made only of the alias's words ("A abolição." for "a lei da
   abolição"). An alias the pair's own question already states ("Quem é Fernando Collor?"
   against "…primeiro presidente a sofrer impeachment?") teaches nothing and is not counted.
   A question without answers or choices is matched on its text alone, at
   ``NO_ANSWER_THRESHOLD``.

Pairs that merely share a topic are not flagged: same entity and another question ("Quando
nasceu Getúlio Vargas?" against "Em que cidade nasceu…?"), or the same question form whose answer
is about something else ("Qual era a capital do Império do Brasil?" -> Rio de Janeiro, against
"Qual a capital do Brasil?"). ``labelled_scores`` measures precision and recall on a labelled
set (``tests/finetune/data/overlap_labelled.jsonl``).

Two modes: ``report`` keeps every pair and records which pairs overlap which questions (see
``overlapping_question_ids``), so results can be shown separately for questions with and
without an overlapping pair; ``strict`` drops the flagged pairs, so what the model shows is
transfer to forms it never saw. The record (``OverlapReport``) is the ``leakage`` entry of
``pairs.meta.json`` and of adapter manifests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.hashing import sha256_file
from core.questions import Question, read_questions
from core.text import fold, fold_accents
from finetune.records import Pair, iter_jsonl
from finetune.text import tokens

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5  # content-word Dice at which a pair's question counts as a paraphrase
STRONG_MATCH = 0.75  # at or above it, no shared predicate word / answer-typed frame is needed
NO_ANSWER_THRESHOLD = 0.8  # questions without answers are matched on their text alone
ANSWER_COVERAGE = 0.8  # share of an alias's content words the output must hold
MAX_SHORT_ANSWER_WORDS = 12  # an output this short may be a part of the alias
MAX_QUESTION_INPUT_CHARS = 400  # a longer input is context (passages), not part of the question
MODES = ("report", "strict")
DEFAULT_MODE = "report"
DETECTOR = "question paraphrase (frames, numbers, content-word Dice) + answer carried in output"
STOPWORD_TEXT = """
a o as os um uma uns umas de do da dos das em no na nos nas por pelo pela pelos pelas para
pra com sem sob sobre ao aos à às e ou que se foi foram era eram é são ser sua seu suas seus
ele ela eles elas isso isto esse essa este esta lhe mais muito já não nao the of in on at to
and or is was were whom did does do an by for with from as that this
ocorreu ocorreram aconteceu durante dom dona d sr sra
resuma resumo artigo diz seção secao responda pergunta seguinte
"""
# interrogative frames -> one token each (on folded text; longer phrases first)
_WHEN_NOUNS = r"(?:data|anos?|dia|mes|seculo|epoca|periodo|decada|momento)"
_WHERE_NOUNS = r"(?:cidade|local|lugar|estado|pais|regiao|provincia)"
FRAMES = (
    (rf"\bem (?:que|qual) {_WHEN_NOUNS}\b|\b(?:qual|que) {_WHEN_NOUNS}\b"
     rf"|\bqual (?:foi|era|e) (?:a |o )?{_WHEN_NOUNS}\b|\bquando\b|\bwhen\b", "_when_"),
    (rf"\bem (?:que|qual) {_WHERE_NOUNS}\b|\b(?:qual|que) {_WHERE_NOUNS}\b"
     rf"|\bqual (?:foi|era|e) (?:a |o )?{_WHERE_NOUNS}\b|\ba?onde\b|\bwhere\b", "_where_"),
    (r"\bpor ?que\b|\bporque\b|\bwhy\b", "_why_"),
    (r"\bquant[oa]s?\b|\bhow many\b|\bhow much\b", "_howmany_"),
    (r"\bo que\b|\bwhat\b", "_what_"),
    (r"\bqua(?:l|is)\b|\bwhich\b", "_which_"),
    (r"\bquem\b|\bwho\b", "_who_"),
    (r"\bcomo\b|\bhow\b", "_how_"),
)
FRAME_PATTERNS = tuple((re.compile(p), f" {token} ") for p, token in FRAMES)
GENERIC_FRAMES = frozenset({"_which_"})  # "qual …?" asks anything: compatible with any frame
ANSWER_TYPED_FRAMES = frozenset({"_when_", "_where_", "_howmany_"})  # one value per subject
WORD_MATCH = 0.8  # difflib ratio at which two words count as the same (inflections)
MIN_STEM = 4  # a light stem keeps at least this many letters …
SHORT_ROOT = 3  # … or 3 for words of 5+ letters (short verb roots: "criou" / "criadas")
ENDINGS = tuple(sorted((
    "acao", "acoes", "icao", "icoes", "amento", "imento", "amentos", "imentos",
    "ada", "adas", "ado", "ados", "ida", "idas", "ido", "idos", "ando", "endo", "indo",
    "ava", "avam", "aram", "eram", "iram", "ou", "eu", "iu", "ar", "er", "ir", "am", "em",
    "a", "as", "o", "os", "e", "es", "s"), key=len, reverse=True))
PREFIX = 4  # index key: the first letters of a word
STOPWORDS = frozenset(fold(w) for w in STOPWORD_TEXT.split())
_NUMBER = re.compile(r"^(\d+)(?:o|a)?$")  # "1822", "1o" (1º folded)
_ROMAN = re.compile(r"^(?=[ivx])x{0,3}(?:ix|iv|v?i{0,3})$")  # Pedro I / II, João III
_RAW_TOKEN = re.compile(r"\w+", re.UNICODE)


# ---------------------------------------------------------------------------------------------
# signatures and word matching


@dataclass(frozen=True)
class Signature:
    """The comparison form of one question text."""

    frames: frozenset[str]
    words: tuple[str, ...]  # content words, folded, sorted, unique
    predicates: frozenset[str]  # content words written in lower case (not names)
    numbers: frozenset[str]


def number_of(word: str) -> str | None:
    """The number a folded token writes ("1822", "1o" -> "1", "ii" -> "ii"), or None."""
    match = _NUMBER.match(word)
    if match:
        return str(int(match.group(1)))
    return word if _ROMAN.match(word) else None


def _capitalized(text: str) -> set[str]:
    """Folded words written with a capital letter after the first word (names, titles)."""
    raw = _RAW_TOKEN.findall(fold_accents(text))
    return {w.casefold() for w in raw[1:] if w[:1].isupper()}


@lru_cache(maxsize=65536)
def signature_of(text: str) -> Signature:
    """Frames, content words, predicate words and numbers of ``text``."""
    folded = fold(text)
    for pattern, token in FRAME_PATTERNS:
        folded = pattern.sub(token, folded)
    toks = tokens(folded)
    frames = frozenset(t for t in toks if t.startswith("_") and t.endswith("_"))
    words = tuple(sorted({t for t in toks if t not in STOPWORDS and t not in frames}))
    names = _capitalized(text)
    numbers = frozenset(n for n in map(number_of, words) if n is not None)
    return Signature(frames=frames, words=words,
                     predicates=frozenset(w for w in words if w not in names
                                          and number_of(w) is None),
                     numbers=numbers)


def signature(text: str) -> frozenset[str]:
    """Frame tokens plus content words of ``text``, folded (the comparison form)."""
    sig = signature_of(text)
    return sig.frames | frozenset(sig.words)


@lru_cache(maxsize=65536)
def stem(word: str, keep: int = MIN_STEM) -> str:
    """A light Portuguese stem: one inflectional/derivational ending cut, ``keep`` letters or
    more kept ("proclamada", "proclamou", "proclamacao" -> "proclam"; "capitanias" ->
    "capitani")."""
    for ending in ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= keep:
            return word[:-len(ending)]
    return word


@lru_cache(maxsize=262144)
def same_word(a: str, b: str) -> bool:
    """Exact match, or for words longer than 3 letters (not numbers, not frame tokens) the same
    light stem (a 3-letter root for words of 5+ letters) or a difflib ratio >= ``WORD_MATCH``."""
    if a == b:
        return True
    if (min(len(a), len(b)) <= 3 or a.startswith("_") or b.startswith("_")
            or number_of(a) is not None or number_of(b) is not None):
        return False
    if stem(a) == stem(b):
        return True
    if min(len(a), len(b)) >= 5 and stem(a, SHORT_ROOT) == stem(b, SHORT_ROOT):
        return True
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= WORD_MATCH


def matched_words(a: Iterable[str], b: Iterable[str]) -> list[tuple[str, str]]:
    """Word pairs (from ``a``, from ``b``) matched one to one: exact first, then fuzzy."""
    left, free = sorted(set(a)), set(b)
    out: list[tuple[str, str]] = []
    for word in left:
        if word in free:
            free.discard(word)
            out.append((word, word))
    done = {w for w, _ in out}
    for word in left:
        if word in done:
            continue
        hit = next((w for w in sorted(free) if same_word(word, w)), None)
        if hit is not None:
            free.discard(hit)
            out.append((word, hit))
    return out


def dice(a: Iterable[str], b: Iterable[str]) -> float:
    """Fuzzy Dice coefficient of two word sets: ``2 * matched / (|a| + |b|)``."""
    a, b = set(a), set(b)
    if not a or not b:
        return 0.0
    return 2 * len(matched_words(a, b)) / (len(a) + len(b))


def frames_compatible(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two texts can ask the same thing: a shared frame, or one side asks with a
    generic "qual" (or no interrogative at all)."""
    return bool(a & b) or a <= GENERIC_FRAMES or b <= GENERIC_FRAMES


def similarity(a: str, b: str) -> float:
    """How much text ``a`` asks what text ``b`` asks, in [0, 1]: the Dice coefficient of their
    content words, or 0 when their interrogative frames conflict ("quando" vs "onde")."""
    sa, sb = signature_of(a), signature_of(b)
    if not frames_compatible(sa.frames, sb.frames):
        return 0.0
    return dice(sa.words, sb.words)


# ---------------------------------------------------------------------------------------------
# the detector


@dataclass(frozen=True)
class _Alias:
    text: str
    phrase: str  # " tok tok " (all folded tokens), for whole-word containment
    words: frozenset[str]  # content words
    numbers: frozenset[str]


@dataclass(frozen=True)
class _Target:
    question: Question
    sig: Signature
    aliases: tuple[_Alias, ...]
    allowed_numbers: frozenset[str]  # numbers the question or its answers write


@dataclass(frozen=True)
class Match:
    """One (pair, question) overlap: how well the pair asks it and which answer it carries."""

    question: Question
    similarity: float
    answer: str  # the gold answer / alias found in the output ("" for a question without any)


def _phrase(text: str) -> str:
    return f" {' '.join(tokens(text))} "


def _alias(text: str) -> _Alias:
    sig_words = frozenset(t for t in tokens(text) if t not in STOPWORDS)
    return _Alias(text=text, phrase=_phrase(text), words=sig_words,
                  numbers=frozenset(n for n in map(number_of, sig_words) if n is not None))


def gold_answers(question: Question) -> tuple[str, ...]:
    """What an overlapping pair's output would carry: the answers and aliases, and for a
    multiple-choice question the correct choice's text (deduplicated, in order)."""
    out = list(question.answers)
    if question.is_multiple_choice and question.answer_index is not None:
        out.append(question.choices[question.answer_index])
    return tuple(dict.fromkeys(a.strip() for a in out if a.strip()))


def _target(question: Question) -> _Target:
    aliases = tuple(a for a in map(_alias, gold_answers(question)) if a.words)
    sig = signature_of(question.question)
    allowed = sig.numbers.union(*(a.numbers for a in aliases))
    return _Target(question=question, sig=sig, aliases=aliases, allowed_numbers=allowed)


def _covers(words: Iterable[str], pool: Iterable[str]) -> int:
    return len(matched_words(words, pool))


def _words(text: str) -> frozenset[str]:
    return frozenset(tokens(text))


def _anchored(sig: Signature, predicates: frozenset[str], q: Signature,
              matched: list[tuple[str, str]]) -> bool:
    """Whether a text shares with a question what is asked, not only the subject: an
    answer-typed frame, a predicate word on both sides, or both name their subject alone
    ("O que foi X?" against "O que foi X?", not against "Em que data ocorreu X?")."""
    if sig.frames & q.frames & ANSWER_TYPED_FRAMES:
        return True
    if any(pw in predicates and qw in q.predicates for pw, qw in matched):
        return True
    return not predicates and not q.predicates and not (q.frames & ANSWER_TYPED_FRAMES)


class OverlapDetector:
    """Finds, for each pair, the questions it asks with their answer (module docstring)."""

    def __init__(self, questions: Sequence[Question],
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0 < threshold <= 1:
            raise UserError(f"the overlap threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self.questions = list(questions)
        self._targets = [_target(q) for q in self.questions]
        self._index: dict[str, set[int]] = {}
        for i, target in enumerate(self._targets):
            for word in target.sig.words:
                self._index.setdefault(word[:PREFIX], set()).add(i)

    def asks(self, text: str, target_index: int, subject: str = "") -> float | None:
        """The similarity with which ``text`` asks question ``target_index``, or None;
        ``subject`` (a pair's source title) names what the text is about."""
        return self._asks(signature_of(text), self._targets[target_index], _words(subject))

    def _asks(self, sig: Signature, target: _Target,
              subject: frozenset[str] = frozenset()) -> float | None:
        q = target.sig
        if not sig.words or not q.words or not frames_compatible(sig.frames, q.frames):
            return None
        if not sig.numbers <= target.allowed_numbers:
            return None  # the pair names a year / ordinal the question does not
        need = self.threshold if target.aliases else max(self.threshold, NO_ANSWER_THRESHOLD)
        if 2 * min(len(sig.words), len(q.words)) / (len(sig.words) + len(q.words)) < need:
            return None  # even a perfect match of the smaller set stays below
        matched = matched_words(sig.words, q.words)
        score = 2 * len(matched) / (len(sig.words) + len(q.words))
        if score < need:
            return None
        predicates = sig.predicates - subject
        unasked = q.frames & ANSWER_TYPED_FRAMES - sig.frames  # "quando" the pair does not ask
        if (score < STRONG_MATCH or not predicates or unasked) and not _anchored(
                sig, predicates, q, matched):
            return None
        return score

    def _carried(self, pair: Pair, asked_text: str, target: _Target) -> str | None:
        """The gold answer the pair's output carries (not merely restating its own question)."""
        out_tokens = tokens(pair.output)
        out_phrase = f" {' '.join(out_tokens)} "
        out_words = [t for t in out_tokens if t not in STOPWORDS]
        out_numbers = {n for n in map(number_of, out_words) if n is not None}
        asked = signature_of(asked_text)
        asked_phrase = _phrase(asked_text)
        for alias in target.aliases:
            in_question = _covers(alias.words, target.sig.words) == len(alias.words)
            if alias.phrase in asked_phrase or (
                    _covers(alias.words, asked.words) == len(alias.words) and not in_question):
                continue  # the pair's own question states it: nothing learned
            if alias.phrase in out_phrase:
                return alias.text
            if not alias.numbers <= out_numbers:
                continue
            if (len(alias.words) >= 2
                    and _covers(alias.words, out_words) >= ANSWER_COVERAGE * len(alias.words)):
                return alias.text
            if self._short_part(out_tokens, out_words, alias, asked):
                return alias.text
        return None

    @staticmethod
    def _short_part(out_tokens: list[str], out_words: list[str], alias: _Alias,
                    asked: Signature) -> bool:
        """A short output made only of the alias's words, covering half of them, adding
        something to the pair's question ("A abolição." for "a lei da abolição")."""
        words = set(out_words)
        if not words or len(out_tokens) > MAX_SHORT_ANSWER_WORDS:
            return False
        if _covers(words, alias.words) < len(words):
            return False
        if 2 * len(words) < len(alias.words):
            return False
        return _covers(words, asked.words) < len(words)

    def _texts(self, pair: Pair) -> list[str]:
        texts = [pair.instruction]
        if pair.input.strip() and len(pair.input) <= MAX_QUESTION_INPUT_CHARS:
            texts.append(f"{pair.instruction} {pair.input}")
        return texts

    def matches(self, pair: Pair) -> list[Match]:
        """Every question the pair overlaps, best first."""
        best: dict[int, Match] = {}
        subject = _words(pair.source)
        for text in self._texts(pair):
            sig = signature_of(text)
            candidates: set[int] = set()
            for word in sig.words:
                candidates |= self._index.get(word[:PREFIX], set())
            for i in sorted(candidates):
                target = self._targets[i]
                score = self._asks(sig, target, subject)
                if score is None or (i in best and best[i].similarity >= score):
                    continue
                answer = self._carried(pair, text, target) if target.aliases else ""
                if answer is not None:
                    best[i] = Match(question=target.question, similarity=score, answer=answer)
        return sorted(best.values(), key=lambda m: (-m.similarity, m.question.id))


def is_overlap(pair: Pair, question: Question, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Whether ``pair`` asks ``question`` (or a paraphrase) and its output carries the answer."""
    return bool(OverlapDetector([question], threshold).matches(pair))


# ---------------------------------------------------------------------------------------------
# questions, the report and the modes

QuestionSource = str | Path | Question
Questions = QuestionSource | Sequence[QuestionSource] | None


def load_questions(questions: Questions) -> tuple[list[Question], list[dict[str, Any]]]:
    """Every question of the given files and/or ``Question`` objects (ids unique across all),
    and one record per file: path, sha256, how many questions and multiple-choice ones."""
    if questions is None:
        return [], []
    items = [questions] if isinstance(questions, (str, Path, Question)) else list(questions)
    paths = [Path(x) for x in items if not isinstance(x, Question)]
    given = [x for x in items if isinstance(x, Question)]
    loaded = read_questions(paths) if paths else []
    out = loaded + given
    seen: set[str] = set()
    for q in out:
        if q.id in seen:
            raise UserError(f"question id {q.id!r} appears twice among the questions checked for "
                            "overlap; give every question its own id")
        seen.add(q.id)
    files: list[dict[str, Any]] = []
    for path in dict.fromkeys(paths):
        mine = [q for q in loaded if question_file(q) == str(path)]
        files.append({"path": str(path), "sha256": sha256_file(path), "questions": len(mine),
                      "multiple_choice": sum(q.is_multiple_choice for q in mine)})
    if given:
        files.append({"path": None, "sha256": None, "questions": len(given),
                      "multiple_choice": sum(q.is_multiple_choice for q in given)})
    return out, files


def question_file(question: Question) -> str | None:
    """The file a question was read from (its ``source`` without the line), or None."""
    return question.source.rsplit(":", 1)[0] if question.source else None


def pair_id(pair: Pair) -> str:
    """A stable reference to a pair: 12 hex digits of sha256(instruction, input, output)."""
    text = "\x1f".join((pair.instruction, pair.input, pair.output))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class OverlapReport:
    """What the check found and did: the ``leakage`` entry of ``pairs.meta.json`` (adapter
    manifests copy it). ``overlaps`` lists every (pair, question) couple; ``line`` is the pair's
    0-based line in the written pairs file, None for a pair dropped in ``strict`` mode."""

    enabled: bool = False
    mode: str = DEFAULT_MODE
    threshold: float = DEFAULT_THRESHOLD
    detector: str = DETECTOR
    question_files: list[dict[str, Any]] = field(default_factory=list)
    n_questions: int = 0
    n_questions_without_answers: int = 0
    pairs_checked: int = 0
    overlapping: int = 0  # pairs overlapping at least one question
    dropped: int = 0  # pairs removed (strict mode)
    overlapped_questions: int = 0
    by_question: dict[str, int] = field(default_factory=dict)
    overlaps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def check_mode(mode: str) -> str:
    """``mode`` if it is ``report`` or ``strict``; otherwise a ``UserError``."""
    if mode not in MODES:
        raise UserError(f"overlap mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def check_pairs(pairs: Sequence[Pair], questions: Questions,
                threshold: float = DEFAULT_THRESHOLD, mode: str = DEFAULT_MODE
                ) -> tuple[list[list[Match]], OverlapReport]:
    """The overlaps of each pair (empty lists when no questions are given) and the report.

    Nothing is dropped here: in ``strict`` mode the caller drops the pairs with overlaps, and
    the report already counts them as ``dropped`` (their ``line`` is None)."""
    check_mode(mode)
    found, files = load_questions(questions)
    if not found:
        return [[] for _ in pairs], OverlapReport(enabled=False, mode=mode, threshold=threshold)
    detector = OverlapDetector(found, threshold)
    report = OverlapReport(enabled=True, mode=mode, threshold=threshold, question_files=files,
                           n_questions=len(found),
                           n_questions_without_answers=sum(not gold_answers(q) for q in found),
                           pairs_checked=len(pairs))
    per_pair = [detector.matches(p) for p in pairs]
    counts: Counter[str] = Counter()
    for index, (pair, hits) in enumerate(zip(pairs, per_pair, strict=True)):
        for hit in hits:
            counts[hit.question.id] += 1
            report.overlaps.append({
                "pair": pair_id(pair), "line": index if mode == "report" else None,
                "question": hit.question.id, "file": question_file(hit.question),
                "similarity": round(hit.similarity, 3), "answer": hit.answer,
                "instruction": pair.instruction[:200]})
    report.overlapping = sum(bool(h) for h in per_pair)
    report.dropped = report.overlapping if mode == "strict" else 0
    report.overlapped_questions = len(counts)
    report.by_question = dict(sorted(counts.items()))
    for record in files:
        mine = {q.id for q in found if question_file(q) == record["path"]}
        hit_ids = mine & set(counts)
        record["overlapped_questions"] = len(hit_ids)
        record["overlapping_pairs"] = len({o["pair"] for o in report.overlaps
                                           if o["question"] in hit_ids})
    log.info("overlap check (%s): %d of %d pairs overlap %d of %d questions", mode,
             report.overlapping, len(pairs), len(counts), len(found))
    return per_pair, report


def filter_pairs(pairs: Sequence[Pair], questions: Questions,
                 threshold: float = DEFAULT_THRESHOLD, mode: str = "strict"
                 ) -> tuple[list[Pair], OverlapReport]:
    """The pairs to keep and the report: ``strict`` drops overlapping pairs, ``report`` keeps
    all; without questions everything is kept (the report says the check was off)."""
    per_pair, report = check_pairs(pairs, questions, threshold, mode)
    if mode == "report":
        return list(pairs), report
    return [p for p, hits in zip(pairs, per_pair, strict=True) if not hits], report


def overlapping_question_ids(pairs_meta: dict[str, Any],
                             include_dropped: bool = False) -> dict[str, list[str]]:
    """Question id -> ids (``pair_id``) of the training pairs overlapping it.

    ``pairs_meta`` is a pairs file's meta record, an adapter manifest (both hold the report
    under ``leakage``) or the report itself. Pairs dropped in ``strict`` mode are not in the
    training data and are left out unless ``include_dropped``. An empty dict means no question
    has an overlapping pair, or that no check ran (see the report's ``enabled``)."""
    record = pairs_meta.get("leakage", pairs_meta) if isinstance(pairs_meta, dict) else {}
    if not isinstance(record, dict):
        return {}
    out: dict[str, list[str]] = {}
    for row in record.get("overlaps") or ():
        if row.get("line") is None and record.get("mode") == "strict" and not include_dropped:
            continue
        out.setdefault(str(row["question"]), []).append(str(row["pair"]))
    return out


def report_json(report: OverlapReport) -> str:
    """Compact JSON of the report (for logs)."""
    return json.dumps(report.to_dict(), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# the labelled set


@dataclass(frozen=True)
class LabelledCouple:
    """One labelled (pair, question) couple."""

    pair: Pair
    question: Question
    overlap: bool
    why: str = ""


def _question_from(obj: dict[str, Any]) -> Question:
    return Question(id=str(obj["id"]), question=str(obj["question"]),
                    answers=tuple(obj.get("answers") or ()),
                    choices=tuple(obj.get("choices") or ()),
                    answer_index=obj.get("answer_index"))


def read_labelled(path: Path) -> list[LabelledCouple]:
    """The couples of a labelled JSONL: one ``{"pair": {instruction, input, output, source},
    "question": {id, question, answers, choices, answer_index}, "overlap": bool, "why": str}``
    a line."""
    out: list[LabelledCouple] = []
    for number, obj in iter_jsonl(Path(path)):
        try:
            if isinstance(obj, ValueError):
                raise obj
            p, q = obj["pair"], obj["question"]
            pair = Pair(instruction=p["instruction"], input=p.get("input") or "",
                        output=p["output"], source=p.get("source") or "")
            out.append(LabelledCouple(pair=pair, question=_question_from(q),
                                      overlap=bool(obj["overlap"]), why=obj.get("why") or ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}:{number}: not a labelled couple ({exc})") from None
    return out


def labelled_scores(path: Path, threshold: float = DEFAULT_THRESHOLD) -> tuple[float, float, int]:
    """(precision, recall, number of couples) of the detector on a labelled JSONL
    (``read_labelled``); precision is 1.0 when nothing is flagged, recall 1.0 when nothing is
    labelled an overlap."""
    couples = read_labelled(path)
    flagged = [is_overlap(c.pair, c.question, threshold) for c in couples]
    tp = sum(f and c.overlap for f, c in zip(flagged, couples, strict=True))
    fp = sum(f and not c.overlap for f, c in zip(flagged, couples, strict=True))
    fn = sum(c.overlap and not f for f, c in zip(flagged, couples, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, len(couples)
