"""``rag ask`` and compare's ``rag+finetuned`` system are one RAG system: for the same question,
store, model and adapter, ``rag ask --json`` prints byte for byte the prompt compare sends.

Real pieces throughout: a store built from the sample dump with ingest's model-free ``hashing``
embedder, the tiny random Llama (its window widened so the short-answer instructions and two
passages fit, the second one only in part or not at all) and a LoRA adapter on it, whose
manifest records the prompt format: the chat messages themselves, or Llama-2's text format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compare.config import ExperimentConfig
from compare.runner import columns_for
from compare.systems import SystemFactory
from core.paths import sample_dump
from core.questions import Question
from rag.cli import main as rag_main

QUESTIONS = ["Quem foi Tiradentes?", "Quando foi a Independência do Brasil?"]
WINDOW = 1024  # instructions (~300 tokens with the tiny tokenizer) + some of two passages
K = 2  # passages: more than the window holds, so the budget drops one


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 articles of the sample dump, embedded with the hashing embedder."""
    from ingest.build import build_store
    from ingest.config import IngestConfig

    out = tmp_path_factory.mktemp("parity") / "store"
    return build_store(sample_dump(), out, IngestConfig(embedder="hashing", workers=0, limit=12),
                       progress=False)


@pytest.fixture(scope="module")
def wide_llama(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a ``WINDOW``-token window (rotary positions: same weights)."""
    out = tmp_path_factory.mktemp("parity") / "wide-llama"
    shutil.copytree(tiny_llama_dir, out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["max_position_embeddings"] = WINDOW
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


@pytest.fixture(params=["chat", "llama2"])
def adapter_dir(request: pytest.FixtureRequest, tiny_adapter_dir: Path, wide_llama: Path,
                tmp_path: Path) -> Path:
    """The tiny adapter, trained (so its manifest says) on ``wide_llama`` in one format."""
    out = tmp_path / f"adapter-{request.param}"
    shutil.copytree(tiny_adapter_dir, out)
    for name, update in (("adapter_config.json", {"base_model_name_or_path": str(wide_llama)}),
                         ("manifest.json", {"base_model": {"name": str(wide_llama)},
                                            "prompt_format": {"name": request.param}})):
        data = json.loads((out / name).read_text(encoding="utf-8"))
        (out / name).write_text(json.dumps({**data, **update}), encoding="utf-8")
    return out


def compare_prompts(store: Path, model: Path, adapter: Path, tmp_path: Path) -> list:
    """The prompts compare's rag+finetuned system sends for ``QUESTIONS`` (default settings but
    ``K`` passages, so that the budget has passages to drop)."""
    cfg = ExperimentConfig(questions=(str(tmp_path / "unused.jsonl"),), systems=("rag+finetuned",),
                           models=(str(model),), adapters={str(model): str(adapter)},
                           store=str(store), cache=str(tmp_path / "generations.sqlite"), k=K)
    factory = SystemFactory(cfg, progress=False)
    try:
        system = factory.build(columns_for(cfg)[0], cfg)
        answers = system.answer([Question(id=f"q{i}", question=q, answers=("x",))
                                 for i, q in enumerate(QUESTIONS)])
    finally:
        factory.close()
    assert all(a.retrieved for a in answers)
    return [a.prompt for a in answers]


def rag_ask_prompts(store: Path, model: Path, adapter: Path, capsys: pytest.CaptureFixture
                    ) -> list[dict]:
    """``rag ask --json`` with compare's defaults spelled out (template, max_new_tokens; ``K``)."""
    defaults = ExperimentConfig(questions=("unused",))
    argv = ["ask", *QUESTIONS, "--store", str(store), "--model", str(model), "--adapter",
            str(adapter), "--template", defaults.template, "-k", str(K),
            "--max-new-tokens", str(defaults.max_new_tokens), "--json", "-q"]
    capsys.readouterr()
    assert rag_main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_rag_ask_json_and_rag_finetuned_send_byte_identical_prompts(
        store_dir: Path, wide_llama: Path, adapter_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    fmt = json.loads((adapter_dir / "manifest.json").read_text())["prompt_format"]["name"]
    asked = rag_ask_prompts(store_dir, wide_llama, adapter_dir, capsys)
    sent = compare_prompts(store_dir, wide_llama, adapter_dir, tmp_path)
    printed = [obj["prompt"] for obj in asked]
    for mine, theirs in zip(printed, sent, strict=True):
        assert json.dumps(mine, ensure_ascii=False) == json.dumps(theirs, ensure_ascii=False)
    assert printed == sent
    assert [obj["lang"] for obj in asked] == ["pt", "pt"]
    assert {obj["prompt_format"] for obj in asked} == {fmt}
    if fmt == "llama2":  # the adapter's trained format, not the chat messages
        assert all(isinstance(p, str) and p.startswith("[INST] ") and p.endswith(" [/INST]")
                   for p in sent)
    else:
        assert all(isinstance(p, list) and p[0]["role"] == "system" for p in sent)
    assert any(obj["dropped_by_budget"] for obj in asked)  # the budget really cut something
    assert "[1] Tiradentes" in json.dumps(sent[0], ensure_ascii=False)


def test_multiple_choice_is_scored_after_the_systems_own_chat_prompt(
        store_dir: Path, wide_llama: Path, adapter_dir: Path, tmp_path: Path) -> None:
    """mc_prompt auto on a chat model: the MC context is the prompt the system sends for the
    question with its options (rag template, passages, adapter format, chat template with the
    answer turn open), and each letter's score is its log-prob as the answer's first token."""
    import torch

    from compare import mc

    q = Question(id="mc", question="Quem proclamou a independência do Brasil?",
                 answers=("Dom Pedro I",), choices=("Tiradentes", "Dom Pedro I", "Vargas"),
                 answer_index=1)
    cfg = ExperimentConfig(questions=(str(tmp_path / "unused.jsonl"),), systems=("rag+finetuned",),
                           models=(str(wide_llama),), adapters={str(wide_llama): str(adapter_dir)},
                           store=str(store_dir), cache=str(tmp_path / "generations.sqlite"))
    factory = SystemFactory(cfg, progress=False)
    try:
        system = factory.build(columns_for(cfg)[0], cfg)
        assert system.chat_scoring()
        answer = system.choose([q])[0]
        sent = system.pipeline.prompts([mc.generative_question(q)], [system.pipeline.retrieve(
            [q.question])[0]])[0]
        assert answer.prompt == sent  # the very prompt generate mode would send
        slot = system.generator.inner.slot
        tok = slot.tokenizer
        if isinstance(sent, list):
            context = tok.apply_chat_template(sent, tokenize=False, add_generation_prompt=True)
            letters = ["A", "B", "C"]
        else:  # llama2: the text format, its answer after "[/INST] "
            context, letters = sent, [" A", " B", " C"]
        with slot.active(system.generator.inner.adapter) as gen, torch.no_grad():
            special = not context.startswith(tok.bos_token or "\0")
            manual = []
            for letter in letters:
                ctx = tok(context, add_special_tokens=special)["input_ids"]
                whole = tok(context + letter, add_special_tokens=special)["input_ids"]
                logp = torch.log_softmax(gen.model(torch.tensor([whole])).logits[0].float(), -1)
                manual.append(float(sum(logp[i - 1, whole[i]] for i in range(len(ctx),
                                                                             len(whole)))))
        assert answer.choice_scores == pytest.approx(manual, abs=1e-4)
        assert answer.choice == max(range(3), key=manual.__getitem__)
        assert any(r["in_prompt"] for r in answer.retrieved)
    finally:
        factory.close()
