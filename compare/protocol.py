"""The one protocol every compared system speaks: answer a batch of questions with evidence.

``compare`` sees only this; how a system retrieves or which adapter it carries is its own affair
(lm-evaluation-harness's ``LM`` + ``Instance`` idea, as a ``Protocol``, no inheritance). The
named systems (``SYSTEMS``: base, rag, finetuned, rag+finetuned) are specs here, built by
``compare.systems``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.questions import Question
from core.registry import Registry


@dataclass
class SystemAnswer:
    """One system's answer to one question, with what it used and what it cost."""

    question_id: str
    output: str
    prompt: Any = ""
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    choice: int | None = None
    choice_scores: list[float] | None = None


class System(Protocol):
    """Anything ``compare run`` can put in a column."""

    name: str
    uses_retrieval: bool

    def answer(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        """Open answers, one per question, in order."""
        ...

    def choose(self, questions: Sequence[Question]) -> list[SystemAnswer]:
        """Multiple-choice answers (``choice`` set), one per question, in order."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this system's outputs (model, adapter, store hashes, prompts)."""
        ...


@dataclass(frozen=True)
class SystemSpec:
    """A named way of answering: with retrieval or not, with the adapter or not."""

    name: str
    retrieval: bool
    adapter: bool
    description: str


SYSTEMS: Registry[SystemSpec] = Registry("system")
for _spec in (
    SystemSpec("base", False, False, "the base model, closed-book"),
    SystemSpec("rag", True, False, "the base model reading passages retrieved from the store"),
    SystemSpec("finetuned", False, True, "base model + LoRA adapter, closed-book"),
    SystemSpec("rag+finetuned", True, True, "base model + LoRA adapter reading the passages"),
):
    SYSTEMS.add(_spec.name, _spec)
