"""How a (context, continuation) pair becomes token ids for log-likelihood scoring, as
lm-evaluation-harness makes them; shared by every backend that scores continuations
(``models.gen_transformers`` and ``models.gen_llamacpp``), so both score the same tokens."""

from __future__ import annotations

from typing import Any


def start_tokens(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before a text by itself (``[bos]`` for Llama,
    ``[]`` for Qwen and GPT-2), without an end-of-sequence one it may append."""
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    return [t for t in tokenizer("", add_special_tokens=True)["input_ids"]
            if t != eos or t == bos]


def encode_pair(tokenizer: Any, context: str, continuation: str
                ) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's ``TemplateLM.loglikelihood`` and
    ``_encode_pair`` make them.

    A non-empty context: its trailing spaces move to the continuation, context + continuation
    is encoded once and split after the context's tokens; the context starts with whatever the
    tokenizer itself puts before a text (Llama's or Gemma's BOS; nothing for Qwen or GPT-2,
    whose tokenizers add no BOS), as lm-eval's ``tok_encode`` does, and never with an
    end-of-text or end-of-turn token. An empty context (or one of spaces only): lm-eval's
    ``prefix_token_id``, the tokenizer's BOS, or its EOS when it has no BOS (Qwen:
    ``<|endoftext|>`` or ``<|im_end|>``), since the first token needs something to be predicted
    from; a continuation that already starts with that token gives it up to the context.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        prefix = bos if bos is not None else tokenizer.eos_token_id
        if cont and cont[0] == prefix:
            return cont[:1], cont[1:]
        return [prefix], cont
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token
    if bos and context.startswith(bos):  # a chat template wrote the BOS itself: not twice
        return ctx, whole[len(ctx):]
    return start_tokens(tokenizer) + ctx, whole[len(ctx):]


__all__ = ["encode_pair", "start_tokens"]
