"""The vLLM path: base, fine-tuned (a LoRA served by name) and RAG systems against ONE server.

The fake server (``conftest.Any``) checks each request as vLLM would: the model must be the
served base or a ``--lora-modules`` name, the body well formed. The tests check what the client
sends (model per system, retrieved passages in the RAG messages, the decoding's max_tokens /
temperature / seed), that concurrency stays within the bound, that 503/429 are retried with
exponential backoff, and that a hung server becomes a timeout, a retry, then one clear error.
vLLM itself needs a GPU: see docs/scale-out.md for the real command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from compare.cli import main as compare_main
from core.errors import UserError
from core.paths import default_questions
from ingest.store import Store
from models.backends import make_generator
from models.gen_openai import OpenAIGenerator
from models.generation import Decoding

BASE, LORA = "qwen-base", "brazil-lora"  # what the fake server serves (conftest.FakeVLLM)


def _client(fake: Any, model: str = BASE, **kwargs: Any) -> OpenAIGenerator:
    return OpenAIGenerator(fake.url + "/v1", model, progress=False, **kwargs)


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


def test_compare_runs_every_system_against_one_server(fake_vllm: Any,
                                                      hashing_store_dir: Path,
                                                      tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(default_questions().read_text(encoding="utf-8")
                                 .splitlines(keepends=True)[:3]), encoding="utf-8")
    out = tmp_path / "run"
    assert compare_main(
        ["run", str(questions), "--systems", "base,rag,finetuned,rag+finetuned",
         "--model", BASE, "--adapter", LORA, "--store", str(hashing_store_dir),
         "--retriever", "dense", "-k", "3", "--base-url", fake_vllm.url + "/v1",
         "--out", str(out), "--cache", str(tmp_path / "cache.sqlite"), "--batch-size", "2",
         "--max-new-tokens", "24", "--seed", "5", "-q"]) == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").open(encoding="utf-8")]
    calls = fake_vllm.completions()
    assert len(calls) == len(samples) == 12 and all(c.status == 200 for c in calls)  # 4 x 3
    for call in calls:  # the experiment's greedy decoding, as vLLM sampling parameters
        assert call.path == "/v1/chat/completions"
        assert (call.body["max_tokens"], call.body["temperature"], call.body["seed"]) == (24, 0, 5)
    context_rows = {s["question_id"]: [p["rows"][0] for p in s["retrieved"] if p["in_prompt"]]
                    for s in samples if s["system"] == "rag"}
    with Store.open(hashing_store_dir) as store:
        for sample in samples:
            want = LORA if "finetuned" in sample["system"] else BASE  # adapter served by name
            sent = [c for c in calls if c.body["model"] == want
                    and c.body["messages"] == sample["prompt"]]
            assert len(sent) == 1 and sample["output"] == f"[{want}] Brasília", sample["system"]
            passages = [c.text[:60] for c in store.chunks(context_rows[sample["question_id"]])]
            found = [p in _text(sample["prompt"]) for p in passages]
            assert passages and found == [sample["system"].startswith("rag")] * len(passages)
    assert 1 <= fake_vllm.max_in_flight <= 2  # --batch-size bounds the requests in flight
    assert all("semantic_sim" in s["scores"] for s in samples)  # the store's hashing embedder


def test_concurrency_never_exceeds_the_bound(fake_vllm: Any) -> None:
    fake_vllm.delay_s = 0.1
    decoding = Decoding(strategy="sample", temperature=0.3, top_p=0.8, top_k=5,
                        max_new_tokens=17, seed=7)
    prompts = [[{"role": "user", "content": f"pergunta {i}"}] for i in range(12)]
    outs = _client(fake_vllm, max_concurrency=3).generate(prompts, decoding)
    assert [o.text for o in outs] == [f"[{BASE}] Brasília"] * 12
    assert fake_vllm.max_in_flight == 3  # parallel, and never more than the bound
    body = fake_vllm.completions()[0].body
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "top_k", "seed")} == {
        "max_tokens": 17, "temperature": 0.3, "top_p": 0.8, "top_k": 5, "seed": 7}
    asked = sorted(c.body["messages"][0]["content"] for c in fake_vllm.completions())
    assert asked == sorted(p[0]["content"] for p in prompts)  # each prompt sent exactly once


@pytest.mark.parametrize("status", [503, 429])
def test_busy_server_is_retried_with_exponential_backoff(fake_vllm: Any,
                                                         status: int) -> None:
    fake_vllm.fail = [status, status]
    out = _client(fake_vllm, retries=3, backoff_s=0.1).generate(["Quem foi Tiradentes?"])
    assert out[0].text == f"[{BASE}] Brasília"
    calls = fake_vllm.completions()
    assert [c.status for c in calls] == [status, status, 200]
    gaps = [b.start - a.end for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # backoff_s, then twice that


def test_a_hung_server_times_out_then_is_retried(fake_vllm: Any) -> None:
    fake_vllm.slow = [2.0]  # the first attempt hangs past the client's timeout
    start = time.monotonic()
    out = _client(fake_vllm, timeout_s=0.3, retries=1, backoff_s=0.01).generate(["p"])
    assert out[0].text == f"[{BASE}] Brasília" and time.monotonic() - start < 1.5
    assert len(fake_vllm.completions()) == 2


def test_a_server_that_never_answers_is_one_clear_error(fake_vllm: Any) -> None:
    fake_vllm.delay_s = 1.0
    start = time.monotonic()
    with pytest.raises(UserError, match=r"after 2 attempts \(ReadTimeout.*fix --base-url"):
        _client(fake_vllm, timeout_s=0.2, retries=1, backoff_s=0.01).generate(["p"])
    assert time.monotonic() - start < 0.9  # two timeouts and a backoff, not the server's delay


def test_an_adapter_the_server_does_not_serve_is_refused_once(fake_vllm: Any) -> None:
    with pytest.raises(UserError, match="HTTP 404.*The model `other-lora` does not exist"):
        _client(fake_vllm, model="other-lora", retries=3).generate(["p"])
    assert len(fake_vllm.completions()) == 1  # a 4xx is not retried
    with pytest.raises(UserError, match="--lora-modules NAME=PATH"):
        make_generator(BASE, adapter="adapters/brazil", base_url=fake_vllm.url)


def test_the_vllm_chat_template_renders_finetunes_llama2_format(tiny_llama_dir: Path) -> None:
    """A base Llama-2 served with --chat-template docs/vllm/llama2-inst.jinja reads, for the
    chat requests of the base and RAG systems, the text an adapter trained with --format llama2
    is prompted with (text requests), so base and fine-tuned differ only in the weights."""
    from transformers import AutoTokenizer

    from models.formats import get_format

    template = (Path(__file__).resolve().parents[2] / "docs" / "vllm" / "llama2-inst.jinja"
                ).read_text(encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    messages = [{"role": "system", "content": "Responda só com o nome.\nRegras: curto. "},
                {"role": "user", "content": "Contexto:\n[1] Tiradentes — Vida\nTexto.\n\n"
                                            "Pergunta: Quem foi Tiradentes?"},
                {"role": "assistant", "content": "Um inconfidente."},
                {"role": "user", "content": "E quando morreu?"}]
    for turns in (messages[:2], messages):
        rendered = tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False,
                                                 add_generation_prompt=True)
        assert rendered == tokenizer.bos_token + get_format("llama2").adapt(turns)
