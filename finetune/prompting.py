"""The prompt a training pair is rendered with: the evaluated system's own prompt builder.

An adapter is evaluated through ``rag.pipeline.RagPipeline``, which renders a question with a rag
template (compare's default is ``short``; closed-book systems get its closed-book companion,
``short_closed_book``) as chat messages (system + user) and then puts them in the adapter's
prompt format (``models.formats.Format.adapt``). Training renders every pair the same way,
through ``rag.prompts.render_prompt`` and ``Format.text_for``, so that the fine-tuned model sees
at training time the very system message, instruction and question layout it answers under
(prompt parity). The adapter manifest records the template, its versions and the language rule
(``TrainingPrompt.describe``), and evaluation checks it against the template it runs with.

``template=None`` keeps the former behaviour: the bare instruction as a single user turn (for a
chat template that then injects its own default system prompt), recorded as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from finetune.records import Pair
from models.formats import Format, join_input

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_TRAINING_TEMPLATE = "short"  # compare's default prompt set


@dataclass(frozen=True)
class TrainingPrompt:
    """How a pair becomes prompt text: a rag template (closed book) in the adapter's format."""

    template: str | None = DEFAULT_TRAINING_TEMPLATE
    lang: str = "auto"  # a template language, or "auto": each question's own (compare's default)

    @classmethod
    def of(cls, template: str | None, lang: str = "auto") -> TrainingPrompt:
        """From a config value: a rag template name or YAML path; ``None``/``"none"``: bare."""
        bare = template is None or template.strip().lower() in ("", "none", "null")
        if not bare:
            from rag.prompts import load_template

            load_template(str(template))  # UserError with close names on a typo
        return cls(None if bare else template, lang)

    def messages(self, pair: Pair) -> str | list[dict[str, str]]:
        """The inference prompt of the pair's question: the rag template's messages with the
        pair's passages (a context-aware pair, as ``rag``/``rag+finetuned`` ask), or its
        closed-book companion's (as ``base``/``finetuned`` ask); ``template=None``: the bare
        question."""
        question = join_input(pair.instruction, pair.input)
        if self.template is None:
            if pair.context:
                raise UserError("context-aware pairs need a prompt template (they are rendered "
                                "as the RAG prompt); set prompt_template, e.g. short")
            return question
        from rag.prompts import render_prompt

        passages = [as_passage(c) for c in pair.context] if pair.context else None
        return render_prompt(question, passages, self.lang, self.template)

    def text(self, fmt: Format, tokenizer: PreTrainedTokenizerBase, pair: Pair) -> str:
        """The text the model reads before the pair's answer (no BOS: the tokenizer adds it)."""
        if self.template is None and not pair.context:
            return fmt.prompt(pair.instruction, pair.input, tokenizer)
        return fmt.text_for(self.messages(pair), tokenizer)

    def describe(self, with_context: int = 0) -> dict[str, Any]:
        """What the adapter manifest records (``prompt``); ``with_context``: how many of the
        pairs carried passages (context-aware pairs, rendered as the RAG prompt)."""
        if self.template is None:
            return {"builder": "bare instruction (one user turn)", "template": None}
        from rag.prompts import closed_book_template, template_version

        return {"builder": "rag.prompts.render_prompt", "template": self.template,
                "closed_book_template": closed_book_template(self.template).name,
                "template_version": template_version(self.template),
                "closed_book_version": template_version(self.template, closed_book=True),
                "lang": self.lang, "passages": with_context > 0,
                "pairs_with_context": with_context}


def as_passage(record: dict[str, Any]) -> Any:
    """A stored passage (``finetune.raft.passage_record``) as the ``rag.passages.Passage`` the
    RAG prompt renders (title, section, text; the rest is bookkeeping)."""
    from rag.passages import Passage

    return Passage(row=-1, chunk_id=str(record.get("chunk_id", "")),
                   page_id=int(record.get("page_id", -1)), title=str(record["title"]),
                   section=str(record.get("section") or ""), ordinal=0,
                   text=str(record["text"]), score=0.0)


def trained_template(manifest: dict[str, Any]) -> str | None:
    """The rag template an adapter was trained with, from its manifest (``None``: trained on
    bare instructions, or an adapter from before prompt parity)."""
    prompt = manifest.get("prompt") or {}
    return prompt.get("template") if isinstance(prompt, dict) else None
