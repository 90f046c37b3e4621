"""Generation-cache keys that cannot collide (issue 11 item 7).

Each component of what determines an answer is changed on its own, through the function that
computes it (``load_identity``, ``placement``, ``ModelSlot.identity``, ``gguf_identity``,
``adapter_identity``, ``SystemFactory``'s served identity, the decoding, the prompt), and the
cache must miss, while the unchanged identity hits. Sampled answers must not depend on the
batch: ``prompt_seed`` seeds each prompt (transformers: a per-row sampler; llama.cpp: each
request's seed).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from compare.cache import CachedGenerator, GenerationCache, cache_key
from models.adapters import adapter_identity
from models.gen_transformers import TransformersGenerator, load_identity, placement
from models.generation import Decoding, Generation, Prompt, prompt_seed
from models.loading import LoadOptions, load_model
from models.slot import ModelSlot, SlotGenerator

QUESTION = [{"role": "user", "content": "Quem foi Tiradentes?"}]


class Counting:
    """A generator that counts what it is asked to generate (a miss reaches it, a hit not)."""

    name = "counting"
    context_window = 1024

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        self.calls += len(prompts)
        return [Generation(f"answer {self.calls}", 3, 2, 0.0) for _ in prompts]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [-1.0 for _ in requests]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def served_from_cache(cache: GenerationCache, identity: dict[str, Any],
                      prompt: Prompt = "Quem foi Tiradentes?",
                      decoding: Decoding = Decoding()) -> bool:
    """Ask once through the cache: True when the answer came from it (a hit)."""
    inner = Counting()
    [out] = CachedGenerator(inner, cache, identity).generate([prompt], decoding)
    assert inner.calls == (0 if out.cached else 1)  # type: ignore[attr-defined]
    return bool(out.cached)  # type: ignore[attr-defined]


def assert_each_variant_misses(tmp_path: Path, base: dict[str, Any],
                               variants: dict[str, dict[str, Any]]) -> None:
    """``base`` misses once then hits; every variant misses against it."""
    cache = GenerationCache(tmp_path / "keys.db")
    assert not served_from_cache(cache, base)
    assert served_from_cache(cache, dict(base))  # the unchanged identity hits
    for what, identity in variants.items():
        assert identity != base, what
        assert not served_from_cache(cache, identity), f"{what}: a cache hit"
    cache.close()


# --- resolved dtype, device and quantization ---------------------------------------------


def on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def on_cuda(monkeypatch: pytest.MonkeyPatch, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_auto_dtype_is_keyed_by_what_it_resolves_to(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    on_cpu(monkeypatch)
    cpu_auto = load_identity(LoadOptions())
    assert cpu_auto == {"dtype": "float32", "device": "cpu", "quantization": None}
    assert load_identity(LoadOptions(dtype="float32")) == cpu_auto  # the same run: a hit
    on_cuda(monkeypatch)
    gpu_auto = load_identity(LoadOptions())
    assert gpu_auto == {"dtype": "bfloat16", "device": "cuda", "quantization": None}
    on_cuda(monkeypatch, bf16=False)
    old_gpu = load_identity(LoadOptions())
    assert old_gpu["dtype"] == "float16"
    assert_each_variant_misses(tmp_path, {"model": "m", **cpu_auto}, {
        "GPU bf16 (auto)": {"model": "m", **gpu_auto},
        "GPU fp16 (auto)": {"model": "m", **old_gpu}})


def test_device_types(monkeypatch: pytest.MonkeyPatch) -> None:
    on_cpu(monkeypatch)
    assert placement(None) == placement("auto") == placement("cpu") == "cpu"
    assert placement("cuda:0") == placement("cuda:1") == placement("cuda") == "cuda"
    on_cuda(monkeypatch)
    assert placement(None) == placement("auto") == "cuda"
    assert placement("cpu") == "cpu"  # asked for on a GPU machine: still the CPU
    assert placement({"": 0}) == "cuda"
    assert placement({"model.embed": 0, "lm_head": "cpu"}) == "cpu+cuda"


def test_quantization_settings_each_change_the_key(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    on_cuda(monkeypatch)
    nf4 = LoadOptions(load_in_4bit=True)  # nf4, double quant, compute dtype auto
    quant = load_identity(nf4)["quantization"]
    assert quant == {"method": "bitsandbytes", "bits": 4, "quant_type": "nf4",
                     "double_quant": True, "compute_dtype": "bfloat16", "storage": "uint8"}
    assert load_identity(dataclasses.replace(nf4, compute_dtype="bfloat16")) == load_identity(nf4)
    base = {"model": "m", **load_identity(nf4)}
    changes = {"not quantized": LoadOptions(),
               "fp4": dataclasses.replace(nf4, quant_type="fp4"),
               "no double quant": dataclasses.replace(nf4, double_quant=False),
               "fp16 compute": dataclasses.replace(nf4, compute_dtype="float16"),
               "bf16 storage": dataclasses.replace(nf4, quant_storage="bfloat16")}
    assert_each_variant_misses(tmp_path, base, {
        what: {"model": "m", **load_identity(o)} for what, o in changes.items()})


def test_slot_identity_follows_the_machine(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    on_cpu(monkeypatch)
    cpu = ModelSlot(str(tiny_llama_dir), progress=False).identity
    assert (cpu["backend"], cpu["dtype"], cpu["device"], cpu["quantization"]) == (
        "transformers", "float32", "cpu", None)
    on_cuda(monkeypatch)
    gpu = ModelSlot(str(tiny_llama_dir), progress=False).identity
    four_bit = ModelSlot(str(tiny_llama_dir), LoadOptions(load_in_4bit=True),
                         progress=False).identity
    assert (gpu["dtype"], gpu["device"]) == ("bfloat16", "cuda")
    assert four_bit["quantization"]["quant_type"] == "nf4"
    assert cpu["fingerprint"] == gpu["fingerprint"] == four_bit["fingerprint"]
    assert_each_variant_misses(tmp_path, cpu, {"GPU bf16": gpu, "GPU nf4": four_bit})


def test_a_loaded_model_reports_what_the_slot_predicted(tiny_llama_dir: Path,
                                                        tiny_adapter_dir: Path) -> None:
    slot = ModelSlot(str(tiny_llama_dir), LoadOptions(dtype="float32"), progress=False)
    predicted = SlotGenerator(slot).identity
    with slot.active(None) as gen:
        seen = gen.identity
    for key in ("dtype", "device", "quantization", "fingerprint"):
        assert seen[key] == predicted[key], key
    assert seen["lora"] is None
    model, tokenizer = load_model(str(tiny_llama_dir), LoadOptions(dtype="bfloat16"))
    half = TransformersGenerator(model, tokenizer, progress=False).identity
    assert half["dtype"] == load_identity(LoadOptions(dtype="bfloat16"))["dtype"] == "bfloat16"
    tuned, tokenizer = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"),
                                  adapter=tiny_adapter_dir)
    lora = TransformersGenerator(tuned, tokenizer, progress=False).identity["lora"]
    assert list(lora) == ["default"] and len(lora["default"]) == 64
    with torch.no_grad():
        next(p for n, p in tuned.named_parameters() if "lora_B" in n).add_(1.0)
    assert TransformersGenerator(tuned, tokenizer, progress=False).identity["lora"] != lora


# --- backend and GGUF -----------------------------------------------------------------------


def write_gguf(path: Path, file_type: int, payload: float = 0.0) -> Path:
    """A small valid GGUF: llama architecture, a context length, a file type, one tensor."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.full((4, 8), payload, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_identity_hashes_the_file_and_names_its_quantization(tmp_path: Path) -> None:
    from models.gen_llamacpp import gguf_identity

    q4 = gguf_identity(write_gguf(tmp_path / "a.gguf", 15))  # 15 = Q4_K_M in llama.cpp
    assert q4["file_type"] == "MOSTLY_Q4_K_M" and q4["file"] == "a.gguf"
    (tmp_path / "b").mkdir()
    same = Path(shutil.copy(tmp_path / "a.gguf", tmp_path / "b" / "a.gguf"))
    assert gguf_identity(same) == q4  # a copy elsewhere: the same model
    q8 = gguf_identity(write_gguf(tmp_path / "b" / "a.gguf", 7))  # 7 = Q8_0
    assert q8["file_type"] == "MOSTLY_Q8_0" and q8["sha256"] != q4["sha256"]
    other = gguf_identity(write_gguf(tmp_path / "c.gguf", 15, payload=1.0))
    assert other["file_type"] == q4["file_type"] and other["sha256"] != q4["sha256"]
    assert gguf_identity(tmp_path / "a.gguf", sha256="given")["sha256"] == "given"


def test_backend_and_gguf_file_type_change_the_slot_key(tiny_llama_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xllamacpp")
    import models.backends

    on_cpu(monkeypatch)
    transformers = ModelSlot(str(tiny_llama_dir), progress=False).identity
    ggufs = {15: write_gguf(tmp_path / "q4.gguf", 15), 7: write_gguf(tmp_path / "q8.gguf", 7)}
    identities = {}
    for file_type, path in ggufs.items():
        monkeypatch.setattr(models.backends, "gguf_of", lambda ref, path=path: path)
        slot = ModelSlot(str(tiny_llama_dir), progress=False, backend="llamacpp")
        slot.__dict__["generates_with"] = "llamacpp"  # as choose_backend picks for a GGUF
        identities[file_type] = slot.identity
    llama = identities[15]
    assert llama["backend"] == "llamacpp" and llama["device"] == "cpu"
    assert llama["gguf"]["file_type"] == "MOSTLY_Q4_K_M"
    assert llama["scoring"]["backend"] == "llamacpp"  # multiple choice is scored there too
    assert "AVX2 = 1" in llama["build"]  # the prebuilt wheel's CPU features
    # a native build of the same binding version (AVX-512 kernels: other floats)
    import xllamacpp

    monkeypatch.setattr(xllamacpp, "get_system_info",
                        lambda: "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 |")
    monkeypatch.setattr(models.backends, "gguf_of", lambda ref: ggufs[15])
    native = ModelSlot(str(tiny_llama_dir), progress=False, backend="llamacpp")
    native.__dict__["generates_with"] = "llamacpp"
    assert native.identity["versions"] == llama["versions"]
    assert_each_variant_misses(tmp_path, transformers, {"llama.cpp": llama,
                                                        "llama.cpp Q8_0": identities[7]})
    assert_each_variant_misses(tmp_path / "native", llama,
                               {"llama.cpp, native build": native.identity})


def test_how_llamacpp_batches_changes_the_slot_key(tiny_llama_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # answers batched one way are not answers batched another: none is served for the other
    pytest.importorskip("xllamacpp")
    import models.backends

    on_cpu(monkeypatch)
    gguf = write_gguf(tmp_path / "q4.gguf", 15)
    monkeypatch.setattr(models.backends, "gguf_of", lambda ref: gguf)

    def identity(**kwargs: Any) -> dict[str, Any]:
        slot = ModelSlot(str(tiny_llama_dir), progress=False, backend="llamacpp", **kwargs)
        slot.__dict__["generates_with"] = "llamacpp"
        return slot.identity

    run = identity(batch_size=8, reproducible="run")
    assert (run["slots"], run["prefix_cache"]) == (1, True)
    assert identity(batch_size=4, reproducible="run") == run  # batch_size: no effect then
    prompt = identity(batch_size=8, reproducible="prompt")
    assert (prompt["slots"], prompt["prefix_cache"]) == (1, False)
    eight, four = identity(batch_size=8), identity(batch_size=4)  # "off": the slot's default
    assert (eight["slots"], eight["prefix_cache"]) == (8, True)
    assert_each_variant_misses(tmp_path, run, {"whole prompts": prompt, "8 slots": eight,
                                               "4 slots": four})


# --- adapters --------------------------------------------------------------------------------


def write_adapter(folder: Path, weights: dict[str, bytes], config: dict[str, Any] | None = None,
                  prompt_format: str | None = "chat") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config or {"r": 8}))
    for name, data in weights.items():
        (folder / name).write_bytes(data)
    if prompt_format is not None:
        manifest = {"kind": "lora", "base_model": {"name": "m"},
                    "prompt_format": {"name": prompt_format}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("weights", ["adapter_model.safetensors", "adapter_model.bin"])
def test_every_adapter_weight_file_is_hashed(tmp_path: Path, weights: str) -> None:
    folder = write_adapter(tmp_path / "a", {weights: b"weights v1"})
    before = adapter_identity(folder)
    (folder / "README.md").write_text("notes")  # not a weight file
    (folder / "gguf").mkdir()
    (folder / "gguf" / "lora-x.gguf").write_bytes(b"derived")  # llama.cpp's export
    assert adapter_identity(folder) == before
    (folder / weights).write_bytes(b"weights v2")
    assert adapter_identity(folder)["sha256"] != before["sha256"]


def test_adapter_files_config_and_prompt_format_each_change_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"  # every variant in the same folder: only the content differs

    def identity_of(weights: dict[str, bytes], config: dict[str, Any] | None = None,
                    prompt_format: str = "chat") -> dict[str, Any]:
        shutil.rmtree(folder, ignore_errors=True)
        return {"model": "m",
                "adapter": adapter_identity(write_adapter(folder, weights, config, prompt_format))}

    both = {"adapter_model.safetensors": b"st", "adapter_model.bin": b"pt"}
    base = identity_of(both)
    assert identity_of(both) == base  # written again, byte for byte: the same adapter
    assert_each_variant_misses(tmp_path, base, {
        "safetensors bytes": identity_of({**both, "adapter_model.safetensors": b"ST"}),
        "bin bytes": identity_of({**both, "adapter_model.bin": b"PT"}),
        "bin missing": identity_of({"adapter_model.safetensors": b"st"}),
        "a second shard": identity_of({**both, "adapter_model-00002.safetensors": b"more"}),
        "config": identity_of(both, {"r": 16}),
        "prompt format": identity_of(both, prompt_format="alpaca")})


def test_a_bin_adapter_with_the_same_bytes_as_a_safetensors_one_differs(tmp_path: Path) -> None:
    st = adapter_identity(write_adapter(tmp_path / "x", {"adapter_model.safetensors": b"w"}))
    pt = adapter_identity(write_adapter(tmp_path / "y", {"adapter_model.bin": b"w"}))
    assert st["sha256"] != pt["sha256"]


# --- served models ---------------------------------------------------------------------------


def served_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, card: Any
                    ) -> dict[str, Any]:
    """The cache identity compare gives a served model whose server reports ``card`` (or
    raises it when it is an exception)."""
    import models.gen_openai
    from compare.config import ExperimentConfig
    from compare.runner import columns_for
    from compare.systems import SystemFactory

    def report(base_url: str, name: str | None = None, timeout: float = 10.0,
               **kwargs: Any) -> dict[str, Any]:
        if isinstance(card, Exception):
            raise card
        return dict(card)

    monkeypatch.setattr(models.gen_openai, "served_model_identity", report)
    cfg = ExperimentConfig(models=("served",), base_url="http://127.0.0.1:9/v1",
                           cache=str(tmp_path / "c"), systems=("base",))
    factory = SystemFactory(cfg, progress=False)
    identity = dict(factory.build(columns_for(cfg)[0], cfg).generator.identity)
    factory.close()
    return identity


def test_a_served_model_is_keyed_by_what_the_server_reports(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from models.gen_openai import ServerUnreachable

    qwen = {"id": "served", "root": "Qwen/Qwen2.5-0.5B-Instruct", "owned_by": "vllm"}
    llama = {"id": "served", "root": "meta-llama/Llama-3.2-1B-Instruct", "owned_by": "vllm"}
    base = served_identity(tmp_path, monkeypatch, qwen)
    assert base["served"] == qwen and base["model"] == "served"
    assert served_identity(tmp_path, monkeypatch, qwen) == base
    down = ServerUnreachable("no answer")
    assert_each_variant_misses(tmp_path, base, {
        "other weights, same name": served_identity(tmp_path, monkeypatch, llama),
        "server down": served_identity(tmp_path, monkeypatch, down)})
    # a server that cannot say is never answered from the cache, not even by its own entries
    cache = GenerationCache(tmp_path / "down.db")
    assert not served_from_cache(cache, served_identity(tmp_path, monkeypatch, down))
    assert not served_from_cache(cache, served_identity(tmp_path, monkeypatch, down))


# --- decoding, seed, prompt and the key's own encoding ---------------------------------------


def test_decoding_seed_and_prompt_each_change_the_key(tmp_path: Path) -> None:
    cache = GenerationCache(tmp_path / "d.db")
    identity = {"model": "m"}
    sample = Decoding(strategy="sample", seed=1)
    assert not served_from_cache(cache, identity, QUESTION, sample)
    assert served_from_cache(cache, identity, [dict(m) for m in QUESTION], Decoding(
        strategy="sample", seed=1))
    changed = {"seed": dataclasses.replace(sample, seed=2),
               "temperature": dataclasses.replace(sample, temperature=0.5),
               "top_p": dataclasses.replace(sample, top_p=0.5),
               "top_k": dataclasses.replace(sample, top_k=5),
               "max_new_tokens": dataclasses.replace(sample, max_new_tokens=64),
               "stop": dataclasses.replace(sample, stop=("\n",)),
               "strategy": dataclasses.replace(sample, strategy="greedy")}
    for what, decoding in changed.items():
        assert not served_from_cache(cache, identity, QUESTION, decoding), what
    for prompt in ([{"role": "user", "content": "Quem foi Tiradentes ?"}],
                   [{"role": "system", "content": "Quem foi Tiradentes?"}],
                   "Quem foi Tiradentes?"):  # the text alone is another prompt than the chat
        assert not served_from_cache(cache, identity, prompt, sample), prompt
    cache.close()


def test_values_json_cannot_tell_apart_are_not_confused() -> None:
    assert cache_key({"a": 1}) == cache_key({"a": 1})
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})  # key order is not data
    assert cache_key({"a": 1}) != cache_key({"a": "1"})
    assert cache_key({"a": True}) != cache_key({"a": 1})
    assert cache_key({"p": Path("/m")}) != cache_key({"p": "/m"})  # str() would have merged them
    assert cache_key({"s": {"b", "a"}}) == cache_key({"s": {"a", "b"}})
    assert cache_key({"s": {"a"}}) != cache_key({"s": ["a"]})
    assert cache_key("gen", {"m": 1}, "x") != cache_key("gen", {"m": 1, "x": None})


# --- per-prompt seeds ------------------------------------------------------------------------


def test_prompt_seed_is_the_sha256_of_seed_and_canonical_prompt() -> None:
    # expected values from the shell, independently of Python's json:
    #   printf '[7,"Quem foi Tiradentes?"]' | sha256sum                  -> 61522454...
    #   printf '[0,[{"content":"Olá","role":"user"}]]' | sha256sum       -> 7f09ad00...
    #   printf '[1,[{"content":"Olá","role":"user"}]]' | sha256sum       -> d45a7c32...
    # (first 4 bytes, big-endian, top bit cleared)
    assert prompt_seed(7, "Quem foi Tiradentes?") == 0x61522454
    assert prompt_seed(0, [{"role": "user", "content": "Olá"}]) == 0x7F09AD00
    assert prompt_seed(1, [{"content": "Olá", "role": "user"}]) == 0x545A7C32
    seeds = {prompt_seed(s, p) for s in range(20) for p in ("a", "b", "c")}
    assert len(seeds) == 60 and all(0 <= s < 2**31 for s in seeds)


PROMPTS: list[Prompt] = [
    [{"role": "user", "content": "A capital do Brasil é"}],
    [{"role": "user", "content": "Dom Pedro I proclamou a independência do Brasil em 1822 e"}],
    "hello",
]


@pytest.mark.parametrize("strategy", ["sample", "best_of_n"])
def test_a_sampled_answer_does_not_depend_on_its_batch(tiny_llama_dir: Path,
                                                       strategy: str) -> None:
    model, tokenizer = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    gen = TransformersGenerator(model, tokenizer, batch_size=4, progress=False)
    d = Decoding(strategy=strategy, max_new_tokens=10, temperature=1.0, seed=3, n=3)
    p1, p2, p3 = PROMPTS
    with_p2 = gen.generate([p1, p2], d)[0].text  # p1 after the longer p2 in the batch
    with_p3 = gen.generate([p3, p1], d)[1].text  # p1 first in the batch
    alone = gen.generate([p1], d)[0].text
    assert with_p2 == with_p3 == alone
    by_seed = {gen.generate([p1], dataclasses.replace(d, seed=s))[0].text for s in range(4)}
    assert len(by_seed) > 1  # the seed matters
    greedy = Decoding(max_new_tokens=10)
    assert gen.generate([p1, p2], greedy)[0].text == gen.generate([p1], greedy)[0].text


@pytest.mark.parametrize(("temperature", "top_k", "expected"), [
    (1.0, 0, [0.7, 0.2, 0.1]),
    # temperature 2 takes the square root of the probabilities: .837, .447, .316 (sum 1.600)
    (2.0, 0, [0.8367 / 1.6001, 0.4472 / 1.6001, 0.3162 / 1.6001]),
    (1.0, 2, [0.7 / 0.9, 0.2 / 0.9, 0.0]),  # top-k 2 drops the last token and renormalizes
])
def test_the_row_sampler_draws_from_the_warped_distribution(temperature: float, top_k: int,
                                                            expected: list[float]) -> None:
    from scipy.stats import chisquare

    from models.gen_transformers import RowSampler

    n = 4000
    d = Decoding(strategy="sample", temperature=temperature, top_k=top_k, top_p=1.0)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(n, 1)
    out = RowSampler(d, range(n))(torch.zeros(n, 1, dtype=torch.long), logits)
    picks = out.argmax(dim=1)
    assert bool((out.isfinite().sum(dim=1) == 1).all())  # one token left per row
    counts = torch.bincount(picks, minlength=3).tolist()
    kept = [i for i, p in enumerate(expected) if p > 0]
    assert all(counts[i] == 0 for i in range(3) if i not in kept)
    assert chisquare([counts[i] for i in kept], [expected[i] * n for i in kept]).pvalue > 1e-3


def test_sampling_with_one_candidate_left_is_greedy(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    gen = TransformersGenerator(model, tokenizer, batch_size=4, progress=False)
    greedy = [g.text for g in gen.generate(PROMPTS, Decoding(max_new_tokens=8))]
    for d in (Decoding(strategy="sample", max_new_tokens=8, top_k=1, seed=5),
              Decoding(strategy="sample", max_new_tokens=8, top_p=1e-6, seed=5)):
        assert [g.text for g in gen.generate(PROMPTS, d)] == greedy


def test_llamacpp_requests_carry_each_prompts_seed(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    from models.gen_llamacpp import LlamaCppGenerator

    class Server:
        def __init__(self) -> None:
            self.bodies: list[dict[str, Any]] = []

        def handle_chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
            self.bodies.append(body)
            return {"choices": [{"message": {"content": "ok"}}], "usage": {}}

        handle_completions = handle_chat_completions

    gen = LlamaCppGenerator(write_gguf(tmp_path / "m.gguf", 15), None, parallel=1,
                            progress=False)
    server = Server()
    gen._shared["server"] = server  # no llama.cpp started: only the requests are checked
    gen.generate(PROMPTS, Decoding(strategy="sample", seed=11))
    assert [b["seed"] for b in server.bodies] == [prompt_seed(11, p) for p in PROMPTS]
    assert len({b["seed"] for b in server.bodies}) == 3
    server.bodies.clear()
    gen.generate(PROMPTS, Decoding(seed=11))
    assert [b["seed"] for b in server.bodies] == [11, 11, 11]  # greedy: as before
    identity = gen.identity
    assert identity["backend"] == "llamacpp" and identity["gguf"]["file_type"] == "MOSTLY_Q4_K_M"
    assert identity["build"].startswith("CPU :")
    assert all(b["cache_prompt"] for b in server.bodies)  # batched: a slot's prefix reused


def test_without_the_prefix_cache_every_prompt_is_read_whole(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    from models.gen_llamacpp import LlamaCppGenerator

    bodies: list[dict[str, Any]] = []

    class Server:
        def handle_chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
            bodies.append(body)
            return {"choices": [{"message": {"content": "ok"}}], "usage": {}}

        handle_completions = handle_chat_completions

    gen = LlamaCppGenerator(write_gguf(tmp_path / "m.gguf", 15), None, parallel=1,
                            progress=False, prefix_cache=False)
    gen._shared["server"] = Server()
    gen.generate(PROMPTS, Decoding())
    assert [b["cache_prompt"] for b in bodies] == [False] * len(PROMPTS)
    assert (gen.identity["slots"], gen.identity["prefix_cache"]) == (1, False)
