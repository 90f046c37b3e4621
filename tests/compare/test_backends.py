"""Shared model slots on a tiny random Llama: adapter on/off on one copy of the weights, the
lm-eval style multiple-choice scorer, and no weights loaded when everything is cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compare.backends import ModelSlot, SlotGenerator
from compare.cache import CachedGenerator, GenerationCache
from compare.mc import loglikelihood_context, loglikelihood_requests
from compare.questions import Question
from models.generation import Decoding
from models.loading import LoadOptions

PROMPTS = [[{"role": "user", "content": "A capital do Brasil é"}],
           [{"role": "user", "content": "Dom Pedro I proclamou"}]]
GREEDY = Decoding(max_new_tokens=6)
FP32 = LoadOptions(dtype="float32")


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
    slot = ModelSlot(str(tiny_llama_dir), FP32)
    gen = SlotGenerator(slot)
    assert gen.context_window == 256 and gen.count_tokens("olá mundo") > 0
    assert slot.model is None


def _manual_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) straight from the logits."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def test_multiple_choice_scores_match_the_logits(tiny_llama_dir: Path, tmp_path: Path) -> None:
    q = Question(id="mc", question="Quem proclamou a independência?", answers=("Dom Pedro I",),
                 choices=("Tiradentes", "Dom Pedro I", "Vargas", "Cabral"), answer_index=1)
    slot = ModelSlot(str(tiny_llama_dir), FP32, batch_size=3, progress=False)
    cache = GenerationCache(tmp_path / "c.db")
    gen = CachedGenerator(SlotGenerator(slot), cache, {"m": "tiny"})
    requests = loglikelihood_requests(q, loglikelihood_context(q))
    scores = gen.loglikelihood(requests)
    manual = [_manual_logprob(slot.model, slot.tokenizer, c, x) for c, x in requests]
    assert scores == pytest.approx(manual, abs=1e-4)
    assert gen.last_fresh == {0, 1, 2, 3}
    assert gen.loglikelihood(requests) == scores and gen.last_fresh == set()


def test_cached_rerun_loads_no_weights(tiny_llama_dir: Path, tmp_path: Path) -> None:
    cache = GenerationCache(tmp_path / "c.db")
    first_slot = ModelSlot(str(tiny_llama_dir), FP32, progress=False)
    first = SlotGenerator(first_slot)
    outs = CachedGenerator(first, cache, first.identity).generate(PROMPTS, GREEDY)
    assert first_slot.model is not None
    slot = ModelSlot(str(tiny_llama_dir), FP32, progress=False)
    gen = SlotGenerator(slot)
    again = CachedGenerator(gen, cache, gen.identity).generate(PROMPTS, GREEDY)
    assert [g.text for g in again] == [g.text for g in outs]
    assert all(g.cached for g in again) and slot.model is None


def test_grouped_loglikelihood_equals_the_generic_path(tiny_llama_dir: Path) -> None:
    from compare.backends import grouped_loglikelihood

    slot = ModelSlot(str(tiny_llama_dir), FP32, batch_size=2, progress=False)
    requests = [(ctx, cont) for ctx in ("Pergunta: capital?\nResposta:", "Olá mundo. Resposta:",
                                        "A capital do Brasil é")
                for cont in (" A", " B", "A", "B", " de", " em", " Brasília em 1960")]
    with slot.active(None) as gen:
        singles = [r for r in requests if len(gen._encode_pair(*r)[1]) == 1]
        assert len(singles) >= 3  # the one-token shortcut is really exercised
        assert grouped_loglikelihood(gen, requests) == pytest.approx(
            gen.loglikelihood(requests), abs=1e-4)
