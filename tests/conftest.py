"""Shared test set-up: offline hub, and the ../shared wiki fragments (skipped where absent)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_WIKI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wiki"


@pytest.fixture(scope="session")
def shared_wiki() -> Path:
    """The real dump fragments in ../shared/data/wiki; the test is skipped where they are absent."""
    if not SHARED_WIKI.is_dir():
        pytest.skip("../shared/data/wiki is absent (a user's clone)")
    return SHARED_WIKI


def _manual_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) straight from the logits (no batching, no
    cache): the reference the scoring paths are checked against."""
    import torch

    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@pytest.fixture(scope="session")
def manual_logprob() -> Callable[..., float]:
    """``manual_logprob(model, tokenizer, context, continuation)``: the reference log-prob."""
    return _manual_logprob
