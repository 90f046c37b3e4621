"""Reading a LoRA adapter dir: its manifest, prompt format, base model, identity; loading it.

``finetune train`` writes the adapter (peft's ``adapter_config.json`` + weights) and its
``manifest.json`` (base model name and fingerprint, prompt format, training config and
outcome). Everything that only READS such a folder lives here, so rag and compare use adapters
without depending on finetune:

- ``read_manifest``, ``adapter_format`` (the ``models.formats.Format`` to prompt it with),
  ``adapter_base`` (the base model's name), ``training_load_options``;
- ``check_adapter_dir`` (a ``UserError`` saying how to make one), ``adapter_format_name``
  (lenient: a bare peft folder is prompted with the chat template), ``adapter_identity`` (what
  keys compare's generation cache);
- ``load_adapter`` (base + adapter, another base than trained on refused) and
  ``load_adapter_generator``, whose ``AdapterGenerator`` renders every prompt in the adapter's
  trained format::

      gen = load_adapter_generator("~/.cache/ragvsft/adapters/cpu-demo")
      gen.generate(["Quem foi Tiradentes?"])                       # closed book
      gen.generate([[{"role": "user", "content": "Contexto: … Pergunta: …"}]])  # with passages
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.hashing import sha256_file
from models.formats import Format, get_format
from models.generation import Decoding, Generation, Generator, Prompt
from models.loading import LoadOptions, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CONFIG = "adapter_config.json"
ADAPTER_FILES = (CONFIG, "adapter_model.safetensors", "adapter_model.bin")  # peft's names
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def read_manifest(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter's manifest; UserError when the folder is not one of ours."""
    path = Path(adapter_dir).expanduser() / MANIFEST
    if not path.is_file():
        raise UserError(f"{adapter_dir} has no {MANIFEST}; pass a folder written by "
                        "`finetune train`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg})") from None


def adapter_format(adapter_dir: str | Path) -> Format:
    """The prompt format the adapter (or merged model) was trained with: apply it at inference."""
    fmt = read_manifest(adapter_dir).get("prompt_format") or {}
    name = fmt.get("name") if isinstance(fmt, dict) else fmt
    if not name:
        raise UserError(f"{adapter_dir}/{MANIFEST} does not record a prompt format")
    return get_format(str(name))


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model name recorded in the manifest."""
    base = read_manifest(adapter_dir).get("base_model") or {}
    name = base.get("name") if isinstance(base, dict) else base
    if not name:
        raise UserError(f"{adapter_dir}/{MANIFEST} does not name its base model")
    return str(name)


def training_load_options(adapter_dir: str | Path) -> LoadOptions:
    """How the base was loaded for training (4-bit or not): to evaluate exactly that model."""
    config = read_manifest(adapter_dir).get("config") or {}
    fields = ("dtype", "load_in_4bit", "quant_type", "double_quant", "compute_dtype")
    return LoadOptions(**{k: config[k] for k in fields if k in config})


def check_adapter_dir(adapter_dir: str | Path, hint: str = "") -> Path:
    """The adapter folder, or a ``UserError`` saying how to make one (``hint``: the caller's
    other way out, e.g. "or drop the finetuned systems")."""
    folder = Path(adapter_dir).expanduser()
    if not (folder / CONFIG).is_file():
        raise UserError(f"adapter {folder} does not exist or is not a LoRA adapter folder; train "
                        "one with `finetune train --config cpu-demo --pairs PAIRS --out DIR` "
                        "(`python -m demo` builds the default one)"
                        + (f", {hint}" if hint else ""))
    return folder


def adapter_format_name(adapter_dir: str | Path) -> str:
    """The prompt format recorded in the adapter's manifest ("chat" for a bare peft folder)."""
    folder = Path(adapter_dir).expanduser()
    if not (folder / MANIFEST).is_file():
        log.warning("adapter %s has no %s (not written by `finetune train`): prompting it with "
                    "the chat template", folder, MANIFEST)
        return "chat"
    return adapter_format(folder).name


def prompt_format_of(adapter_dir: str | Path) -> Format:
    """The ``Format`` to prompt the adapter with (``adapter_format_name``'s, looked up)."""
    return get_format(adapter_format_name(adapter_dir))


def trained_prompt(adapter_dir: str | Path) -> dict[str, Any] | None:
    """The manifest's record of the prompt the adapter was trained on (``prompt``: the rag
    template and its versions, written by ``finetune.prompting``), or ``None`` for an adapter
    without one (trained on bare instructions, before prompt parity, or not by this project)."""
    folder = Path(adapter_dir).expanduser()
    if not (folder / MANIFEST).is_file():
        return None
    record = read_manifest(folder).get("prompt")
    return record if isinstance(record, dict) and record.get("template") else None


def adapter_files(adapter_dir: str | Path) -> list[Path]:
    """The files that determine an adapter's outputs: ``adapter_config.json`` and every weight
    file at the top of the folder (``adapter_model.safetensors``, ``adapter_model.bin``, shards,
    any ``.safetensors``/``.bin``/``.pt``/``.pth``), sorted by name. The manifest and the
    llama.cpp export under ``gguf/`` (derived from these) are not among them."""
    folder = Path(adapter_dir).expanduser()
    return sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name == CONFIG or p.name.startswith("adapter_model") or p.suffix in WEIGHT_SUFFIXES))


def adapter_identity(adapter_dir: str | Path) -> dict[str, Any]:
    """What keys the generations of an adapter: its path, a sha256 over the name and sha256 of
    every file of ``adapter_files`` (config and each weight file, whatever its format), the
    prompt format it is prompted with and the manifest's record of it (None for a bare peft
    folder)."""
    folder = check_adapter_dir(adapter_dir)
    digest = hashlib.sha256()
    for path in adapter_files(folder):
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    recorded = (read_manifest(folder).get("prompt_format")
                if (folder / MANIFEST).is_file() else None)
    return {"path": str(folder.resolve()), "sha256": digest.hexdigest(),
            "format": adapter_format_name(folder), "prompt_format": recorded}


def load_adapter(adapter_dir: str | Path, model: str | Path | None = None,
                 options: LoadOptions = LoadOptions()
                 ) -> tuple[Any, PreTrainedTokenizerBase]:
    """Base (``model`` or the manifest's) + adapter; another base than trained on is refused."""
    manifest = read_manifest(adapter_dir)
    name = model or adapter_base(adapter_dir)
    if manifest.get("kind") in ("full", "merged"):
        if model is not None:
            raise UserError(f"{adapter_dir} is a complete model, not an adapter: "
                            f"pass it as --model {adapter_dir}")
        return load_model(str(adapter_dir), options)
    return load_model(name, options, adapter=adapter_dir)


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
        return self.inner.generate([self.prompt(p) for p in prompts],
                                   self.format.with_stops(decoding))

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


def load_adapter_generator(adapter_dir: str | Path, model: str | Path | None = None,
                           options: LoadOptions = LoadOptions(), batch_size: int = 8,
                           progress: bool = True) -> AdapterGenerator:
    """Base (``model`` or the manifest's) + adapter, prompting in the adapter's format."""
    from models.gen_transformers import TransformersGenerator

    hf_model, tokenizer = load_adapter(adapter_dir, model, options)
    name = f"{model or adapter_base(adapter_dir)}+{Path(adapter_dir).name}"
    inner = TransformersGenerator(hf_model, tokenizer, batch_size=batch_size, name=name,
                                  progress=progress, trust_remote_code=options.trust_remote_code)
    return AdapterGenerator(inner, adapter_format(adapter_dir))


__all__ = ["ADAPTER_FILES", "MANIFEST", "AdapterGenerator", "adapter_base", "adapter_files",
           "adapter_format", "adapter_format_name", "adapter_identity", "check_adapter_dir",
           "load_adapter", "load_adapter_generator", "prompt_format_of", "read_manifest",
           "training_load_options"]
