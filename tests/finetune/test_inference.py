"""The adapter's format applied automatically at inference (``finetune.inference``)."""

from __future__ import annotations

from finetune.formats import get_format
from finetune.inference import AdapterGenerator
from models.generation import Decoding, Generation


class Recorder:
    """A canned generator recording the prompts and decoding it receives."""

    name = "recorder"
    context_window = 128

    def __init__(self) -> None:
        self.prompts: list = []
        self.decoding: Decoding | None = None
        self.scored: list = []

    def generate(self, prompts, decoding=Decoding()):
        self.prompts, self.decoding = list(prompts), decoding
        return [Generation("ok", 1, 1, 0.0) for _ in prompts]

    def loglikelihood(self, requests):
        self.scored = list(requests)
        return [0.0 for _ in requests]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_prompts_take_the_trained_format_and_its_stop_strings() -> None:
    inner = Recorder()
    gen = AdapterGenerator(inner, get_format("mistral"))
    messages = [{"role": "system", "content": "Use o contexto."},
                {"role": "user", "content": "Quem foi Vargas?"}]
    out = gen.generate(["Quem foi Cabral?", messages], Decoding(max_new_tokens=4, stop=("\n\n",)))
    assert [g.text for g in out] == ["ok", "ok"]
    assert inner.prompts == ["###Human: Quem foi Cabral? ###Assistant:",
                             "###Human: Use o contexto.\n\nQuem foi Vargas? ###Assistant:"]
    assert inner.decoding.stop == ("\n\n", "###Human:", "### Human:")
    assert inner.decoding.max_new_tokens == 4
    gen.loglikelihood([("Quem foi Cabral?", " Um navegador.")])
    assert inner.scored == [("###Human: Quem foi Cabral? ###Assistant:", " Um navegador.")]
    assert gen.count_tokens("a b") == 2 and gen.context_window == 128


def test_chat_adapters_get_messages_unchanged() -> None:
    inner = Recorder()
    gen = AdapterGenerator(inner, get_format("chat"))
    gen.generate(["Quem foi Cabral?"])
    assert inner.prompts == [[{"role": "user", "content": "Quem foi Cabral?"}]]
    assert inner.decoding.stop == ()


def test_load_adapter_generator_on_a_trained_adapter(tiny_llama_dir, pairs_file, tmp_path) -> None:
    from finetune.config import TrainConfig
    from finetune.inference import load_adapter_generator
    from finetune.train import train

    config = TrainConfig(model=str(tiny_llama_dir), format="llama2", load_in_4bit=False,
                         lora_r=4, max_steps=2, logging_steps=1, save_steps=100,
                         max_seq_length=48, precision="no", gradient_checkpointing=False)
    train(config, pairs_file, tmp_path / "a", progress=False)
    gen = load_adapter_generator(tmp_path / "a", progress=False)
    assert gen.format.name == "llama2" and gen.name.endswith("+a")
    assert gen.prompt("Quem foi Pedro 1?") == "[INST] Quem foi Pedro 1? [/INST]"
    [answer] = gen.generate(["Quem foi Pedro 1?"], Decoding(max_new_tokens=3))
    assert answer.prompt_tokens == len(gen.inner.tokenizer("[INST] Quem foi Pedro 1? [/INST]")
                                       ["input_ids"])
