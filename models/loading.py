"""Load a causal LM and its tokenizer: dtype choice, optional 4-bit nf4, LoRA adapters, offline.

Every model name (bundled name, local folder, hub id) goes through ``models.sources.resolve_model``;
nothing here reaches the network unless the user explicitly sets ``HF_HUB_OFFLINE=0``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.hashing import sha256_file

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from models.sources import ModelRef

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
SMALL_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken")
FINGERPRINT_CACHE = ".ragvsft-fingerprint.json"
NOT_HASHED = frozenset({FINGERPRINT_CACHE, "ragvsft.json"})  # ours, and bundled's build marker
MAX_CONTEXT = 32768  # cap for configs that advertise huge windows (RoPE scaling)
DEFAULT_CONTEXT = 2048  # for a model whose config and tokenizer name no window


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: precision, optional 4-bit quantization, placement."""

    dtype: str = "auto"  # auto|float32|bfloat16|float16 (auto: bf16 on CUDA if supported, fp32)
    load_in_4bit: bool = False  # bitsandbytes nf4 (CUDA and CPU)
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"
    device_map: str | None = None  # e.g. "auto" on CUDA; unset: see ``default_device_map``
    trust_remote_code: bool = False
    quant_storage: str | None = None  # 4-bit storage dtype (FSDP: the compute dtype)


def resolve(name: str | Path | ModelRef) -> ModelRef:
    """The ``ModelRef`` of a generator (bundled name, local folder or hub id); builds bundled.
    An already resolved ``ModelRef`` is returned as it is (resolve a model once, pass the ref)."""
    from models.bundled import BUNDLED
    from models.sources import ModelRef, resolve_model

    if isinstance(name, ModelRef):
        return name
    name = str(name)
    if name in BUNDLED and BUNDLED.get(name).kind != "generator":
        raise UserError(f"{name!r} is a bundled {BUNDLED.get(name).kind}, not a generator; pass a "
                        "generator as --model (see `models list`)")
    return resolve_model(name, materialize=True)


def torch_dtype(name: str) -> torch.dtype:
    """Map a dtype name (``auto`` included) to a torch dtype for this machine."""
    import torch

    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(name: str | Path | ModelRef, trust_remote_code: bool = False
                   ) -> PreTrainedTokenizerBase:
    """The model's tokenizer, left-padded for batched generation, with a pad token (eos if none)."""
    from transformers import AutoTokenizer

    ref = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            ref.location, trust_remote_code=trust_remote_code, **_local_kwargs(ref))
    except (OSError, ValueError) as exc:
        raise UserError(_load_failure(ref, "tokenizer", exc)) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of {ref.name!r} has neither a pad nor an eos token; "
                            "add one to its tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(name: str | Path | ModelRef, options: LoadOptions = LoadOptions(),
               adapter: str | Path | None = None,
               tokenizer: PreTrainedTokenizerBase | None = None
               ) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load ``name`` (bundled, local or hub, or its ``ModelRef``) in eval mode, with an optional
    LoRA adapter (then a ``PeftModel``); a ``tokenizer`` already loaded for it is used instead of
    loading another."""
    ref = resolve(name)
    if tokenizer is None:
        tokenizer = load_tokenizer(ref, options.trust_remote_code)
    base = _model_at(ref, options)
    model: Any = base if adapter is None else attach_adapter(base, ref, adapter)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def _model_at(ref: ModelRef, options: LoadOptions) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    kwargs = _model_kwargs(options)
    log.info("loading %s from %s (%s)", ref.name, ref.location,
             "4-bit " + options.quant_type if options.load_in_4bit else kwargs["dtype"])
    try:
        return AutoModelForCausalLM.from_pretrained(ref.location, **kwargs, **_local_kwargs(ref))
    except (OSError, ValueError) as exc:
        raise UserError(_load_failure(ref, "model", exc)) from exc


def _model_kwargs(options: LoadOptions) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {"dtype": torch_dtype(options.dtype),
                              "trust_remote_code": options.trust_remote_code}
    device_map: str | dict[str, int] | None = options.device_map
    if device_map is None and torch.cuda.is_available():
        device_map = default_device_map()
    if device_map is not None:
        kwargs["device_map"] = device_map
    if options.load_in_4bit:
        kwargs["quantization_config"] = quantization_config(options)
    return kwargs


def default_device_map() -> str | dict[str, int] | None:
    """Placement on CUDA when none is asked: FSDP places shards itself (None), a DDP rank takes
    its own GPU whole (``{"": LOCAL_RANK}``), a single process spreads over every GPU ("auto")."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return "auto"


def quantization_config(options: LoadOptions) -> Any:
    """A ``BitsAndBytesConfig`` for 4-bit loading (bitsandbytes imported only here)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise UserError("4-bit loading needs bitsandbytes: "
                        "pip install 'bitsandbytes>=0.45'") from exc
    from transformers import BitsAndBytesConfig

    if options.quant_type not in ("nf4", "fp4"):
        raise UserError(f"unknown 4-bit quant_type {options.quant_type!r}; use nf4 or fp4")
    extra = ({"bnb_4bit_quant_storage": torch_dtype(options.quant_storage)}
             if options.quant_storage else {})
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=options.quant_type,
        bnb_4bit_use_double_quant=options.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(options.compute_dtype), **extra,
    )


def _local_kwargs(ref: ModelRef) -> dict[str, Any]:
    """Local files only, for a hub id too unless the user set ``HF_HUB_OFFLINE=0`` on purpose
    (library calls stay offline without the CLI's ``core.cli.offline_environment``)."""
    from models.sources import hub_offline

    return {"local_files_only": True} if ref.kind != "hub" or hub_offline() else {}


def _load_failure(ref: ModelRef, what: str, exc: Exception) -> str:
    where, why = f"{ref.location!r}", str(exc).strip().rstrip(".")
    if ref.kind == "hub" and os.environ.get("HF_HUB_OFFLINE", "1") != "0":
        return (f"cannot load the {what} of {ref.name!r} from the local Hugging Face cache "
                f"(offline mode): {why}. Download it once on a connected machine "
                f"(`hf download {ref.location}`) or set HF_HUB_OFFLINE=0.")
    return f"cannot load the {what} of {ref.name!r} from {where}: {why}"


# --- LoRA adapters -------------------------------------------------------------------------


def attach_adapter(model: PreTrainedModel, ref: ModelRef, adapter: str | Path) -> PeftModel:
    """Wrap ``model`` with the peft adapter in folder ``adapter`` after checking its base model."""
    from peft import PeftModel

    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise UserError(f"{folder} is not a LoRA adapter folder (no adapter_config.json); "
                        "pass the folder written by `finetune train`")
    check_adapter_base(folder, ref)
    log.info("attaching adapter %s", folder)
    return PeftModel.from_pretrained(model, str(folder), is_trainable=False)


def check_adapter_base(folder: Path, ref: ModelRef) -> None:
    """Refuse an adapter trained on another base model; tolerate adapters that do not say."""
    claims = adapter_base_claims(folder)
    wanted_hash = claims.pop("fingerprint", None)
    if wanted_hash and wanted_hash == model_fingerprint_of(ref):
        return
    names = [v for v in claims.values() if v]
    if not names:
        log.warning("adapter %s does not name its base model; assuming %s", folder, ref.name)
        return
    mine = _identities(ref.name) | _identities(ref.location)
    for claimed in names:
        if not _identities(claimed) & mine:
            raise UserError(f"adapter {folder} was trained on {claimed!r}, not on {ref.name!r}; "
                            f"pass --model {claimed} or use an adapter trained on {ref.name}")
    if wanted_hash:
        log.warning("adapter %s names base %s but its recorded weights hash differs from %s",
                    folder, names[0], ref.location)


def adapter_base_claims(folder: Path) -> dict[str, str]:
    """What the adapter says about its base: peft's config name, manifest name and hash."""
    claims: dict[str, str] = {}
    config = _read_json(folder / "adapter_config.json")
    if config.get("base_model_name_or_path"):
        claims["peft"] = str(config["base_model_name_or_path"])
    manifest = _read_json(folder / "manifest.json")
    base = manifest.get("base_model")
    if isinstance(base, dict):
        claims["manifest"] = str(base.get("name") or "")
        claims["fingerprint"] = str(base.get("fingerprint") or base.get("sha256") or "")
    elif base:
        claims["manifest"] = str(base)
    for key in ("base_model_fingerprint", "base_model_sha256", "base_model_hash"):
        if manifest.get(key):
            claims["fingerprint"] = str(manifest[key])
    return claims


def _identities(name: str) -> set[str]:
    """Spellings under which a model may be recorded: as given, resolved path, last component,
    and a bundled model's current name for a former one (adapters trained before a rename)."""
    from models.bundled import BUNDLED

    text = str(name).strip().rstrip("/")
    out = {text.lower(), Path(text).name.lower()}
    path = Path(text).expanduser()
    if path.exists():
        out.add(str(path.resolve()).lower())
    out |= {BUNDLED.aliases[s] for s in out if s in BUNDLED.aliases}
    return {s for s in out if s}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


# --- model facts without the weights ----------------------------------------------------


def model_config(name: str | Path | ModelRef, trust_remote_code: bool = False) -> Any:
    """The model's transformers config (``config.json`` only: no weights are read)."""
    from transformers import AutoConfig

    ref = resolve(name)
    try:
        return AutoConfig.from_pretrained(ref.location, trust_remote_code=trust_remote_code,
                                          **_local_kwargs(ref))
    except (OSError, ValueError) as exc:
        raise UserError(_load_failure(ref, "config", exc)) from exc


def context_window_of(config: Any, tokenizer: Any) -> int:
    """Most tokens the model takes: the smaller of its config's ``max_position_embeddings`` and
    the tokenizer's ``model_max_length`` (capped at ``MAX_CONTEXT``), else ``DEFAULT_CONTEXT``
    when neither says."""
    limits = [getattr(config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    valid = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**7]
    return min(valid + [MAX_CONTEXT]) if valid else DEFAULT_CONTEXT


# --- fingerprints --------------------------------------------------------------------------


def model_fingerprint(name: str | Path | ModelRef) -> str:
    """Stable sha256 of the resolved model's config, tokenizer and weights (hub: id@revision)."""
    return model_fingerprint_of(resolve(name))


def model_fingerprint_of(ref: ModelRef) -> str:
    """``model_fingerprint`` for an already resolved ``ModelRef``."""
    folder = Path(ref.location).expanduser()
    if ref.kind == "hub" and not folder.is_dir():
        return _hub_fingerprint(ref.location)
    return fingerprint_dir(folder)


def fingerprint_dir(folder: Path) -> str:
    """sha256 over the config/tokenizer/weight files' sha256 (cached by size and mtime)."""
    import hashlib

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in NOT_HASHED
                   and p.suffix in WEIGHT_SUFFIXES + SMALL_SUFFIXES)
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise UserError(f"{folder} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    cached = _read_fingerprint_cache(folder)
    digest = hashlib.sha256()
    fresh: dict[str, dict[str, Any]] = {}
    for path in files:
        fresh[path.name] = _file_entry(path, cached.get(path.name))
        digest.update(f"{path.name}\0{fresh[path.name]['sha256']}\n".encode())
    if fresh != cached:
        _write_fingerprint_cache(folder, fresh)
    return digest.hexdigest()


def _file_entry(path: Path, cached: dict[str, Any] | None) -> dict[str, Any]:
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if cached and all(cached.get(k) == v for k, v in key.items()):
        return cached
    return {**key, "sha256": sha256_file(path)}


def _read_fingerprint_cache(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((folder / FINGERPRINT_CACHE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data.get("files", {}) if isinstance(data, dict) else {}


def _write_fingerprint_cache(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    try:
        (folder / FINGERPRINT_CACHE).write_text(json.dumps({"files": files}, indent=1))
    except OSError as exc:  # a read-only folder only costs a re-hash next time
        log.warning("cannot cache the weights hash in %s (%s); it will be recomputed", folder, exc)


def _hub_fingerprint(repo_id: str) -> str:
    """``hub:<id>@<commit>`` from the local cache's snapshot, or ``@unknown`` when not cached."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, "config.json")
    revision = Path(hit).parent.name if isinstance(hit, str) else "unknown"
    return f"hub:{repo_id}@{revision}"
