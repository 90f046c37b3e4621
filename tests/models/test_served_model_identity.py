"""``served_model_identity`` against a local HTTP server started by the test (no network)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from models.gen_openai import (
    ModelNotServed,
    ServerRefused,
    ServerUnreachable,
    served_model_identity,
)


class Listing:
    """What the fake server answers to GET /v1/models; records the requests."""

    def __init__(self) -> None:
        self.status = 200
        self.reply: dict[str, Any] = {"object": "list", "data": []}
        self.seen: list[tuple[str, str]] = []  # (path, Authorization header)


@pytest.fixture
def server(serve_json: Any) -> Iterator[tuple[Listing, str]]:
    listing = Listing()

    def handle(method: str, path: str, body: dict[str, Any], headers: dict[str, str]
               ) -> tuple[int, Any]:
        listing.seen.append((path, headers.get("Authorization", "")))
        return ((listing.status, listing.reply) if path == "/v1/models"
                else (404, {"error": "not found"}))

    with serve_json(handle) as url:
        yield listing, url


# a vLLM listing: "created" is stamped at each request, "root" is the weights behind the alias
def vllm_card(model_id: str, root: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "vllm",
            "root": root, "parent": None, "max_model_len": 32768, "permission": [
                {"id": "modelperm-1", "created": int(time.time())}]}


def test_named_model_is_identified_by_the_card_the_server_reports(server) -> None:
    listing, url = server
    listing.reply["data"] = [vllm_card("judge", "Qwen/Qwen2.5-7B-Instruct"),
                             vllm_card("other", "meta-llama/Llama-3.1-8B-Instruct")]
    identity = served_model_identity(url + "/v1", "judge", api_key="sk-test")
    # the request-time stamp and the per-request permission list are not part of it
    assert identity == {"id": "judge", "owned_by": "vllm", "root": "Qwen/Qwen2.5-7B-Instruct"}
    assert listing.seen == [("/v1/models", "Bearer sk-test")]


def test_a_stable_created_and_llamacpp_meta_are_kept(server) -> None:
    listing, url = server
    meta = {"n_params": 494032768, "size": 988060672, "n_ctx_train": 32768}
    listing.reply["data"] = [{"id": "qwen.gguf", "object": "model", "created": 1700000000,
                              "owned_by": "llamacpp", "meta": meta}]
    assert served_model_identity(url) == {"id": "qwen.gguf", "owned_by": "llamacpp",
                                          "meta": meta, "created": 1700000000}


def test_same_name_other_weights_gives_another_identity(server) -> None:
    listing, url = server
    listing.reply["data"] = [vllm_card("judge", "Qwen/Qwen2.5-7B-Instruct")]
    first = served_model_identity(url, "judge")
    listing.reply["data"] = [vllm_card("judge", "Qwen/Qwen2.5-1.5B-Instruct")]
    assert served_model_identity(url, "judge") != first


def test_unknown_name_and_ambiguous_listing_are_refused(server) -> None:
    listing, url = server
    listing.reply["data"] = [vllm_card("a", "x/a"), vllm_card("b", "x/b")]
    with pytest.raises(ModelNotServed, match="it serves: a, b"):
        served_model_identity(url, "c")
    with pytest.raises(ModelNotServed, match="serves 2 models"):
        served_model_identity(url)


def test_no_model_list_and_no_server(server) -> None:
    listing, url = server
    listing.status, listing.reply = 404, {"error": "no such route"}
    with pytest.raises(ServerRefused) as err:
        served_model_identity(url, "judge")
    assert err.value.status == 404
    listing.status, listing.reply = 200, {"object": "list"}
    with pytest.raises(ServerRefused, match="without model ids"):
        served_model_identity(url, "judge")
    with pytest.raises(ServerUnreachable, match="after 1 attempts"):
        served_model_identity("http://127.0.0.1:9", "judge", timeout=2, retries=0)
