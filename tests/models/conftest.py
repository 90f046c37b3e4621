"""A tiny random Llama with an offline-trained byte-level BPE tokenizer, saved to disk.

Built once per session (a few seconds on CPU) so that ``load_model(str(path))`` exercises the
local-folder route exactly as a user's checkpoint would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SENTENCES = [
    "A capital do Brasil é Brasília, inaugurada em 1960.",
    "Dom Pedro I proclamou a independência do Brasil em 1822.",
    "A Lei Áurea aboliu a escravidão no Brasil em 1888.",
    "The quick brown fox jumps over the lazy dog.",
    "Getúlio Vargas governou o Brasil durante o Estado Novo.",
    "Question: what is the capital? Answer: Brasília. STOP here.",
    "user assistant system hello world olá mundo",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer():
    """A byte-level BPE trained on a few sentences; <s>/</s> special tokens, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(path: Path) -> Path:
    """Save a seeded random 2-layer Llama (hidden 64) and its tokenizer under ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2, tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_adapter(tiny_llama_dir: Path, out: Path, prompt_format: str = "chat") -> Path:
    """A LoRA adapter on q_proj/v_proj with random (non-zero) B, so it changes the outputs,
    plus the manifest ``finetune train`` writes (base model and prompt format)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from models.loading import LoadOptions, load_model

    model, _ = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    torch.manual_seed(7)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(str(out))
    manifest = {"kind": "lora", "base_model": {"name": str(tiny_llama_dir)},
                "prompt_format": {"name": prompt_format}}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random Llama (safetensors) and its tokenizer."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir: Path):
    """(model, tokenizer) loaded through ``models.loading.load_model`` in fp32."""
    from models.loading import LoadOptions, load_model

    return load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_dir: Path):
    """The tiny Llama's tokenizer as ``models.loading`` loads it."""
    from models.loading import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny Llama whose manifest records the chat prompt format."""
    return build_tiny_adapter(tiny_llama_dir, tmp_path_factory.mktemp("tiny-adapter"))
