"""Sentence embedders by name: a bundled one, a local folder, or a hub id from the offline cache.

Every name resolves to a local folder that ``sentence_transformers.SentenceTransformer`` loads
with ``local_files_only`` and ``trust_remote_code=False``. Vectors are float32 and L2-normalised;
queries and passages get the model's own prompts (``query: ``/``passage: `` for e5 models), and no
text is ever truncated silently: ``count_tokens`` tells callers what fits, and embedding warns.

Example::

    emb = load_embedder("multilingual-e5-small")
    passages = emb.embed_passages(["A capital do Brasil é Brasília."])
    scores = passages @ emb.embed_queries(["Qual a capital do Brasil?"]).T
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import UserError
from core.registry import Registry
from models import bundled
from models.bundled import BUNDLED
from models.embedder_prompts import E5_PROMPTS
from models.loading import fingerprint_dir
from models.sources import DEFAULT_EMBEDDER, SOURCES, hub_offline, in_hub_cache

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_E5_FAMILY = re.compile(r"(?<![a-z0-9])e5(?![a-z0-9])")
KINDS = ("query", "passage")


@dataclass(frozen=True)
class EmbedderInfo:
    """What a store manifest records about the embedder that made its vectors."""

    name: str  # as the user named it (bundled name, local dir, hub id)
    revision: str  # sha256 fingerprint of the folder, or hub:<id>@<commit>
    dimension: int
    max_tokens: int  # the SentenceTransformer's max_seq_length (incl. special tokens)
    query_prompt: str
    passage_prompt: str
    location: str  # the folder it loads from (not part of identity checks)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


# --- resolving names ------------------------------------------------------------------------


def embedder_names() -> list[str]:
    """The bundled embedder names."""
    return [n for n, m in BUNDLED.items() if m.kind == "embedder"]


def _unknown(name: str) -> UserError:
    close = difflib.get_close_matches(name.lower().split("/")[-1], embedder_names(), n=3,
                                      cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown embedder {name!r}.{hint} Use a bundled embedder "
                     f"({', '.join(embedder_names())}; default {DEFAULT_EMBEDDER}), a local "
                     "sentence-transformers folder, or a hub id in the offline cache.")


def _bundled_folder(name: str) -> tuple[Path, str]:
    """A bundled embedder's materialized folder (built once) and its fingerprint."""
    model = BUNDLED.get(name)
    if model.kind != "embedder":
        raise UserError(f"{name!r} is a bundled {model.kind}, not an embedder; use one of "
                        f"{', '.join(embedder_names())} (see `models list`)")
    folder = bundled.materialize(name)
    return folder, fingerprint_dir(folder)


def _local_folder(name: str) -> tuple[Path, str]:
    """A sentence-transformers folder, or a plain transformers encoder folder."""
    folder = Path(name).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"embedder path {folder} is not a folder; pass a sentence-transformers "
                        "folder (modules.json) or a transformers encoder folder (config.json)")
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder (no modules.json or config.json)")
    return folder, fingerprint_dir(folder)


def _hub_folder(name: str) -> tuple[Path, str]:
    """The cached snapshot of hub id ``name`` (downloaded only if HF_HUB_OFFLINE=0)."""
    from huggingface_hub import snapshot_download

    if hub_offline() and not in_hub_cache(name):
        raise UserError(f"embedder {name!r} is not in the local Hugging Face cache and nothing "
                        f"is downloaded offline. On a machine with network run "
                        f"`hf download {name}`, or use a bundled embedder "
                        f"({', '.join(embedder_names())}) or a local folder.")
    try:
        folder = Path(snapshot_download(name, local_files_only=hub_offline()))
    except Exception as exc:  # huggingface_hub raises many kinds; all mean "not available"
        raise UserError(f"cannot get embedder {name!r} from the Hugging Face cache: {exc}") from exc
    return folder, f"hub:{name}@{folder.name}"


_FOLDERS: Registry[Callable[[str], tuple[Path, str]]] = Registry("embedder source")
_FOLDERS.add("bundled", _bundled_folder)
_FOLDERS.add("local", _local_folder)
_FOLDERS.add("hub", _hub_folder)


def _source_of(name: str) -> str:
    """Which model source claims ``name`` (the same order as ``--model``)."""
    for source, obj in sorted(SOURCES.items(), key=lambda item: item[1].priority):
        if obj.matches(name) and source in _FOLDERS:
            return source
    raise _unknown(name)


def resolve_embedder(name: str) -> EmbedderInfo:
    """Resolve ``name`` to a loadable folder (materializing a bundled embedder once).

    ``dimension`` and ``max_tokens`` are read from the folder's configs; ``load_embedder``
    replaces them with the loaded model's own values should they ever differ.
    """
    name = str(name).strip()
    if not name:
        raise UserError(f"no embedder given; the default is {DEFAULT_EMBEDDER}")
    folder, revision = _FOLDERS.get(_source_of(name))(name)
    query, passage = folder_prompts(name, folder)
    return EmbedderInfo(name=name, revision=revision, dimension=_dimension(folder),
                        max_tokens=_max_tokens(folder), query_prompt=query,
                        passage_prompt=passage, location=str(folder))


# --- reading a folder -----------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}; fix or remove the file") from exc


def _modules(folder: Path) -> list[dict[str, Any]]:
    data = _read_json(folder / "modules.json")
    return data if isinstance(data, list) else []


def transformer_dir(folder: Path) -> Path:
    """The folder holding the transformers model and tokenizer (``0_Transformer/`` in old ones)."""
    for module in _modules(folder):
        if str(module.get("type", "")).endswith("Transformer"):
            return folder / module.get("path", "")
    return folder


def _dimension(folder: Path) -> int:
    """Output size: the last Dense module's ``out_features``, else the encoder's hidden size."""
    dense = [m for m in _modules(folder) if str(m.get("type", "")).endswith("Dense")]
    out = (_read_json(folder / dense[-1].get("path", "") / "config.json") or {}) if dense else {}
    if isinstance(out.get("out_features"), int):
        return out["out_features"]
    config = _read_json(transformer_dir(folder) / "config.json") or {}
    for key in ("hidden_size", "d_model", "dim"):
        if isinstance(config.get(key), int):
            return config[key]
    raise UserError(f"cannot tell the embedding size of {folder} (no hidden_size in config.json)")


def _max_tokens(folder: Path) -> int:
    """``max_seq_length`` from sentence_bert_config.json, else the tokenizer/position limit."""
    tdir = transformer_dir(folder)
    st_config = _read_json(tdir / "sentence_bert_config.json") or {}
    if isinstance(st_config.get("max_seq_length"), int):
        return st_config["max_seq_length"]
    limits = [(_read_json(tdir / "tokenizer_config.json") or {}).get("model_max_length"),
              (_read_json(tdir / "config.json") or {}).get("max_position_embeddings")]
    usable = [int(v) for v in limits if isinstance(v, int | float) and 0 < v < 1_000_000]
    return min(usable) if usable else 512


def folder_prompts(name: str, folder: Path) -> tuple[str, str]:
    """(query, passage) prompts from config_sentence_transformers.json; e5 defaults if none."""
    config = _read_json(folder / "config_sentence_transformers.json") or {}
    prompts = config.get("prompts") or {}
    query = prompts.get("query", "")
    passage = prompts.get("passage", prompts.get("document", ""))
    if not (query or passage) and _E5_FAMILY.search(f"{name} {folder.name}".lower()):
        log.info("%s is an e5 model without prompts in config_sentence_transformers.json; "
                 "using %r / %r", name, E5_PROMPTS["query"], E5_PROMPTS["passage"])
        return E5_PROMPTS["query"], E5_PROMPTS["passage"]
    return query, passage


def load_tokenizer_for(info: EmbedderInfo) -> PreTrainedTokenizerBase:
    """Just the embedder's tokenizer (cheap; for worker processes that count tokens)."""
    from transformers import AutoTokenizer

    where = transformer_dir(Path(info.location))
    try:
        return AutoTokenizer.from_pretrained(str(where), local_files_only=True,
                                             trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer of embedder {info.name!r} from {where}: "
                        f"{exc}") from exc


# --- the embedder ---------------------------------------------------------------------------


def token_lengths(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                  prompt: str = "") -> list[int]:
    """Tokens the model sees for each ``prompt + text``: special tokens included, no truncation."""
    if not texts:
        return []
    ids = tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=False,
                    verbose=False)["input_ids"]
    return [len(row) for row in ids]


class Embedder:
    """A loaded sentence-transformers model with the prompts and limits of its ``info``."""

    def __init__(self, info: EmbedderInfo, model: SentenceTransformer) -> None:
        self.info = info
        self.model = model
        self.tokenizer = model.tokenizer

    def prompt(self, kind: str) -> str:
        """The prompt prepended to a ``"query"`` or a ``"passage"``."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return self.info.query_prompt if kind == "query" else self.info.passage_prompt

    def count_tokens(self, text: str, kind: str = "passage") -> int:
        """Tokens the model sees for ``text``: prompt + text + special tokens (never truncated)."""
        return token_lengths(self.tokenizer, [text], self.prompt(kind))[0]

    def embed_passages(self, texts: Sequence[str], batch_size: int = 32,
                       progress: bool = False) -> np.ndarray:
        """float32 ``[n, dim]`` unit vectors of passages (passage prompt)."""
        return self._embed(texts, "passage", batch_size, progress)

    def embed_queries(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """float32 ``[n, dim]`` unit vectors of queries (query prompt)."""
        return self._embed(texts, "query", batch_size, False)

    def _embed(self, texts: Sequence[str], kind: str, batch_size: int,
               progress: bool) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        self._warn_if_truncated(texts, kind)
        vectors = self.model.encode(texts, prompt=self.prompt(kind), batch_size=batch_size,
                                    show_progress_bar=progress, convert_to_numpy=True,
                                    normalize_embeddings=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _warn_if_truncated(self, texts: Sequence[str], kind: str) -> None:
        lengths = token_lengths(self.tokenizer, texts, self.prompt(kind))
        long = [i for i, n in enumerate(lengths) if n > self.info.max_tokens]
        if long:
            log.warning("%d of %d %s text(s) exceed %s's %d tokens and are truncated by the "
                        "model (first: #%d, %d tokens); split them smaller (see count_tokens)",
                        len(long), len(texts), kind, self.info.name, self.info.max_tokens,
                        long[0], lengths[long[0]])


_LOADED: dict[tuple[str, str], Embedder] = {}
_LOCK = threading.Lock()


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embedder(name: str, device: str | None = None) -> Embedder:
    """The embedder ``name`` on ``device`` (CUDA when available), loaded once per process."""
    key = (str(name).strip(), _device(device))
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(resolve_embedder(key[0]), key[1])
        return _LOADED[key]


def release_embedders() -> None:
    """Forget every loaded embedder: its memory goes once nothing else holds it, and the next
    ``load_embedder`` loads it again."""
    import gc

    with _LOCK:
        _LOADED.clear()
    gc.collect()


def _load(info: EmbedderInfo, device: str) -> Embedder:
    from sentence_transformers import SentenceTransformer

    folder = Path(info.location)
    if not (folder / "modules.json").is_file():
        log.info("%s has no modules.json: using mean pooling + L2 normalisation over its "
                 "token embeddings", info.name)
    log.info("loading embedder %s from %s on %s", info.name, folder, device)
    try:
        model = SentenceTransformer(str(folder), device=device, local_files_only=True,
                                    trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load embedder {info.name!r} from {folder}: {exc}") from exc
    model.eval()
    return Embedder(_checked(info, model), model)


def _checked(info: EmbedderInfo, model: SentenceTransformer) -> EmbedderInfo:
    """``info`` with the loaded model's own dimension and max_seq_length."""
    get_dim = (getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 6
               or model.get_sentence_embedding_dimension)
    actual: dict[str, Any] = {"dimension": int(get_dim() or info.dimension),
                              "max_tokens": int(model.max_seq_length or info.max_tokens)}
    differs = {k: v for k, v in actual.items() if getattr(info, k) != v}
    if differs:
        log.warning("embedder %s: the loaded model says %s (its config files said otherwise)",
                    info.name, differs)
    return replace(info, **actual)
