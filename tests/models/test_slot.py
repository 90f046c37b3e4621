"""Shared model slots on a tiny random Llama: adapter on/off on one copy of the weights, the
lm-eval style one-token scoring shortcut, the window without the weights, and one resolution
and one tokenizer per model."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.generation import Decoding
from models.loading import LoadOptions
from models.slot import ModelSlot, SlotGenerator

PROMPTS = [[{"role": "user", "content": "A capital do Brasil é"}],
           [{"role": "user", "content": "Dom Pedro I proclamou"}]]
GREEDY = Decoding(max_new_tokens=6)
FP32 = LoadOptions(dtype="float32")
MC_CONTEXT = ("Pergunta: Quem proclamou a independência?\nA. Tiradentes\nB. Dom Pedro I\n"
              "C. Vargas\nD. Cabral\nResposta:")


def test_adapter_toggles_on_one_copy_of_the_weights(tiny_llama_dir: Path,
                                                    tiny_adapter_dir: Path) -> None:
    slot = ModelSlot(str(tiny_llama_dir), FP32, batch_size=2, progress=False)
    base = SlotGenerator(slot)
    before = [g.text for g in base.generate(PROMPTS, GREEDY)]
    weights = slot.model
    tuned = SlotGenerator(slot, tiny_adapter_dir)
    with_adapter = [g.text for g in tuned.generate(PROMPTS, GREEDY)]
    after = [g.text for g in base.generate(PROMPTS, GREEDY)]
    assert after == before  # disable_adapter() gives the base model back exactly
    assert with_adapter != before  # the adapter is really on for the finetuned system
    assert slot.model.get_base_model() is weights  # one copy, wrapped in place
    assert base.identity["adapter"] is None
    assert tuned.identity["adapter"]["format"] == "chat"
    assert tuned.identity["fingerprint"] == base.identity["fingerprint"]


def test_context_window_and_tokens_without_loading_weights(tiny_llama_dir: Path) -> None:
    slot = ModelSlot(tiny_llama_dir, FP32)  # a path works as well as a name
    gen = SlotGenerator(slot)
    assert gen.context_window == 256 and gen.count_tokens("olá mundo") > 0
    assert slot.model is None
    with slot.active(None) as loaded:  # the same rule as the loaded generator's
        assert loaded.context_window == gen.context_window


def test_one_resolution_and_one_tokenizer_per_model(tiny_llama_dir: Path, monkeypatch) -> None:
    import transformers

    import models.sources

    resolved, tokenizers = [], []
    real_resolve = models.sources.resolve_model
    real_tokenizer = transformers.AutoTokenizer.from_pretrained

    def count_resolve(name, *a, **k):
        resolved.append(name)
        return real_resolve(name, *a, **k)

    def count_tokenizer(*a, **k):
        tokenizers.append(a)
        return real_tokenizer(*a, **k)

    monkeypatch.setattr(models.sources, "resolve_model", count_resolve)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", count_tokenizer)
    slot = ModelSlot(str(tiny_llama_dir), FP32, progress=False)
    gen = SlotGenerator(slot)
    assert gen.identity["fingerprint"] and gen.context_window == 256
    gen.generate(PROMPTS[:1], GREEDY)
    gen.loglikelihood([("A capital do Brasil é", " Brasília")])
    assert resolved == [str(tiny_llama_dir)] and len(tokenizers) == 1


def test_multiple_choice_scores_match_the_logits(tiny_llama_dir: Path, manual_logprob) -> None:
    slot = ModelSlot(str(tiny_llama_dir), FP32, batch_size=3, progress=False)
    requests = [(MC_CONTEXT, f" {letter}") for letter in "ABCD"]
    scores = SlotGenerator(slot).loglikelihood(requests)
    manual = [manual_logprob(slot.model, slot.tokenizer, c, x) for c, x in requests]
    assert scores == pytest.approx(manual, abs=1e-4)


def test_grouped_loglikelihood_equals_the_generic_path(tiny_llama_dir: Path) -> None:
    slot = ModelSlot(str(tiny_llama_dir), FP32, batch_size=2, progress=False)
    requests = [(ctx, cont) for ctx in ("Pergunta: capital?\nResposta:", "Olá mundo. Resposta:",
                                        "A capital do Brasil é")
                for cont in (" A", " B", "A", "B", " de", " em", " Brasília em 1960")]
    with slot.active(None) as gen:
        singles = [r for r in requests if len(gen.encode_pair(*r)[1]) == 1]
        assert len(singles) >= 3  # the one-token shortcut is really exercised
        assert gen.grouped_loglikelihood(requests) == pytest.approx(
            gen.loglikelihood(requests), abs=1e-4)
        rows = [gen.encode_pair(c, x)[0] for c, x in singles[:2]]
        assert tuple(gen.next_token_logprobs(rows).shape) == (2, len(gen.tokenizer))
