"""A fake vLLM server (OpenAI-compatible HTTP, threaded) that CHECKS what it receives.

It serves one base model and LoRA adapters by name, as ``vllm serve BASE --enable-lora
--lora-modules NAME=DIR`` does: a request for any other model gets vLLM's 404. It validates the
request bodies (messages, max_tokens, temperature, seed), implements ``/tokenize``, records every
request with its timing, tracks how many were in flight at once, and can be scripted to fail
(503, 429) or to answer slowly, to test retries, backoff and timeouts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

BASE, LORA = "qwen-base", "brazil-lora"
MAX_MODEL_LEN = 4096


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    body: dict[str, Any]
    start: float
    end: float = 0.0
    status: int = 0


@dataclass
class FakeVLLM:
    """Served names, the requests seen, in-flight accounting, scripted failures and delays."""

    base: str = BASE
    loras: tuple[str, ...] = (LORA,)
    delay_s: float = 0.0  # every completion takes this long
    fail: list[int] = field(default_factory=list)  # statuses for the next completion requests
    slow: list[float] = field(default_factory=list)  # extra delays for the next completions
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def completions(self) -> list[Seen]:
        """The chat/completion requests (not /tokenize), in arrival order."""
        return [s for s in self.seen if s.path.endswith("completions")]

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seen = Seen(path, body, time.monotonic())
        with self.lock:
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self.fail.pop(0) if self.fail and path.endswith("completions") else None
            extra = self.slow.pop(0) if self.slow and path.endswith("completions") else 0.0
        try:
            if path.endswith("completions"):
                time.sleep(self.delay_s + extra)
            if scripted is not None:
                status, reply = scripted, {"object": "error", "message": "busy"}
            else:
                status, reply = self.answer(path, body)
        finally:
            with self.lock:
                self.in_flight -= 1
        seen.end, seen.status = time.monotonic(), status
        return status, reply

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body.get("model")
        if model not in (self.base, *self.loras):
            return 404, {"object": "error", "type": "NotFoundError", "code": 404,
                         "message": f"The model `{model}` does not exist."}
        if path == "/tokenize":
            words = body.get("prompt", "").split()
            return 200, {"count": len(words), "max_model_len": MAX_MODEL_LEN,
                         "tokens": list(range(len(words)))}
        problem = _invalid(path, body)
        if problem:
            return 400, {"object": "error", "type": "BadRequestError", "message": problem}
        text = f"[{model}] Brasília"
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
        if path == "/v1/chat/completions":
            return 200, {"object": "chat.completion", "model": model, "usage": usage,
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}]}
        return 200, {"object": "text_completion", "model": model, "usage": usage,
                     "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}


def _invalid(path: str, body: dict[str, Any]) -> str | None:
    """What vLLM's request validation would refuse (a subset)."""
    if path == "/v1/chat/completions":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in msgs):
            return "messages must be a non-empty list of {role, content}"
    elif path == "/v1/completions":
        if not isinstance(body.get("prompt"), str):
            return "prompt must be a string"
    else:
        return f"no route {path}"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens must be a positive integer"
    if not 0 <= float(body.get("temperature", 1.0)) <= 2:
        return "temperature must be in [0, 2]"
    return None


@pytest.fixture
def fake_vllm() -> Iterator[FakeVLLM]:
    """A running fake server (``.url`` without ``/v1``), stopped after the test."""
    fake = FakeVLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            status, reply = fake.handle(self.path, body)
            self._send(status, reply)

        def do_GET(self) -> None:  # noqa: N802
            models = [{"id": m, "object": "model"} for m in (fake.base, *fake.loras)]
            self._send(200, {"object": "list", "data": models})

        def _send(self, status: int, reply: dict[str, Any]) -> None:
            data = json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def hashing_store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample dump as a store with the model-free hashing embedder (under a second)."""
    from ingest.build import build_store
    from ingest.config import IngestConfig

    root = Path(__file__).resolve().parents[2]
    dump = root / "data" / "wiki" / "ptwiki-sample-brazilian-history.xml.bz2"
    out = tmp_path_factory.mktemp("scale-store") / "sample"
    return build_store(dump, out, IngestConfig(embedder="hashing", workers=0), progress=False)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama of tests/models (its builder, loaded by path: no test packages)."""
    import importlib.util

    builder = Path(__file__).resolve().parents[1] / "models" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tiny_llama_builder", builder)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_training(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Path, Path]:
    """(training YAML, pairs JSONL): QLoRA (4-bit nf4 + LoRA) on the tiny Llama, 2 steps."""
    from finetune.records import Pair, write_pairs

    folder = tmp_path_factory.mktemp("tiny-training")
    names = ["Pedro", "Vargas", "Tiradentes", "Isabel"]
    pairs = [Pair(instruction=f"Quem foi {n} {i}?", input="", output=f"{n} {i} foi um líder.",
                  source=f"{n} {i}", kind="lead", split="validation" if i % 6 == 0 else "train")
             for i, n in enumerate(names * 4)]
    write_pairs(pairs, folder / "pairs.jsonl")
    (folder / "tiny.yaml").write_text(
        f"model: {tiny_llama_dir}\nformat: llama2\nload_in_4bit: true\nlora_r: 8\n"
        "lora_alpha: 16\nmax_steps: 2\nper_device_train_batch_size: 2\n"
        "per_device_eval_batch_size: 2\nlearning_rate: 1.0e-2\nwarmup_ratio: 0.0\n"
        "logging_steps: 1\neval_steps: 2\nsave_steps: 2\nmax_seq_length: 64\n"
        "prompt_template: none\nprecision: 'no'\n"
        "optim: adamw_torch\ngroup_by_length: false\n", encoding="utf-8")
    return folder / "tiny.yaml", folder / "pairs.jsonl"
