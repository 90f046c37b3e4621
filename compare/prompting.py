"""What the compared systems send to a model: prompt templates and the adapter's prompt format.

Every system renders its question with the same instructions (``rag.prompts`` templates): the
closed-book template for ``base`` and ``finetuned``, the RAG template (with the retrieved
passages) for ``rag`` and ``rag+finetuned``. So base vs finetuned differ only in the weights, and
base vs rag only in the context. An adapter trained on a text format (``llama2``, ``mistral``,
``alpaca``) gets those instructions inside that format, as it was trained; the ``chat`` format
is the chat messages themselves, rendered by the tokenizer's chat template.

compare's default prompt set, ``short``, asks for the shortest answer (the name, date or term
asked for), so exact match and token F1 measure knowledge rather than verbosity.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from models.generation import Decoding, Prompt

if TYPE_CHECKING:
    from finetune.formats import Format

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PROMPT_SETS: dict[str, tuple[str, str]] = {
    "short": (str(PROMPTS_DIR / "short.yaml"), str(PROMPTS_DIR / "short_closed_book.yaml")),
}

Messages = list[dict[str, str]]


def template_pair(name: str) -> tuple[str, str]:
    """(RAG template, closed-book template): a compare prompt set, or a rag template name/path."""
    if name in PROMPT_SETS:
        return PROMPT_SETS[name]
    from rag.prompts import closed_book_template, load_template

    load_template(name)  # UserError naming the known templates
    return name, closed_book_template(name).path or name


def closed_book_messages(question: str, lang: str, template: str) -> Messages:
    """The closed-book chat messages for one question."""
    from rag.prompts import render_prompt

    return render_prompt(question, None, lang, template_pair(template)[1])


def rag_messages(question: str, passages: list, lang: str, template: str) -> Messages:
    """The RAG chat messages for one question and its passages."""
    from rag.prompts import render_prompt

    return render_prompt(question, passages, lang, template_pair(template)[0])


def in_format(messages: Messages, fmt: Format | None) -> Prompt:
    """The prompt as the adapter was trained (``Format.adapt``): the chat messages themselves,
    or, for a text format, the system and user turns joined into its instruction."""
    return messages if fmt is None else fmt.adapt(messages)


def format_decoding(decoding: Decoding, fmt: Format | None) -> Decoding:
    """``decoding`` plus the format's stop strings (a text format's next-turn markers)."""
    if fmt is None or not fmt.stop:
        return decoding
    stops = tuple(dict.fromkeys((*decoding.stop, *fmt.stop)))
    return dataclasses.replace(decoding, stop=stops)


def template_versions(template: str) -> dict[str, str]:
    """The versions of both templates of a prompt set (recorded in each system's fingerprint)."""
    from rag.prompts import load_template

    rag_t, closed_t = template_pair(template)
    return {"rag": load_template(rag_t).version, "closed_book": load_template(closed_t).version}
