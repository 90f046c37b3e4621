"""Contrastive search (Su et al., 2022), implemented here because transformers 5 moved it to a hub
repository that runs remote code (refused offline).

At each step the ``top_k`` most likely next tokens are candidates; each candidate is run one step
(the prompt's KV cache shared, repeated per candidate) to get its last-layer hidden state, and the
candidate with the highest ``(1 - alpha) * p(candidate) - alpha * max_j cos(h_candidate, h_j)``
is kept, ``h_j`` ranging over the last-layer hidden states of every token so far (prompt and
answer). ``alpha = 0`` is greedy decoding. One prompt at a time (the candidate batch is the
batch); ``reference_contrastive`` recomputes every step from scratch, without a cache, for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def contrastive_search(model: Any, prompt_ids: Sequence[int], *, top_k: int, alpha: float,
                       max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
    """The answer tokens contrastive search picks after ``prompt_ids`` (stops after an eos)."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, output_hidden_states=True)
        past, context = out.past_key_values, out.hidden_states[-1][0]
        logits, answer = out.logits[0, -1], []
        for _ in range(max_new_tokens):
            probs, candidates = torch.softmax(logits.float(), dim=-1).topk(top_k)
            past.batch_repeat_interleave(top_k)
            n = context.shape[0]
            step = model(input_ids=candidates[:, None], past_key_values=past, use_cache=True,
                         output_hidden_states=True,
                         attention_mask=torch.ones(top_k, n + 1, dtype=torch.long, device=device),
                         position_ids=torch.full((top_k, 1), n, device=device))
            hidden = step.hidden_states[-1][:, -1]
            best = int(_scores(probs, hidden, context, alpha).argmax())
            token = int(candidates[best])
            answer.append(token)
            if token in eos_ids:
                break
            past = step.past_key_values
            past.batch_select_indices(torch.tensor([best], device=device))
            context = torch.cat([context, hidden[best:best + 1]])
            logits = step.logits[best, -1]
    return answer


def reference_contrastive(model: Any, prompt_ids: Sequence[int], *, top_k: int, alpha: float,
                          max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
    """The same choice recomputed step by step with full forward passes (no cache): slow, for
    checking ``contrastive_search``."""
    device = next(model.parameters()).device
    tokens = list(prompt_ids)
    answer: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            out = model(input_ids=torch.tensor([tokens], device=device),
                        output_hidden_states=True)
            context = out.hidden_states[-1][0]
            probs, candidates = torch.softmax(out.logits[0, -1].float(), dim=-1).topk(top_k)
            hidden = []
            for c in candidates.tolist():
                run = model(input_ids=torch.tensor([[*tokens, c]], device=device),
                            output_hidden_states=True)
                hidden.append(run.hidden_states[-1][0, -1])
            best = int(_scores(probs, torch.stack(hidden), context, alpha).argmax())
            token = int(candidates[best])
            answer.append(token)
            tokens.append(token)
            if token in eos_ids:
                break
    return answer


def _scores(probs: torch.Tensor, hidden: torch.Tensor, context: torch.Tensor, alpha: float
            ) -> torch.Tensor:
    """(1 - alpha) * p - alpha * the largest cosine similarity to the context, per candidate."""
    h = torch.nn.functional.normalize(hidden.float(), dim=-1)
    c = torch.nn.functional.normalize(context.float(), dim=-1)
    penalty = (h @ c.T).max(dim=-1).values
    return (1 - alpha) * probs - alpha * penalty


__all__ = ["contrastive_search", "reference_contrastive"]
