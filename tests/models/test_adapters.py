"""Reading adapter dirs (``models.adapters``): the manifest's format and base, the identity that
keys compare's cache, and ``AdapterGenerator`` applying the trained format automatically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import UserError
from models.adapters import (
    AdapterGenerator,
    adapter_base,
    adapter_format,
    adapter_format_name,
    adapter_identity,
    check_adapter_dir,
    prompt_format_of,
)
from models.formats import get_format
from models.generation import Decoding, Generation


class Recorder:
    """A canned generator recording the prompts and decoding it receives."""

    name = "recorder"
    context_window = 128

    def __init__(self) -> None:
        self.prompts: list = []
        self.decoding: Decoding | None = None
        self.scored: list = []

    def generate(self, prompts, decoding=Decoding()):
        self.prompts, self.decoding = list(prompts), decoding
        return [Generation("ok", 1, 1, 0.0) for _ in prompts]

    def loglikelihood(self, requests):
        self.scored = list(requests)
        return [0.0 for _ in requests]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def write_adapter(folder: Path, fmt: str | None, weights: bytes = b"w") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    if fmt is not None:
        (folder / "manifest.json").write_text(json.dumps(
            {"prompt_format": {"name": fmt}, "base_model": {"name": "base-m"}}))
    return folder


def test_prompts_take_the_trained_format_and_its_stop_strings() -> None:
    inner = Recorder()
    gen = AdapterGenerator(inner, get_format("mistral"))
    messages = [{"role": "system", "content": "Use o contexto."},
                {"role": "user", "content": "Quem foi Vargas?"}]
    out = gen.generate(["Quem foi Cabral?", messages], Decoding(max_new_tokens=4, stop=("\n\n",)))
    assert [g.text for g in out] == ["ok", "ok"]
    assert inner.prompts == ["###Human: Quem foi Cabral? ###Assistant:",
                             "###Human: Use o contexto.\n\nQuem foi Vargas? ###Assistant:"]
    assert inner.decoding.stop == ("\n\n", "###Human:", "### Human:")
    assert inner.decoding.max_new_tokens == 4
    gen.loglikelihood([("Quem foi Cabral?", " Um navegador.")])
    assert inner.scored == [("###Human: Quem foi Cabral? ###Assistant:", " Um navegador.")]
    assert gen.count_tokens("a b") == 2 and gen.context_window == 128


def test_chat_adapters_get_messages_unchanged() -> None:
    inner = Recorder()
    gen = AdapterGenerator(inner, get_format("chat"))
    gen.generate(["Quem foi Cabral?"])
    assert inner.prompts == [[{"role": "user", "content": "Quem foi Cabral?"}]]
    assert inner.decoding.stop == ()


def test_manifest_format_base_and_identity(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a", "llama2")
    assert adapter_format(folder).name == prompt_format_of(str(folder)).name == "llama2"
    assert adapter_base(folder) == "base-m"
    ident = adapter_identity(str(folder))
    assert ident["format"] == "llama2" and ident["path"] == str(folder.resolve())
    assert len(ident["sha256"]) == 64
    write_adapter(folder, "llama2", weights=b"other")
    assert adapter_identity(folder)["sha256"] != ident["sha256"]


def test_bare_peft_folder_is_prompted_as_chat_and_missing_folder_says_how(tmp_path: Path,
                                                                          caplog) -> None:
    bare = write_adapter(tmp_path / "bare", None)
    assert adapter_format_name(bare) == "chat" and "no manifest.json" in caplog.text
    with pytest.raises(UserError, match="not a LoRA adapter folder.*finetune train.*drop it"):
        check_adapter_dir(tmp_path / "nothing", hint="or drop it")
    with pytest.raises(UserError, match="has no manifest.json"):
        adapter_format(bare)
