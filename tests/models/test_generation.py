"""In-process generation on a tiny random Llama: batching, stops, strategies, scoring."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from models.backends import make_generator
from models.gen_transformers import RowSampler, TransformersGenerator
from models.generation import Decoding, Generator, apply_stop, prompt_seed

PROMPTS = [
    "A capital do Brasil",
    [{"role": "user", "content": "Quem proclamou a independência do Brasil em 1822?"}],
    "Dom",
    "The quick brown fox jumps over the lazy dog. Getúlio Vargas governou",
    [{"role": "system", "content": "hello"}, {"role": "user", "content": "olá mundo"}],
    "Lei Áurea",
    "x",
]
GREEDY = Decoding(max_new_tokens=16)


@pytest.fixture(scope="module")
def gen(tiny_llama) -> TransformersGenerator:
    model, tokenizer = tiny_llama
    return TransformersGenerator(model, tokenizer, batch_size=3, name="tiny", progress=False)


def _with_batch(gen: TransformersGenerator, size: int) -> TransformersGenerator:
    return TransformersGenerator(gen.model, gen.tokenizer, batch_size=size, progress=False)


def test_is_a_generator(gen: TransformersGenerator) -> None:
    assert isinstance(gen, Generator)


def test_batched_greedy_equals_one_by_one(gen: TransformersGenerator) -> None:
    batched = gen.generate(PROMPTS, GREEDY)
    single = _with_batch(gen, 1).generate(PROMPTS, GREEDY)
    all_in_one = _with_batch(gen, len(PROMPTS)).generate(PROMPTS[::-1], GREEDY)[::-1]
    assert [g.text for g in batched] == [g.text for g in single] == [g.text for g in all_in_one]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in single]
    assert all(g.completion_tokens == 16 and g.latency_s > 0 for g in batched)
    assert len({g.text for g in batched}) > 1


def test_chat_prompt_uses_the_template(gen: TransformersGenerator) -> None:
    text, templated = gen.render([{"role": "user", "content": "oi"}])
    assert templated and text == "<s><|user|>oi</s><|assistant|>"
    assert gen.render("raw <s> text") == ("raw <s> text", False)
    ids = gen.encode_prompt([{"role": "user", "content": "oi"}], 4)
    assert ids.count(gen.tokenizer.bos_token_id) == 1  # the template's, not a second one


def test_stop_sequence_truncates_and_stops_early(gen: TransformersGenerator) -> None:
    prompt = PROMPTS[0]
    free = gen.generate([prompt], Decoding(max_new_tokens=24))[0]
    match = re.search(r"[A-Za-z]{2,}", free.text[2:])
    assert match, f"need a word to stop on in {free.text!r}"
    stop = match.group(0)
    cut = free.text.find(stop)
    stopped = gen.generate([prompt, PROMPTS[2]], Decoding(max_new_tokens=24, stop=(stop,)))[0]
    assert stopped.text == free.text[:cut]
    assert stopped.completion_tokens < free.completion_tokens


@pytest.mark.parametrize("strategy", ["sample", "beam", "best_of_n"])
def test_strategies_are_seeded(gen: TransformersGenerator, strategy: str) -> None:
    dec = Decoding(strategy=strategy, max_new_tokens=8, seed=7, n=3, num_beams=3)
    first = [g.text for g in gen.generate(PROMPTS[:4], dec)]
    again = [g.text for g in gen.generate(PROMPTS[:4], dec)]
    assert first == again and all(isinstance(t, str) for t in first)
    if strategy == "sample":
        other = [g.text for g in gen.generate(PROMPTS[:4], Decoding(strategy=strategy,
                                                                    max_new_tokens=8, seed=8))]
        assert other != first


def test_best_of_n_picks_the_most_likely_sample(gen: TransformersGenerator) -> None:
    dec = Decoding(strategy="best_of_n", max_new_tokens=6, seed=3, n=4)
    best = gen.generate(["A capital do Brasil"], dec)[0]
    model, tok = gen.model, gen.tokenizer
    ids = tok("A capital do Brasil")["input_ids"]
    from transformers import LogitsProcessorList

    # the candidates come from the prompt's own generator (seeded by prompt_seed), drawn with
    # the decoding's temperature / top-k / top-p; transformers' warpers are off
    sampler = RowSampler(dec, [prompt_seed(3, "A capital do Brasil")], group=4)
    mask = torch.ones(1, len(ids), dtype=torch.long)
    out = model.generate(torch.tensor([ids]), attention_mask=mask, do_sample=True,
                         temperature=1.0, top_p=1.0, top_k=0, num_return_sequences=4,
                         max_new_tokens=6, eos_token_id=gen.eos_ids,
                         pad_token_id=tok.pad_token_id, repetition_penalty=1.0,
                         logits_processor=LogitsProcessorList([sampler]))
    means = []
    for row in out:
        n = gen._generated_length(row[len(ids):].tolist())
        with torch.no_grad():
            logp = torch.log_softmax(model(row[None, : len(ids) + n + 1]).logits[0], -1)
        toks = row[len(ids): len(ids) + n + 1]
        means.append(float(logp[len(ids) - 1: len(ids) - 1 + len(toks)].gather(
            -1, toks[:, None]).mean()))
    texts = [tok.decode(r[len(ids):len(ids) + gen._generated_length(r[len(ids):].tolist())],
                        skip_special_tokens=True) for r in out]
    assert len(set(texts)) > 1
    assert best.text == texts[max(range(4), key=means.__getitem__)]


def test_contrastive_search_matches_a_step_by_step_reference(gen: TransformersGenerator) -> None:
    """The project's own contrastive search (cached, candidates batched) picks the same tokens
    as a from-scratch recomputation of every step, differs from greedy for alpha > 0 and
    equals greedy for alpha = 0."""
    from models.contrastive import reference_contrastive

    prompts = ["A capital do Brasil é", "Dom Pedro I proclamou", "The quick brown fox"]
    d = Decoding(strategy="contrastive", max_new_tokens=10, top_k=4, penalty_alpha=0.6)
    outs = gen.generate(prompts, d)
    for prompt, out in zip(prompts, outs, strict=True):
        ids = gen.encode_prompt(prompt, d.max_new_tokens)
        ref = reference_contrastive(gen.model, ids, top_k=4, alpha=0.6, max_new_tokens=10,
                                    eos_ids=gen.eos_ids)
        n = gen._generated_length(ref)
        assert out.text == gen.tokenizer.decode(ref[:n], skip_special_tokens=True)
        assert out.completion_tokens == n
    greedy = gen.generate(prompts, Decoding(max_new_tokens=10))
    zero = gen.generate(prompts, Decoding(strategy="contrastive", max_new_tokens=10,
                                          penalty_alpha=0.0))
    assert [g.text for g in zero] == [g.text for g in greedy]
    assert [g.text for g in outs] != [g.text for g in greedy]


def test_loglikelihood_matches_manual_computation(gen: TransformersGenerator) -> None:
    requests = [("A capital do", " Brasil"), ("Dom Pedro ", "I proclamou"), ("", "hello world"),
                ("The quick brown fox jumps over the lazy", " dog.")]
    got = gen.loglikelihood(requests)
    assert got == pytest.approx(_with_batch(gen, 1).loglikelihood(requests), abs=1e-4)
    tok, model = gen.tokenizer, gen.model
    for (ctx, cont), value in zip(requests, got, strict=True):
        ctx, cont = (ctx.rstrip(), ctx[len(ctx.rstrip()):] + cont)
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
        row = torch.tensor([[tok.bos_token_id] + whole])
        with torch.no_grad():
            logp = torch.log_softmax(model(row).logits[0, :-1], -1)
        targets = row[0, 1:]
        manual = logp.gather(-1, targets[:, None])[n_ctx:].sum()
        assert value == pytest.approx(float(manual), abs=1e-4)
        assert value < 0


def test_tokens_and_window(gen: TransformersGenerator) -> None:
    assert gen.count_tokens("") == 0
    assert gen.count_tokens("A capital do Brasil") == len(
        gen.tokenizer("A capital do Brasil", add_special_tokens=False)["input_ids"])
    assert gen.context_window == 256


def test_long_prompt_is_cut_to_fit(gen: TransformersGenerator) -> None:
    out = gen.generate(["Brasil " * 400], Decoding(max_new_tokens=8))[0]
    assert out.prompt_tokens == gen.context_window - 8


def test_decoding_validation() -> None:
    with pytest.raises(UserError, match="Did you mean 'greedy'"):
        Decoding(strategy="greedyy")
    with pytest.raises(UserError, match="max_new_tokens"):
        Decoding(max_new_tokens=0)
    with pytest.raises(UserError, match="stop"):
        Decoding(stop="END")  # type: ignore[arg-type]


def test_apply_stop() -> None:
    assert apply_stop("abc END def STOP", ("STOP", "END")) == "abc "
    assert apply_stop("abc", ()) == "abc"


def test_make_generator_loads_a_local_folder(tiny_llama_dir: Path) -> None:
    gen = make_generator(str(tiny_llama_dir), batch_size=2, progress=False)
    assert isinstance(gen, TransformersGenerator) and gen.batch_size == 2
    assert gen.generate(["Dom"], Decoding(max_new_tokens=3))[0].completion_tokens == 3


@pytest.mark.slow
def test_bundled_smollm_batched_equals_sequential() -> None:
    try:
        from models.sources import TEST_GENERATOR, resolve_model

        resolve_model(TEST_GENERATOR)
    except (ImportError, UserError) as exc:
        pytest.skip(f"the bundled test model cannot be resolved yet: {exc}")
    prompts = [[{"role": "user", "content": "Qual a capital do Brasil?"}],
               [{"role": "user", "content": "Quem foi Dom Pedro II?"}],
               "A independência do Brasil foi proclamada em"]
    gen = make_generator(TEST_GENERATOR, batch_size=3, progress=False)
    dec = Decoding(max_new_tokens=20)
    batched = [g.text for g in gen.generate(prompts, dec)]
    gen.batch_size = 1
    assert batched == [g.text for g in gen.generate(prompts, dec)]
    assert all(t.strip() for t in batched)
