"""The OpenAI-compatible backend against a local canned-reply HTTP server started by the test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.errors import UserError
from models.backends import make_generator
from models.gen_openai import OpenAIGenerator
from models.generation import Decoding

Reply = tuple[int, dict[str, Any]]


class FakeServer:
    """Records every request; answers from ``script`` (a list of replies per path) or a default."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, list[Reply]] = {}
        self.default: Callable[[str, dict[str, Any]], Reply] = _canned
        self.lock = threading.Lock()

    def answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append({"path": path, "body": body, "headers": headers})
            queue = self.script.get(path)
            if queue:
                return queue.pop(0)
        return self.default(path, body)


def _canned(path: str, body: dict[str, Any]) -> Reply:
    if path == "/v1/chat/completions":
        text = f"chat:{body['messages'][-1]['content']}"
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    if path == "/v1/completions":
        return 200, {"choices": [{"text": f"text:{body['prompt']} END more"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 4}}
    return 404, {"error": "not found"}


@pytest.fixture
def server(serve_json: Any) -> Iterator[tuple[FakeServer, str]]:
    fake = FakeServer()
    with serve_json(lambda method, path, body, headers: fake.answer(path, body, headers)) as url:
        yield fake, url


def _client(url: str, **kwargs: Any) -> OpenAIGenerator:
    return OpenAIGenerator(url, "served-model", backoff_s=0.01, progress=False, **kwargs)


def test_chat_and_completion_routes_in_order(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(5)] + ["raw"]
    outs = _client(url + "/v1", max_concurrency=3).generate(
        prompts, Decoding(max_new_tokens=9, stop=("END",), seed=3))
    assert [o.text for o in outs] == [f"chat:q{i}" for i in range(5)] + ["text:raw "]
    assert outs[0].prompt_tokens == 7 and outs[0].completion_tokens == 3
    raw = next(r for r in fake.requests if r["path"] == "/v1/completions")["body"]
    assert raw == {"model": "served-model", "prompt": "raw", "max_tokens": 9, "seed": 3,
                   "stop": ["END"], "temperature": 0.0}


def test_sampling_params_and_api_key(server: tuple[FakeServer, str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    _client(url).generate(["p"], Decoding(strategy="sample", temperature=0.5, top_p=0.9, top_k=7))
    req = fake.requests[0]
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert {k: req["body"][k] for k in ("temperature", "top_p", "top_k")} == {
        "temperature": 0.5, "top_p": 0.9, "top_k": 7}


def test_best_of_n_picks_highest_mean_logprob(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    lp = [{"logprob": -2.0}, {"logprob": -2.0}]
    choices = [{"message": {"content": "worse"}, "logprobs": {"content": lp}},
               {"message": {"content": "better"}, "logprobs": {"content": [{"logprob": -0.5}]}}]
    fake.script["/v1/chat/completions"] = [(200, {"choices": choices})]
    out = _client(url).generate([[{"role": "user", "content": "x"}]],
                                Decoding(strategy="best_of_n", n=2))
    assert out[0].text == "better"
    assert fake.requests[0]["body"]["n"] == 2 and fake.requests[0]["body"]["logprobs"] is True


def test_retries_a_500_then_succeeds(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.script["/v1/completions"] = [(500, {"error": "boom"}), (429, {"error": "slow down"})]
    out = _client(url, retries=3).generate(["hi"])
    assert out[0].text.startswith("text:hi")
    assert len(fake.requests) == 3


def test_persistent_500_is_one_user_error(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.default = lambda path, body: (503, {"error": "down"})
    with pytest.raises(UserError, match="after 3 attempts"):
        _client(url, retries=2).generate(["hi"])
    assert len(fake.requests) == 3


def test_client_error_is_not_retried(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.default = lambda path, body: (400, {"error": "bad model"})
    with pytest.raises(UserError, match="HTTP 400"):
        _client(url).generate(["hi"])
    assert len(fake.requests) == 1


def test_dead_port_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(UserError, match=f"model server at {url}/v1/completions after 2 attempts"):
        _client(url, retries=1, timeout_s=2).generate(["hi"])


def test_loglikelihood_sums_continuation_tokens(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    logprobs = {"tokens": ["A", " capital", " Bras", "ília", "!"],
                "token_logprobs": [None, -1.0, -0.5, -0.25, -3.0],
                "text_offset": [0, 1, 9, 14, 18]}
    fake.script["/v1/completions"] = [(200, {"choices": [{"text": "", "logprobs": logprobs}]})]
    value = _client(url).loglikelihood([("A capital", " Brasília")])
    assert value == [-0.75]
    body = fake.requests[0]["body"]
    assert body["echo"] is True and body["logprobs"] == 1 and body["prompt"] == "A capital Brasília"


def test_loglikelihood_unsupported_is_user_error(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.default = lambda path, body: (200, {"choices": [{"text": "x"}]})
    with pytest.raises(UserError, match="no prompt log-probs"):
        _client(url).loglikelihood([("a", "b")])


def test_count_tokens_uses_tokenize_or_estimates(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    fake.script["/tokenize"] = [(200, {"count": 11, "tokens": [1] * 11})]
    client = _client(url)
    assert client.count_tokens("anything") == 11
    other = _client(url)  # the default reply for /tokenize is a 404
    assert other.count_tokens("abcdefghi") == 3


def test_beam_is_refused_and_make_generator_routes(server: tuple[FakeServer, str]) -> None:
    _, url = server
    gen = make_generator("served-model", base_url=url, batch_size=2)
    assert isinstance(gen, OpenAIGenerator) and gen.max_concurrency == 2
    with pytest.raises(UserError, match="not part of the OpenAI API"):
        gen.generate(["x"], Decoding(strategy="beam"))
