"""A PEFT LoRA exported to llama.cpp's GGUF LoRA format answers like transformers + peft."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import UserError
from models.backends import gguf_of
from models.gen_llamacpp import LlamaCppGenerator
from models.generation import Decoding
from models.loading import LoadOptions, load_model, load_tokenizer, resolve
from models.lora_gguf import export_lora_gguf, permute_rows

SMOL = "smollm2-135m-instruct"
QUESTIONS = ["Qual é a capital do Brasil?", "Quem foi Tiradentes?", "What is 2+2?",
             "Name a color.", "Onde fica Salvador?", "Who wrote Hamlet?", "Conte até cinco.",
             "Qual é o maior rio do Brasil?"]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]
GREEDY = Decoding(max_new_tokens=16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """smollm2 with a random LoRA (B drawn, not zero) on every linear layer, saved by peft."""
    from peft import LoraConfig, get_peft_model

    ref = resolve(SMOL)
    tokenizer = load_tokenizer(ref)
    model, _ = load_model(ref, LoadOptions(dtype="float32"))
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                  target_modules="all-linear"))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    folder = tmp_path_factory.mktemp("smol-lora")
    peft_model.save_pretrained(folder)
    peft_model.eval()
    return ref, tokenizer, peft_model, folder


def test_permutation_matches_llamacpps_converter() -> None:
    rows = np.arange(8, dtype=np.float32)[:, None]
    assert permute_rows(rows, heads=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def _hf_logprobs(model, tokenizer, chat) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)


def test_llamacpp_with_the_adapter_tracks_transformers_and_peft(trained) -> None:
    """Tolerance: llama.cpp multiplies the same Q4_1 weights (that transformers dequantized to
    fp32) with 8-bit-quantized activations, so log-probabilities differ by a few hundredths of
    a nat (up to ~0.2 on one token); the adapter moves them by a quarter nat. On each prompt's
    five likeliest first tokens: the same top token wherever transformers' two likeliest are
    more than 0.4 nat apart (else one of those two: a near tie may flip), mean |Δ log p| < 0.1
    against transformers + peft, and at least 3× closer to it than to the base model."""
    ref, tokenizer, peft_model, folder = trained
    lora = export_lora_gguf(folder, gguf_of(ref))
    gen = LlamaCppGenerator(gguf_of(ref), tokenizer, parallel=4, progress=False, loras=[lora])
    tuned, base = gen.with_adapter(0).next_token_logprobs(CHATS), gen.next_token_logprobs(CHATS)
    to_tuned = to_base = base_gap = 0.0
    n = 0
    for chat, top, top_base in zip(CHATS, tuned, base, strict=True):
        hf_tuned = _hf_logprobs(peft_model, tokenizer, chat)
        with peft_model.disable_adapter():
            hf_base = _hf_logprobs(peft_model, tokenizer, chat)
        for ours, theirs in ((top, hf_tuned), (top_base, hf_base)):
            best, second = (int(t) for t in theirs.topk(2).indices)
            near_tie = float(theirs[best] - theirs[second]) <= 0.4
            assert max(ours, key=ours.get) in ((best, second) if near_tie else (best,))
        for token, logp in top.items():
            to_tuned += abs(logp - float(hf_tuned[token]))
            to_base += abs(logp - float(hf_base[token]))
            n += 1
        base_gap += sum(abs(v - float(hf_base[t])) for t, v in top_base.items()) / len(top_base)
    assert to_tuned / n < 0.1 and to_tuned * 3 < to_base, (to_tuned / n, to_base / n)
    assert base_gap / len(CHATS) < 0.1  # the base view of the same loaded model: adapter off
    greedy = [g.text for g in gen.with_adapter(0).generate(CHATS, GREEDY)]
    assert greedy != [g.text for g in gen.generate(CHATS, GREEDY)]


def test_the_export_is_cached_and_keyed_by_the_adapters_sha256(trained, tmp_path: Path) -> None:
    ref, _, _, folder = trained
    first = export_lora_gguf(folder, gguf_of(ref))
    stamp = first.stat().st_mtime_ns
    assert export_lora_gguf(folder, gguf_of(ref)) == first and first.stat().st_mtime_ns == stamp
    assert first.parent == folder / "gguf"
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed, ignore=shutil.ignore_patterns("gguf"))
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(changed / "adapter_model.safetensors"))
    key = next(k for k in weights if "lora_B" in k)
    weights[key] = weights[key] + 1.0
    save_file(weights, str(changed / "adapter_model.safetensors"))
    assert export_lora_gguf(changed, gguf_of(ref)).name != first.name


def test_an_adapter_for_another_model_is_refused(trained, tmp_path: Path) -> None:
    ref, _, _, folder = trained
    other = tmp_path / "other"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("gguf"))
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(other / "adapter_model.safetensors"))
    key = next(k for k in weights if "q_proj.lora_A" in k)
    weights[key] = np.zeros((8, 64), dtype=np.float32)  # a 64-wide model's q_proj
    save_file(weights, str(other / "adapter_model.safetensors"))
    with pytest.raises(UserError, match="trained on another model"):
        export_lora_gguf(other, gguf_of(ref))


def test_what_llamacpp_cannot_hold_is_refused(trained, tmp_path: Path) -> None:
    ref, _, _, folder = trained
    dora = tmp_path / "dora"
    shutil.copytree(folder, dora, ignore=shutil.ignore_patterns("gguf"))
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(UserError, match="DoRA"):
        export_lora_gguf(dora, gguf_of(ref))


def test_one_llamacpp_slot_serves_and_scores_base_and_adapter(trained) -> None:
    """Generation and continuation scoring both on llama.cpp: the transformers weights are never
    loaded. Scores with the adapter on track transformers + peft: quantization moves this Q4
    model's log-probs of unlikely tokens by up to ~0.3 nat per token (measured: mean 0.09 per
    token on these requests, 0.19 against the base model), so the check is a mean under 0.15 nat
    per continuation token and at least 1.5x closer to transformers + peft than to the base."""
    from models.gen_transformers import TransformersGenerator
    from models.slot import ModelSlot, SlotGenerator

    _, tokenizer, peft_model, folder = trained
    slot = ModelSlot(SMOL, batch_size=4, progress=False, backend="llamacpp")
    base, tuned = SlotGenerator(slot), SlotGenerator(slot, folder)
    assert base.identity["backend"] == tuned.identity["backend"] == "llamacpp"
    assert tuned.identity["adapter"]["sha256"] and base.identity["adapter"] is None
    answers_base = [g.text for g in base.generate(CHATS, GREEDY)]
    answers_tuned = [g.text for g in tuned.generate(CHATS, GREEDY)]
    assert answers_tuned != answers_base
    requests = [("Pergunta: Qual é a capital do Brasil?\nA. Rio\nB. Brasília\nC. Recife\n"
                 "Resposta:", f" {x}") for x in "ABC"]
    requests += [("A capital do Brasil é", " Brasília"), ("A capital do Brasil é", " Lisboa"),
                 ("Quem foi Tiradentes?", " Um dentista e revolucionário.")]
    on = tuned.loglikelihood(requests)
    assert on == tuned.loglikelihood(requests)  # read one request at a time: reproducible
    assert slot.model is None  # neither generating nor scoring loaded the transformers weights
    reference = TransformersGenerator(peft_model, tokenizer, batch_size=4, progress=False)
    hf_on = reference.loglikelihood(requests)
    with peft_model.disable_adapter():
        hf_off = reference.loglikelihood(requests)
    tokens = sum(len(reference.encode_pair(c, x)[1]) for c, x in requests)
    to_tuned = sum(abs(a - b) for a, b in zip(on, hf_on, strict=True)) / tokens
    to_base = sum(abs(a - b) for a, b in zip(on, hf_off, strict=True)) / tokens
    assert to_tuned < 0.15 and to_base > 1.5 * to_tuned
    off = base.loglikelihood(requests)
    assert off != on
    # the base again after the adapter: its answers, but the prompt cache now splits some prompts
    # differently (a cached prefix and the rest), which moves log-probs by ~1e-4 and flips near
    # ties of this tiny model over 16 tokens (the single-slot test below checks the cache
    # exactly); scoring never uses the cache, so its figures come back exactly
    again = [g.text for g in base.generate(CHATS, GREEDY)]
    assert (sum(a == b for a, b in zip(again, answers_base, strict=True))
            > sum(a == b for a, b in zip(again, answers_tuned, strict=True)))
    assert base.loglikelihood(requests) == off and tuned.loglikelihood(requests) == on


def test_an_adapter_asked_for_after_the_base_answered_restarts_llamacpp_with_it(trained) -> None:
    from models.slot import ModelSlot, SlotGenerator

    _, _, _, folder = trained
    slot = ModelSlot(SMOL, batch_size=4, progress=False, backend="llamacpp")
    base = SlotGenerator(slot)
    before = [g.text for g in base.generate(CHATS, GREEDY)]
    tuned = SlotGenerator(slot, folder)  # compare builds the finetuned column after base ran
    answers_tuned = [g.text for g in tuned.generate(CHATS, GREEDY)]
    assert sum(a == b for a, b in zip(answers_tuned, before, strict=True)) < len(CHATS) / 2
    again = [g.text for g in base.generate(CHATS, GREEDY)]  # a near tie may flip (see above)
    assert (sum(a == b for a, b in zip(again, before, strict=True))
            > sum(a == b for a, b in zip(again, answers_tuned, strict=True)))


def test_the_prompt_cache_serves_one_adapter_and_is_cleared_when_it_changes(
        trained, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts share a prefix (the chat template's system prompt): llama.cpp reuses a slot's
    cached prefix for the next prompt of the same adapter, and a slot whose LoRA scales change
    is cleared first, so an answer never runs on a prefix another adapter read."""
    import models.gen_llamacpp as module
    from models.slot import ModelSlot, SlotGenerator

    _, _, _, folder = trained
    replies: list[dict] = []
    real = module._call
    monkeypatch.setattr(module, "_call", lambda s, r: replies.append(real(s, r)) or replies[-1])
    slot = ModelSlot(SMOL, batch_size=1, progress=False, backend="llamacpp")  # one llama.cpp slot
    base, tuned = SlotGenerator(slot), SlotGenerator(slot, folder)

    def answer(gen: SlotGenerator, chat: list[dict]) -> tuple[str, int]:
        text = gen.generate([chat], GREEDY)[0].text
        return text, replies[-1]["timings"]["cache_n"]

    first, cached = answer(tuned, CHATS[0])
    second, cached = answer(tuned, CHATS[1])
    assert cached > 10  # the shared system prompt was not read again
    after_base, cached = answer(base, CHATS[1])
    assert cached == 0 and after_base != second
    again, cached = answer(tuned, CHATS[1])
    assert cached == 0 and again == second
    fresh = ModelSlot(SMOL, batch_size=1, progress=False, backend="llamacpp")
    assert SlotGenerator(fresh).generate([CHATS[1]], GREEDY)[0].text == after_base


def test_an_adapter_never_answers_on_a_prompt_state_the_base_computed(
        trained, monkeypatch: pytest.MonkeyPatch) -> None:
    """With several slots, llama.cpp's RAM prompt cache kept the states of prompts evicted from
    the slots and restored one for an identical prompt under other LoRA scales (compare's rag
    then rag+finetuned columns ask the same prompts). Every adapter prompt must be read with the
    adapter: not served whole from a state the base computed, and answered as a server that
    never ran the base answers it."""
    import models.gen_llamacpp as module
    from models.slot import ModelSlot, SlotGenerator

    _, _, _, folder = trained
    replies: list[dict] = []
    real = module._call
    monkeypatch.setattr(module, "_call", lambda s, r: replies.append(real(s, r)) or replies[-1])
    slot = ModelSlot(SMOL, batch_size=4, progress=False, backend="llamacpp")
    base, tuned = SlotGenerator(slot), SlotGenerator(slot, folder)
    answers_base = [g.text for g in base.generate(CHATS, GREEDY)]  # 8 prompts, 4 slots
    others = [[{"role": "user", "content": f"Diga o número {i}."}] for i in range(8)]
    tuned.generate(others, GREEDY)
    replies.clear()
    answers = [g.text for g in tuned.generate(CHATS, GREEDY)]
    assert len(replies) == len(CHATS)
    assert all(r["timings"]["prompt_n"] > 1 for r in replies)  # never a whole base prompt
    fresh = ModelSlot(SMOL, batch_size=4, progress=False, backend="llamacpp")
    want = [g.text for g in SlotGenerator(fresh, folder).generate(CHATS, GREEDY)]
    # a cached system prompt splits a prompt differently and can flip a near tie of this tiny
    # model (see above): the adapter's answers, not the base's
    assert (sum(a == w for a, w in zip(answers, want, strict=True))
            > sum(a == b for a, b in zip(answers, answers_base, strict=True)))
