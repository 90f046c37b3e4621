"""Choosing a backend: a server client when a ``base_url`` is given, else the model in-process.

``make_generator`` is the one entry point (``rag ask``, ``finetune pairs``, the benchmarks);
``server_generator`` gives compare's server client together with the identity that keys its
generation cache. The backends are imported when used, so importing this module costs no torch
import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from models.loading import LoadOptions

if TYPE_CHECKING:
    from models.gen_openai import OpenAIGenerator
    from models.generation import Generator
    from models.sources import ModelRef


def make_generator(model: str | Path | ModelRef, adapter: str | Path | None = None,
                   options: LoadOptions = LoadOptions(), batch_size: int = 8,
                   base_url: str | None = None, progress: bool = True) -> Generator:
    """A server client when ``base_url`` is given, else ``model`` loaded in-process (``model`` is
    a bundled name, a folder, a hub id or an already resolved ``ModelRef``; resolved once)."""
    if base_url:
        if adapter is not None:  # vLLM serves each LoRA under its own model name
            raise UserError("with --base-url, pass the adapter's served name as the model "
                            "(vLLM --lora-modules NAME=PATH) instead of an adapter path")
        gen, _ = server_generator(base_url, str(getattr(model, "name", model)), batch_size,
                                  progress)
        return gen
    from models.gen_transformers import TransformersGenerator
    from models.loading import load_model, resolve

    ref = resolve(model)
    hf_model, tokenizer = load_model(ref, options, adapter)
    label = ref.name if adapter is None else f"{ref.name}+{Path(adapter).name}"
    return TransformersGenerator(hf_model, tokenizer, batch_size=batch_size, name=label,
                                 progress=progress, trust_remote_code=options.trust_remote_code)


def server_generator(base_url: str, served_name: str, batch_size: int = 8, progress: bool = True
                     ) -> tuple[OpenAIGenerator, dict[str, Any]]:
    """An OpenAI-compatible client for ``served_name`` (``batch_size`` requests at a time) and
    the identity that keys its cached generations."""
    from models.gen_openai import OpenAIGenerator

    gen = OpenAIGenerator(base_url, served_name, max_concurrency=batch_size, progress=progress)
    return gen, {"backend": "openai", "base_url": gen.base_url, "model": served_name}


__all__ = ["make_generator", "server_generator"]
