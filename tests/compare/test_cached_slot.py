"""compare's generation cache over a real model slot: multiple-choice scores through the cache
match the logits, and a re-run that is all cached loads no weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.cache import CachedGenerator, GenerationCache
from compare.mc import loglikelihood_context, loglikelihood_requests
from core.questions import Question
from models.generation import Decoding
from models.loading import LoadOptions
from models.slot import ModelSlot, SlotGenerator

PROMPTS = [[{"role": "user", "content": "A capital do Brasil é"}],
           [{"role": "user", "content": "Dom Pedro I proclamou"}]]
GREEDY = Decoding(max_new_tokens=6)
FP32 = LoadOptions(dtype="float32")


def test_cached_multiple_choice_scores_match_the_logits(tiny_llama_dir: Path, tmp_path: Path,
                                                        manual_logprob) -> None:
    q = Question(id="mc", question="Quem proclamou a independência?", answers=("Dom Pedro I",),
                 choices=("Tiradentes", "Dom Pedro I", "Vargas", "Cabral"), answer_index=1)
    slot = ModelSlot(str(tiny_llama_dir), FP32, batch_size=3, progress=False)
    cache = GenerationCache(tmp_path / "c.db")
    gen = CachedGenerator(SlotGenerator(slot), cache, {"m": "tiny"})
    requests = loglikelihood_requests(q, loglikelihood_context(q))
    scores = gen.loglikelihood(requests)
    manual = [manual_logprob(slot.model, slot.tokenizer, c, x) for c, x in requests]
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
