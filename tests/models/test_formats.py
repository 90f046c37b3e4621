"""Prompt formats: each one's rendering, chat-message adaptation, the registry's errors."""

from __future__ import annotations

import pytest

from core.errors import UserError
from models.formats import FORMATS, get_format, messages_text


def test_registry_holds_the_four_formats() -> None:
    assert FORMATS.names() == ["alpaca", "chat", "llama2", "mistral"]
    with pytest.raises(UserError, match="Did you mean 'llama2'"):
        get_format("llama")


def test_llama2_renders_the_published_layout() -> None:
    fmt = get_format("llama2")
    assert fmt.render("Quem foi Tiradentes?") == "[INST] Quem foi Tiradentes? [/INST]"
    full = fmt.render("Quem foi Tiradentes?", output="Um dentista. ")
    assert full == "[INST] Quem foi Tiradentes? [/INST] Um dentista. </s>"
    assert fmt.render("Resuma.", input="Texto longo.") == "[INST] Resuma.\n\nTexto longo. [/INST]"
    assert fmt.stop == ("[INST]",)


def test_mistral_renders_guanaco_turns() -> None:
    fmt = get_format("mistral")
    assert fmt.render("Quem foi Vargas?", output="Um presidente.") == \
        "###Human: Quem foi Vargas? ###Assistant: Um presidente.</s>"
    assert "###Human:" in fmt.stop


def test_alpaca_with_and_without_input() -> None:
    fmt = get_format("alpaca")
    plain = fmt.render("Quem foi Vargas?", output="Um presidente.")
    assert plain.startswith("Below is an instruction that describes a task. Write a response")
    assert plain.endswith("### Instruction:\nQuem foi Vargas?\n\n### Response:\nUm presidente.</s>")
    with_input = fmt.render("Resuma.", input="Texto.")
    assert "paired with an input that provides further context" in with_input
    assert with_input.endswith("### Instruction:\nResuma.\n\n### Input:\nTexto.\n\n### Response:\n")


def test_chat_uses_the_tokenizer_template(tiny_tokenizer) -> None:
    fmt = get_format("chat")
    assert fmt.uses_chat_template
    prompt = fmt.render("Quem foi Isabel?", tokenizer=tiny_tokenizer)
    assert prompt == "<s><|user|>Quem foi Isabel?</s><|assistant|>"
    full = fmt.render("Quem foi Isabel?", output="Uma princesa.", tokenizer=tiny_tokenizer)
    assert full == prompt + "Uma princesa.</s>"
    assert fmt.inference_prompt("Quem foi Isabel?") == [
        {"role": "user", "content": "Quem foi Isabel?"}]


def test_chat_without_a_template_is_a_user_error(tiny_tokenizer) -> None:
    class NoTemplate:
        chat_template = None

    with pytest.raises(UserError, match="needs a tokenizer with a chat template"):
        get_format("chat").prompt("Quem?", tokenizer=NoTemplate())
    with pytest.raises(UserError, match="chat template"):
        get_format("chat").prompt("Quem?")


def test_adapt_turns_questions_and_messages_into_the_trained_prompt() -> None:
    messages = [{"role": "system", "content": "Responda em português."},
                {"role": "user", "content": "Contexto: X.\nPergunta: Quem foi Vargas?"}]
    llama = get_format("llama2")
    assert llama.adapt("Quem foi Vargas?") == "[INST] Quem foi Vargas? [/INST]"
    assert llama.adapt(messages) == ("[INST] Responda em português.\n\nContexto: X.\n"
                                     "Pergunta: Quem foi Vargas? [/INST]")
    chat = get_format("chat")
    assert chat.adapt(messages) == messages and chat.adapt(messages) is not messages
    assert chat.adapt("Quem?") == [{"role": "user", "content": "Quem?"}]
    assert messages_text([{"role": "user", "content": "Oi"},
                          {"role": "assistant", "content": "Olá"},
                          {"role": "user", "content": "E aí?"}]) == "Oi\n\nAssistente: Olá\n\nE aí?"
    with pytest.raises(UserError, match="empty"):
        llama.adapt([{"role": "user", "content": "  "}])


def test_describe_is_what_the_manifest_records() -> None:
    info = get_format("llama2").describe()
    assert info == {"name": "llama2", "description": get_format("llama2").description,
                    "uses_chat_template": False, "answer_prefix": " ", "stop": ["[INST]"]}
