"""Fitting retrieved passages into the model's window: the token budget and truncation policy.

**Budget.** The context gets ``window - max_new_tokens - overhead`` tokens, where ``overhead`` is
the prompt rendered with an empty context (system and user messages, counted with the
generator's own ``count_tokens``) plus ``CHAT_TOKENS_PER_MESSAGE`` per message for the chat
template's role markers and a ``SAFETY_TOKENS`` margin (token counts of parts and of the whole
differ by a token here and there). An explicit ``context_tokens`` lowers that budget, never
raises it. A question whose prompt leaves no room for the context (question + instructions +
``max_new_tokens`` over the window) is refused with one ``UserError``.

**Truncation.** Passages are kept in rank order while they fit; the first passage that does not
fit and every passage after it are dropped, so the context is always the top ``m``. Only when
the very first passage alone does not fit is it truncated: to its longest whole-sentence prefix
that fits (the longest word prefix if not even one sentence does), so a question never gets an
empty context when retrieval found something.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from core.errors import UserError
from core.text import split_sentences
from rag.passages import Passage
from rag.prompts import CONTEXT_SEPARATOR, format_passage, render_prompt

CHAT_TOKENS_PER_MESSAGE = 8
SAFETY_TOKENS = 16

Counter = Callable[[str], int]


@dataclass(frozen=True)
class Fitted:
    """The passages that fit, and what was spent and left out."""

    passages: list[Passage]
    budget: int
    used: int
    dropped: int
    truncated: bool


def prompt_tokens(messages: Sequence[dict[str, str]], count: Counter) -> int:
    """Tokens of chat ``messages`` as the model will see them (contents + role markers)."""
    return sum(count(m["content"]) + CHAT_TOKENS_PER_MESSAGE for m in messages) + SAFETY_TOKENS


def context_budget(question: str, count: Counter, window: int, max_new_tokens: int,
                   lang: str = "pt", template: str = "default",
                   context_tokens: int | None = None, closed_book: bool = False) -> int:
    """Tokens left for the context; ``UserError`` when the question alone overflows the window."""
    empty = render_prompt(question, None if closed_book else [], lang, template)
    overhead = prompt_tokens(empty, count)
    left = window - max_new_tokens - overhead
    if left < (0 if closed_book else 1):
        raise UserError(
            f"the question ({count(question)} tokens) with the prompt's instructions "
            f"({overhead} tokens in all) and max_new_tokens={max_new_tokens} does not fit the "
            f"model's {window}-token window; shorten the question or lower --max-new-tokens")
    if context_tokens is not None:
        if context_tokens < 1:
            raise UserError(f"context_tokens must be at least 1, not {context_tokens}")
        left = min(left, context_tokens)
    return left


def fit_passages(passages: Sequence[Passage], budget: int, count: Counter, lang: str = "pt",
                 template: str = "default") -> Fitted:
    """Apply the truncation policy (module docstring) to ``passages`` under ``budget`` tokens."""
    sep = count(CONTEXT_SEPARATOR)
    kept: list[Passage] = []
    used = 0
    for i, passage in enumerate(passages):
        cost = count(format_passage(i + 1, passage, lang, template)) + (sep if i else 0)
        if used + cost <= budget:
            kept.append(passage)
            used += cost
            continue
        if i == 0:
            cut = truncate_passage(passage, budget, count, lang, template)
            used = count(format_passage(1, cut, lang, template))
            return Fitted([cut], budget, used, len(passages) - 1, True)
        break
    return Fitted(kept, budget, used, len(passages) - len(kept), False)


def truncate_passage(passage: Passage, budget: int, count: Counter, lang: str = "pt",
                     template: str = "default") -> Passage:
    """The passage cut to its longest sentence prefix (else word prefix) that fits ``budget``."""
    def fits(text: str) -> bool:
        return count(format_passage(1, replace(passage, text=text), lang, template)) <= budget

    sentences = split_sentences(passage.text, keep_whitespace=True)
    n = _longest(len(sentences), lambda m: fits("".join(sentences[:m]).rstrip()))
    if n:
        return replace(passage, text="".join(sentences[:n]).rstrip())
    tokens = passage.text.split()
    n = _longest(len(tokens), lambda m: fits(" ".join(tokens[:m]) + " …"))
    return replace(passage, text=" ".join(tokens[:max(n, 1)]) + " …")


def _longest(n: int, ok: Callable[[int], bool]) -> int:
    """The largest m in 0..n with ok(m) (ok is monotone: true up to some m); binary search."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
