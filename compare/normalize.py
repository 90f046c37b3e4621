"""Answer cleaning and Portuguese-aware answer normalization (SQuAD-style, extended).

Two steps, each public:

* ``clean_answer`` takes off what is packaging, not answer: bracketed citations ("[1]",
  "[2, 3]") and a leading "Resposta:" / "Answer:" label; whitespace is squashed. Case,
  accents and punctuation are kept.
* ``normalize_answer`` gives the comparison form that every reference-based metric (exact match,
  containment, answer accuracy, token F1, ROUGE, BLEU, chrF) reads. With ``portuguese=True``
  (the default), after ``clean_answer``:

  1. honorific abbreviations become words: "D. Pedro" -> "Dom Pedro", "Dª"/"D.ª" -> "Dona",
     "Sto." -> "Santo", "Sta." -> "Santa", "S. Paulo" -> "São Paulo" (each only before a
     capitalised word; "S." is left alone right after a capitalised word, where it is a middle
     initial as in "Harry S. Truman");
  2. lower-case; ordinal marks go ("1º" -> "1"); thousands separators go ("1.888" -> "1888");
  3. accents folded, punctuation (and "_") becomes a space;
  4. Portuguese number words become digits, compounds included: "sete" -> "7",
     "dois mil" -> "2000", "mil oitocentos e oitenta e oito" -> "1888", "dois mil e dez" ->
     "2010", "2 mil" -> "2000". Adjacent number words merge only in the order Portuguese writes
     them (scale words descending; inside a group hundreds, tens, units), so "cinco e seis"
     stays "5 e 6"; "um"/"uma" count as 1 only inside a number ("mil e um", "um milhão"),
     elsewhere they are articles;
  5. ordinal words "primeiro/a", "segundo/a", "terceiro/a" become digits only right after a
     determiner ("o segundo reinado" -> "2 reinado"), so the preposition in "segundo a lei"
     stays a word (and "segunda-feira" stays a weekday);
  6. articles are dropped (pt: o/a/os/as/um/uma/uns/umas; en: the/an);
  7. whitespace squeezed.

  With ``portuguese=False`` it is exactly the SQuAD v1.1 official script's ``normalize_answer``:
  lower-case, delete ASCII punctuation (``string.punctuation``), replace the English articles
  a/an/the with a space, squeeze whitespace — no cleaning, no accent folding.
"""

from __future__ import annotations

import re
import string

from core.text import fold_accents, squash

ARTICLES = frozenset(["o", "a", "os", "as", "um", "uma", "uns", "umas", "the", "an"])

_UNITS = {
    "zero": 0, "dois": 2, "duas": 2, "tres": 3, "quatro": 4, "cinco": 5, "seis": 6, "sete": 7,
    "oito": 8, "nove": 9,
}
_ONE = {"um": 1, "uma": 1}  # numbers only inside a number; articles elsewhere
_TEENS = {
    "dez": 10, "onze": 11, "doze": 12, "treze": 13, "catorze": 14, "quatorze": 14, "quinze": 15,
    "dezesseis": 16, "dezasseis": 16, "dezessete": 17, "dezassete": 17, "dezoito": 18,
    "dezenove": 19, "dezanove": 19,
}
_TENS = {"vinte": 20, "trinta": 30, "quarenta": 40, "cinquenta": 50, "sessenta": 60,
         "setenta": 70, "oitenta": 80, "noventa": 90}
_HUNDREDS = {"cem": 100, "cento": 100, "duzentos": 200, "duzentas": 200, "trezentos": 300,
             "trezentas": 300, "quatrocentos": 400, "quatrocentas": 400, "quinhentos": 500,
             "quinhentas": 500, "seiscentos": 600, "seiscentas": 600, "setecentos": 700,
             "setecentas": 700, "oitocentos": 800, "oitocentas": 800, "novecentos": 900,
             "novecentas": 900}
_SCALES = {"mil": 1000, "milhao": 10**6, "milhoes": 10**6, "bilhao": 10**9, "bilhoes": 10**9}
# rank inside a group of three digits: a later word must have a lower rank
_RANK = {**dict.fromkeys(_HUNDREDS, 3), **dict.fromkeys(_TENS, 2), **dict.fromkeys(_TEENS, 2),
         **dict.fromkeys(_UNITS, 1), **dict.fromkeys(_ONE, 1)}
_VALUE = {**_UNITS, **_ONE, **_TEENS, **_TENS, **_HUNDREDS}

_ORDINAL_WORDS = {"primeiro": 1, "primeira": 1, "segundo": 2, "segunda": 2, "terceiro": 3,
                  "terceira": 3}
# an ordinal word is a number only after one of these (folded) determiners
_DETERMINERS = frozenset(["o", "a", "os", "as", "do", "da", "dos", "das", "no", "na", "nos",
                          "nas", "ao", "aos", "pelo", "pela", "pelos", "pelas", "seu", "sua",
                          "seus", "suas", "este", "esta", "esse", "essa", "the"])

_HONORIFICS = (
    (re.compile(r"\bD\.?\s?ª\.?\s*"), "Dona "),
    (re.compile(r"\bSto\.\s*(?=[A-ZÀ-Þ])"), "Santo "),
    (re.compile(r"\bSta\.\s*(?=[A-ZÀ-Þ])"), "Santa "),
    (re.compile(r"\bD\.\s*(?=[A-ZÀ-Þ])"), "Dom "),
)
_SAO = re.compile(r"(?<![A-Za-zÀ-ÿ])S\.\s*(?=[A-ZÀ-Þ])")
_CAPITALISED_BEFORE = re.compile(r"[A-ZÀ-Þ][\w'-]*\s*$")
_ORDINAL = re.compile(r"(\d+)\.?\s*[ºª°]")
_THOUSANDS = re.compile(r"(?<=\d)\.(?=\d{3}\b)")
_PUNCT = re.compile(r"[^\w\s]")
_CITATION = re.compile(r"\s*\[\s*\d+(?:\s*[,;–-]\s*\d+)*\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[.,;:!?])")
_LABEL = re.compile(r"^\s*(?:resposta(?: curta| final)?|(?:short |final )?answer)\s*:\s*", re.I)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SQUAD_PUNCT = frozenset(string.punctuation)


def clean_answer(text: str) -> str:
    """``text`` without citations ("[1]", "[2, 3]") or a leading "Resposta:"/"Answer:" label,
    whitespace squashed; case, accents and punctuation kept."""
    text = _SPACE_BEFORE_PUNCT.sub("", squash(_CITATION.sub(" ", text)))
    return squash(_LABEL.sub("", text))


def expand_honorifics(text: str) -> str:
    """Honorific abbreviations written out ("D. Pedro II" -> "Dom Pedro II"; see the module
    docstring for the list and the middle-initial exception)."""
    for pattern, full in _HONORIFICS:
        text = pattern.sub(full, text)

    def _sao(m: re.Match[str]) -> str:
        return m.group(0) if _CAPITALISED_BEFORE.search(text[:m.start()]) else "São "

    return _SAO.sub(_sao, text)


def _number_run(tokens: list[str], start: int) -> tuple[int, int] | None:
    """(value, end) of the number written in words from ``tokens[start]``, or None."""
    first = tokens[start]
    nxt = tokens[start + 1] if start + 1 < len(tokens) else ""
    if first.isdigit():
        if nxt in _SCALES:
            return int(first) * _SCALES[nxt], start + 2
        return None
    if first in _ONE and nxt not in _SCALES:
        return None  # an article
    if first not in _VALUE and first not in _SCALES:
        return None
    total, group, rank, last_scale = 0, 0, 4, float("inf")
    i = end = start
    while i < len(tokens):
        word = tokens[i]
        if word == "e":
            if i == start or i + 1 >= len(tokens):
                break
            following = tokens[i + 1]
            if following in _RANK and _RANK[following] < rank:
                i += 1
                continue
            break
        if word in _SCALES:
            if _SCALES[word] >= last_scale:
                break
            total += (group or 1) * _SCALES[word]
            group, rank, last_scale = 0, 4, _SCALES[word]
        elif word in _RANK and _RANK[word] < rank and (word not in _ONE or i > start
                                                        or nxt in _SCALES):
            group += _VALUE[word]
            rank = 1 if word in _TEENS else _RANK[word]
        else:
            break
        i += 1
        end = i
    return total + group, end


def _numbers(tokens: list[str]) -> list[str]:
    """Number words replaced by digits; ordinal words after a determiner too."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        run = _number_run(tokens, i)
        if run is not None and (run[1] - i > 1 or not tokens[i].isdigit()):
            out.append(str(run[0]))
            i = run[1]
            continue
        word = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word in _ORDINAL_WORDS and i > 0 and tokens[i - 1] in _DETERMINERS and nxt != "feira":
            word = str(_ORDINAL_WORDS[word])
        out.append(word)
        i += 1
    return out


def squad_normalize(text: str) -> str:
    """The SQuAD v1.1 official evaluation script's normalization, exactly (module docstring)."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCT)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def normalize_answer(text: str, portuguese: bool = True) -> str:
    """The comparison form of an answer or reference (the steps in the module docstring);
    ``portuguese=False`` is the SQuAD v1.1 script's normalization."""
    if not portuguese:
        return squad_normalize(text)
    text = expand_honorifics(clean_answer(text))
    text = _ORDINAL.sub(r"\1", text.lower())
    text = _THOUSANDS.sub("", text)
    text = _PUNCT.sub(" ", fold_accents(text).replace("_", " "))
    return " ".join(w for w in _numbers(text.split()) if w not in ARTICLES)


def answer_tokens(text: str, portuguese: bool = True) -> list[str]:
    """Tokens of the normalized answer."""
    return normalize_answer(text, portuguese).split()
