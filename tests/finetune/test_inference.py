"""A trained adapter prompted in its format automatically (``models.adapters``, on an adapter
written by ``finetune train``)."""

from __future__ import annotations

from models.generation import Decoding


def test_load_adapter_generator_on_a_trained_adapter(tiny_llama_dir, pairs_file, tmp_path) -> None:
    from finetune.config import TrainConfig
    from finetune.train import train
    from models.adapters import load_adapter_generator

    config = TrainConfig(model=str(tiny_llama_dir), format="llama2", load_in_4bit=False,
                         lora_r=4, max_steps=2, logging_steps=1, save_steps=100,
                         max_seq_length=48, precision="no", gradient_checkpointing=False,
                         prompt_template="none")
    train(config, pairs_file, tmp_path / "a", progress=False)
    gen = load_adapter_generator(tmp_path / "a", progress=False)
    assert gen.format.name == "llama2" and gen.name.endswith("+a")
    assert gen.prompt("Quem foi Pedro 1?") == "[INST] Quem foi Pedro 1? [/INST]"
    [answer] = gen.generate(["Quem foi Pedro 1?"], Decoding(max_new_tokens=3))
    assert answer.prompt_tokens == len(gen.inner.tokenizer("[INST] Quem foi Pedro 1? [/INST]")
                                       ["input_ids"])
