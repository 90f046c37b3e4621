"""Response-only labels, EOS appended, the prompt as the generator encodes it, truncation counts."""

from __future__ import annotations

import pytest

from finetune.dataset import (
    IGNORE_INDEX,
    build_split,
    encode_pair,
    encode_pairs,
    label_summary,
    prompt_ids,
    split_ids,
)
from finetune.records import Pair
from models.formats import FORMATS, get_format

PAIR = Pair(instruction="Quem foi Tiradentes?", input="",
            output="Tiradentes foi um dentista e militar brasileiro.")


@pytest.mark.parametrize("name", FORMATS.names())
def test_labels_mask_the_prompt_and_end_with_eos(name: str, tiny_tokenizer) -> None:
    fmt = get_format(name)
    enc = encode_pair(PAIR, fmt, tiny_tokenizer, max_seq_length=512)
    assert enc is not None and not enc.truncated
    prompt = prompt_ids(fmt, tiny_tokenizer, PAIR)
    n = len(prompt)
    assert enc.input_ids[:n] == prompt
    assert enc.labels[:n] == [IGNORE_INDEX] * n  # no loss on the prompt
    assert enc.labels[n:] == enc.input_ids[n:]  # loss on every response token ...
    assert enc.input_ids[-1] == tiny_tokenizer.eos_token_id  # ... including the final EOS
    assert IGNORE_INDEX not in enc.labels[n:]
    answer = tiny_tokenizer.decode(enc.input_ids[n:-1])
    assert answer.strip() == PAIR.output
    assert label_summary({"labels": enc.labels}) == {
        "prompt_tokens": n, "response_tokens": len(enc.labels) - n}


def test_prompt_is_encoded_like_the_generator_does(tiny_tokenizer) -> None:
    """Plain-text formats get the tokenizer's BOS; chat-template text carries its own."""
    from models.gen_transformers import TransformersGenerator

    class Model:  # just enough for the generator's constructor and context window
        generation_config = type("G", (), {"eos_token_id": None})()
        config = type("C", (), {"max_position_embeddings": 256})()

    gen = TransformersGenerator(Model(), tiny_tokenizer, progress=False)
    for name in FORMATS.names():
        fmt = get_format(name)
        expected = gen.encode_prompt(fmt.inference_prompt(PAIR.instruction), 16)
        assert prompt_ids(fmt, tiny_tokenizer, PAIR) == expected, name
    assert prompt_ids(get_format("llama2"), tiny_tokenizer, PAIR)[0] == tiny_tokenizer.bos_token_id


def test_answer_tokens_come_from_one_tokenization(tiny_tokenizer) -> None:
    fmt = get_format("llama2")
    prompt, answer = split_ids(fmt, tiny_tokenizer, PAIR)
    text = fmt.prompt(PAIR.instruction) + fmt.completion(PAIR.output)
    assert prompt + answer == tiny_tokenizer(text)["input_ids"]


def test_truncation_is_counted_and_prompt_only_rows_dropped(tiny_tokenizer) -> None:
    fmt = get_format("llama2")
    n_prompt = len(prompt_ids(fmt, tiny_tokenizer, PAIR))
    n_full = len(encode_pair(PAIR, fmt, tiny_tokenizer, 512).input_ids)
    long = Pair(instruction=PAIR.instruction, input="", output="palavra " * 200)
    huge_prompt = Pair(instruction="contexto " * 200, input="", output="sim")
    examples, stats = encode_pairs([PAIR, long, huge_prompt], fmt, tiny_tokenizer,
                                   max_seq_length=n_full)
    assert len(examples) == 2
    assert stats.examples == 2 and stats.truncated == 1 and stats.dropped_prompt_too_long == 1
    cut = examples[1]
    assert not examples[0].truncated and n_full > n_prompt
    assert cut.truncated and len(cut.input_ids) == n_full
    assert cut.input_ids[-1] != tiny_tokenizer.eos_token_id  # cut before the EOS
    assert stats.longest == n_full
    assert stats.response_tokens == sum(label_summary({"labels": e.labels})["response_tokens"]
                                        for e in examples)


def test_build_split_warns_and_returns_none_when_empty(tiny_tokenizer, caplog) -> None:
    fmt = get_format("llama2")
    ds, stats = build_split([Pair("contexto " * 100, "", "sim")], fmt, tiny_tokenizer, 16, "x")
    assert ds is None and stats.dropped_prompt_too_long == 1
    assert "1 dropped (prompt alone too long)" in caplog.text
    ds, _ = build_split([PAIR], fmt, tiny_tokenizer, 512, "train")
    assert ds.column_names == ["input_ids", "labels"] and len(ds) == 1
