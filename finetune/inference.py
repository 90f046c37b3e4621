"""Inference with an adapter in the prompt format it was trained on, applied automatically.

``load_adapter_generator(ADAPTER)`` loads base + adapter (refusing another base) and wraps the
generator so that every prompt goes through the adapter's ``Format.adapt``: a bare question or
the chat messages rag builds for a chat model become exactly the prompt the adapter saw in
training, and the format's stop strings are added to the decoding. compare's ``finetuned`` and
``rag+finetuned`` systems can hand it the same prompts they give the base model::

    gen = load_adapter_generator("~/.cache/ragvsft/adapters/cpu-demo")
    gen.generate(["Quem foi Tiradentes?"])                       # closed book
    gen.generate([[{"role": "user", "content": "Contexto: … Pergunta: …"}]])  # with passages
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from core.errors import UserError
from finetune.adapter import adapter_format, load_adapter
from finetune.formats import Format
from models.generation import Decoding, Generation, Generator, Prompt
from models.loading import LoadOptions


class AdapterGenerator:
    """A ``Generator`` that renders prompts in an adapter's trained format (see module doc)."""

    def __init__(self, inner: Generator, fmt: Format) -> None:
        self.inner, self.format = inner, fmt
        self.name = inner.name

    def prompt(self, prompt: Prompt) -> Prompt:
        """What the inner generator receives for ``prompt`` (a question or chat messages)."""
        return self.format.adapt(prompt)

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """Generate with the adapted prompts; the format's stop strings end each answer."""
        stop = tuple(dict.fromkeys((*decoding.stop, *self.format.stop)))
        return self.inner.generate([self.prompt(p) for p in prompts],
                                   dataclasses.replace(decoding, stop=stop))

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Scores (context, continuation) with the context rendered as this format's prompt."""
        rendered = []
        for context, continuation in requests:
            prompt = self.prompt(context)
            rendered.append((prompt if isinstance(prompt, str) else self._chat_text(prompt),
                             continuation))
        return self.inner.loglikelihood(rendered)

    def _chat_text(self, messages: list[dict[str, str]]) -> str:
        render = getattr(self.inner, "render", None)
        if render is None:
            raise UserError(f"{self.name}: scoring chat prompts needs an in-process model")
        return str(render(messages)[0])

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (the inner generator's count)."""
        return self.inner.count_tokens(text)

    @property
    def context_window(self) -> int:
        """The inner model's window."""
        return self.inner.context_window


def load_adapter_generator(adapter_dir: str | Path, model: str | None = None,
                           options: LoadOptions = LoadOptions(), batch_size: int = 8,
                           progress: bool = True) -> AdapterGenerator:
    """Base (``model`` or the manifest's) + adapter, prompting in the adapter's format."""
    from models.gen_transformers import TransformersGenerator

    hf_model, tokenizer = load_adapter(adapter_dir, model, options)
    name = f"{model or _base_name(adapter_dir)}+{Path(adapter_dir).name}"
    inner = TransformersGenerator(hf_model, tokenizer, batch_size=batch_size, name=name,
                                  progress=progress, trust_remote_code=options.trust_remote_code)
    return AdapterGenerator(inner, adapter_format(adapter_dir))


def _base_name(adapter_dir: str | Path) -> str:
    from finetune.adapter import adapter_base

    return adapter_base(adapter_dir)
