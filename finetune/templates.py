"""Deterministic instruction pairs from an article's structure (lead, infobox, sections).

Each template is a function ``(page, limits) -> list[Pair]`` in the ``TEMPLATES`` registry:
``lead`` ("Quem foi X?" / "O que foi X?" answered by the lead), ``summary`` ("Resuma o artigo
X."), ``dates`` ("Quando nasceu/morreu/ocorreu …?" from infobox dates or the lead's birth–death
parenthesis), ``facts`` ("Qual …?" / "Onde …?" / "Quem …?" from known infobox fields) and
``sections`` (what a section says), and ``short`` (the bare value of a date or fact, asked in
``Limits.paraphrases`` phrasings). Person vs event vs thing comes from the infobox (template
name or typical fields), then the lead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.registry import Registry
from core.text import fold, split_sentences, squash
from finetune.records import Pair
from finetune.text import clip


@dataclass(frozen=True)
class PageRecord:
    """One article as the store gives it: lead, infobox fields, (section, text) in order."""

    page_id: int
    title: str
    lead: str
    infobox: dict[str, Any] = field(default_factory=dict)
    sections: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Limits:
    """How much of the article a template may use."""

    max_output_chars: int = 560
    max_fact_chars: int = 200
    max_section_pairs: int = 4
    summary_sections: int = 4
    summary_sentences: int = 3
    paraphrases: int = 3  # question phrasings per fact (``short``)
    max_short_words: int = 12  # a short answer's longest value


TemplateFn = Callable[[PageRecord, Limits], list[Pair]]
TEMPLATES: Registry[TemplateFn] = Registry("pair template")

PERSON_TEMPLATE_WORDS = ("biografia", "pessoa", "monarca", "realeza", "politico", "militar",
                         "presidente", "nobre", "religioso", "escritor", "artista", "santo")
EVENT_TEMPLATE_WORDS = ("evento", "conflito", "guerra", "batalha", "revolta", "revolucao",
                        "periodo historico", "movimento", "tratado")
PERSON_KEYS = {"nascimento_data", "nascimento", "data_nascimento", "morte_data", "falecimento",
               "data_morte", "nome_completo", "conjuge", "pai", "mae"}
EVENT_KEYS = {"inicio", "fim", "resultado", "combatente1", "combatentes", "participantes",
              "conflito", "comandante1"}
TEMPLATE_KEYS = ("_template", "template", "infobox", "_name", "_tipo")
EVENT_LEAD = re.compile(r"\bfo(?:i|ram) (?:um|uma|o|a)\s+(?:\w+\s+)?(?:conflito|guerra|movimento|"
                        r"revolta|revolução|período|episódio|golpe|batalha|conspiração|tratado|"
                        r"rebelião|insurreição|campanha|levante|processo|evento)", re.IGNORECASE)
LIFESPAN = re.compile(r"\(([^()]*\d{3,4}[^()]*?)\s[–—-]\s([^()]*\d{3,4}[^()]*)\)")
DATE = re.compile(r"\d{1,2}º? de [a-zç]+ de \d{3,4}|\b\d{3,4}\b", re.IGNORECASE)
TENSE = re.compile(r"\b(foi|foram|era|eram|é|são)\b", re.IGNORECASE)
SKIP_SECTIONS = {"referencias", "bibliografia", "ligacoes externas", "ver tambem", "notas",
                 "leitura adicional", "fontes", "notas e referencias", "galeria"}
BAD_VALUE = re.compile(r"\.(?:jpe?g|png|svg|gif|tiff?|webm|ogg)\b|[{}|<>\[\]]", re.IGNORECASE)


def entity_kind(page: PageRecord) -> str:
    """``person``, ``event`` or ``thing``: infobox template name, then fields, then the lead."""
    name = fold(" ".join(str(page.infobox.get(k, "")) for k in TEMPLATE_KEYS))
    if any(w in name for w in PERSON_TEMPLATE_WORDS):
        return "person"
    if any(w in name for w in EVENT_TEMPLATE_WORDS):
        return "event"
    keys = {fold(k) for k in page.infobox}
    if len(keys & PERSON_KEYS) >= 1 and not keys & EVENT_KEYS:
        return "person"
    if keys & EVENT_KEYS:
        return "event"
    head = page.lead[:400]
    if LIFESPAN.search(head):
        return "person"
    return "event" if EVENT_LEAD.search(head) else "thing"


def is_past(lead: str) -> bool:
    """Whether the lead describes its subject in the past ("foi", "era") rather than "é"."""
    match = TENSE.search(lead[:400])
    return match is not None and fold(match.group(1)) in ("foi", "foram", "era", "eram")


ARTICLES = ("os", "as", "o", "a")
RANGE = re.compile(r"(.*\d{3,4}.*?)\s+[–—-]\s+(.*\d{3,4}.*)")
CONTRACTIONS = (("de", "d"), ("em", "n"))  # de + a = da, em + o = no


def article(page: PageRecord) -> str:
    """The definite article the lead puts before the title ("A Lei Áurea é …" -> "a"), or ""."""
    head, title = fold(page.lead[:len(page.title) + 4]), fold(page.title)
    return next((a for a in ARTICLES if head.startswith(f"{a} {title}")), "")


def fill(template: str, page: PageRecord, value: str = "") -> str:
    """``{t}`` -> the title with its article (contracted after de/em), ``{v}`` -> value.

    "Quando ocorreu {t}?" gives "Quando ocorreu a Inconfidência Mineira?" and "O resultado de
    {t}" gives "O resultado da Inconfidência Mineira"; the sentence starts upper-case.
    """
    art = article(page)
    text = template
    if art:
        for prep, stem in CONTRACTIONS:
            text = text.replace(f"{prep} {{t}}", f"{stem}{art} {{t}}")
            text = text.replace(f"{stem}{art} {{t}}", f"{stem}{art} {page.title}")
    span = RANGE.fullmatch(value)
    if span and "em {v}" in text:  # "ocorreu em 1864 – 1870" -> "ocorreu de 1864 a 1870"
        text = text.replace("em {v}", f"de {span.group(1)} a {span.group(2)}")
    text = text.replace("{t}", f"{art} {page.title}".strip()).replace("{v}", value)
    text = re.sub(r"([!?])\.$", r"\1", text)  # "Independência ou Morte!." -> "… Morte!"
    return text[:1].upper() + text[1:]


def _pair(instruction: str, output: str, page: PageRecord, kind: str) -> Pair:
    return Pair(instruction=instruction, input="", output=output, source=page.title, kind=kind)


@TEMPLATES.register("lead")
def lead_pairs(page: PageRecord, limits: Limits) -> list[Pair]:
    """"Quem foi X?" / "O que foi X?" / "O que é X?" answered by the lead."""
    if not page.lead.strip():
        return []
    kind, past = entity_kind(page), is_past(page.lead)
    plural = article(page) in ("os", "as")
    verb = ("foram" if plural else "foi") if past or kind == "event" else \
        ("são" if plural else "é")
    question = fill(f"{'Quem' if kind == 'person' else 'O que'} {verb} {{t}}?", page)
    return [_pair(question, clip(page.lead, limits.max_output_chars), page, "lead")]


@TEMPLATES.register("summary")
def summary_pairs(page: PageRecord, limits: Limits) -> list[Pair]:
    """"Resuma o artigo X." answered by the lead's first sentence plus each section's first."""
    lead = split_sentences(page.lead)
    if not lead:
        return []
    firsts = [split_sentences(text)[:1] for name, text in _content_sections(page)]
    parts = lead[:1] + [s[0] for s in firsts if s][:limits.summary_sections]
    if len(parts) == 1:
        parts = lead[:limits.summary_sentences]
    summary = clip(" ".join(parts), limits.max_output_chars)
    if summary == clip(page.lead, limits.max_output_chars):
        return []
    return [_pair(f"Resuma o artigo {page.title}.", summary, page, "summary")]


# infobox field -> (question, answer): {t} = the title with its article, {v} = the value
DATE_FIELDS: dict[str, tuple[str, str]] = {
    "nascimento_data": ("Quando nasceu {t}?", "{t} nasceu em {v}."),
    "data_nascimento": ("Quando nasceu {t}?", "{t} nasceu em {v}."),
    "nascimento": ("Quando nasceu {t}?", "{t} nasceu em {v}."),
    "morte_data": ("Quando morreu {t}?", "{t} morreu em {v}."),
    "data_morte": ("Quando morreu {t}?", "{t} morreu em {v}."),
    "falecimento": ("Quando morreu {t}?", "{t} morreu em {v}."),
    "data": ("Quando ocorreu {t}?", "{t} ocorreu em {v}."),
    "inicio": ("Quando começou {t}?", "{t} começou em {v}."),
    "fim": ("Quando terminou {t}?", "{t} terminou em {v}."),
    "data_promulgacao": ("Quando foi promulgada {t}?", "A promulgação de {t} ocorreu em {v}."),
    "data_outorga": ("Quando foi outorgada {t}?", "A outorga de {t} ocorreu em {v}."),
    "fundacao": ("Quando ocorreu a fundação de {t}?", "A fundação de {t} ocorreu em {v}."),
    "coroacao": ("Quando ocorreu a coroação de {t}?", "A coroação de {t} ocorreu em {v}."),
    "reinado": ("Qual foi o período do reinado de {t}?", "O reinado de {t} foi de {v}."),
    "mandato": ("Qual foi o período do mandato de {t}?", "O mandato de {t} foi de {v}."),
    "vigencia": ("Qual foi o período de vigência de {t}?", "A vigência de {t} foi de {v}."),
}

FACT_FIELDS: dict[str, tuple[str, str]] = {
    "nome_completo": ("Qual era o nome completo de {t}?", "O nome completo de {t} era {v}."),
    "nascimento_local": ("Onde nasceu {t}?", "{t} nasceu em {v}."),
    "morte_local": ("Onde morreu {t}?", "{t} morreu em {v}."),
    "causa_morte": ("Qual foi a causa da morte de {t}?", "A causa da morte de {t} foi: {v}."),
    "local": ("Onde ocorreu {t}?", "{t} ocorreu em {v}."),
    "resultado": ("Qual foi o resultado de {t}?", "O resultado de {t} foi: {v}."),
    "ocupacao": ("Qual era a ocupação de {t}?", "A ocupação de {t} era: {v}."),
    "profissao": ("Qual era a profissão de {t}?", "A profissão de {t} era: {v}."),
    "conhecido_por": ("Pelo que {t} é conhecido?", "{t} é conhecido por: {v}."),
    "conjuge": ("Quem foi o cônjuge de {t}?", "O cônjuge de {t} foi {v}."),
    "pai": ("Quem foi o pai de {t}?", "O pai de {t} foi {v}."),
    "mae": ("Quem foi a mãe de {t}?", "A mãe de {t} foi {v}."),
    "antecessor": ("Quem antecedeu {t}?", "O antecessor de {t} foi {v}."),
    "precedido_por": ("Quem antecedeu {t}?", "O antecessor de {t} foi {v}."),
    "precedida_por": ("O que antecedeu {t}?", "{t} foi precedida por {v}."),
    "sucessor": ("Quem sucedeu {t}?", "O sucessor de {t} foi {v}."),
    "sucedido_por": ("Quem sucedeu {t}?", "O sucessor de {t} foi {v}."),
    "sucedida_por": ("O que sucedeu {t}?", "{t} foi sucedida por {v}."),
    "capital": ("Qual era a capital de {t}?", "A capital de {t} era {v}."),
    "participantes": ("Quem participou de {t}?", "Participaram de {t}: {v}."),
    "partido": ("A que partido pertenceu {t}?", "{t} pertenceu ao partido: {v}."),
    "cargo": ("Que cargo ocupou {t}?", "{t} ocupou o cargo de {v}."),
    "autor": ("Quem foi o autor de {t}?", "O autor de {t} foi {v}."),
    "conflito": ("De que conflito fez parte {t}?", "{t} fez parte de {v}."),
    "moeda": ("Qual era a moeda de {t}?", "A moeda de {t} era {v}."),
    "governo": ("Qual era a forma de governo de {t}?", "A forma de governo de {t} era {v}."),
    "regime": ("Qual era o regime de {t}?", "O regime de {t} era {v}."),
    "casa": ("A que casa real pertencia {t}?", "{t} pertencia à {v}."),
    "lema": ("Qual era o lema de {t}?", "O lema de {t} era {v}."),
}


def clean_value(value: Any, max_chars: int) -> str:
    """An infobox value usable in a sentence, or "" (markup, file names, too long)."""
    text = squash(str(value)) if isinstance(value, (str, int, float)) else ""
    if not text or len(text) > max_chars or BAD_VALUE.search(text):
        return ""
    return text.rstrip(".;,")


def _field_pairs(page: PageRecord, limits: Limits, table: dict[str, tuple[str, str]],
                 kind: str) -> list[Pair]:
    out = []
    for key, value in page.infobox.items():
        spec = table.get(fold(str(key)).strip())
        text = clean_value(value, limits.max_fact_chars)
        if spec and text:
            question, answer = spec
            out.append(_pair(fill(question, page), fill(answer, page, text), page, kind))
    return out


@TEMPLATES.register("dates")
def date_pairs(page: PageRecord, limits: Limits) -> list[Pair]:
    """"Quando …?" from infobox dates, then from the lead's "(place, date – place, date)"."""
    out = _field_pairs(page, limits, DATE_FIELDS, "dates")
    match = LIFESPAN.search(page.lead[:400]) if entity_kind(page) == "person" else None
    if match:
        for part, (question, answer) in zip(match.groups(), (DATE_FIELDS["nascimento_data"],
                                                             DATE_FIELDS["morte_data"]),
                                            strict=True):
            date = DATE.search(part)
            if date:
                out.append(_pair(fill(question, page), fill(answer, page, date.group(0)),
                                 page, "dates"))
    return out


@TEMPLATES.register("facts")
def fact_pairs(page: PageRecord, limits: Limits) -> list[Pair]:
    """"Qual …?" / "Onde …?" / "Quem …?" from the infobox fields listed in ``FACT_FIELDS``."""
    return _field_pairs(page, limits, FACT_FIELDS, "facts")


def _content_sections(page: PageRecord) -> list[tuple[str, str]]:
    return [(name, text) for name, text in page.sections
            if name.strip() and fold(name.split("/")[-1].strip()) not in SKIP_SECTIONS
            and fold(name) != fold(page.title) and text.strip()]


@TEMPLATES.register("sections")
def section_pairs(page: PageRecord, limits: Limits) -> list[Pair]:
    """What the article says in its first sections (the section's first chunk)."""
    out = []
    for name, text in _content_sections(page)[:limits.max_section_pairs]:
        question = f"O que diz a seção «{squash(name)}» do artigo {page.title}?"
        out.append(_pair(question, clip(text, limits.max_output_chars), page, "sections"))
    return out


def page_pairs(page: PageRecord, limits: Limits, names: tuple[str, ...]) -> list[Pair]:
    """Every pair the named templates make from one article."""
    return [pair for name in names for pair in TEMPLATES.get(name)(page, limits)]


# --- short answers: the value alone, asked several ways ------------------------------------
#
# The evaluation asks for short answers (a date, a name, a place); the other templates answer in
# sentences. ``short`` teaches the same facts in the shape they are asked: the bare value (at most
# ``Limits.max_short_words`` words), each fact under ``Limits.paraphrases`` question phrasings, so
# that the fact is seen in several forms (Ovadia et al. 2023: facts are injected by fine-tuning
# only with repetition in paraphrases).

SHORT_DATE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "nascimento": ("Quando nasceu {t}?", "Em que data nasceu {t}?",
                   "Qual é a data de nascimento de {t}?", "{t} nasceu em que data?"),
    "morte": ("Quando morreu {t}?", "Em que data morreu {t}?",
              "Qual é a data da morte de {t}?", "{t} morreu em que data?"),
    "data": ("Quando ocorreu {t}?", "Em que data ocorreu {t}?", "Qual é a data de {t}?",
             "{t} aconteceu em que data?"),
    "inicio": ("Quando começou {t}?", "Em que data começou {t}?", "Qual foi o início de {t}?",
               "{t} teve início em que data?"),
    "fim": ("Quando terminou {t}?", "Em que data terminou {t}?", "Qual foi o fim de {t}?",
            "{t} terminou em que data?"),
    "promulgacao": ("Quando foi promulgada {t}?", "Em que data foi promulgada {t}?",
                    "Qual é a data de promulgação de {t}?", "{t} foi promulgada em que data?"),
    "outorga": ("Quando foi outorgada {t}?", "Em que data foi outorgada {t}?",
                "Qual é a data de outorga de {t}?", "{t} foi outorgada em que data?"),
    "fundacao": ("Quando foi fundada {t}?", "Em que data ocorreu a fundação de {t}?",
                 "Qual é a data de fundação de {t}?", "{t} foi fundada em que data?"),
    "coroacao": ("Quando ocorreu a coroação de {t}?", "Em que data {t} foi coroado?",
                 "Qual é a data da coroação de {t}?", "{t} foi coroado em que data?"),
    "reinado": ("Qual foi o período do reinado de {t}?", "Quando reinou {t}?",
                "Em que anos reinou {t}?", "De quando a quando foi o reinado de {t}?"),
    "mandato": ("Qual foi o período do mandato de {t}?", "Quando governou {t}?",
                "Em que anos foi o mandato de {t}?", "De quando a quando governou {t}?"),
    "vigencia": ("Qual foi o período de vigência de {t}?", "Quando vigorou {t}?",
                 "Em que anos vigorou {t}?", "De quando a quando vigorou {t}?"),
}
SHORT_DATE_FIELDS = {"nascimento_data": "nascimento", "data_nascimento": "nascimento",
                     "nascimento": "nascimento", "morte_data": "morte", "data_morte": "morte",
                     "falecimento": "morte", "data": "data", "inicio": "inicio", "fim": "fim",
                     "data_promulgacao": "promulgacao", "data_outorga": "outorga",
                     "fundacao": "fundacao", "coroacao": "coroacao", "reinado": "reinado",
                     "mandato": "mandato", "vigencia": "vigencia"}
SHORT_FACT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "nome_completo": ("Qual era o nome completo de {t}?", "Como se chamava {t} por extenso?",
                      "Qual é o nome completo de {t}?", "{t} tinha que nome completo?"),
    "nascimento_local": ("Onde nasceu {t}?", "Em que lugar nasceu {t}?",
                         "Qual é o local de nascimento de {t}?", "{t} nasceu onde?"),
    "morte_local": ("Onde morreu {t}?", "Em que lugar morreu {t}?",
                    "Qual é o local da morte de {t}?", "{t} morreu onde?"),
    "causa_morte": ("Qual foi a causa da morte de {t}?", "Do que morreu {t}?",
                    "Qual a causa mortis de {t}?", "{t} morreu de quê?"),
    "local": ("Onde ocorreu {t}?", "Em que lugar ocorreu {t}?", "Qual foi o local de {t}?",
              "{t} aconteceu onde?"),
    "resultado": ("Qual foi o resultado de {t}?", "Como terminou {t}?",
                  "Que resultado teve {t}?", "{t} terminou com que resultado?"),
    "ocupacao": ("Qual era a ocupação de {t}?", "O que fazia {t}?",
                 "Qual foi a ocupação de {t}?", "{t} tinha que ocupação?"),
    "profissao": ("Qual era a profissão de {t}?", "Que profissão exercia {t}?",
                  "Qual foi a profissão de {t}?", "{t} tinha que profissão?"),
    "conjuge": ("Quem foi o cônjuge de {t}?", "Com quem foi casado {t}?",
                "Quem se casou com {t}?", "{t} foi casado com quem?"),
    "pai": ("Quem foi o pai de {t}?", "Qual era o nome do pai de {t}?",
            "Quem era o pai de {t}?", "{t} era filho de que pai?"),
    "mae": ("Quem foi a mãe de {t}?", "Qual era o nome da mãe de {t}?",
            "Quem era a mãe de {t}?", "{t} era filho de que mãe?"),
    "antecessor": ("Quem antecedeu {t}?", "Quem veio antes de {t}?",
                   "Quem foi o antecessor de {t}?", "{t} sucedeu a quem?"),
    "sucessor": ("Quem sucedeu {t}?", "Quem veio depois de {t}?",
                 "Quem foi o sucessor de {t}?", "{t} foi sucedido por quem?"),
    "capital": ("Qual era a capital de {t}?", "Que cidade era a capital de {t}?",
                "Onde ficava a capital de {t}?", "A capital de {t} era qual cidade?"),
    "partido": ("A que partido pertenceu {t}?", "De que partido era {t}?",
                "Qual era o partido de {t}?", "{t} era filiado a que partido?"),
    "cargo": ("Que cargo ocupou {t}?", "Qual foi o cargo de {t}?",
              "Que função exerceu {t}?", "{t} ocupou que cargo?"),
    "autor": ("Quem foi o autor de {t}?", "Quem escreveu {t}?", "Quem redigiu {t}?",
              "{t} foi escrito por quem?"),
    "conflito": ("De que conflito fez parte {t}?", "A que conflito pertenceu {t}?",
                 "{t} fez parte de que conflito?", "Em que guerra se deu {t}?"),
    "moeda": ("Qual era a moeda de {t}?", "Que moeda circulava em {t}?",
              "Qual foi a moeda de {t}?", "A moeda de {t} era qual?"),
    "governo": ("Qual era a forma de governo de {t}?", "Que forma de governo tinha {t}?",
                "Como era governado {t}?", "{t} tinha que forma de governo?"),
    "regime": ("Qual era o regime de {t}?", "Que regime político tinha {t}?",
               "Qual foi o regime de {t}?", "{t} vivia sob que regime?"),
    "casa": ("A que casa real pertencia {t}?", "De que dinastia era {t}?",
             "Qual era a casa real de {t}?", "{t} pertencia a que casa?"),
    "lema": ("Qual era o lema de {t}?", "Que lema tinha {t}?", "Qual é o lema de {t}?",
             "O lema de {t} era qual?"),
}
SHORT_FACT_FIELDS = {"precedido_por": "antecessor", "sucedido_por": "sucessor",
                     **{k: k for k in SHORT_FACT_QUESTIONS}}
# "<Title> foi assinada em 13 de maio de 1888": a dated event of the article's own subject
DATED_EVENT = re.compile(
    r"^(?P<verb>foi|foram) (?P<part>\w+d[oa]s?)\b[^.;:]{0,60}?\bem "
    r"(?P<date>\d{1,2}º? de [a-zç]+ de \d{3,4}|\d{3,4})\b", re.IGNORECASE)
SHORT_EVENT_QUESTIONS = ("Quando {t} {verb} {part}?", "Em que data {t} {verb} {part}?",
                         "{t} {verb} {part} em que data?", "Em que momento {t} {verb} {part}?")


def short_value(value: str, max_words: int) -> str:
    """``value`` when it is a short answer (at most ``max_words`` words), else ""."""
    words = value.split()
    return value if 0 < len(words) <= max_words else ""


def _short(page: PageRecord, questions: tuple[str, ...], value: str, limits: Limits,
           fact: str) -> list[Pair]:
    seen: dict[str, None] = {}
    for question in questions[:max(1, limits.paraphrases)]:
        seen.setdefault(fill(question, page), None)
    return [Pair(instruction=q, input="", output=value, source=page.title, kind="short",
                 fact=f"{page.title}:{fact}") for q in seen]


def _subject_events(page: PageRecord) -> list[tuple[str, str, str]]:
    """(verb, participle, date) of lead sentences that start with the article's title."""
    out = []
    art = article(page)
    starts = [fold(f"{art} {page.title}".strip()), fold(page.title)]
    for sentence in split_sentences(page.lead)[:6]:
        folded = fold(sentence)
        head = next((s for s in starts if folded.startswith(s + " ")), None)
        if head is None:
            continue
        rest = sentence[len(head) + 1:].lstrip(", ")
        match = DATED_EVENT.match(rest)
        if match:
            out.append((match["verb"].lower(), match["part"].lower(), match["date"]))
    return out


@TEMPLATES.register("short")
def short_pairs(page: PageRecord, limits: Limits) -> list[Pair]:
    """Short-answer pairs: infobox dates and facts, the lead's birth–death dates and dated events
    of the article's subject, each as the bare value under several question phrasings."""
    out: list[Pair] = []
    for key, value in page.infobox.items():
        name = fold(str(key)).strip()
        text = short_value(clean_value(value, limits.max_fact_chars), limits.max_short_words)
        if not text or fold(text) == fold(page.title):  # no answer, or the subject itself
            continue
        if name in SHORT_DATE_FIELDS and any(c.isdigit() for c in text):  # not "presente"
            field = SHORT_DATE_FIELDS[name]
            out += _short(page, SHORT_DATE_QUESTIONS[field], text, limits, field)
        elif name in SHORT_FACT_FIELDS:
            field = SHORT_FACT_FIELDS[name]
            out += _short(page, SHORT_FACT_QUESTIONS[field], text, limits, field)
    kind = entity_kind(page)
    match = LIFESPAN.search(page.lead[:400]) if kind == "person" else None
    facts = {p.fact for p in out}
    if match:
        for part, field in zip(match.groups(), ("nascimento", "morte"), strict=True):
            date = DATE.search(part)
            if date and f"{page.title}:{field}" not in facts:
                out += _short(page, SHORT_DATE_QUESTIONS[field], date.group(0), limits, field)
    for verb, part, when in _subject_events(page):
        questions = tuple(q.replace("{verb}", verb).replace("{part}", part)
                          for q in SHORT_EVENT_QUESTIONS)
        out += _short(page, questions, when, limits, f"{verb} {part}")
    return out
