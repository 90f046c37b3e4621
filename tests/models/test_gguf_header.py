"""models.gguf_header reads what gguf's own GGUFReader reads: every scalar field, every array's
type and length, every tensor's dimensions and type; bad files get one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from models.gguf_header import ArrayField, read_header


def write_gguf(path: Path) -> Path:
    """A GGUF with a field of every scalar type, string/int/nested arrays and three tensors."""
    from gguf import GGUFValueType, GGUFWriter

    writer = GGUFWriter(str(path), "qwen2")
    writer.add_context_length(32768)
    writer.add_file_type(15)
    writer.add_block_count(2)
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -100)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.25)
    writer.add_uint64("t.u64", 2**63 + 5)
    writer.add_int64("t.i64", -(2**62))
    writer.add_float64("t.f64", 1e-300)
    writer.add_bool("t.bool", True)
    writer.add_string("t.text", "Independência — 1822")
    writer.add_array("tokenizer.ggml.tokens", ["<|im_end|>", "olá", "", "Brasil"] * 50)
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_key_value("t.nested", [[1, 2], [3]], GGUFValueType.ARRAY,
                         sub_type=GGUFValueType.ARRAY)
    writer.add_tensor("token_embd.weight", np.zeros((6, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((8, 8), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_header_matches_ggufs_own_reader(tmp_path: Path) -> None:
    from gguf import GGUFReader, GGUFValueType

    path = write_gguf(tmp_path / "m.gguf")
    header, reader = read_header(path), GGUFReader(str(path))
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert list(header.fields) == keys
    for key in keys:
        field, ours = reader.fields[key], header.fields[key]
        if key == "t.nested":  # GGUFReader's data lists the leaves; the header counts items
            assert ours == ArrayField(int(GGUFValueType.ARRAY), 2)
        elif field.types[0] == GGUFValueType.ARRAY:
            assert ours == ArrayField(int(field.types[1]), len(field.data)), key
        elif field.types[0] == GGUFValueType.FLOAT32:
            assert ours == pytest.approx(float(field.contents())), key
        else:
            assert ours == field.contents(), key
    assert header.get("t.u64") == 2**63 + 5 and header.get("t.text") == "Independência — 1822"
    assert header.get("tokenizer.ggml.tokens") is None  # an array is not a scalar
    assert header.fields["tokenizer.ggml.tokens"] == ArrayField(int(GGUFValueType.STRING), 200)
    assert {t.name: (tuple(int(n) for n in t.shape.tolist()), int(t.tensor_type))
            for t in reader.tensors} == {n: (t.dims, t.ggml_type)
                                         for n, t in header.tensors.items()}
    assert header.tensors["token_embd.weight"].dims == (8, 6)  # innermost first, as ggml


def test_the_context_length_and_quantization_come_from_the_header(tmp_path: Path) -> None:
    from models.gen_llamacpp import gguf_context_length, gguf_file_type

    path = write_gguf(tmp_path / "m.gguf")
    assert gguf_context_length(path) == 32768
    assert gguf_file_type(path) == "MOSTLY_Q4_K_M"


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    import os

    path = write_gguf(tmp_path / "m.gguf")
    assert read_header(path).get("t.u8") == 200
    data = path.read_bytes()
    key = b"t.u8"
    at = data.index(key) + len(key) + 4  # the key, then its uint32 type, then the value
    path.write_bytes(data[:at] + bytes([7]) + data[at + 1:])
    os.utime(path, ns=(1, 1))  # another version of the file, even on a coarse clock
    assert read_header(path).get("t.u8") == 7


@pytest.mark.parametrize("damage", ["magic", "truncated", "version"])
def test_a_bad_file_gets_one_clear_error(tmp_path: Path, damage: str) -> None:
    data = write_gguf(tmp_path / "m.gguf").read_bytes()
    bad = tmp_path / f"{damage}.gguf"
    if damage == "magic":
        bad.write_bytes(b"GGML" + data[4:])
    elif damage == "truncated":
        bad.write_bytes(data[:200])
    else:
        bad.write_bytes(data[:4] + (9).to_bytes(4, "little") + data[8:])
    with pytest.raises(UserError, match=str(bad)):
        read_header(bad)
