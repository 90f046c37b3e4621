"""In-process generation with transformers: length-sorted left-padded batches, all strategies.

Greedy output does not depend on batch composition: left padding with the attention mask (and
position ids derived from it) gives each row the same computation as when it runs alone. Sampled
output does not either: each prompt draws its tokens from its own generator, seeded with
``models.generation.prompt_seed(decoding.seed, prompt)`` (``RowSampler``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from core.errors import UserError
from core.registry import Registry
from models.generation import STRATEGIES, Decoding, Generation, Prompt, apply_stop, prompt_seed
from models.loading import LoadOptions, context_window_of
from models.scoring import encode_pair

log = logging.getLogger(__name__)

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

StrategyFn = Callable[[Decoding, "TransformersGenerator"], dict[str, Any]]
STRATEGY_KWARGS: Registry[StrategyFn] = Registry("decoding strategy")


@STRATEGY_KWARGS.register("greedy")
def _greedy(d: Decoding, gen: TransformersGenerator) -> dict[str, Any]:
    return {"do_sample": False, "num_beams": 1, **_NEUTRAL}


@STRATEGY_KWARGS.register("sample")
def _sample(d: Decoding, gen: TransformersGenerator) -> dict[str, Any]:
    # transformers' own warpers stay off: ``RowSampler`` applies the decoding's temperature,
    # top-k and top-p, then draws each prompt's token with that prompt's own generator
    return {"do_sample": True, "num_beams": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0}


@STRATEGY_KWARGS.register("beam")
def _beam(d: Decoding, gen: TransformersGenerator) -> dict[str, Any]:
    return {"do_sample": False, "num_beams": d.num_beams, "early_stopping": True, **_NEUTRAL}


@STRATEGY_KWARGS.register("best_of_n")
def _best_of_n(d: Decoding, gen: TransformersGenerator) -> dict[str, Any]:
    return {**_sample(d, gen), "num_return_sequences": d.n}


@STRATEGY_KWARGS.register("contrastive")
def _contrastive(d: Decoding, gen: TransformersGenerator) -> dict[str, Any]:
    return {}  # decoded by the project's own loop (models.contrastive), not model.generate


# Deterministic strategies do not inherit a checkpoint's sampling defaults or penalties.
_NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}


class RowSampler(LogitsProcessor):
    """Sampling whose draws do not depend on the batch: the decoding's temperature, top-k and
    top-p (transformers' own warpers, in transformers' order), then each prompt's next token
    drawn from its own ``torch.Generator`` seeded with its ``seeds`` entry. The scores returned
    keep only the drawn token, so ``generate``'s own multinomial draw can only pick it (and a
    checkpoint's extra warpers, min-p or typical-p, have nothing left to change). Rows come in
    groups of ``group`` consecutive rows per prompt (best-of-n's candidates), drawn in order
    from that prompt's generator."""

    def __init__(self, d: Decoding, seeds: Sequence[int], group: int = 1) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.warpers: list[Any] = []
        if d.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(d.temperature))
        if d.top_k:
            self.warpers.append(TopKLogitsWarper(d.top_k))
        if d.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(d.top_p))
        self.seeds, self.group = [int(s) for s in seeds], group
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        """The scores with every token but each row's drawn one set to -inf."""
        if scores.shape[0] != len(self.seeds) * self.group:
            raise ValueError(f"{scores.shape[0]} rows for {len(self.seeds)} seeds of "
                             f"{self.group} rows each")
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        if self.generators is None:  # on the device the logits are on (its own random stream)
            self.generators = [torch.Generator(device=scores.device).manual_seed(s)
                               for s in self.seeds]
        probs = torch.softmax(scores.float(), dim=-1)
        g = self.group
        picks = torch.cat([torch.multinomial(probs[i * g:(i + 1) * g], 1, generator=gen)
                           for i, gen in enumerate(self.generators)])
        drawn = torch.full_like(scores, float("-inf"))
        return drawn.scatter_(1, picks, 0.0)  # type: ignore[return-value]


class TransformersGenerator:
    """A ``Generator`` over a loaded transformers causal LM (optionally peft-wrapped)."""

    strategies = STRATEGIES  # every decoding strategy (contrastive by models.contrastive)

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8,
                 name: str = "transformers", progress: bool = True,
                 trust_remote_code: bool = False) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, not {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.name, self.progress = batch_size, name, progress
        self.trust_remote_code = trust_remote_code
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.eos_ids = end_token_ids(model, tokenizer)

    # --- the Generator protocol ----------------------------------------------------------

    @property
    def context_window(self) -> int:
        """``models.loading.context_window_of`` the model's config and the tokenizer."""
        return context_window_of(self.model.config, self.tokenizer)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Prompt], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        """Generate for every prompt in length-sorted batches; results in the prompts' order."""
        strategy = STRATEGY_KWARGS.get(decoding.strategy)(decoding, self)
        encoded = [self.encode_prompt(p, decoding.max_new_tokens) for p in prompts]
        if decoding.strategy == "contrastive":
            return [self._contrastive(ids, decoding) for ids in encoded]
        seeds = [prompt_seed(decoding.seed, p) for p in prompts]  # sampling: one per prompt
        results: list[Generation | None] = [None] * len(prompts)
        for batch in self._batches(encoded, "generating"):
            outs = self._generate_batch([encoded[i] for i in batch], decoding, strategy,
                                        [seeds[i] for i in batch])
            for i, out in zip(batch, outs, strict=True):
                results[i] = out
        return [r for r in results if r is not None]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Summed log-prob of each continuation given its context (lm-eval's recipe)."""
        pairs = [self.encode_pair(ctx, cont) for ctx, cont in requests]
        rows = [(ctx + cont)[-self.context_window:] for ctx, cont in pairs]
        scores: list[float] = [0.0] * len(rows)  # no continuation token: log 1
        scored = [i for i, (_, cont) in enumerate(pairs) if cont]
        for part in self._batches([rows[i] for i in scored], "scoring"):
            batch = [scored[j] for j in part]
            n_cont = [min(len(pairs[i][1]), len(rows[i]) - 1) for i in batch]
            logps = self._continuation_logprobs([rows[i] for i in batch], n_cont)
            for i, value in zip(batch, logps, strict=True):
                scores[i] = value
        return scores

    # --- prompts and batches -------------------------------------------------------------

    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """The prompt's text, and whether it already carries the special tokens (chat template)."""
        if isinstance(prompt, str):
            return prompt, False
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"{self.name} has no chat template: pass plain-text prompts, or use an "
                            "instruction-tuned model")
        text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False,
                                                  add_generation_prompt=True)
        return str(text), True

    def encode_prompt(self, prompt: Prompt, max_new_tokens: int) -> list[int]:
        """Token ids of the rendered prompt, left-truncated to leave room for the completion."""
        text, templated = self.render(prompt)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        room = self.context_window - max_new_tokens
        if len(ids) > room:
            if room < 1:
                raise UserError(f"max_new_tokens={max_new_tokens} does not fit the "
                                f"{self.context_window}-token window of {self.name}")
            log.warning("prompt of %d tokens cut to its last %d to fit %s's window",
                        len(ids), room, self.name)
            ids = ids[-room:]
        return ids

    def _batches(self, rows: Sequence[Sequence[int]], desc: str) -> Iterator[list[int]]:
        """Indices grouped longest-first, so rows of a batch have similar lengths."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc=f"{desc} ({self.name})", unit="batch",
                          disable=not self.progress or len(order) <= self.batch_size):
            yield order[start:start + self.batch_size]

    def _pad_left(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device)

    @property
    def device(self) -> torch.device:
        """Where the model's inputs go."""
        return next(self.model.parameters()).device

    @property
    def identity(self) -> dict[str, Any]:
        """What determines this generator's outputs short of the prompt and decoding, read off
        the loaded model: the backend, the folder it was loaded from and its files' fingerprint
        (None when it was not loaded from a local folder), the dtype, the device type(s) and
        the quantization in ``load_identity``'s terms, the sha256 of each loaded LoRA's weights
        (peft) and the library versions."""
        from core.versions import package_versions
        from models.loading import fingerprint_dir

        source = str(getattr(self.model, "name_or_path", "") or "")
        fingerprint = None
        if source and Path(source).is_dir():
            try:
                fingerprint = fingerprint_dir(Path(source))
            except UserError:  # a folder without weights: not where these weights came from
                fingerprint = None
        devices = sorted({p.device.type for p in self.model.parameters()})
        return {"backend": "transformers", "model": source, "fingerprint": fingerprint,
                "dtype": dtype_name(self.model.dtype), "device": "+".join(devices),
                "quantization": quantization_of(self.model), "lora": lora_digests(self.model),
                "versions": package_versions(("torch", "transformers", "peft"))}

    # --- generation ----------------------------------------------------------------------

    def _generate_batch(self, rows: list[list[int]], d: Decoding, strategy: dict[str, Any],
                        seeds: Sequence[int] = ()) -> list[Generation]:
        """One left-padded batch; sampled rows are drawn by ``RowSampler`` with ``seeds`` (one
        per row, ``models.generation.prompt_seed``), so a row's answer is the same in any
        batch."""
        input_ids, mask = self._pad_left(rows)
        extra: dict[str, Any] = ({"stop_strings": list(d.stop), "tokenizer": self.tokenizer}
                                 if d.stop else {})
        if strategy.get("do_sample"):
            group = d.n if d.strategy == "best_of_n" else 1
            extra["logits_processor"] = LogitsProcessorList([RowSampler(d, seeds, group)])
        torch.manual_seed(d.seed)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=d.max_new_tokens,
                eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
                repetition_penalty=1.0, return_dict_in_generate=True, **strategy, **extra)
            new = out.sequences[:, input_ids.shape[1]:]
            if d.strategy == "best_of_n":
                new = self._best_of(out.sequences, mask, new, d.n)
        each = (time.perf_counter() - start) / len(rows)
        return [self._to_generation(row, tokens, d, each) for row, tokens in zip(rows, new,
                                                                                strict=True)]

    def _contrastive(self, ids: list[int], d: Decoding) -> Generation:
        """One prompt by contrastive search (``models.contrastive``): top-k candidates, each
        scored by (1 - penalty_alpha) * p - penalty_alpha * its hidden state's largest cosine
        similarity to the context's."""
        from models.contrastive import contrastive_search

        start = time.perf_counter()
        tokens = contrastive_search(self.model, ids, top_k=max(d.top_k, 1), alpha=d.penalty_alpha,
                                    max_new_tokens=d.max_new_tokens, eos_ids=self.eos_ids)
        return self._to_generation(ids, torch.tensor(tokens), d, time.perf_counter() - start)

    def _to_generation(self, prompt: list[int], tokens: torch.Tensor, d: Decoding,
                       latency: float) -> Generation:
        ids = tokens.tolist()
        n = self._generated_length(ids)
        text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        return Generation(text=apply_stop(text, d.stop), prompt_tokens=len(prompt),
                          completion_tokens=n, latency_s=latency)

    def _generated_length(self, ids: list[int]) -> int:
        """Tokens before the first end-of-sequence token (the rest is padding)."""
        return next((i for i, t in enumerate(ids) if t in self.eos_ids), len(ids))

    def _best_of(self, sequences: torch.Tensor, prompt_mask: torch.Tensor, new: torch.Tensor,
                 n: int) -> torch.Tensor:
        """Per prompt, the sampled candidate with the highest mean token log-prob."""
        lengths = [self._generated_length(row.tolist()) for row in new]
        width = new.shape[1]
        gen_mask = torch.tensor([[1] * min(k + 1, width) + [0] * (width - min(k + 1, width))
                                 for k in lengths], device=sequences.device)
        full_mask = torch.cat([prompt_mask.repeat_interleave(n, dim=0), gen_mask], dim=1)
        logps = []
        for start in range(0, len(sequences), self.batch_size):
            part = slice(start, start + self.batch_size)
            logps.append(token_logprobs(self.model, sequences[part], full_mask[part], width))
        token_lp = torch.cat(logps) * gen_mask
        mean = token_lp.sum(dim=1) / gen_mask.sum(dim=1).clamp(min=1)
        best = mean.view(-1, n).argmax(dim=1)
        picks = torch.arange(len(best), device=best.device) * n + best
        return new[picks]

    # --- scoring -------------------------------------------------------------------------

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval makes them (``scoring.encode_pair``)."""
        return encode_pair(self.tokenizer, context, continuation)

    def grouped_loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """``loglikelihood`` with lm-eval's one-token shortcut: the requests that share a context
        and continue it by ONE token (multiple-choice letters) are scored from a single forward
        pass over that context; the others go through ``loglikelihood``. Same numbers, a quarter
        of the work for 4 options."""
        pairs = [self.encode_pair(c, x) for c, x in requests]
        single: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        rest = []
        for i, (ctx, cont) in enumerate(pairs):
            if len(cont) == 1 and len(ctx) < self.context_window:
                single.setdefault(tuple(ctx), []).append((i, cont[0]))
            else:
                rest.append(i)
        scores = [0.0] * len(requests)
        contexts = list(single)
        for start in range(0, len(contexts), self.batch_size):
            batch = contexts[start:start + self.batch_size]
            for key, logp in zip(batch, self.next_token_logprobs(batch), strict=True):
                for i, token in single[key]:
                    scores[i] = float(logp[token])
        if rest:
            values = self.loglikelihood([requests[i] for i in rest])
            for i, value in zip(rest, values, strict=True):
                scores[i] = value
        return scores

    def next_token_logprobs(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Log-probs [rows, vocab] of the token after each row of ids (rows left-padded into one
        batch; only the last position's logits are computed when the model allows it)."""
        input_ids, mask = self._pad_left(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = {"logits_to_keep": 1} if takes_logits_to_keep(self.model) else {}
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask,
                                position_ids=positions, **keep).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def _continuation_logprobs(self, rows: list[list[int]], n_cont: list[int]) -> list[float]:
        input_ids, mask = self._pad_left(rows)
        width = max(n_cont)
        with torch.inference_mode():
            logps = token_logprobs(self.model, input_ids, mask, width)
        keep = torch.tensor([[0] * (width - k) + [1] * k for k in n_cont], device=logps.device)
        return (logps * keep).sum(dim=1).tolist()


def token_logprobs(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, last: int
                   ) -> torch.Tensor:
    """Log-probs [rows, last] of each row's last ``last`` tokens given the tokens before them."""
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    keep = {"logits_to_keep": last + 1} if takes_logits_to_keep(model) else {}
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                       **keep).logits[:, -(last + 1):]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, -last:]
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the (peft-unwrapped) model can skip the logits it is not asked for."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def end_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a reply: generation config, tokenizer eos, chat end-of-turn tokens."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    candidates = [*(configured if isinstance(configured, list) else [configured]),
                  tokenizer.eos_token_id]
    ids += [int(i) for i in candidates if i is not None]
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN if t in vocab and t in tokenizer.all_special_tokens
            + list(getattr(tokenizer, "added_tokens_encoder", {}))]
    return sorted({int(i) for i in ids if i is not None})


# --- identity ------------------------------------------------------------------------------


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` or "bfloat16" -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def placement(device_map: str | dict[str, Any] | None) -> str:
    """The device type(s) weights loaded with ``device_map`` go to on this machine ("cpu",
    "cuda", "mps"; several joined by "+"), as ``models.loading.load_model`` places them: no
    map means ``default_device_map`` on CUDA, else the CPU; "cuda:1" is "cuda"."""
    from models.loading import default_device_map

    if device_map is None and torch.cuda.is_available():
        device_map = default_device_map()
    if device_map is None:
        return "cpu"
    if isinstance(device_map, dict):
        kinds = {"cuda" if isinstance(v, int) else str(v) if str(v) == "disk"
                 else torch.device(str(v)).type for v in device_map.values()}
        return "+".join(sorted(kinds))
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(device_map).type


def load_identity(options: LoadOptions) -> dict[str, Any]:
    """What loading with ``options`` gives on this machine, without loading: the resolved dtype
    ("auto" is float32 on a CPU, bfloat16 or float16 on CUDA), the device type (``placement``)
    and the quantization (None, or bitsandbytes 4-bit with its quant type, double quantization,
    resolved compute dtype and storage dtype). ``TransformersGenerator.identity`` reads the same
    three off a loaded model."""
    from models.loading import torch_dtype

    quantization = None
    if options.load_in_4bit:
        quantization = {
            "method": "bitsandbytes", "bits": 4, "quant_type": options.quant_type,
            "double_quant": bool(options.double_quant),
            "compute_dtype": dtype_name(torch_dtype(options.compute_dtype)),
            "storage": (dtype_name(torch_dtype(options.quant_storage))
                        if options.quant_storage else "uint8")}
    return {"dtype": dtype_name(torch_dtype(options.dtype)),
            "device": placement(options.device_map), "quantization": quantization}


def quantization_of(model: Any) -> dict[str, Any] | None:
    """A loaded model's quantization in ``load_identity``'s terms (None: not quantized; another
    method than bitsandbytes: its whole config)."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if raw.get("load_in_4bit"):
        return {"method": "bitsandbytes", "bits": 4, "quant_type": raw.get("bnb_4bit_quant_type"),
                "double_quant": bool(raw.get("bnb_4bit_use_double_quant")),
                "compute_dtype": dtype_name(raw.get("bnb_4bit_compute_dtype")),
                "storage": dtype_name(raw.get("bnb_4bit_quant_storage") or "uint8")}
    if raw.get("load_in_8bit"):
        return {"method": "bitsandbytes", "bits": 8}
    return {"method": str(raw.get("quant_method", "unknown")),
            **{k: str(v) for k, v in sorted(raw.items())}}


def lora_digests(model: Any) -> dict[str, str] | None:
    """sha256 of each loaded peft adapter's weights (over parameter names and bytes), by adapter
    name; None for a model without adapters."""
    import hashlib

    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    digests = {}
    for name in sorted(configs):
        digest = hashlib.sha256()
        for key, tensor in sorted(model.state_dict().items()):
            if f".{name}." in key or key.endswith(f".{name}"):
                data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
                digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
                digest.update(data.numpy().tobytes())
        digests[name] = digest.hexdigest()
    return digests
