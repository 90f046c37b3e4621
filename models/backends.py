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


BACKENDS = ("auto", "transformers", "llamacpp")


def gguf_of(ref: ModelRef) -> Path | None:
    """The GGUF file a resolved model ships as (a bundled generator, or a local ``.gguf``)."""
    if ref.kind == "bundled":
        from models.bundled import BUNDLED, gguf_file

        return gguf_file(ref.name) if BUNDLED.get(ref.name).kind == "generator" else None
    if ref.kind == "local" and ref.name.lower().endswith(".gguf"):
        return Path(ref.name).expanduser()
    return None


def ships_as_gguf(ref: ModelRef) -> bool:
    """Whether ``gguf_of`` has a GGUF for ``ref``, without joining a multi-part file to find out."""
    if ref.kind == "bundled":
        from models.bundled import BUNDLED

        return BUNDLED.get(ref.name).kind == "generator"
    return ref.kind == "local" and ref.name.lower().endswith(".gguf")


def choose_backend(ref: ModelRef, backend: str = "auto", options: LoadOptions = LoadOptions(),
                   adapter: str | Path | None = None) -> str:
    """"llamacpp" or "transformers" for ``ref``. ``auto`` picks llama.cpp for a model that ships
    as GGUF, on a machine without CUDA, with default load options and, if any, an adapter that
    llama.cpp's LoRA format can hold; ``llamacpp`` asked for where it cannot serve is a
    ``UserError``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "transformers":
        return backend
    from models.gen_llamacpp import binding_available

    reasons = []
    if not ships_as_gguf(ref):
        reasons.append(f"{ref.name} does not ship as a GGUF file")
    if options != LoadOptions():
        reasons.append("load options (dtype, 4-bit, device map) are transformers' settings")
    if adapter is not None:
        from models.lora_gguf import unsupported_features

        reasons += [f"the adapter: {why}" for why in unsupported_features(adapter)]
    if not binding_available():
        reasons.append("xllamacpp is not installed")
    if backend == "llamacpp":
        if reasons:
            raise UserError(f"--backend llamacpp cannot serve this: {'; '.join(reasons)}; use "
                            "--backend transformers")
        return backend
    import torch

    return "transformers" if reasons or torch.cuda.is_available() else "llamacpp"


def make_generator(model: str | Path | ModelRef, adapter: str | Path | None = None,
                   options: LoadOptions = LoadOptions(), batch_size: int = 8,
                   base_url: str | None = None, progress: bool = True,
                   backend: str = "auto") -> Generator:
    """A server client when ``base_url`` is given, else ``model`` loaded in-process (``model`` is
    a bundled name, a folder, a hub id or an already resolved ``ModelRef``; resolved once) on
    the ``backend`` ``choose_backend`` picks (llama.cpp for a GGUF model on a CPU)."""
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
    if choose_backend(ref, backend, options, adapter) == "llamacpp":
        from models.gen_llamacpp import LlamaCppGenerator
        from models.loading import load_tokenizer

        gguf = gguf_of(ref)
        assert gguf is not None  # choose_backend checked it
        loras = []
        if adapter is not None:
            from models.loading import check_adapter_base
            from models.lora_gguf import export_lora_gguf

            check_adapter_base(Path(adapter).expanduser(), ref)  # another base: refused
            loras.append(export_lora_gguf(adapter, gguf))
        fast = LlamaCppGenerator(gguf, load_tokenizer(ref), name=ref.name, parallel=batch_size,
                                 progress=progress, loras=loras)
        return fast if adapter is None else fast.with_adapter(0, f"{ref.name}+{Path(adapter).name}")
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
