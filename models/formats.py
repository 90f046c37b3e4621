"""Prompt formats as a registry: how an (instruction, input, output) triple becomes text.

The same ``Format`` serves training and inference. At training time ``finetune.dataset``
tokenizes ``prompt`` and ``completion`` separately (loss on the completion only) and appends the
tokenizer's EOS token id; at inference ``inference_prompt`` gives exactly the prompt the model
was trained on, in the form ``models.generation.Generator.generate`` takes (plain text, or chat
messages rendered with the tokenizer's chat template), and ``adapt`` turns any prompt a caller
built for a chat model (rag's messages, a bare question) into this format. The adapter's
``manifest.json`` records the format's name; ``models.adapters.adapter_format`` looks it up again,
``rag.pipeline.RagPipeline`` applies it to the prompts it sends, and
``models.adapters.AdapterGenerator`` applies it to every prompt automatically.

BOS is never written into the text: the tokenizer adds it (Llama's ``<s>``), exactly as the
generator does for a plain-text prompt; so ``llama2`` renders ``[INST] q [/INST] a </s>`` and
tokenizes to the published ``<s>[INST] q [/INST] a </s>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.registry import Registry
from models.generation import Decoding

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PromptFn = Callable[[str, str], str]


@dataclass(frozen=True)
class Format:
    """A prompt format: prompt text, the completion's prefix and end marker, stop strings."""

    name: str
    description: str
    build: PromptFn | None  # (instruction, input) -> prompt text; None for the chat template
    answer_prefix: str = " "
    eos_separator: str = ""  # between the answer and the EOS marker in ``render``
    default_eos: str = "</s>"  # written by ``render`` when no tokenizer is given
    stop: tuple[str, ...] = ()  # strings that start a new turn: cut generations there

    @property
    def uses_chat_template(self) -> bool:
        """True for the tokenizer's own chat template (prompt given as chat messages)."""
        return self.build is None

    def messages(self, instruction: str, input: str = "") -> list[dict[str, str]]:
        """The prompt as one user turn (what the chat format sends to the chat template)."""
        return [{"role": "user", "content": join_input(instruction, input)}]

    def prompt(self, instruction: str, input: str = "",
               tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        """The text the model reads before its answer (no BOS: the tokenizer adds it)."""
        if self.build is not None:
            return self.build(instruction.strip(), input.strip())
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError(f"prompt format {self.name!r} needs a tokenizer with a chat template; "
                            "pick --format llama2, mistral or alpaca for a base model")
        return str(tokenizer.apply_chat_template(self.messages(instruction, input),
                                                 tokenize=False, add_generation_prompt=True))

    def inference_prompt(self, instruction: str, input: str = "") -> str | list[dict[str, str]]:
        """The prompt for ``Generator.generate``: text, or chat messages for the chat format."""
        if self.build is None:
            return self.messages(instruction, input)
        return self.prompt(instruction, input)

    def adapt(self, prompt: str | Sequence[dict[str, str]]) -> str | list[dict[str, str]]:
        """A bare question (str) or chat messages, as the prompt this format was trained on.

        The chat format keeps messages as they are; the text formats join the system and user
        turns (earlier assistant turns marked as such) into the instruction, in order.
        """
        if isinstance(prompt, str):
            return self.inference_prompt(prompt)
        if self.build is None:
            return [dict(m) for m in prompt]
        return self.prompt(messages_text(prompt))

    def text_for(self, prompt: str | Sequence[dict[str, str]],
                 tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        """The text the model reads before its answer for an inference prompt (a bare question
        or chat messages): ``adapt``, then, for the chat format, the tokenizer's chat template
        with the generation prompt, as a generator renders it. Training renders its pairs
        through this, so the adapter learns on the prompt it is evaluated with."""
        adapted = self.adapt(prompt)
        if isinstance(adapted, str):
            return adapted
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError(f"prompt format {self.name!r} needs a tokenizer with a chat template; "
                            "pick --format llama2, mistral or alpaca for a base model")
        return str(tokenizer.apply_chat_template(adapted, tokenize=False,
                                                 add_generation_prompt=True))

    def with_stops(self, decoding: Decoding) -> Decoding:
        """``decoding`` plus this format's stop strings (a text format's next-turn markers)."""
        if not self.stop:
            return decoding
        return dataclasses.replace(decoding, stop=tuple(dict.fromkeys((*decoding.stop,
                                                                        *self.stop))))

    def completion(self, output: str) -> str:
        """The answer text as trained (its prefix included; EOS is appended as a token id)."""
        return self.answer_prefix + output.strip()

    def render(self, instruction: str, input: str = "", output: str | None = None,
               tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        """Prompt only (``output=None``, for inference), or the full example with its EOS text."""
        text = self.prompt(instruction, input, tokenizer)
        if output is None:
            return text
        eos = tokenizer.eos_token if tokenizer is not None and tokenizer.eos_token else None
        return text + self.completion(output) + self.eos_separator + (eos or self.default_eos)

    def describe(self) -> dict[str, Any]:
        """What the adapter manifest records about the format."""
        return {"name": self.name, "description": self.description,
                "uses_chat_template": self.uses_chat_template,
                "answer_prefix": self.answer_prefix, "stop": list(self.stop)}


def messages_text(messages: Sequence[dict[str, str]]) -> str:
    """Chat messages as one instruction: contents in order, assistant turns labelled."""
    parts = []
    for message in messages:
        content = str(message.get("content") or "").strip()
        if not content:
            continue
        parts.append(f"Assistente: {content}" if message.get("role") == "assistant" else content)
    if not parts:
        raise UserError("the prompt's messages are all empty; nothing to ask the model")
    return "\n\n".join(parts)


def join_input(instruction: str, input: str) -> str:
    """Instruction, then the optional input after a blank line."""
    instruction, input = instruction.strip(), input.strip()
    return f"{instruction}\n\n{input}" if input else instruction


FORMATS: Registry[Format] = Registry("prompt format")

FORMATS.add("llama2", Format(
    name="llama2", description="Llama-2 instruction format: <s>[INST] … [/INST] … </s>",
    build=lambda i, x: f"[INST] {join_input(i, x)} [/INST]",
    eos_separator=" ", stop=("[INST]",)))

FORMATS.add("mistral", Format(
    name="mistral", description="Guanaco-style turns: ###Human: … ###Assistant: …",
    build=lambda i, x: f"###Human: {join_input(i, x)} ###Assistant:",
    stop=("###Human:", "### Human:")))

ALPACA_HEADER = ("Below is an instruction that describes a task{ctx}. "
                 "Write a response that appropriately completes the request.")


def _alpaca(instruction: str, input: str) -> str:
    if input:
        header = ALPACA_HEADER.format(ctx=", paired with an input that provides further context")
        return (f"{header}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
                "### Response:\n")
    return f"{ALPACA_HEADER.format(ctx='')}\n\n### Instruction:\n{instruction}\n\n### Response:\n"


FORMATS.add("alpaca", Format(
    name="alpaca", description="Stanford Alpaca: ### Instruction / ### Input / ### Response",
    build=_alpaca, answer_prefix="", stop=("### Instruction:",)))

FORMATS.add("chat", Format(
    name="chat", description="the tokenizer's own chat template (one user turn, one answer)",
    build=None, answer_prefix="", default_eos=""))


def get_format(name: str) -> Format:
    """The registered format ``name`` (UserError with close matches otherwise)."""
    return FORMATS.get(name)
