"""Optional question–answer pairs written by a generator model from the store's chunks.

The generator (any ``models.generation.Generator``) reads one chunk and writes ``N`` lines
``P: <pergunta>`` / ``R: <resposta>``; the parser keeps well-formed pairs whose answer is short
and whose question ends with "?". Each pair's ``source`` is the chunk id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.text import squash
from finetune.records import Pair
from finetune.text import clip
from models.generation import Decoding, Generator

log = logging.getLogger(__name__)

PROMPT = (
    "Leia o trecho do artigo «{title}» da Wikipédia e escreva {n} pergunta(s) factual(is) "
    "que o trecho responde, cada uma seguida da resposta curta e completa, no formato:\n"
    "P: <pergunta>\nR: <resposta>\n\nTrecho:\n{text}\n"
)
_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(P|Pergunta|Q|R|Resposta|A)\s*[:\-]\s*(.+)$", re.IGNORECASE)
QUESTION_TAGS = {"p", "pergunta", "q"}


@dataclass(frozen=True)
class ChunkText:
    """The parts of a store chunk the generator needs."""

    chunk_id: str
    title: str
    text: str


def chunk_prompt(chunk: ChunkText, n: int, max_chars: int = 1500) -> list[dict[str, str]]:
    """The chat prompt asking for ``n`` question–answer pairs about one chunk."""
    text = clip(chunk.text, max_chars)
    return [{"role": "user", "content": PROMPT.format(title=chunk.title, n=n, text=text)}]


def parse_qa(text: str, limit: int) -> list[tuple[str, str]]:
    """(question, answer) pairs from ``P: …`` / ``R: …`` lines, at most ``limit``."""
    out: list[tuple[str, str]] = []
    question: str | None = None
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        tag, body = match.group(1).lower(), squash(match.group(2))
        if tag in QUESTION_TAGS:
            question = body if body.endswith("?") else None
        elif question and body:
            out.append((question, body))
            question = None
    return out[:limit]


def generated_pairs(chunks: Iterable[ChunkText], generator: Generator, per_chunk: int,
                    max_chunks: int, batch: int = 8, max_new_tokens: int = 96
                    ) -> list[tuple[str, Pair]]:
    """(article title, pair): ``per_chunk`` pairs from each of the first ``max_chunks`` chunks."""
    selected: list[ChunkText] = []
    for chunk in chunks:
        if len(selected) >= max_chunks:
            break
        selected.append(chunk)
    decoding = Decoding(strategy="greedy", max_new_tokens=max_new_tokens * per_chunk)
    out: list[tuple[str, Pair]] = []
    for start in range(0, len(selected), batch):
        group: Sequence[ChunkText] = selected[start:start + batch]
        gens = generator.generate([chunk_prompt(c, per_chunk) for c in group], decoding)
        for chunk, gen in zip(group, gens, strict=True):
            for question, answer in parse_qa(gen.text, per_chunk):
                out.append((chunk.title, Pair(instruction=question, input="", output=answer,
                                              source=chunk.chunk_id, kind="generated")))
    log.info("generator %s wrote %d pairs from %d chunks", generator.name, len(out), len(selected))
    return out
