"""A PEFT LoRA adapter in llama.cpp's GGUF LoRA format, so llama.cpp serves base and fine-tuned.

``export_lora_gguf(ADAPTER, BASE_GGUF)`` writes ``ADAPTER/gguf/lora-<sha256>.gguf`` once (the
adapter's sha256 over its config and weights keys the file, so a retrained adapter gets a new
export) with the ``gguf`` package, in the layout llama.cpp's own ``convert_lora_to_gguf.py``
writes: ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and for each
adapted weight ``<gguf tensor name>.lora_a`` (rank × in) and ``.lora_b`` (out × rank). llama.cpp
scales the product by alpha / rank, peft by ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA, written
as an equivalent alpha). Tensor names come from the ``gguf`` package's name map of the base's
architecture; for the architectures whose query/key rows llama.cpp's converter permutes (Llama),
the rows of ``lora_b`` are permuted the same way. An adapter that does not fit the base GGUF (a
weight it lacks, or another shape: trained on another model) is refused, and so are adapter
features llama.cpp's format cannot hold (DoRA, per-module ranks or alphas, full modules to save).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from models.adapters import adapter_identity, check_adapter_dir

log = logging.getLogger(__name__)

PERMUTED_ARCHS = ("llama",)  # llama.cpp's converter permutes these archs' q/k rows for RoPE
PEFT_PREFIX = "base_model.model."


def export_lora_gguf(adapter_dir: str | Path, base_gguf: str | Path) -> Path:
    """The adapter as a GGUF LoRA for ``base_gguf``, written once beside the adapter."""
    folder = check_adapter_dir(adapter_dir)
    sha = adapter_identity(folder)["sha256"]
    out = folder / "gguf" / f"lora-{sha[:16]}.gguf"
    if out.is_file():
        return out
    _check_supported(folder)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = BaseTensors(Path(base_gguf))
    tensors = _gguf_tensors(folder, config, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lora-", suffix=".gguf.part", dir=out.parent)
    os.close(fd)
    try:
        _write(Path(tmp), base.arch, _alpha(config), tensors)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("exported adapter %s to %s (%d tensors)", folder, out, len(tensors))
    return out


class BaseTensors:
    """What the base GGUF says: architecture, heads, blocks, and each tensor's (out, in) shape."""

    def __init__(self, path: Path) -> None:
        from models.gguf_header import read_header

        if not path.is_file():
            raise UserError(f"{path} is not a GGUF file")
        header = read_header(path)
        self.arch = str(_field(header, "general.architecture"))
        self.blocks = int(_field(header, f"{self.arch}.block_count"))
        self.heads = int(_field(header, f"{self.arch}.attention.head_count"))
        self.kv_heads = int(_field(header, f"{self.arch}.attention.head_count_kv", self.heads))
        # ggml lists dimensions innermost first: a weight (out, in) is stored as ne = [in, out]
        self.shapes = {name: tuple(reversed(t.dims)) for name, t in header.tensors.items()}

    def name_of(self, hf_weight: str) -> str | None:
        """The GGUF tensor name of a Hugging Face weight name, for this architecture."""
        import gguf

        arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.arch), None)
        if arch is None:
            raise UserError(f"the gguf package does not know architecture {self.arch!r}")
        return gguf.get_tensor_name_map(arch, self.blocks).get_name(hf_weight,
                                                                   try_suffixes=(".weight",))


def unsupported_features(adapter_dir: str | Path) -> list[str]:
    """Why llama.cpp's LoRA format cannot hold this adapter (empty: it can)."""
    folder = Path(adapter_dir).expanduser()
    if not (folder / "adapter_config.json").is_file():
        return [f"{folder} is not a LoRA adapter folder (no adapter_config.json)"]
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    out = [what for what, present in (
        ("DoRA", config.get("use_dora")),
        ("per-module ranks (rank_pattern)", config.get("rank_pattern")),
        ("per-module alphas (alpha_pattern)", config.get("alpha_pattern")),
        ("fully trained modules (modules_to_save)", config.get("modules_to_save")),
    ) if present]
    if config.get("peft_type", "LORA") != "LORA":
        out.append(f"peft type {config.get('peft_type')}")
    if not (folder / "adapter_model.safetensors").is_file():
        out.append("no adapter_model.safetensors (a .bin adapter would need pickle)")
    return out


def _check_supported(folder: Path) -> None:
    unsupported = unsupported_features(folder)
    if unsupported:
        raise UserError(f"adapter {folder}: {'; '.join(unsupported)}: llama.cpp's LoRA format "
                        "cannot hold it; use --backend transformers for it")


def _alpha(config: dict[str, Any]) -> float:
    """The alpha llama.cpp needs so that alpha / rank equals peft's scaling."""
    r, alpha = float(config["r"]), float(config["lora_alpha"])
    return alpha * math.sqrt(r) if config.get("use_rslora") else alpha


def _gguf_tensors(folder: Path, config: dict[str, Any], base: BaseTensors
                  ) -> list[tuple[str, np.ndarray]]:
    from safetensors.numpy import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.weight"
            if key.endswith(marker):
                hf = key[:-len(marker)].removeprefix(PEFT_PREFIX) + ".weight"
                hf = hf.replace(".default", "")
                pairs.setdefault(hf, {})[part] = value.astype(np.float32)
                break
        else:
            raise UserError(f"adapter {folder}: unexpected tensor {key!r} (not a LoRA A/B "
                            "weight); use --backend transformers for it")
    out: list[tuple[str, np.ndarray]] = []
    for hf, ab in sorted(pairs.items()):
        a, b = ab.get("lora_A"), ab.get("lora_B")
        name = base.name_of(hf)
        if a is None or b is None or name is None or name not in base.shapes:
            raise UserError(f"adapter {folder} adapts {hf!r}, which the base model "
                            f"({base.arch} GGUF) does not have: it was trained on another model")
        if base.shapes[name] != (b.shape[0], a.shape[1]):
            raise UserError(f"adapter {folder}: {hf!r} is {b.shape[0]}×{a.shape[1]} but the base "
                            f"model's is {base.shapes[name][0]}×{base.shapes[name][1]}: it was "
                            "trained on another model")
        out += [(name + ".lora_a", a), (name + ".lora_b", _permuted(b, hf, base))]
    if not out:
        raise UserError(f"adapter {folder} holds no LoRA weights")
    return out


def _permuted(b: np.ndarray, hf: str, base: BaseTensors) -> np.ndarray:
    """``lora_b``'s rows in the order llama.cpp keeps the base's q/k rows."""
    if base.arch not in PERMUTED_ARCHS:
        return b
    if hf.endswith("q_proj.weight"):
        return permute_rows(b, base.heads)
    if hf.endswith("k_proj.weight"):
        return permute_rows(b, base.kv_heads)
    return b


def permute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """The row permutation llama.cpp's ``convert_hf_to_gguf.py`` applies to Llama q/k weights
    (each head's two rotary halves interleaved)."""
    rows = w.shape[0]
    return (w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def _write(path: Path, arch: str, alpha: float, tensors: list[tuple[str, np.ndarray]]) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, data in tensors:
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _field(header: Any, key: str, default: int | None = None) -> Any:
    value = header.get(key)
    if value is None:
        if default is None:
            raise UserError(f"the base GGUF does not say {key}")
        return default
    return value


__all__ = ["BaseTensors", "export_lora_gguf", "permute_rows"]
