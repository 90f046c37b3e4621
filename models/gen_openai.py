"""A ``Generator`` speaking the OpenAI HTTP API (vLLM, TGI, llama.cpp server, Ollama).

Message prompts go to ``/v1/chat/completions``, plain strings to ``/v1/completions``. Requests run
``max_concurrency`` at a time, with timeouts and exponential-backoff retries on connection errors,
429 and 5xx. LoRA adapters served by vLLM are addressed by their served name, passed as ``model``.
``served_model_identity`` asks a server which model it serves under a name (``GET /v1/models``),
so that a cache can key a served model by what the server reports rather than by name and URL.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from tqdm.auto import tqdm

from core.errors import UserError
from models.generation import Decoding, Generation, Prompt, apply_stop

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CHARS_PER_TOKEN = 3.0  # conservative estimate when the server has no /tokenize
UNSUPPORTED_STATUS = frozenset({400, 404, 405, 422, 501})
# a ``created`` this close to now (seconds, either way) is the listing's own time stamp (vLLM,
# lmdeploy and llama.cpp's server stamp each GET /v1/models), not the model's: left out
CREATED_IS_NOW_S = 600
IDENTITY_FIELDS = ("owned_by", "root", "parent", "meta")  # kept from a model card when present
T = TypeVar("T")


class ServerRefused(UserError):
    """The server answered with a 4xx (or a 5xx that outlived the retries)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(UserError):
    """No answer from the server: connection errors, timeouts, 408/429/5xx past the retries."""


class ModelNotServed(UserError):
    """The server answers but does not serve the model asked for (or serves several and none
    was named)."""


class OpenAIGenerator:
    """Generation and scoring through an OpenAI-compatible server."""

    strategies = ("greedy", "sample", "best_of_n")  # what the OpenAI API can express

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout_s: float = 60, retries: int = 3, max_concurrency: int = 4,
                 context_window: int = 4096, backoff_s: float = 1.0, progress: bool = True) -> None:
        url = base_url.rstrip("/")
        self.base_url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.name = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.max_concurrency = max(1, max_concurrency)
        self.progress = progress
        self._window = context_window
        self._tokenize_ok: bool | None = None
        self._local = threading.local()

    @property
    def context_window(self) -> int:
        """The window given at construction (servers do not report it uniformly)."""
        return self._window

    # --- the Generator protocol ----------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """One request per prompt, ``max_concurrency`` in flight; results in the prompts' order."""
        params = sampling_params(decoding)
        return self._map(lambda p: self._generate_one(p, decoding, params), prompts, "generating")

    def loglikelihood(self, requests_: Sequence[tuple[str, str]]) -> list[float]:
        """Continuation log-probs via ``/v1/completions`` with ``echo`` and ``logprobs``."""
        return self._map(lambda r: self._score_one(*r), requests_, "scoring")

    def count_tokens(self, text: str) -> int:
        """The server's count via vLLM's ``/tokenize``, else an estimate (logged once)."""
        if self._tokenize_ok is not False:
            try:
                reply = self._post("/tokenize", {"model": self.name, "prompt": text})
            except ServerRefused as exc:
                if self._tokenize_ok or exc.status not in UNSUPPORTED_STATUS:
                    raise
                self._tokenize_ok = False
                log.warning("%s has no /tokenize endpoint; estimating tokens as chars/%.0f",
                            self.base_url, CHARS_PER_TOKEN)
            else:
                self._tokenize_ok = True
                return int(reply["count"]) if "count" in reply else len(reply.get("tokens", []))
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def served_models(self) -> list[dict[str, Any]]:
        """The model cards the server lists at ``GET /v1/models`` (``data``: id, owned_by…)."""
        reply = self._request("GET", "/v1/models", what="listing its models (GET /v1/models)")
        data = reply.get("data")
        if not isinstance(data, list) or not all(isinstance(c, dict) and isinstance(
                c.get("id"), str) for c in data):
            raise ServerRefused(f"the model server at {self.base_url} sent a model list without "
                                f"model ids: {str(reply)[:200]}", 200)
        return data

    # --- one request ---------------------------------------------------------------------

    def _generate_one(self, prompt: Prompt, d: Decoding, params: dict[str, Any]) -> Generation:
        chat = not isinstance(prompt, str)
        body: dict[str, Any] = {"model": self.name, **params}
        body["messages" if chat else "prompt"] = list(prompt) if chat else prompt
        start = time.perf_counter()
        reply = self._post("/v1/chat/completions" if chat else "/v1/completions", body)
        latency = time.perf_counter() - start
        choice = pick_choice(_choices(reply, self.base_url), chat)
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        usage = reply.get("usage") or {}
        return Generation(text=apply_stop(text or "", d.stop),
                          prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0),
                          latency_s=latency)

    def _score_one(self, context: str, continuation: str) -> float:
        body = {"model": self.name, "prompt": context + continuation, "echo": True,
                "logprobs": 1, "max_tokens": 1, "temperature": 0}
        reply = self._post("/v1/completions", body, what="scoring (echo + logprobs)")
        logprobs = _choices(reply, self.base_url)[0].get("logprobs") or {}
        offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
        if not offsets or values is None:
            raise UserError(f"the server at {self.base_url} returned no prompt log-probs for "
                            "echo=True; loglikelihood needs vLLM (or use generate-mode scoring)")
        end = len(context) + len(continuation)
        return float(sum(v for o, v in zip(offsets, values, strict=False)
                         if v is not None and len(context) <= o < end))

    # --- HTTP ----------------------------------------------------------------------------

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any], desc: str) -> list[T]:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(tqdm(pool.map(fn, items), total=len(items), unit="req",
                             desc=f"{desc} ({self.name})", disable=not self.progress))

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _post(self, path: str, body: dict[str, Any], what: str = "") -> dict[str, Any]:
        """POST with retries on connection errors, 429 and 5xx; UserError once they run out."""
        return self._request("POST", path, body, what)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 what: str = "") -> dict[str, Any]:
        """One HTTP call with retries on connection errors, 408, 429 and 5xx:
        ``ServerUnreachable`` once they run out, ``ServerRefused`` on another 4xx."""
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._session().request(method, url, json=body, headers=headers,
                                               timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                log.debug("attempt %d on %s failed: %s", attempt + 1, url, last)
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            return _json_or_error(resp, url, what)
        raise ServerUnreachable(f"cannot get an answer from the model server at {url} after "
                                f"{self.retries + 1} attempts ({last}); start the server or fix "
                                "--base-url")


def served_model_identity(base_url: str, name: str | None = None, timeout: float = 10.0, *,
                          api_key: str | None = None, retries: int = 1) -> dict[str, Any]:
    """What the server at ``base_url`` reports about the model it serves as ``name``
    (``GET /v1/models``): ``{"id": ...}`` plus the card's ``owned_by``, ``root`` (vLLM: the
    weights' path or hub id behind a ``--served-model-name``), ``parent`` (vLLM: a LoRA's base)
    and ``meta`` (llama.cpp: parameter count, size…) when present, and ``created`` unless it is
    the listing's own time stamp (within ``CREATED_IS_NOW_S`` of now). With ``name`` None the
    server must serve exactly one model, which is the one described.

    ``ServerUnreachable`` when the server does not answer, ``ServerRefused`` when it has no
    model list, ``ModelNotServed`` when ``name`` is not among the ids it lists."""
    client = OpenAIGenerator(base_url, name or "", api_key=api_key, timeout_s=timeout,
                             retries=retries, backoff_s=0.5, progress=False)
    cards = client.served_models()
    ids = [c["id"] for c in cards]
    if name is None:
        if len(cards) != 1:
            raise ModelNotServed(f"the model server at {client.base_url} serves "
                                 f"{len(cards)} models ({', '.join(ids) or 'none'}); name the "
                                 "one to use as NAME@URL")
        card = cards[0]
    else:
        found = [c for c in cards if c["id"] == name]
        if not found:
            raise ModelNotServed(f"the model server at {client.base_url} does not serve "
                                 f"{name!r}; it serves: {', '.join(ids) or 'nothing'}")
        card = found[0]
    identity: dict[str, Any] = {"id": card["id"]}
    identity.update({k: card[k] for k in IDENTITY_FIELDS if card.get(k) is not None})
    created = card.get("created")
    if isinstance(created, (int, float)) and abs(time.time() - created) > CREATED_IS_NOW_S:
        identity["created"] = int(created)
    return identity


def sampling_params(d: Decoding) -> dict[str, Any]:
    """The OpenAI request fields for a ``Decoding`` (beam and contrastive have none)."""
    if d.strategy in ("beam", "contrastive"):
        raise UserError(f"{d.strategy} decoding is not part of the OpenAI API; use greedy, sample "
                        "or best_of_n with a server, or run the model in-process")
    params: dict[str, Any] = {"max_tokens": d.max_new_tokens, "seed": d.seed}
    if d.stop:
        params["stop"] = list(d.stop)
    if d.strategy == "greedy":
        return {**params, "temperature": 0.0}
    params.update(temperature=d.temperature, top_p=d.top_p)
    if d.top_k > 0:
        params["top_k"] = d.top_k  # vLLM / llama.cpp extension
    if d.strategy == "best_of_n":
        params.update(n=d.n, logprobs=True)
    return params


def pick_choice(choices: list[dict[str, Any]], chat: bool) -> dict[str, Any]:
    """The choice with the highest mean token log-prob; the first when none carries log-probs."""
    scored = [(mean_logprob(c, chat), i) for i, c in enumerate(choices)]
    known = [(s, i) for s, i in scored if s is not None]
    return choices[max(known)[1]] if known else choices[0]


def mean_logprob(choice: dict[str, Any], chat: bool) -> float | None:
    """Mean token log-prob of one choice, from the chat or the completions log-prob layout."""
    logprobs = choice.get("logprobs") or {}
    if chat:
        values = [t.get("logprob") for t in logprobs.get("content") or []]
    else:
        values = list(logprobs.get("token_logprobs") or [])
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _choices(reply: dict[str, Any], base_url: str) -> list[dict[str, Any]]:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UserError(f"the server at {base_url} sent a reply without choices: "
                        f"{str(reply)[:200]}")
    return choices


def _json_or_error(resp: requests.Response, url: str, what: str) -> dict[str, Any]:
    if resp.status_code >= 400:
        task = f" does not support {what}" if what else " refused the request"
        raise ServerRefused(f"the model server at {url}{task} (HTTP {resp.status_code}: "
                            f"{resp.text[:300]})", resp.status_code)
    try:
        return resp.json()
    except ValueError as exc:
        raise UserError(f"the model server at {url} sent a non-JSON reply: {resp.text[:200]}"
                        ) from exc
