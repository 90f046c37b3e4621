"""Tokenize pairs for SFT: loss on the response only, EOS appended, over-long rows counted.

Each example is ``prompt_ids + completion_ids + [eos]`` with ``labels`` = -100 over the prompt.
The prompt is the evaluated system's own (``finetune.prompting.TrainingPrompt``: the rag template's
closed-book messages in the adapter's format), tokenized exactly as ``models.gen_transformers``
tokenizes it at inference (plain text with the tokenizer's special tokens, i.e. BOS;
chat-template text without), so the adapter sees at inference the context it was trained on.
Rows longer than ``max_seq_length`` are cut (start kept) and counted; rows whose prompt alone
fills the window are dropped and counted.
The result is a pre-tokenized ``datasets.Dataset`` (``input_ids``, ``labels``) that trl's
``SFTTrainer`` uses as is (it only pads, and packs when asked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from finetune.prompting import TrainingPrompt
from finetune.records import Pair
from models.formats import Format

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One tokenized example."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


@dataclass
class TruncationStats:
    """How many rows went over ``max_seq_length`` (recorded in the manifest)."""

    examples: int = 0
    truncated: int = 0
    dropped_prompt_too_long: int = 0
    tokens: int = 0
    response_tokens: int = 0
    longest: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return asdict(self)


def eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's EOS id; a tokenizer without one cannot teach the model to stop."""
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token, so the model could not learn to stop; "
                        "set eos_token in its tokenizer_config.json")
    return int(tokenizer.eos_token_id)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str, special: bool) -> list[int]:
    """Token ids of ``text``; a trailing EOS some tokenizers append is removed."""
    ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
    eos = tokenizer.eos_token_id
    while ids and eos is not None and ids[-1] == eos:
        ids.pop()
    return ids


LEGACY = TrainingPrompt(template=None)  # the bare instruction as one user turn


def prompt_ids(fmt: Format, tokenizer: PreTrainedTokenizerBase, pair: Pair,
               prompt: TrainingPrompt = LEGACY) -> list[int]:
    """Token ids of the prompt, as the generator encodes it at inference (BOS for plain text)."""
    text = prompt.text(fmt, tokenizer, pair)
    return _ids(tokenizer, text, special=not fmt.uses_chat_template)


def split_ids(fmt: Format, tokenizer: PreTrainedTokenizerBase, pair: Pair,
              prompt: TrainingPrompt = LEGACY) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids without EOS) from ONE tokenization of prompt + answer.

    Tokenizing the whole text gives the answer the tokens the model produces after the prompt
    at inference (e.g. Llama's "▁answer", not a stray "▁" + "answer"); when a merge crosses
    the boundary the prompt is no longer a prefix, and the answer is tokenized on its own.
    """
    text = prompt.text(fmt, tokenizer, pair)
    special = not fmt.uses_chat_template
    head = _ids(tokenizer, text, special)
    full = _ids(tokenizer, text + fmt.completion(pair.output), special)
    if len(full) > len(head) and full[:len(head)] == head:
        return head, full[len(head):]
    return head, _ids(tokenizer, fmt.completion(pair.output), special=False)


def encode_pair(pair: Pair, fmt: Format, tokenizer: PreTrainedTokenizerBase,
                max_seq_length: int, prompt_spec: TrainingPrompt = LEGACY) -> Encoded | None:
    """Tokenize one pair; None when the prompt leaves no room for any response token."""
    prompt, answer = split_ids(fmt, tokenizer, pair, prompt_spec)
    answer.append(eos_id(tokenizer))
    ids = prompt + answer
    labels = [IGNORE_INDEX] * len(prompt) + answer
    truncated = len(ids) > max_seq_length
    if truncated:
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Encoded(input_ids=ids, labels=labels, truncated=truncated)


def encode_pairs(pairs: Sequence[Pair], fmt: Format, tokenizer: PreTrainedTokenizerBase,
                 max_seq_length: int, prompt: TrainingPrompt = LEGACY
                 ) -> tuple[list[Encoded], TruncationStats]:
    """Tokenize all pairs and count what did not fit."""
    stats = TruncationStats()
    out: list[Encoded] = []
    for pair in pairs:
        enc = encode_pair(pair, fmt, tokenizer, max_seq_length, prompt)
        if enc is None:
            stats.dropped_prompt_too_long += 1
            continue
        out.append(enc)
        stats.examples += 1
        stats.truncated += int(enc.truncated)
        stats.tokens += len(enc.input_ids)
        stats.response_tokens += sum(1 for x in enc.labels if x != IGNORE_INDEX)
        stats.longest = max(stats.longest, len(enc.input_ids))
    return out, stats


def to_dataset(examples: Sequence[Encoded]) -> Dataset:
    """A ``datasets.Dataset`` with ``input_ids`` and ``labels`` columns."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                              "labels": [e.labels for e in examples]})


def build_split(pairs: Sequence[Pair], fmt: Format, tokenizer: PreTrainedTokenizerBase,
                max_seq_length: int, name: str, prompt: TrainingPrompt = LEGACY
                ) -> tuple[Dataset | None, TruncationStats]:
    """Tokenized dataset for one split (None when empty), with its truncation counts logged."""
    examples, stats = encode_pairs(pairs, fmt, tokenizer, max_seq_length, prompt)
    if stats.truncated or stats.dropped_prompt_too_long:
        log.warning("%s split: %d of %d examples longer than max_seq_length=%d were truncated; "
                    "%d dropped (prompt alone too long)", name, stats.truncated,
                    len(pairs), max_seq_length, stats.dropped_prompt_too_long)
    return (to_dataset(examples) if examples else None), stats


def label_summary(example: dict[str, Any]) -> dict[str, int]:
    """How many prompt (masked) and response tokens an example has (for checks and logs)."""
    labels = example["labels"]
    masked = sum(1 for x in labels if x == IGNORE_INDEX)
    return {"prompt_tokens": masked, "response_tokens": len(labels) - masked}
