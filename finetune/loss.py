"""The LM head only where the loss is taken (``TrainConfig.loss_positions_only``).

trl's ``SFTTrainer`` gives the model a fused LM head (``trl.trainer.utils.add_fused_lm_head``):
``model(..., labels=labels, fused_lm_head=True)`` returns per-token log-probabilities without
materializing the ``(batch, seq, vocab)`` logits, and ``SFTTrainer.compute_loss`` sums them and
divides by ``num_items_in_batch`` (the non-ignored next-token labels of the whole accumulated
batch; their count in this micro-batch when it is None). On CUDA/XPU with Triton that head
projects only the positions whose next-token label is not -100; everywhere else (a CPU) it
projects **every** position (151,936 x 896 multiply-adds per token for the default model: a
fifth of the model's forward), recomputes each vocabulary tile in the backward, and accumulates
the hidden-state gradient in fp32 matmuls (a CPU's fp32 matmuls are ~3.6x slower than bf16).

``add_positions_only_head`` wraps that fused head: on devices where trl would project every
position, it runs the backbone, gathers the hidden states whose next-token label is not -100
(the labels shifted by one; trl's padding-free collator has already masked the first token of
each packed example, and padding is labelled -100), and projects only those, in chunks of
``chunk_tokens`` positions. The gradient of each chunk's cross-entropy with respect to its hidden
states, ``(softmax(z) - onehot(y)) @ W``, is computed in the forward (one matmul in the compute
dtype, as the forward's), so the backward only scales it: two head matmuls per loss position
instead of three per position. Everything else — the normalisation, the logged entropy and
token accuracy, ``num_tokens`` — stays trl's, since the wrapper returns trl's own
``FusedCausalLMOutput`` with the same per-token fields (zero at ignored positions).

The wrapper hands the call to trl's head unchanged where trl already compacts (CUDA/XPU with
Triton), for pre-shifted ``shift_labels`` (context/sequence parallelism), MoE router losses,
and heads with logit scaling or soft-capping; a trainable or biased LM head (a full fine-tune)
is projected at the loss positions only through trl's own chunked kernel.
"""

from __future__ import annotations

import functools
import logging
import types
from typing import Any

log = logging.getLogger(__name__)

CHUNK_TOKENS = 256  # loss positions per head projection: 256 x 151,936 fp32 logits ~ 156 MB
_SCALED_HEAD = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                "lm_head_multiplier", "logits_scaling")


def _head_nll_function() -> Any:
    """The autograd function (built on first use: torch is imported lazily)."""
    import torch

    class HeadNll(torch.autograd.Function):
        """Per-position NLL, entropy and top-1 of ``hidden @ weight.T`` for a frozen head.

        ``forward(hidden [M, H], weight [V, H], targets [M], chunk)`` -> ``(nll [M] fp32,
        entropy [M] fp32, is_top1 [M] bool)``; the hidden-state gradient of each NLL is computed
        here and only scaled by the incoming gradient in ``backward``.
        """

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, chunk: int) -> Any:
            device = hidden.device.type
            dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                     else hidden.dtype)
            need_grad = bool(ctx.needs_input_grad[0])
            count = hidden.shape[0]
            nll = torch.empty(count, dtype=torch.float32, device=hidden.device)
            entropy = torch.empty_like(nll)
            top1 = torch.empty(count, dtype=torch.bool, device=hidden.device)
            grad = torch.empty_like(hidden) if need_grad else None
            with torch.autocast(device, enabled=False):
                w = weight.to(dtype)
                for start in range(0, count, chunk):
                    end = min(start + chunk, count)
                    y = targets[start:end]
                    z = torch.mm(hidden[start:end].to(dtype), w.t()).float()  # [n, V]
                    lse = torch.logsumexp(z, dim=-1)
                    nll[start:end] = lse - z.gather(1, y[:, None]).squeeze(1)
                    top1[start:end] = z.argmax(dim=-1) == y  # the first maximum, as trl's
                    z.sub_(lse[:, None])  # log p
                    p = z.exp()
                    entropy[start:end] = -(p[:, None, :] @ z[:, :, None]).reshape(-1)
                    del z
                    if grad is not None:
                        p[torch.arange(end - start, device=p.device), y] -= 1.0  # dNLL/dz
                        grad[start:end] = torch.mm(p.to(dtype), w).to(grad.dtype)
                    del p
            ctx.save_for_backward(grad if grad is not None else nll)
            ctx.mark_non_differentiable(entropy, top1)
            return nll, entropy, top1

        @staticmethod
        def backward(ctx: Any, grad_nll: Any, *_: Any) -> Any:
            (grad,) = ctx.saved_tensors
            if grad_nll is None:
                return None, None, None, None
            return grad * grad_nll.to(grad.dtype)[:, None], None, None, None

    return HeadNll


@functools.lru_cache(maxsize=1)
def head_nll() -> Any:
    """The ``torch.autograd.Function`` computing the frozen head's per-position NLL."""
    return _head_nll_function()


def trl_compacts(device: Any) -> bool:
    """Whether trl's fused head already projects only the loss positions on ``device``."""
    from transformers.utils import is_triton_available

    return getattr(device, "type", str(device)) in ("cuda", "xpu") and is_triton_available()


def plain_head(model: Any) -> bool:
    """True when the model's logits are ``hidden @ W.T (+ b)``: no scaling or soft-capping."""
    config = model.config.get_text_config()
    return all(getattr(config, name, None) in (None, 1.0) for name in _SCALED_HEAD)


def causal_lm(model: Any) -> Any:
    """The causal LM inside a peft wrapper (the object trl patched), or the model itself."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def add_positions_only_head(model: Any, chunk_tokens: int = CHUNK_TOKENS) -> bool:
    """Make the fused LM head trl added project only the loss positions; False if left as is.

    ``model`` is the trainer's model (a peft model or the causal LM), after ``SFTTrainer`` has
    added its fused head. Calls without ``fused_lm_head=True`` (generation, plain logits) are
    unchanged. The causal LM's ``loss_positions_only`` attribute (set True here) switches the
    lever per call: False hands every call to trl's head (a benchmark alternates both paths in
    one run).
    """
    target = causal_lm(model)
    if not plain_head(target):
        log.info("loss_positions_only: the LM head scales or soft-caps its logits; trl's fused "
                 "head is kept")
        return False
    previous = target.forward
    function = head_nll()
    target.loss_positions_only = True

    @functools.wraps(type(target).forward)
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None,
                shift_labels: Any = None, num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        device = _input_device(args, kwargs, labels)
        if (not fused_lm_head or labels is None or shift_labels is not None
                or not getattr(self, "loss_positions_only", True)
                or kwargs.get("output_router_logits")
                or getattr(self.config.get_text_config(), "output_router_logits", False)
                or trl_compacts(device)):
            return previous(*args, fused_lm_head=fused_lm_head, labels=labels,
                            shift_labels=shift_labels, num_items_in_batch=num_items_in_batch,
                            **kwargs)
        return positions_only_forward(self, function, chunk_tokens, args, kwargs, labels,
                                      num_items_in_batch)

    target.forward = types.MethodType(forward, target)
    return True


def positions_only_forward(model: Any, function: Any, chunk_tokens: int, args: tuple[Any, ...],
                           kwargs: dict[str, Any], labels: Any, num_items_in_batch: Any) -> Any:
    """Backbone, then the head at the positions whose next-token label is not -100."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs["use_cache"] = False
    hidden = model.base_model(*args, **kwargs).last_hidden_state[:, :-1]
    head = model.get_output_embeddings()
    targets = labels[:, 1:].to(head.weight.device)
    mask = targets != -100
    selected = hidden.to(head.weight.device)[mask]
    chosen = targets[mask]
    if head.weight.requires_grad or getattr(head, "bias", None) is not None:
        from trl.kernels import ChunkedLogProbFunction

        log_probs, entropy, _, _, top1 = ChunkedLogProbFunction.apply(
            selected, head.weight, getattr(head, "bias", None), chosen, 1.0, 32768, None, 1.0,
            ("log_probs", "entropy", "is_top1"))
        nll = -log_probs
    else:
        nll, entropy, top1 = function.apply(selected, head.weight, chosen, chunk_tokens)
    zeros = torch.zeros(mask.shape, dtype=nll.dtype, device=nll.device)
    log_probs = zeros.masked_scatter(mask, -nll)
    denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(
        loss=-log_probs.sum() / denominator, log_probs=log_probs,
        entropy=zeros.detach().masked_scatter(mask, entropy.detach()),
        is_top1=torch.zeros(mask.shape, dtype=torch.bool, device=nll.device).masked_scatter(
            mask, top1), label_mask=mask)


def _input_device(args: tuple[Any, ...], kwargs: dict[str, Any], labels: Any) -> Any:
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args, labels):
        if hasattr(value, "device"):
            return value.device
    return "cpu"
