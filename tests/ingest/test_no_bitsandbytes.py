"""The ``ingest`` command never imports bitsandbytes (it never uses 4-bit weights).

Loading any embedder imports sentence-transformers -> transformers' trainer -> peft -> (where
installed) bitsandbytes, whose import loads CPU kernels and logs two warnings. The console script
keeps it out (``models.environment.without_bitsandbytes``); each check runs in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_RUN = """
import json, sys
sys.argv = ["ingest", *json.loads(sys.argv[1])]
from ingest.cli import script
try:
    code = script()
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "bitsandbytes": sys.modules.get("bitsandbytes") is not None,
                  **{name: name in sys.modules for name in ("sentence_transformers", "peft",
                                                            "torch")}}))
"""


def _ingest(*args: str) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", _RUN, json.dumps(list(args))], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT encoder with a WordPiece tokenizer: a local embedder folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-encoder")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(["O Brasil foi colônia de Portugal até 1822.",
                                   "Tiradentes foi um alferes e dentista."],
                                  trainers.WordPieceTrainer(vocab_size=200,
                                                            special_tokens=specials))
    BertTokenizerFast(tokenizer_object=wordpiece, model_max_length=64).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def test_ingest_help_imports_no_model_library() -> None:
    result, _ = _ingest("--help")
    assert result == {"code": 0, "bitsandbytes": False, "sentence_transformers": False,
                      "peft": False, "torch": False}


def test_an_ingest_with_a_real_embedder_keeps_bitsandbytes_out(
        tiny_encoder: Path, sample_dump: Path, tmp_path: Path) -> None:
    result, stderr = _ingest("build", str(sample_dump), "--store", str(tmp_path / "store"),
                             "--embedder", str(tiny_encoder), "--workers", "0", "--limit", "2",
                             "-q")
    assert result["code"] == 0, stderr[-2000:]
    assert result["sentence_transformers"] and result["peft"]  # the chain that pulled it in
    assert not result["bitsandbytes"]
    assert "bitsandbytes" not in stderr and "gemm_4bit" not in stderr
    assert (tmp_path / "store" / "manifest.json").is_file()
