"""The llama.cpp backend (``models.gen_llamacpp``) on the smallest bundled GGUF, as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from models.backends import choose_backend, gguf_of, make_generator
from models.gen_llamacpp import LlamaCppGenerator
from models.generation import Decoding
from models.loading import LoadOptions, load_tokenizer, resolve
from models.sources import ModelRef

SMOL = "smollm2-135m-instruct"
QUESTIONS = ["Qual é a capital do Brasil?", "Quem foi Tiradentes?", "What is 2+2?",
             "Name a color.", "Onde fica Salvador?"]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]


@pytest.fixture(scope="module")
def smol() -> tuple[ModelRef, object]:
    ref = resolve(SMOL)
    return ref, load_tokenizer(ref)


@pytest.fixture(scope="module")
def gen(smol: tuple[ModelRef, object]) -> LlamaCppGenerator:
    ref, tokenizer = smol
    gguf = gguf_of(ref)
    assert gguf is not None and gguf.suffix == ".gguf"
    return LlamaCppGenerator(gguf, tokenizer, name=SMOL, parallel=4, progress=False)


def test_chat_prompts_use_the_same_template_as_transformers(gen: LlamaCppGenerator,
                                                            smol: tuple[ModelRef, object]) -> None:
    _, tokenizer = smol
    outs = gen.generate(CHATS, Decoding(max_new_tokens=4))
    for chat, out in zip(CHATS, outs, strict=True):
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert out.prompt_tokens == len(ids)
        assert 1 <= out.completion_tokens <= 4


def test_greedy_answers_do_not_depend_on_the_batch(gen: LlamaCppGenerator) -> None:
    together = [g.text for g in gen.generate(CHATS, Decoding(max_new_tokens=12))]
    alone = [gen.generate([c], Decoding(max_new_tokens=12))[0].text for c in CHATS]
    assert together == alone and all(together)


def test_sampling_is_seeded_per_prompt(gen: LlamaCppGenerator) -> None:
    sample = Decoding(strategy="sample", max_new_tokens=12, temperature=1.0, seed=7)
    batched = gen.generate(CHATS[:3], sample)
    alone = gen.generate(CHATS[:1], sample)
    assert batched[0].text == alone[0].text
    other = {gen.generate(CHATS[:1], Decoding(strategy="sample", max_new_tokens=12,
                                               temperature=1.0, seed=s))[0].text
             for s in range(1, 6)}
    assert len(other) > 1  # the seed matters


def test_stop_strings_and_plain_text_prompts(gen: LlamaCppGenerator) -> None:
    free = gen.generate(["A capital do Brasil é"], Decoding(max_new_tokens=8))[0]
    assert free.text and free.completion_tokens <= 8
    word = free.text.split()[0]
    cut = gen.generate(["A capital do Brasil é"], Decoding(max_new_tokens=8, stop=(word,)))[0]
    assert word not in cut.text and free.text.startswith(cut.text)


def test_what_the_backend_does_not_do_is_refused(gen: LlamaCppGenerator) -> None:
    for strategy in ("beam", "contrastive", "best_of_n"):
        with pytest.raises(UserError, match="--backend transformers"):
            gen.generate(CHATS[:1], Decoding(strategy=strategy))
    with pytest.raises(UserError, match="does not score continuations"):
        gen.loglikelihood([("A capital do Brasil é", " Brasília")])
    assert gen.context_window == 4096 and gen.count_tokens("Olá mundo") > 0


def test_auto_picks_llamacpp_only_where_it_can_serve(smol: tuple[ModelRef, object],
                                                     tmp_path: Path) -> None:
    ref, _ = smol
    assert choose_backend(ref) == "llamacpp"
    assert choose_backend(ref, adapter=tmp_path) == "transformers"
    assert choose_backend(ref, options=LoadOptions(dtype="bfloat16")) == "transformers"
    assert choose_backend(ref, "transformers") == "transformers"
    folder = ModelRef("my-model", "local", str(tmp_path))
    assert gguf_of(folder) is None and choose_backend(folder) == "transformers"
    with pytest.raises(UserError, match="does not ship as a GGUF"):
        choose_backend(folder, "llamacpp")
    with pytest.raises(UserError, match="adapter"):
        choose_backend(ref, "llamacpp", adapter=tmp_path)
    with pytest.raises(UserError, match="unknown backend"):
        choose_backend(ref, "vllm")


def test_make_generator_serves_a_gguf_model_with_llamacpp() -> None:
    gen = make_generator(SMOL, batch_size=2, progress=False)
    assert isinstance(gen, LlamaCppGenerator)
    assert gen.generate(CHATS[:2], Decoding(max_new_tokens=3))[1].completion_tokens >= 1
