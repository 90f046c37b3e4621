"""Metrics as a registry of small pure functions, each declaring ``higher_is_better``.

A metric takes the model output and the question (plus what the system reported, e.g. the
retrieved titles) and returns a float, or ``None`` where it does not apply (hit@k for a system
without retrieval, exact match against references that are all sentences).

Every reference-based metric reads the same text: ``compare.normalize.normalize_answer`` of the
output and of the references (citations and "Resposta:" labels off, accents folded, number words
as digits, ...). BLEU and chrF included, so a cited answer is not penalised for its "[1]".

**References.** A reference is a *sentence* (``is_sentence_reference``) when it reads as a
clause: at least ``SENTENCE_MIN_WORDS`` words with a finite verb (a closed list of pt/en finite
verbs and auxiliaries, or a lower-case pt past-tense form ending in -ou/-iu/-aram/-eram/-iram,
or an English -ed form, after the first word), or ``LONG_REFERENCE_WORDS`` words or more
whatever the grammar. The other references are *spans* (a name, a date, a short phrase). Exact
match, containment and answer accuracy compare against the span references only and are None
(n/a) when a question has none; F1, ROUGE, BLEU and chrF use every reference.

**answer_accuracy** (the primary metric) is 1 when some normalized span reference appears as
whole words in the normalized answer, unless

* the answer is too long to be "an answer": more than
  ``max(MAX_ANSWER_WORDS, ANSWER_LENGTH_FACTOR × words of that reference)`` normalized words;
* the answer hedges between candidates (``is_hedged``): the reference sits in a list of
  alternatives. An *alternative* is a short element of the answer (at most
  ``max(3, reference words + 2)`` normalized words) that names something else: it is neither part
  of nor contains any reference, and it starts with a capital letter (for a reference holding a
  number: it holds a different number with as many digits). The answer hedges when an alternative
  is offered with "ou"/"or"/"/" ("Pedro I ou Pedro II"), or when two alternatives sit in a list
  separated by commas, semicolons, line breaks or "e"/"and" ("Pedro I, Pedro II, João VI"). One
  apposition ("Paris, França") is not a hedge.

It is None for multiple-choice questions and for questions whose references are all sentences.

**Refusal** (``is_refusal``): the prompt templates' fixed refusal sentences anywhere in the
reply (rag.prompts, as before), or a reply whose clauses decline and none of whose clauses
answers. The reply is cut into clauses at contrastive conjunctions (mas, porém, contudo, no
entanto, embora, but, however, although, ...). A clause *declines* when it matches a pt/en
refusal pattern — first-person ignorance ("não sei", "desconheço", "não tenho certeza",
"I don't know", "I'm not sure", "I cannot determine"), the sources as the subject of a negated
verb of saying ("o contexto não menciona", "the passages don't say", "none of the documents
mention"), missing information ("não há informações suficientes", "the answer could not be
found") — or, as a fallback, when it holds a lack marker (não, nenhum, sem, omisso, not, no,
none, silent, ...) and an information noun (informação, contexto, texto, fonte, information,
context, source, basis, ...) but names nothing (no digit, no capitalised word after its first)
and attributes nothing ("segundo os documentos", "according to"). A clause is *filler* when it
is only an apology ("Sinto muito", "Unfortunately"); any other clause *answers*. So "Não tenho
certeza, mas acredito que foi em 1888" and "A Constituição de 1824 não menciona o voto feminino,
mas ..." are answers, "Sinto muito, mas não sei" is not.

**Language fidelity** applies to every open answer (``is_in_language``). The cleaned answer is
judged by its language-bearing words: closed-class function words (``FUNCTION_WORDS``, pt/en/es/
fr/it/de) and words common in short answers (``ANSWER_WORDS``: numerals, "vezes"/"twice", "anos",
"ninguém", ...), a word shared by k languages giving 1/k to each, plus the letters ã/õ/ç/ñ/ß/...
in lower-case words. Names do not count: a capitalised word inside a sentence, a lower-case word
between two capitalised ones ("Terra de Santa Cruz", "Andrada e Silva"), "São"/"Dom"/... before a
capitalised word, a regnal "I"; nor does a one-word answer unless it is "sim"/"yes"/... or an
answer word ("Au" is a symbol, "Twice" is English). An answer with no such signal — a name, a
number, a date ("1822", "Dom Pedro II") — is *language-neutral* and scores 1 (faithful).
Otherwise an answer of ``LANGID_MIN_WORDS`` words or more is identified by py3langid
(``core.text.identify_language``) among pt/en/es/fr/it/de; a shorter one is faithful when the
question's language has the most evidence (a tie included: the benefit of the doubt). Every
system is thereby judged on every answer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from compare.normalize import answer_tokens, clean_answer, normalize_answer
from core.jsonl import iter_jsonl
from core.questions import Question
from core.registry import Registry
from core.text import fold, identify_language


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


# --- references: spans and sentences --------------------------------------------------------

def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


SENTENCE_MIN_WORDS = 5
LONG_REFERENCE_WORDS = 12
_FINITE_VERBS = _wordset("""
é são era eram foi foram será serão seria seriam está estão estava estavam esteve estiveram
tem têm tinha tinham teve tiveram há havia houve fez fizeram ficou ficaram deu deram pode podem
podia morreu nasceu venceu perdeu escreveu viveu recebeu elegeu
is are was were be been has have had does did became becomes become can could will would
""")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _is_finite_verb(word: str) -> bool:
    low = word.lower()
    if low in _FINITE_VERBS:
        return True
    if word != low or not word.isalpha():
        return False
    return (len(low) >= 5 and low.endswith(("ou", "iu"))) or \
        (len(low) >= 6 and low.endswith(("aram", "eram", "iram"))) or \
        (len(low) >= 5 and low.endswith("ed"))


def is_sentence_reference(text: str) -> bool:
    """True when a reference reads as a sentence rather than a span (rule in the module doc):
    ``SENTENCE_MIN_WORDS``+ words with a finite verb after the first word, or
    ``LONG_REFERENCE_WORDS``+ words. "A capital do Brasil é Brasília." is a sentence; "7 de
    setembro de 1822" and "Outorgada por D. Pedro I em 25 de março de 1824" are spans."""
    words = _words(clean_answer(text))
    if len(words) >= LONG_REFERENCE_WORDS:
        return True
    return len(words) >= SENTENCE_MIN_WORDS and any(_is_finite_verb(w) for w in words[1:])


def span_references(question: Question) -> tuple[str, ...]:
    """The question's references that are not sentences (what span metrics compare against)."""
    return tuple(a for a in question.answers if not is_sentence_reference(a))


# --- string-level scores (public, tested against reference implementations) -----------------

def token_f1(prediction: str, reference: str, portuguese: bool = True) -> float:
    """SQuAD token F1 between two strings after ``normalize_answer``.

    ``portuguese=False`` is the SQuAD v1.1 script exactly (its normalization; 0 when no token is
    shared, even for two empty strings); with the Portuguese normalization two empty answers
    agree (1.0), as in SQuAD v2 and MKQA."""
    pred, ref = answer_tokens(prediction, portuguese), answer_tokens(reference, portuguese)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return float(portuguese and pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, reference: str, portuguese: bool = True) -> bool:
    """True when the two normalized strings are equal (SQuAD's ``exact_match_score``)."""
    return normalize_answer(prediction, portuguese) == normalize_answer(reference, portuguese)


def contains(prediction: str, reference: str) -> bool:
    """True when the normalized reference appears as whole words in the normalized prediction."""
    ref = normalize_answer(reference)
    return bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} "


@lru_cache(maxsize=1)
def _bleu_scorer() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


@lru_cache(maxsize=1)
def _chrf_scorer() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()


def sentence_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """sacrebleu sentence BLEU (default 13a tokenizer, exp smoothing, effective order), 0-100,
    of ``hypothesis`` as given (the ``bleu`` metric passes normalized text)."""
    return float(_bleu_scorer().sentence_score(hypothesis, list(references)).score)


def sentence_chrf(hypothesis: str, references: Sequence[str]) -> float:
    """sacrebleu sentence chrF (defaults: character 6-grams, beta 2), 0-100, of the text as
    given (the ``chrf`` metric passes normalized text)."""
    return float(_chrf_scorer().sentence_score(hypothesis, list(references)).score)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


def rouge_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """Best ROUGE-1 and ROUGE-L F-measure (rouge-score, no stemmer) of ``prediction`` against
    any of ``references``, text as given (the metrics pass normalized text)."""
    scores = [_rouge_scorer().score(ref, prediction) for ref in references]
    return {key: float(max((s[key].fmeasure for s in scores), default=0.0))
            for key in ("rouge1", "rougeL")}


# --- answer accuracy -------------------------------------------------------------------------

MAX_ANSWER_WORDS = 40
ANSWER_LENGTH_FACTOR = 4
_DISJUNCTION = re.compile(r"\s+(?:e/ou|and/or|ou|or)\s+(?!seja\b|melhor\b|rather\b)|"
                          r"(?<=[^\W\d])\s*/\s*(?=[^\W\d])", re.I)  # "/" between words, not dates
_LIST_SEPARATOR = re.compile(r"\s*[,;\n•]\s*|\s+(?:e|and)\s+|^\s*[-*]\s+", re.I | re.M)
_FILLER = re.compile(r"^(?:(?:talvez|possivelmente|provavelmente|quem sabe|ou|or|e|and|either|"
                     r"maybe|perhaps|possibly|probably|o|a|os|as|the|foi|seria|was|it was|"
                     r"it might be|pode ser|nem|nor)\b[\s,]*)+", re.I)
_DIGITS = re.compile(r"^\d+$")


def _inside(small: str, big: str) -> bool:
    return bool(small) and f" {small} " in f" {big} "


def _alternative(element: str, reference: str, known: Sequence[str]) -> bool:
    """Whether an element of the answer names a candidate other than ``reference`` (module doc)."""
    element = _FILLER.sub("", element.strip(" .!?:()\"'")).strip()
    norm = normalize_answer(element)
    if not norm or any(_inside(norm, k) or _inside(k, norm) for k in known):
        return False
    ref_tokens = reference.split()
    if len(norm.split()) > max(3, len(ref_tokens) + 2):
        return False
    ref_numbers = {t for t in ref_tokens if _DIGITS.match(t)}
    if ref_numbers:
        sizes = {len(t) for t in ref_numbers}
        return any(_DIGITS.match(t) and len(t) in sizes and t not in ref_numbers
                   for t in norm.split())
    return element[:1].isupper()


def is_hedged(answer: str, reference: str, known: Sequence[str] = ()) -> bool:
    """True when ``answer`` offers ``reference`` among alternative candidates ("Pedro I ou Pedro
    II", "Pedro I, Pedro II, João VI"); ``known`` are every reference of the question (parts of
    them are never alternatives). Rule in the module docstring."""
    ref = normalize_answer(reference)
    normalized_known = [k for k in (normalize_answer(x) for x in (reference, *known)) if k]
    text = clean_answer(answer)
    disjuncts = _DISJUNCTION.split(text)
    if len(disjuncts) > 1 and any(_alternative(d, ref, normalized_known) for d in disjuncts):
        return True
    elements = [e for e in _LIST_SEPARATOR.split(text) if e and e.strip()]
    return sum(_alternative(e, ref, normalized_known) for e in elements) >= 2


def answer_matches(answer: str, references: Sequence[str], known: Sequence[str] = ()) -> bool:
    """True when some reference appears as whole words in the normalized ``answer``, the answer
    is within the length cap for that reference, and it does not hedge (module docstring).
    ``known``: every reference of the question (sentences included), for the hedge rule."""
    norm = normalize_answer(answer)
    n_words = len(norm.split())
    for reference in references:
        ref = normalize_answer(reference)
        if not _inside(ref, norm):
            continue
        if n_words > max(MAX_ANSWER_WORDS, ANSWER_LENGTH_FACTOR * len(ref.split())):
            continue
        if not is_hedged(answer, reference, (*references, *known)):
            return True
    return False


@metric("answer_accuracy", binary=True)
def answer_accuracy(inp: MetricInput) -> float | None:
    """1 when a span reference appears in the answer, within the length cap and without hedging
    between candidates (module docstring); n/a for multiple choice and all-sentence references."""
    spans = span_references(inp.question)
    if not _open(inp) or not spans:
        return None
    return float(answer_matches(inp.output, spans, inp.question.answers))


# --- reference metrics -----------------------------------------------------------------------

@metric("exact_match", binary=True)
def exact_match(inp: MetricInput) -> float | None:
    """1 when the normalized output equals a normalized span reference (n/a without spans)."""
    spans = span_references(inp.question)
    if not _open(inp) or not spans:
        return None
    return float(any(exact_match_score(inp.output, a) for a in spans))


@metric("f1")
def f1(inp: MetricInput) -> float | None:
    """Best token F1 against any reference."""
    return max(token_f1(inp.output, a) for a in inp.question.answers) if _open(inp) else None


@metric("contains", binary=True)
def containment(inp: MetricInput) -> float | None:
    """1 when some span reference appears in the output, at any length (n/a without spans)."""
    spans = span_references(inp.question)
    if not _open(inp) or not spans:
        return None
    return float(any(contains(inp.output, a) for a in spans))


def _normalized(inp: MetricInput) -> tuple[str, list[str]]:
    return normalize_answer(inp.output), [normalize_answer(a) for a in inp.question.answers]


@metric("rouge1")
def rouge1(inp: MetricInput) -> float | None:
    """ROUGE-1 F (rouge-score, on the normalized text)."""
    return rouge_scores(*_normalized(inp))["rouge1"] if _open(inp) else None


@metric("rougeL")
def rouge_l(inp: MetricInput) -> float | None:
    """ROUGE-L F (rouge-score, on the normalized text)."""
    return rouge_scores(*_normalized(inp))["rougeL"] if _open(inp) else None


@metric("bleu")
def bleu(inp: MetricInput) -> float | None:
    """Sentence BLEU (sacrebleu) on the normalized text against all references, 0-100."""
    return sentence_bleu(*_normalized(inp)) if _open(inp) else None


@metric("chrf")
def chrf(inp: MetricInput) -> float | None:
    """Sentence chrF (sacrebleu) on the normalized text against all references, 0-100."""
    return sentence_chrf(*_normalized(inp)) if _open(inp) else None


# --- refusal ---------------------------------------------------------------------------------

_SOURCES_PT = (r"(?:contexto|texto|textos|trechos?|passage(?:m|ns)|documentos?|fontes?|artigos?|"
               r"excertos?|material|materiais|conteudo|referencias?|"
               r"(?:informac\w+|dados) (?:fornecid\w+|disponive\w+|apresentad\w+))")
_SAY_PT = (r"(?:menciona\w*|conte[mn]|apresenta\w*|traz\w*|fornece\w*|informa\w*|especifica\w*|"
           r"responde\w*|inclui\w*|diz\w*|diga\w*|cita\w*|aborda\w*|fala\w*|indica\w*|ha|consta\w*|"
           r"esclarece\w*|permite\w*|oferece\w*|possui\w*|tem|revela\w*|deixa\w*|da|dao|trata\w*|"
           r"explica\w*|mostra\w*|descreve\w*|ajuda\w*|refere\w*)")
_SOURCES_EN = (r"(?:context|text|texts|passages?|documents?|sources?|excerpts?|articles?|"
               r"material|materials|content|references?|provided (?:information|data)|"
               r"(?:information|data) provided|given information)")
_SAY_EN = (r"(?:mention\w*|contain\w*|say\w*|specif\w*|provide\w*|include\w*|state\w*|give\w*|"
           r"address\w*|cover\w*|talk\w*|discuss\w*|indicate\w*|answer\w*|offer\w*|have|has|tell\w*|"
           r"deal\w*|clarif\w*|explain\w*|show\w*|describe\w*|refer\w*|help\w*|touch\w*)")
_REFUSAL_PATTERNS = tuple(re.compile(p) for p in (
    # Portuguese (text folded: lower-case, no accents)
    r"\bnao sei\b",
    r"\bdesconhec[oe]\w*\b",
    r"\bnao (?:tenho|temos|possuo|possuimos|disponho|dispomos) (?:de )?(?:nenhuma |qualquer |"
    r"tal |essa |esta )?(?:certeza|informac|dados|conhecimento|acesso|como (?:saber|responder|"
    r"afirmar|determinar|confirmar)|elementos|seguranca|ideia|nocao|a resposta|essa|esta)",
    r"\bnao (?:consigo|conseguimos|posso|podemos|sou capaz de|somos capazes de|e possivel|"
    r"foi possivel|seria possivel|da para|saberia)(?: \w+){0,3}? (?:responder|determinar|"
    r"afirmar|dizer|identificar|confirmar|encontrar|localizar|precisar|informar|saber|garantir|"
    r"especificar)",
    r"\bnao (?:encontrei|encontramos|localizei|achei|identifiquei|consegui)\b",
    r"\bnao (?:me )?(?:lembro|recordo)\b",
    r"\breceio (?:que )?nao\b",
    rf"\b{_SOURCES_PT}\b[^.;]{{0,40}}?\bnao (?:\w+ )?{_SAY_PT}\b",
    rf"\bnenhum[a]? d[oa]s? {_SOURCES_PT}\b[^.;]{{0,20}}?\b{_SAY_PT}\b",
    r"\bnao (?:ha|existem?|constam?) (?:\w+ ){0,2}?(?:informac\w*|dados|mencao|mencoes|"
    r"referencias?)\b",
    r"\b(?:informac\w+|resposta|dados?)\b(?: \w+)? nao (?:esta|estao|consta|constam|e|foi|foram|"
    r"se encontra|aparece)\b",
    r"\bnao consta\w* (?:n[oa]s?|em) ",
    r"\bnao (?:e|esta|fica) claro\b",
    r"\bsem (?:informac\w+|dados) suficientes\b",
    r"\bnao (?:sou|estou) (?:capaz|em condicoes|segur[oa]|cert[oa])\b",
    r"\bprefiro nao (?:arriscar|responder|opinar)\b",
    r"\bnao faco (?:a menor |nenhuma )?ideia\b",
    r"\bnao se sabe\b|\bninguem sabe\b",
    r"\b(?:dificil|impossivel) (?:dizer|saber|determinar|afirmar|responder|precisar)\b",
    r"\bnao (?:sao|e|foram|foi) conclusiv",
    rf"\bfora do (?:escopo|alcance|que (?:o|a|os|as) {_SOURCES_PT}|{_SOURCES_PT})\b",
    r"\bnao (?:e|foi|esta|sao|foram|estao) (?:\w+ )?(?:mencionad|especificad|informad|citad|"
    rf"abordad|indicad|tratad|referid)\w* (?:n[oa]s?|em|pel[oa]s?) (?:\w+ )?{_SOURCES_PT}\b",
    rf"\b(?:sem|nenhuma?) (?:informac\w*|dados|mencao|referencia)\b[^.;]{{0,25}}?\b(?:n[oa]s?|em) "
    rf"(?:\w+ )?{_SOURCES_PT}\b",
    r"\bimpossivel (?:responder|determinar|saber|dizer|afirmar|precisar)\b",
    r"\bnao (?:pode|podera|poderia|consegue) ser (?:respondid|determinad|estabelecid)",
    rf"\bnada (?:n[oa]s?|em) (?:\w+ ){{0,2}}?{_SOURCES_PT}\b[^.;]{{0,20}}?\b{_SAY_PT}\b",
    r"^\W*(?:desconhecid[oa]|indeterminad[oa]|nao informad[oa]|nao especificad[oa]|"
    r"sem resposta|sem informac\w+)\W*$",
    # English
    r"\bi (?:do not|don't|dont|did not|didn't) know\b",
    r"\b(?:i'm|i am|im) (?:not |un)(?:sure|certain)\b",
    r"\bnot (?:sure|certain)\b",
    r"\bi (?:can ?not|can't|cant|could not|couldn't|am unable to|'m unable to|was unable to|"
    r"am not able to|'m not able to)(?: \w+){0,3}? (?:answer|determine|say|tell|find|confirm|"
    r"provide|identify|locate|know|verify|be certain|be sure)\b",
    r"\b(?:i'm|i am|we are) (?:unable|not able) to\b",
    r"\bi (?:do not|don't|dont) (?:have|possess) (?:\w+ ){0,2}?(?:information|data|knowledge|"
    r"access|details|an answer|the answer|enough)\b",
    r"\bi have no (?:\w+ )?(?:information|idea|knowledge|data|way (?:of knowing|to)|access|"
    r"record)\b",
    r"\bi (?:can't|cannot|can not) help with\b",
    r"\b(?:i'm|i am) not familiar with\b",
    r"\bi (?:do not|don't|can't|cannot) (?:remember|recall)\b",
    rf"\b{_SOURCES_EN}\b[^.;]{{0,40}}?\b(?:does not|doesn't|do not|don't|did not|didn't|fails? "
    rf"to)\s+(?:\w+\s+)?{_SAY_EN}\b",
    rf"\bnone of the {_SOURCES_EN}\b[^.;]{{0,20}}?\b{_SAY_EN}\b",
    r"\b(?:there is|there's|there are|there was) (?:not enough|no|insufficient) (?:\w+ ){0,2}?"
    r"(?:information|data|mention|details|evidence|record)\b",
    r"\b(?:not enough|insufficient) (?:\w+ )?information\b",
    r"\b(?:information|answer|data)\b(?: \w+){0,4}? (?:is not|isn't|are not|aren't|was not|"
    r"wasn't|were not|weren't|could not|couldn't|cannot|can't|can not) (?:be )?"
    r"(?:available|found|present|mentioned|specified|provided|included|given|in the)\b",
    r"\bit (?:is|'s) (?:not |un)(?:clear|possible to|known)\b",
    r"\bnot possible to (?:answer|determine|say|tell)\b",
    r"\b(?:i'd|i would) rather not (?:guess|answer|speculate)\b",
    r"\b(?:i wouldn't|i would not) know\b",
    r"\b(?:nobody|no one) knows\b",
    r"\b(?:hard|difficult|impossible) to (?:say|tell|know|determine|answer)\b",
    r"\binconclusive\b",
    rf"\b(?:outside|beyond) (?:the )?(?:scope|what the {_SOURCES_EN})\b|\bout of scope\b",
    r"\b(?:is not|isn't|was not|wasn't|are not|aren't|not) (?:\w+ )?(?:mentioned|specified|"
    rf"stated|addressed|covered|given|provided|discussed|included|found|present) (?:in|by) "
    rf"(?:the|any) (?:\w+ )?{_SOURCES_EN}\b",
    rf"\b(?:no|nothing)\b[^.;]{{0,25}}?\bin (?:the|any) (?:\w+ )?{_SOURCES_EN}\b",
    r"\bno (?:idea|clue)\b",
    r"\bimpossible to (?:answer|determine|say|tell|know)\b",
    r"\b(?:cannot|can't|can not|could not|couldn't) be (?:answered|determined|established|known)\b",
    rf"\bnothing in the (?:\w+ ){{0,2}}?{_SOURCES_EN}\b[^.;]{{0,20}}?\b{_SAY_EN}\b",
    r"^\W*(?:unknown|not specified|not mentioned|not stated|no answer|n/?a|unanswerable|"
    r"cannot be determined)\W*$",
))
_CONTRAST = re.compile(r"(?:[,;:.!?]\s*|\s+)(?:mas|por[eé]m|contudo|entretanto|no entanto|todavia|"
                       r"embora|ainda que|but|however|although|though)\b,?\s*", re.I)
_APOLOGY = re.compile(r"^\W*(?:(?:sinto muito|desculpe|desculpa|desculpas|lamento|infelizmente|"
                      r"perdao|i'm sorry|i am sorry|sorry|unfortunately|i apologi[sz]e|apologies|"
                      r"regrettably|com certeza|claro|of course)\W*)*$")
# the fallback: a lack marker and an information noun in a clause that names nothing
_LACK = re.compile(r"\b(?:nao|nenhum\w*|sem|omiss[oa]s?|impossivel|incert[oa]|desconhecid\w*|not|"
                   r"\w+n't|no|none|never|cannot|unable|silent|unclear|unknown|impossible|"
                   r"without)\b")
_INFORMATION = re.compile(r"\b(?:informac\w+|dados|resposta|certeza|conhecimento|base|contexto|"
                          r"textos?|trechos?|fontes?|documentos?|materia(?:l|is)|passage(?:m|ns)|excertos?|"
                          r"information|data|answer|certainty|knowledge|basis|context|texts?|"
                          r"passages?|sources?|documents?|materials?|excerpts?)\b")
_ATTRIBUTION = re.compile(r"\b(?:segundo|conforme|de acordo com|according to|as stated in)\b")
_CONTENT = re.compile(r"\d|(?<=\s)(?!I\b|I'|I’)[A-ZÀ-Þ]")


def _plain(text: str) -> str:
    """Folded (case, accents), typographic apostrophes made plain, whitespace squashed."""
    return " ".join(fold(text).replace("\u2019", "'").replace("\u2018", "'").split())


def _declines(clause: str) -> bool:
    """Whether one clause declines: a refusal pattern, or (fallback) a lack marker with an
    information noun in a clause that names nothing (no digit, no capitalised word after its
    first) and attributes nothing ("segundo os documentos", "according to"): "O contexto é
    omisso", "None of the sources cite it"."""
    plain = _plain(clause)
    if any(p.search(plain) for p in _REFUSAL_PATTERNS):
        return True
    return bool(_LACK.search(plain) and _INFORMATION.search(plain)
                and not _ATTRIBUTION.search(plain) and not _CONTENT.search(clause.strip()))


def is_refusal(text: str) -> bool:
    """True when the output declines to answer: a prompt template's fixed refusal sentence
    (rag's and compare's), or clauses that decline with none that answers (module docstring)."""
    from rag.prompts import is_refusal as template_refusal

    if template_refusal(text, _template_refusals()):
        return True
    clauses = [c for c in _CONTRAST.split(clean_answer(text)) if c.strip()]
    declining = [_declines(c) for c in clauses]
    if not any(declining):
        return False
    return all(d or _APOLOGY.match(_plain(c)) for c, d in zip(clauses, declining, strict=True))


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


# --- language fidelity -----------------------------------------------------------------------

_LANGS = ("pt", "en", "es", "fr", "it", "de")
LANGID_MIN_WORDS = 6
FUNCTION_WORDS: dict[str, frozenset[str]] = {lang: _wordset(words) for lang, words in {
    "pt": """o os a as um uma uns umas do da dos das no na nos nas ao aos à às pelo pela pelos
             pelas em de e é que para por com não sim foi foram era eram são está estão tem têm
             ele ela eles elas seu sua seus suas isso isto este esta esse essa como mas ou quando
             onde quem qual quais também já muito mais sobre entre até depois antes sem sei
             durante cerca após num numa se lhe talvez tenha sido nenhum nenhuma disso nisso
             desse dessa deste desta nesse nessa neste nesta aquele aquela ser ter havia houve
             nunca ainda apenas só provavelmente possivelmente""",
    "en": """the a an of in on at to is was were are be been and or but not no yes it he she they
             his her their this that these those with from by for as which who what when where
             has have had i don't do does did after before during about there its would could
             can than more only also into since probably maybe perhaps never just yet still
             very i'm it's that's there's didn't doesn't isn't wasn't""",
    "es": """el la los las un una unos unas del al en de y que es fue son era por para con no sí
             pero como su sus este esta ese esa lo le les se muy más también ya cuando donde
             quien cual sobre entre hasta después antes sin año hay durante sé quizás
             probablemente nunca""",
    "fr": """le la les un une des du de et est était sont que qui en dans pour par avec pas ne il
             elle ils ce cette ces son sa ses au aux mais ou où sur été je""",
    "it": """il lo la gli le un uno una del della dei delle di e è che per con non in da nel nella
             sono era fu ma anche questo questa come dove chi""",
    "de": """der die das den dem des ein eine einen und ist war sind nicht mit von zu im auf für
             es er sie wir ich auch aber oder wurde dass""",
}.items()}
# open-class words common in short answers (numerals, quantities, time units, directions,
# "nobody"): language evidence like function words, and enough on their own in a one-word answer
ANSWER_WORDS: dict[str, frozenset[str]] = {lang: _wordset(words) for lang, words in {
    "pt": """dois duas três quatro cinco seis sete oito nove dez cem mil vez vezes ano anos século
             séculos dia dias mês meses norte sul leste oeste ninguém nada todos todas alguém
             sob através contra perto longe dentro fora acima abaixo hoje ontem agora sempre
             aproximadamente quase menos mesmo""",
    "en": """one two three four five six seven eight nine ten hundred thousand once twice times
             year years century centuries day days month months north south east west nobody
             nothing everyone someone under through against near within without above below
             today always around approximately almost less same""",
    "es": """dos tres cuatro cinco seis siete ocho nueve diez cien mil vez veces año años siglo
             siglos día días mes meses norte sur este oeste nadie nada todos alguien bajo través
             contra cerca dentro fuera hoy siempre casi menos mismo""",
}.items()}
_LETTER_CUES = {"ã": ("pt",), "õ": ("pt",), "ç": ("pt", "fr"), "ñ": ("es",), "ß": ("de",),
                "ä": ("de",), "ö": ("de",), "ü": ("de",)}
_INTERJECTIONS = _wordset("sim não yes no sí si oui non ja nein")
_NAME_HEADS = _wordset("são santo santa dom dona san saint sainte")
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(clean_answer(text))


def language_evidence(text: str, languages: Sequence[str] = _LANGS) -> dict[str, float]:
    """Function-word and letter evidence per language (module docstring); empty when the text
    carries no language signal (a name, a number, a date)."""
    cleaned = clean_answer(text)
    matches = list(_TOKEN.finditer(cleaned))
    tokens = [m.group(0) for m in matches]
    votes: dict[str, float] = dict.fromkeys(languages, 0.0)
    for i, token in enumerate(tokens):
        low = token.lower().replace("’", "'")
        before = tokens[i - 1] if i > 0 else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        joined = i + 1 < len(tokens) and \
            not cleaned[matches[i].end():matches[i + 1].start()].strip()
        common = [lang for lang in languages if low in ANSWER_WORDS.get(lang, ())]
        if len(tokens) == 1 and low not in _INTERJECTIONS and not common:
            continue  # a one-word answer is a name or a symbol ("Au") unless "sim", "twice"
        if token == low and before[:1].isupper() and after[:1].isupper():
            continue  # a name particle: "Terra de Santa Cruz", "Andrada e Silva"
        if low in _NAME_HEADS and after[:1].isupper():
            continue  # "São Paulo", "Dom Pedro"
        initial = not cleaned[:matches[i].start()].rstrip() or \
            cleaned[:matches[i].start()].rstrip()[-1] in ".!?:;\"'«“("
        if token != low and not initial and token != "I":
            continue  # a capitalised word inside a sentence belongs to a name: "Rio Grande do Sul"
        if token == "I" and before[:1].isupper():
            continue  # a regnal number: "Pedro I"
        if low == "no" and joined and after[:1].isupper():
            owners: list[str] = ["pt"] if "pt" in votes else []  # "no Rio": pt "in the"
        else:
            owners = [lang for lang in languages if low in FUNCTION_WORDS.get(lang, ())] or common
        for lang in owners:
            votes[lang] += 1 / len(owners)
        if token == low:
            for letter, langs in _LETTER_CUES.items():
                cue = [lang for lang in langs if lang in votes]
                for lang in cue:
                    votes[lang] += low.count(letter) / len(cue)
    return {lang: v for lang, v in votes.items() if v > 0}


def answer_language(text: str, languages: Sequence[str] = _LANGS) -> str | None:
    """The most likely language of an answer among ``languages``, or None when it is
    language-neutral (module docstring; py3langid breaks a function-word tie)."""
    evidence = language_evidence(text, languages)
    if not evidence:
        return None
    if len(_tokens(text)) >= LANGID_MIN_WORDS:
        return identify_language(clean_answer(text), languages)
    top = max(evidence.values())
    best = [lang for lang in languages if evidence.get(lang) == top]
    return best[0] if len(best) == 1 else identify_language(clean_answer(text), best)


def is_in_language(text: str, lang: str) -> bool:
    """True when ``text`` is in ``lang`` or language-neutral (what language fidelity scores):
    no language signal -> True; ``LANGID_MIN_WORDS``+ words -> py3langid says ``lang``; shorter
    -> ``lang`` has the most function-word evidence (ties included: the benefit of the doubt)."""
    languages = _LANGS if lang in _LANGS else (lang, *_LANGS)
    evidence = language_evidence(text, languages)
    if not evidence:
        return True
    if len(_tokens(text)) >= LANGID_MIN_WORDS:
        return identify_language(clean_answer(text), languages) == lang
    return evidence.get(lang, 0.0) == max(evidence.values())


def detect_language(text: str) -> str:
    """ISO code of the text's language among pt/en/es/fr/it/de (py3langid)."""
    return identify_language(text, _LANGS)


@metric("language_fidelity", binary=True)
def language_fidelity(inp: MetricInput) -> float | None:
    """1 when the answer is in the question's language or language-neutral (a name, a number);
    every open answer is judged (module docstring)."""
    return float(is_in_language(inp.output, inp.question.lang)) if _open(inp) else None


# --- retrieval and multiple choice -----------------------------------------------------------

@metric("hit@k", binary=True)
def hit_at_k(inp: MetricInput) -> float | None:
    """1 when a gold title is among the retrieved titles (RAG systems with gold titles only)."""
    if not inp.has_retrieval or not inp.question.gold_titles:
        return None
    gold = {t.casefold() for t in inp.question.gold_titles}
    return float(any(t.casefold() in gold for t in inp.retrieved_titles))


@metric("mc_accuracy", binary=True)
def mc_accuracy(inp: MetricInput) -> float | None:
    """1 when the chosen option (``extra['choice']``) is the correct one; a reply no option could
    be read from (``choice`` None) is wrong (0)."""
    if not inp.question.is_multiple_choice or "choice" not in inp.extra:
        return None
    choice = inp.extra["choice"]
    return float(choice is not None and choice == inp.question.answer_index)


@metric("mc_unparsed", higher_is_better=False, binary=True)
def mc_unparsed(inp: MetricInput) -> float | None:
    """1 when a multiple-choice reply could not be parsed into an option (``extra['choice']``
    None), 0 when it could; lower is better."""
    if not inp.question.is_multiple_choice or "choice" not in inp.extra:
        return None
    return float(inp.extra["choice"] is None)


DEFAULT_METRICS = ("answer_accuracy", "exact_match", "f1", "contains", "rouge1", "rougeL",
                   "bleu", "chrf", "language_fidelity", "refusal", "hit@k", "mc_accuracy",
                   "mc_unparsed")


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
for _who in ("judge", "human"):
    METRICS.add(f"{_who}_correct", Metric(
        f"{_who}_correct", _extra_score(f"{_who}_correct"), binary=True,
        description=f"1 when the {_who}'s accuracy score is 4 or 5 (correct); added after "
                    "generation, the primary metric when a judge is configured"))


# --- how well the detectors do on labelled sets ----------------------------------------------

def detection_quality(predicted: Iterable[bool], actual: Iterable[bool]) -> dict[str, float]:
    """Precision and recall of binary predictions against labels, with n and positives.
    Precision is 1.0 when nothing is predicted positive, recall 1.0 when nothing is positive."""
    pairs = list(zip(predicted, actual, strict=True))
    tp = sum(p and a for p, a in pairs)
    predicted_pos = sum(p for p, _ in pairs)
    positives = sum(a for _, a in pairs)
    return {"precision": tp / predicted_pos if predicted_pos else 1.0,
            "recall": tp / positives if positives else 1.0,
            "n": float(len(pairs)), "positives": float(positives)}


def _labelled(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: not a JSON object ({obj})")
        rows.append(obj)
    return rows


def labelled_detector_quality(data_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Refusal and language-fidelity detection measured on labelled JSONL sets in ``data_dir``:
    ``refusal_<lang>.jsonl`` (``{"text", "refusal": bool}``) and ``language_<lang>.jsonl``
    (``{"text", "question_lang", "lang"}``, ``lang`` "none" for a language-neutral answer;
    positive = in the question's language or neutral). Returns
    ``{"refusal": {lang: detection_quality}, "language_fidelity": {lang: ...}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {"refusal": {}, "language_fidelity": {}}
    for path in sorted(Path(data_dir).glob("refusal_*.jsonl")):
        rows = _labelled(path)
        out["refusal"][path.stem.split("_", 1)[1]] = detection_quality(
            [is_refusal(r["text"]) for r in rows], [bool(r["refusal"]) for r in rows])
    for path in sorted(Path(data_dir).glob("language_*.jsonl")):
        rows = _labelled(path)
        out["language_fidelity"][path.stem.split("_", 1)[1]] = detection_quality(
            [is_in_language(r["text"], r["question_lang"]) for r in rows],
            [r["lang"] in (r["question_lang"], "none") for r in rows])
    return out
