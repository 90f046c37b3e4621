"""Prompt parity: a pair is trained on the very token ids the evaluated system sends for it."""

from __future__ import annotations

import pytest

from finetune.dataset import encode_pair, prompt_ids
from finetune.prompting import TrainingPrompt, trained_template
from finetune.records import Pair
from models.formats import FORMATS, get_format

PAIR = Pair(instruction="Em que ano foi assinada a Lei Áurea?", input="", output="1888")


@pytest.mark.parametrize("name", FORMATS.names())
@pytest.mark.parametrize("template", ["short", "default"])
def test_training_prompt_is_the_closed_book_prompt_compare_sends(name: str, template: str,
                                                                 tiny_tokenizer,
                                                                 tiny_generator) -> None:
    """The ids a pair is trained on == the ids the generator encodes for the same question when
    rag's pipeline builds the closed-book prompt in the adapter's format (what compare's
    ``finetuned`` system asks)."""
    from rag.pipeline import RagConfig, RagPipeline

    fmt = get_format(name)
    gen = tiny_generator
    pipeline = RagPipeline(None, gen, RagConfig(template=template), fmt=fmt)
    sent = pipeline.prompts([PAIR.instruction], None)[0]
    spec = TrainingPrompt(template)
    assert prompt_ids(fmt, tiny_tokenizer, PAIR, spec) == gen.encode_prompt(sent, 16)
    # the template's system message is part of what is trained on
    system = pipeline.build([PAIR.instruction], None)[0].messages[0]["content"]
    assert system.split("\n")[0] in spec.text(fmt, tiny_tokenizer, PAIR)


def test_legacy_prompt_is_the_bare_instruction(tiny_tokenizer) -> None:
    fmt = get_format("llama2")
    legacy = TrainingPrompt(None)
    assert legacy.text(fmt, tiny_tokenizer, PAIR) == f"[INST] {PAIR.instruction} [/INST]"
    assert legacy.describe()["template"] is None
    assert prompt_ids(fmt, tiny_tokenizer, PAIR, legacy) != prompt_ids(
        fmt, tiny_tokenizer, PAIR, TrainingPrompt("short"))


def test_labels_cover_only_the_answer_under_the_parity_prompt(tiny_tokenizer) -> None:
    fmt = get_format("chat")
    enc = encode_pair(PAIR, fmt, tiny_tokenizer, 1024, TrainingPrompt("short"))
    assert enc is not None
    answer = [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != -100]
    assert tiny_tokenizer.decode(answer[:-1]).strip() == "1888"
    assert answer[-1] == tiny_tokenizer.eos_token_id


def test_manifest_record_names_template_and_versions() -> None:
    from rag.prompts import template_version

    record = TrainingPrompt("short").describe()
    assert record["template"] == "short"
    assert record["closed_book_template"] == "short_closed_book"
    assert record["closed_book_version"] == template_version("short", closed_book=True)
    assert trained_template({"prompt": record}) == "short"
    assert trained_template({}) is None


def test_config_values_and_cli_flag() -> None:
    from core.errors import UserError
    from finetune.cli import build_parser
    from finetune.config import train_config

    assert TrainingPrompt.of("none").template is None
    assert TrainingPrompt.of(None).template is None
    assert TrainingPrompt.of("short").template == "short"
    with pytest.raises(UserError):
        TrainingPrompt.of("shrot")
    assert train_config("cpu-demo").prompt_template == "short"
    args = build_parser().parse_args(["train", "--pairs", "p.jsonl", "--out", "o",
                                      "--prompt-template", "none"])
    assert args.prompt_template == "none"
    assert train_config("cpu-demo", prompt_template=args.prompt_template).prompt_template == "none"


def test_evaluation_detects_a_prompt_mismatch(tmp_path, caplog) -> None:
    """An adapter evaluated with another template (or a changed one, or trained on bare
    instructions) is named loudly; the matching one passes."""
    import json

    from models.adapters import trained_prompt
    from rag.pipeline import RagConfig, RagPipeline, prompt_mismatch

    record = TrainingPrompt("short").describe()
    assert prompt_mismatch(record, "short") is None
    assert "'short' prompt template, but is asked with 'default'" in prompt_mismatch(
        record, "default")
    assert "bare instructions" in prompt_mismatch(None, "short")
    assert "changed since" in prompt_mismatch({**record, "template_version": "old"}, "short")

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "manifest.json").write_text(json.dumps({"prompt": record}))
    assert trained_prompt(adapter) == record

    class Gen:
        context_window, name = 2048, "fake"

        def count_tokens(self, text: str) -> int:
            return len(text.split())

    pipeline = RagPipeline(None, Gen(), RagConfig(template="default"))
    with caplog.at_level("WARNING"):
        assert pipeline.check_adapter_prompt(adapter) is not None
    assert "prompt mismatch" in caplog.text and pipeline.prompt_mismatch
    assert RagPipeline(None, Gen(), RagConfig(template="short")).check_adapter_prompt(
        adapter) is None
