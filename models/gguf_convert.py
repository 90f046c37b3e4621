"""GGUF -> safetensors: dequantize a GGUF checkpoint to fp32 and save a loadable model folder.

transformers reads GGUF with ``gguf_file=`` (needs the ``gguf`` package) but refuses to
``save_pretrained`` a model that still names its GGUF quantizer; this module strips it, makes
generation stop at the chat template's end-of-turn token, and saves weights plus tokenizer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


@contextlib.contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """Silence transformers' bars, including the GGUF reader's own plain ``tqdm``, when asked."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was, reader_tqdm = hf_logging.is_progress_bar_enabled(), getattr(gguf_utils, "tqdm", None)
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    if not enabled and reader_tqdm is not None:
        gguf_utils.tqdm = functools.partial(reader_tqdm, disable=True)
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
        if reader_tqdm is not None:
            gguf_utils.tqdm = reader_tqdm


def convert_gguf(gguf: Path, dest: Path, progress: bool = True) -> None:
    """Dequantize a GGUF file to fp32 and save it as a safetensors model folder with tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    with _transformers_bars(progress):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True))
        _drop_quantization(model)
        _stop_at_end_of_turn(model, tokenizer)
        model.config.name_or_path = ""
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)
    if not tokenizer.chat_template:
        log.warning("%s has no chat template; chat prompts will be rendered as plain text", gguf)


def _drop_quantization(model: Any) -> None:
    """A GGUF-loaded model refuses ``save_pretrained`` while it still names its quantizer."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    for owner, attr in ((model, "hf_quantizer"), (model.config, "quantization_config"),
                        (model, "quantization_method")):
        if getattr(owner, attr, None) is not None:
            delattr(owner, attr)


def _stop_at_end_of_turn(model: Any, tokenizer: Any) -> None:
    """Stop generation at eos and at every end-of-turn/end-of-text token the vocabulary has."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, list) else [] if eos is None else [eos]
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in (tokenizer.eos_token, *END_OF_TURN) if t in vocab]
    ids = list(dict.fromkeys(ids))
    model.generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
