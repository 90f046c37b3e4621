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


def test_read_whole_an_answer_depends_on_its_prompt_alone() -> None:
    # the default model (its K-quant kernels are not batch-invariant): with the prefix cache, the
    # first question's figures after the others moved by 0.14 nat (read from where it parts from
    # the previous prompt); read whole, they do not move, and a fresh server answers the same
    from models.sources import DEFAULT_GENERATOR

    ref = resolve(DEFAULT_GENERATOR)
    tokenizer, gguf = load_tokenizer(ref), gguf_of(ref)
    assert gguf is not None

    def fresh() -> LlamaCppGenerator:
        return LlamaCppGenerator(gguf, tokenizer, name=ref.name, parallel=1, progress=False,
                                 prefix_cache=False)

    system = {"role": "system", "content": "Responda em português, em uma frase curta."}
    chats = [[system, {"role": "user", "content": q}] for q in QUESTIONS]
    first = fresh()
    alone = first.next_token_logprobs(chats[:1], top=8)
    answers = [g.text for g in first.generate(chats, Decoding(max_new_tokens=24))]
    assert first.next_token_logprobs(chats[:1], top=8) == alone  # bit for bit
    second = fresh()
    assert [g.text for g in second.generate(chats[::-1], Decoding(max_new_tokens=24))
            ] == answers[::-1]
    assert second.next_token_logprobs(chats[:1], top=8) == alone


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
    assert gen.context_window == 4096 and gen.count_tokens("Olá mundo") > 0


LETTERS = [("Pergunta: Qual é a capital do Brasil?\nA. Rio\nB. Brasília\nC. Recife\nResposta:",
            f" {x}") for x in "ABC"]


def test_continuations_are_scored_as_transformers_scores_them(gen: LlamaCppGenerator,
                                                               smol: tuple[ModelRef, object]
                                                               ) -> None:
    """Tolerance: llama.cpp computes with 8-bit-quantized activations on the GGUF's Q4 weights
    that transformers dequantized to fp32: within 0.2 nat per continuation token (measured:
    0.03-0.15 on these), the same ranking of the letters. A continuation of an empty context
    (scored after the lone start token, log-probs of -18 and below) differs by more, about a
    nat: only its sign is checked."""
    from models.gen_transformers import TransformersGenerator
    from models.loading import load_model

    ref, tokenizer = smol
    model, _ = load_model(ref, LoadOptions(dtype="float32"), tokenizer=tokenizer)
    reference = TransformersGenerator(model, tokenizer, batch_size=4, progress=False)
    requests = [*LETTERS, ("A capital do Brasil é", " Brasília, no Distrito Federal"),
                ("", "Olá"), ("Quem foi Tiradentes?", "")]
    got, want = gen.loglikelihood(requests), reference.loglikelihood(requests)
    for g, w, (ctx, cont) in zip(got[:4], want, requests, strict=False):
        tokens = len(reference.encode_pair(ctx, cont)[1])
        assert g == pytest.approx(w, abs=0.2 * tokens), (ctx, cont)
    assert got[4] < 0 and got[-1] == want[-1] == 0.0  # an empty continuation: log 1
    rank = sorted(range(3), key=lambda i: got[i])
    assert rank == sorted(range(3), key=lambda i: want[i])


def test_scores_are_exact_sums_and_do_not_depend_on_the_batch(gen: LlamaCppGenerator,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import models.gen_llamacpp as module

    whole = ("A capital do Brasil é", " Brasília")
    ids = gen.tokenizer(whole[0] + whole[1], add_special_tokens=False)["input_ids"]
    first = len(gen.tokenizer(whole[0], add_special_tokens=False)["input_ids"])
    steps = [(gen.tokenizer.decode(ids[:i]), gen.tokenizer.decode(ids[i:i + 1]))
             for i in range(first, len(ids))]
    assert len(steps) > 1  # a multi-token continuation: one next-token read per token
    alone = gen.loglikelihood([whole])[0]
    assert alone == pytest.approx(sum(gen.loglikelihood(steps)), abs=1e-5)
    crowd = gen.loglikelihood([*LETTERS, whole, *LETTERS])
    assert crowd[3] == alone and crowd[:3] == crowd[4:]  # the company changes nothing
    assert gen.loglikelihood(LETTERS[1:2]) == crowd[1:2]
    calls: list[dict] = []
    real = module._call
    monkeypatch.setattr(module, "_call", lambda s, r: calls.append(r[1]) or real(s, r))
    monkeypatch.setattr(module, "SCORE_TOP", 1)  # two of the letters are not the top token
    fallback = gen.loglikelihood(LETTERS)
    assert [c["n_probs"] for c in calls] == [1, module.ALL_TOKENS]  # one prefix, read twice
    assert fallback == pytest.approx(crowd[:3], abs=1e-3)  # figures move ~1e-4 with n_probs
    assert not any(c["cache_prompt"] for c in calls)


def test_a_chat_multiple_choice_question_costs_one_prompt_read(gen: LlamaCppGenerator,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """lm-eval's encoding moves the chat template's closing "\\n" into each letter's
    continuation, so every letter needs the read after the prompt and the read after the prompt
    and "\\n": one request gives both (the "\\n" forced by a logit bias, the probabilities
    reported before any sampler), with the same figures as two plain reads."""
    import models.gen_llamacpp as module
    from models.scoring import encode_pair

    prompt = gen.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Capital do Brasil? A. Rio B. Brasília C. Recife"}],
        add_generation_prompt=True, tokenize=False)
    requests = [(prompt, x) for x in "ABC"]
    pairs = [encode_pair(gen.tokenizer, c, x) for c, x in requests]
    assert all(len(cont) == 2 and cont[0] == pairs[0][1][0] for _, cont in pairs)
    calls: list[dict] = []
    real = module._call
    monkeypatch.setattr(module, "_call", lambda s, r: calls.append(r[1]) or real(s, r))
    scores = gen.loglikelihood(requests)
    assert len(calls) == 1 and calls[0]["logit_bias"] == [[pairs[0][1][0], module.FORCE]]
    ctx, (newline, _) = pairs[0]
    plain = gen._token_logprobs({(tuple(ctx), None): {newline},
                                 ((*ctx, newline), None): {c[1] for _, c in pairs}})
    want = [plain[(tuple(ctx), None)][newline] + plain[((*ctx, newline), None)][cont[1]]
            for _, cont in pairs]
    assert len(calls) == 3  # the plain way: two reads
    assert scores == pytest.approx(want, abs=1e-4)


def test_a_forced_first_token_is_read_at_any_rank(gen: LlamaCppGenerator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The forced token's probability comes with the request (llama.cpp computes the chosen
    token's from the whole vocabulary), so only the second position's tokens must be among the
    top ``SCORE_TOP``: a continuation whose first token ranks low costs one request."""
    import models.gen_llamacpp as module

    context = "A capital do Brasil é"
    ctx = tuple(gen.tokenizer(context, add_special_tokens=False)["input_ids"])
    first = gen.tokenizer(" Recife", add_special_tokens=False)["input_ids"][0]
    plain = gen._token_logprobs({(ctx, None): {first}})[(ctx, None)]
    assert max(plain, key=plain.__getitem__) != first  # not the model's top token
    after = gen._token_logprobs({((*ctx, first), None): set()})[((*ctx, first), None)]
    second = max(after, key=after.__getitem__)
    continuation = gen.tokenizer.decode([first, second])
    assert gen.tokenizer(context + continuation, add_special_tokens=False)["input_ids"] == [
        *ctx, first, second]
    calls: list[dict] = []
    real = module._call
    monkeypatch.setattr(module, "_call", lambda s, r: calls.append(r[1]) or real(s, r))
    monkeypatch.setattr(module, "SCORE_TOP", 1)
    score = gen.loglikelihood([(context, continuation)])[0]
    assert [c["n_probs"] for c in calls] == [1]  # no whole-vocabulary read
    assert score == pytest.approx(plain[first] + after[second], abs=1e-3)


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
