"""In-process llama.cpp generation (the ``xllamacpp`` binding): the GGUF as shipped, no fp32 copy.

``LlamaCppGenerator`` loads a GGUF file into llama.cpp's own server loop (in this process, no
HTTP) and sends every prompt of a ``generate`` call at once from a thread pool: llama.cpp's
continuous batching decodes up to ``parallel`` sequences together, each slot freed as soon as its
answer ends. Chat prompts go through the chat template stored in the GGUF (rendered by llama.cpp's
jinja engine, the same template transformers applies to the converted model); plain-text prompts
are completed as they are. Greedy and sampled decoding are supported with the ``Decoding``'s
temperature, top-p, top-k, seed and stop strings; every sampled request carries its own seed,
``models.generation.prompt_seed(decoding.seed, prompt)``, so a sampled answer does not depend on
which prompts shared its batch.

Greedy answers are another matter: llama.cpp's kernels are not batch-invariant (a row's
figures depend on how many rows share the matrix product). With several slots the batch each
token is decoded in depends on timing, so two fresh servers answer some prompts differently
(bench/RESULTS.md: 16 of 82 with 8 slots). With one slot (``parallel=1``) the batches are the
same on every run, but a prompt that starts like the one before it (the shared system prompt)
is read from where they part, on the prefix the slot computed for that one: an answer then
depends on the prompt before it (18 of 82 answers differ from a whole read), the same on a
fresh re-run in the same order. ``prefix_cache=False`` reads every prompt whole, so an answer
is a function of its prompt alone, at the cost of re-reading the shared prefix.
``REPRODUCIBLE`` names the three settings compare offers. Beam search, contrastive search and
best-of-n are refused (``STRATEGIES``). Continuations are scored exactly for this GGUF
(``loglikelihood``): llama.cpp has no prompt log-probabilities, but the probabilities of the
next token after a prompt cover the whole vocabulary, so each continuation token is read after
its own prefix, the context plus the continuation's earlier tokens (one request per distinct
prefix: the four letters of a multiple-choice question share one; a continuation's first two
tokens are read in one request, the first forced).

    gen = LlamaCppGenerator(gguf_path, tokenizer, name="qwen2.5-coder-0.5b-instruct")
    gen.generate([[{"role": "user", "content": "Quem foi Tiradentes?"}]], Decoding())
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.errors import UserError
from core.hashing import sha256_file
from models.generation import Decoding, Generation, Prompt, apply_stop, prompt_seed

log = logging.getLogger(__name__)

STRATEGIES = ("greedy", "sample")  # what this backend decodes; the others are refused
DEFAULT_PARALLEL = 8
# what stays the same when an experiment is answered again -> (slots, prefix cache); slots None:
# the experiment's batch size
REPRODUCIBLE: dict[str, tuple[int | None, bool]] = {
    "prompt": (1, False),  # an answer depends on its prompt alone: one at a time, read whole
    "run": (1, True),  # a fresh re-run of the same prompts in the same order answers the same
    "off": (None, True),  # batch_size answers in flight: greedy answers vary between runs
}
DEFAULT_CONTEXT = 4096
# next-token probabilities asked for first when scoring continuations. A forced token needs no
# rank: the request reports its probability from the whole vocabulary (the chat template's "\n"
# that lm-eval moves into each letter's continuation ranks ~1000-10000 for Qwen, and was read
# again with the whole vocabulary, ~3 s of JSON, when the first read held only 4096); what must be
# among the top is the second position's tokens, the letters: on the demo's 56 multiple-choice
# reads (4 systems) 64 missed 2, 1024 missed none, and 1024 answered in 116 s where 16384 took 129
SCORE_TOP = 1024
ALL_TOKENS = 1 << 22  # more than any vocabulary: llama.cpp then reports every token
FORCE = 1000.0  # the logit bias that makes greedy decoding pick a continuation's first token
Read = tuple[tuple[int, ...], int | None]  # a scoring read: token prefix, token forced after it


def gguf_context_length(path: Path) -> int | None:
    """The training context length a GGUF file declares (``<arch>.context_length``)."""
    from models.gguf_header import read_header

    header = read_header(path)
    value = header.get(f"{header.get('general.architecture')}.context_length")
    return int(value) if value is not None else None


def gguf_file_type(path: Path) -> str | None:
    """The GGUF's ``general.file_type`` by llama.cpp's name (its quantization, e.g.
    "MOSTLY_Q4_K_M"), or None when the header does not say."""
    from gguf import LlamaFileType

    from models.gguf_header import read_header

    value = read_header(path).get("general.file_type")
    if value is None:
        return None
    try:
        return LlamaFileType(int(value)).name
    except ValueError:
        return f"file_type_{value}"


def gguf_identity(path: str | Path, sha256: str | None = None) -> dict[str, Any]:
    """What keys the generations of a GGUF model: file name, sha256 (``sha256`` when the caller
    already knows it, e.g. a bundled model's checked hash; else the file's, computed once per
    process) and file type (``gguf_file_type``)."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    digest = sha256 or _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
    return {"file": path.name, "sha256": digest, "file_type": gguf_file_type(path)}


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def llamacpp_device() -> str:
    """Where llama.cpp computes: "cpu", or the first GPU backend's kind ("cuda", "metal"…)
    when the binding has one (it then offloads every layer by default)."""
    import re

    import xllamacpp

    for info in xllamacpp.get_device_info():
        kind = str(getattr(info.get("type"), "name", info.get("type")))
        if kind.endswith(("_GPU", "_IGPU")):
            return re.sub(r"\d+$", "", str(info.get("name", "gpu"))).lower() or "gpu"
    return "cpu"


def llamacpp_build() -> str:
    """The CPU features the installed llama.cpp was compiled with, as llama.cpp reports them
    ("CPU : SSE3 = 1 | … | AVX2 = 1 | …"). A native build of the same binding version (AVX-512,
    ``make native-llamacpp``) computes other floats than the prebuilt AVX2 wheel, so answers
    are keyed by it as well as by the version."""
    import xllamacpp

    return " ".join(str(xllamacpp.get_system_info()).split())


def llamacpp_identity(gguf: str | Path, *, sha256: str | None = None, slots: int,
                      prefix_cache: bool) -> dict[str, Any]:
    """What determines a llama.cpp model's outputs short of the prompt, decoding and LoRAs:
    the backend, the GGUF (``gguf_identity``), the device, the build (its CPU features), the
    binding's version, and how prompts are batched (``slots`` decoded together, whether a
    prompt's prefix shared with the previous one is reused): answers batched one way differ
    from answers batched another, so neither is served for the other from a cache."""
    from core.versions import package_versions

    return {"backend": "llamacpp", "gguf": gguf_identity(gguf, sha256),
            "device": llamacpp_device(), "build": llamacpp_build(),
            "slots": slots, "prefix_cache": prefix_cache,
            "versions": package_versions(("xllamacpp",))}


def binding_available() -> bool:
    """Whether the llama.cpp binding (``xllamacpp``) is installed."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


class LlamaCppGenerator:
    """A ``Generator`` over llama.cpp in this process (see the module docstring).

    ``tokenizer`` (a transformers tokenizer of the same model) counts tokens for prompt budgets;
    ``parallel`` is the number of sequences decoded together; ``context`` the tokens each of them
    may hold (prompt + answer; default: the model's own length, capped at 4096); ``threads`` the
    CPU threads (default: every core this process may use); ``prefix_cache``: a slot reads a
    prompt from where it parts from the slot's previous one (off: every prompt read whole; see
    the module docstring).
    """

    strategies = STRATEGIES

    def __init__(self, gguf: str | Path, tokenizer: Any, *, name: str | None = None,
                 parallel: int = DEFAULT_PARALLEL, context: int | None = None,
                 threads: int | None = None, progress: bool = True,
                 loras: Sequence[str | Path] = (), prefix_cache: bool = True) -> None:
        if parallel < 1:
            raise UserError(f"parallel must be at least 1, not {parallel}")
        self.path = Path(gguf).expanduser()
        if not self.path.is_file():
            raise UserError(f"{self.path} is not a GGUF file; pass a bundled model name or the "
                            "path of a .gguf file")
        if not binding_available():
            raise UserError("the llama.cpp backend needs the xllamacpp package: "
                            "pip install xllamacpp (or use --backend transformers)")
        self.tokenizer, self.name = tokenizer, name or self.path.stem
        self.parallel, self.progress, self.prefix_cache = parallel, progress, prefix_cache
        declared = gguf_context_length(self.path) or DEFAULT_CONTEXT
        self._window = min(context or min(declared, DEFAULT_CONTEXT), declared)
        self.threads = threads or len(os.sched_getaffinity(0))
        self.loras = tuple(Path(p) for p in loras)
        self.active: int | None = None  # which of ``loras`` answers (None: the base model)
        self._shared: dict[str, Any] = {}  # the server, shared with ``with_adapter`` views

    def with_adapter(self, index: int | None, name: str | None = None) -> LlamaCppGenerator:
        """A generator on the SAME loaded model answering with LoRA ``index`` of ``loras`` on
        (``None``: the base model): one model in memory serves base and fine-tuned, the
        adapter applied per request."""
        if index is not None and not 0 <= index < len(self.loras):
            raise ValueError(f"no LoRA {index}: this model was loaded with {len(self.loras)}")
        view = copy.copy(self)
        view.active, view.name = index, name or self.name
        return view

    @property
    def identity(self) -> dict[str, Any]:
        """What determines this generator's outputs short of the prompt and decoding
        (``llamacpp_identity``), with the LoRA GGUFs loaded and which one answers."""
        return {**llamacpp_identity(self.path, slots=self.parallel,
                                    prefix_cache=self.prefix_cache),
                "loras": [gguf_identity(p) for p in self.loras], "active": self.active}

    # --- the Generator protocol ----------------------------------------------------------

    @property
    def context_window(self) -> int:
        """Tokens one sequence may hold (prompt + answer)."""
        return self._window

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` without special tokens (the model's own tokenizer)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """One answer per prompt, all prompts in flight at once (continuous batching)."""
        check_strategy(decoding)
        if not prompts:
            return []
        server = self.server()
        requests = [self._request(p, decoding) for p in prompts]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            futures = [pool.submit(_call, server, r) for r in requests]
            replies = [f.result() for f in tqdm(futures, desc=f"generating ({self.name})",
                                                unit="answer", disable=not self.progress
                                                or len(futures) <= self.parallel)]
        each = (time.perf_counter() - start) / len(prompts)
        return [self._generation(r, decoding, each) for r in replies]

    def next_token_logprobs(self, prompts: Sequence[Prompt], top: int = 5
                            ) -> list[dict[int, float]]:
        """The ``top`` most likely first answer tokens of each prompt, ``{token id: log-prob}``
        (what llama.cpp's sampler reports; used to check it against transformers)."""
        server = self.server()
        requests = []
        for prompt in prompts:
            kind, body = self._request(prompt, Decoding(max_new_tokens=1))
            extra = ({"logprobs": True, "top_logprobs": top} if kind == "chat"
                     else {"n_probs": top})
            requests.append((kind, {**body, **extra}))
        # one at a time, as scoring does: a prompt batched beside another gets other figures
        return [_top_logprobs(_token_entries(_call(server, r))[0]) for r in requests]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Summed log-prob of each continuation given its context, tokenized as lm-eval does
        (``models.scoring.encode_pair``, the same tokens transformers scores). Each continuation
        token is read from the next-token distribution after its prefix; a continuation's second
        token is read in the same llama.cpp request as its first, which that request forces with
        a logit bias (the reported probabilities are the model's, before any sampler), so a
        chat-template multiple-choice question ("\\n" + letter, see ``SCORE_TOP``) costs one
        prompt read, not two. Requests sharing a read share one llama.cpp request; a prefix
        longer than the window keeps its last tokens. Prompts are never served from llama.cpp's
        prompt cache here: a cached prefix changes the last digits of the numbers."""
        from models.scoring import encode_pair

        wanted: dict[Read, list[tuple[int, int]]] = {}
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = encode_pair(self.tokenizer, context, continuation)
            row = ctx + cont
            for j, token in enumerate(cont):
                if j == 1:  # one step after the context, its first token forced
                    key: Read = (tuple(ctx[-(self._window - 2):]), cont[0])
                else:
                    key = (tuple(row[:len(ctx) + j][-(self._window - 1):]), None)
                wanted.setdefault(key, []).append((i, token))
        readings = self._token_logprobs({k: {t for _, t in v} for k, v in wanted.items()})
        scores = [0.0] * len(requests)  # no continuation token: log 1
        for key, pairs in wanted.items():
            for i, token in pairs:
                scores[i] += readings[key][token]
        return scores

    def grouped_loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """``loglikelihood`` (already one request per shared read)."""
        return self.loglikelihood(requests)

    def _token_logprobs(self, needed: dict[Read, set[int]]) -> dict[Read, dict[int, float]]:
        """For each read (a token-id prefix, and a token forced after it or None), the log-probs
        of the ``needed`` next tokens: the top ``SCORE_TOP`` first, the whole vocabulary for a
        request whose tokens are not among them. A forced read also reads its bare prefix, so a
        bare prefix with a forced sibling costs no request of its own. llama.cpp's figures move
        by ~1e-4 nat with the number of probabilities asked for, so a token keeps the value of
        the read that first reported it: a token's score depends only on its read, never on
        which other requests were scored with it."""
        server = self.server()
        forced = [k for k in needed if k[1] is not None]
        served = {(prefix, None) for prefix, _ in forced}
        todo = forced + [k for k in needed if k[1] is None and k not in served]
        readings: dict[Read, dict[int, float]] = {}
        for n_probs in (SCORE_TOP, ALL_TOKENS):
            # one at a time: a prompt processed beside another one in llama.cpp's batch gets
            # slightly different numbers (1e-4 nat), and prefill gains nothing from company
            for prefix, token in todo:
                content = _token_entries(_call(server, self._score_request(prefix, n_probs,
                                                                          token)))
                reads: list[tuple[Read, dict[str, Any]]] = [((prefix, None), content[0])]
                if token is not None:
                    if len(content) > 1 and int(content[0]["id"]) == token:
                        reads.append(((prefix, token), content[1]))
                    else:  # it stopped on the forced token (end of generation): read it plain
                        plain = _call(server, self._score_request((*prefix, token), n_probs))
                        reads.append(((prefix, token), _token_entries(plain)[0]))
                for key, entry in reads:  # the first reading of a token stands
                    readings[key] = {**_read_logprobs(entry), **readings.get(key, {})}
            todo = [(p, t) for p, t in todo
                    if not (needed.get((p, None), set()) <= readings[(p, None)].keys()
                            and (t is None or needed[(p, t)] <= readings[(p, t)].keys()))]
            if not todo:
                return readings
        prefix, token = todo[0]
        missing = sorted((needed.get((prefix, None), set()) - readings[(prefix, None)].keys())
                         | (needed.get((prefix, token), set())
                            - readings.get((prefix, token), {}).keys()))
        raise UserError(f"llama.cpp reported no probability for token(s) {missing} of "
                        f"{self.name}: is the tokenizer the GGUF's own?")

    def _lora_field(self) -> dict[str, Any]:
        """The request's LoRA scales: the active one on, the others off (none loaded: {})."""
        if not self.loras:
            return {}
        return {"lora": [{"id": i, "scale": 1.0 if i == self.active else 0.0}
                         for i in range(len(self.loras))]}

    def _score_request(self, prefix: Sequence[int], n_probs: int, forced: int | None = None
                       ) -> tuple[str, dict[str, Any]]:
        """The request reading the next-token log-probs after ``prefix`` and, with ``forced``,
        after ``prefix`` + ``forced`` too (the first token forced by a logit bias)."""
        body: dict[str, Any] = {"prompt": list(prefix), "max_tokens": 1, "temperature": 0.0,
                                "top_k": 1, "seed": 0, "n_probs": n_probs,
                                "cache_prompt": False}
        if forced is not None:
            body.update(max_tokens=2, logit_bias=[[forced, FORCE]])
        body.update(self._lora_field())
        return "completions", body

    # --- llama.cpp -----------------------------------------------------------------------

    def server(self) -> Any:
        """llama.cpp's server loop for this model, started on first use."""
        if "server" not in self._shared:
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = str(self.path)
            params.n_parallel = self.parallel
            params.n_ctx = self._window * self.parallel  # the KV cache is shared by the slots
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
            params.kv_unified = False  # each slot attends over its own cache only (faster here)
            params.use_jinja = True  # the GGUF's chat template, as transformers renders it
            params.warmup = False
            # no RAM prompt cache (8 GiB by default): it kept the states of prompts evicted from
            # the slots and restored one into any slot whose prompt matched, whatever LoRA
            # scales computed it (measured: rag+finetuned prompts ran on the KV that rag's
            # prompts left without the adapter, prompt_n 1, 5 of 24 answers changed); each
            # slot's own cache stays, and the server clears it when the scales change
            params.cache_ram_mib = 0
            params.verbosity = -1  # errors only (its per-request timings stay quiet)
            if self.loras:
                infos = []
                for path in self.loras:
                    info = xllamacpp.CommonAdapterLoraInfo()
                    info.path, info.scale = str(path), 0.0
                    infos.append(info)
                params.lora_adapters = infos
                params.lora_init_without_apply = True  # each request says which one is on
            log.info("loading %s into llama.cpp (%d slots of %d tokens, %d threads)",
                     self.path.name, self.parallel, self._window, self.threads)
            self._shared["server"] = xllamacpp.Server(params)
        return self._shared["server"]

    def _request(self, prompt: Prompt, d: Decoding) -> tuple[str, dict[str, Any]]:
        # llama.cpp reuses a slot's cached prompt prefix (the shared system prompt and
        # instructions); a request whose LoRA scales differ from those the slot last ran with
        # clears that slot's cache first (its server's ``lora_should_clear_cache``), so no
        # answer is computed on a prefix another adapter read
        seed = d.seed if d.strategy == "greedy" else prompt_seed(d.seed, prompt)
        body: dict[str, Any] = {"max_tokens": d.max_new_tokens, "seed": seed,
                                "stop": list(d.stop), "cache_prompt": self.prefix_cache}
        body.update(self._lora_field())
        if d.strategy == "greedy":
            body.update(temperature=0.0, top_k=1)
        else:
            body.update(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k, min_p=0.0)
        if isinstance(prompt, str):
            return "completions", {**body, "prompt": prompt}
        return "chat", {**body, "messages": list(prompt)}

    def _generation(self, reply: dict[str, Any], d: Decoding, latency: float) -> Generation:
        choice = reply["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        usage = reply.get("usage", {})
        return Generation(text=apply_stop(text or "", d.stop),
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          latency_s=latency)


def check_strategy(decoding: Decoding) -> None:
    """``UserError`` for a decoding strategy this backend does not implement."""
    if decoding.strategy not in STRATEGIES:
        raise UserError(f"the llama.cpp backend decodes {' and '.join(STRATEGIES)} only, not "
                        f"{decoding.strategy!r}; use --backend transformers for it")


def _token_entries(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-generated-token entries of a reply's log-probabilities."""
    entries: list[dict[str, Any]] = reply["choices"][0]["logprobs"]["content"]
    return entries


def _top_logprobs(entry: dict[str, Any]) -> dict[int, float]:
    """``{token id: log-prob}`` of one entry's reported next tokens."""
    return {int(t["id"]): float(t["logprob"]) for t in entry["top_logprobs"]}


def _read_logprobs(entry: dict[str, Any]) -> dict[int, float]:
    """A scoring read's figures: the reported next tokens and the token the request took (the
    forced one, at any rank: llama.cpp reports its probability from the whole vocabulary, the
    same figure its top list gives when it is there)."""
    return {**_top_logprobs(entry), int(entry["id"]): float(entry["logprob"])}


def _call(server: Any, request: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    kind, body = request
    handler = server.handle_chat_completions if kind == "chat" else server.handle_completions
    reply = handler(body)
    if isinstance(reply, str):
        reply = json.loads(reply)
    if not isinstance(reply, dict) or "choices" not in reply:
        raise UserError(f"llama.cpp refused the request: {str(reply)[:300]}")
    return reply


__all__ = ["ALL_TOKENS", "REPRODUCIBLE", "SCORE_TOP", "STRATEGIES", "LlamaCppGenerator",
           "binding_available", "check_strategy", "gguf_context_length", "gguf_file_type",
           "gguf_identity", "llamacpp_build", "llamacpp_device", "llamacpp_identity"]
