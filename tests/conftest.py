"""Shared test set-up: offline hub, and the ../shared wiki fragments (skipped where absent)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_WIKI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wiki"


@pytest.fixture(scope="session")
def shared_wiki() -> Path:
    """The real dump fragments in ../shared/data/wiki; the test is skipped where they are absent."""
    if not SHARED_WIKI.is_dir():
        pytest.skip("../shared/data/wiki is absent (a user's clone)")
    return SHARED_WIKI


def _manual_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) straight from the logits (no batching, no
    cache): the reference the scoring paths are checked against."""
    import torch

    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@pytest.fixture(scope="session")
def manual_logprob() -> Callable[..., float]:
    """``manual_logprob(model, tokenizer, context, continuation)``: the reference log-prob."""
    return _manual_logprob


# what a fake JSON server answers: handle(method, path, body, headers) -> (status, reply)
JsonHandler = Callable[[str, str, dict[str, Any], dict[str, str]], tuple[int, Any]]


@contextlib.contextmanager
def json_server(handle: JsonHandler) -> Iterator[str]:
    """A local HTTP server answering GET and POST with JSON from ``handle`` (the OpenAI-compatible
    fakes of the backend, served-identity and judge tests); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            status, reply = handle(method, self.path, body, dict(self.headers))
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._reply("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._reply("POST")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def serve_json() -> Callable[[JsonHandler], contextlib.AbstractContextManager[str]]:
    """``json_server`` for the tests that fake an OpenAI-compatible server."""
    return json_server
