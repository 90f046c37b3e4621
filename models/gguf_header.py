"""A GGUF file's header: its scalar metadata and its tensor table, without the vocabulary.

``gguf.GGUFReader`` builds a numpy view for every part of every metadata field, the 151k
vocabulary and merges of a Qwen GGUF included: 6.7 s on 2 cores for the demo's 0.5B model, paid
each time a process asked for its context length, its quantization or its tensor shapes (three
times in the demo's first comparison). What this project reads from a GGUF is a few scalars and
the tensor table, so this module walks the header as the GGUF specification lays it out (magic,
version, counts, key/value pairs, tensor infos) and skips array payloads by their lengths:
0.05 s for the same file. The type codes are the ``gguf`` package's own
(``GGUFValueType``); a test checks every field and tensor against ``GGUFReader``.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what gguf's own reader supports
Scalar = int | float | bool | str


@dataclass(frozen=True)
class ArrayField:
    """An array-valued field, by element type and length (its items are not read)."""

    item_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: ggml dimensions (innermost first, as ``GGUFReader.shape``) and
    ggml type."""

    dims: tuple[int, ...]
    ggml_type: int


@dataclass(frozen=True)
class GGUFHeader:
    """The metadata (scalars as Python values, arrays as ``ArrayField``) and the tensor table."""

    version: int
    fields: dict[str, Scalar | ArrayField]
    tensors: dict[str, TensorInfo]

    def get(self, key: str) -> Scalar | None:
        """A scalar field's value (None when absent or an array)."""
        value = self.fields.get(key)
        return None if isinstance(value, ArrayField) else value


def read_header(path: str | Path) -> GGUFHeader:
    """The header of the GGUF at ``path``, read once per file version in a process."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise UserError(f"cannot read the GGUF {resolved}: {exc}") from exc
    return _read_cached(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, size: int, mtime_ns: int) -> GGUFHeader:
    with open(path, "rb") as handle:
        if size < 24:
            raise UserError(f"{path} is not a GGUF file (too short); re-fetch or re-export it")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                return _Walker(data, path).header()
            except (struct.error, IndexError, UnicodeDecodeError) as exc:
                raise UserError(f"{path}: the GGUF header is truncated or corrupt ({exc}); "
                                "re-fetch or re-export the file") from exc


class _Walker:
    """Reads the header in order; ``self.at`` is the next byte."""

    def __init__(self, data: Any, path: str) -> None:
        from gguf import GGUFValueType

        self.data, self.path, self.at, self.order = data, path, 0, "<"
        self.types = GGUFValueType
        formats = {GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b",
                   GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
                   GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
                   GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
                   GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q",
                   GGUFValueType.FLOAT64: "d"}
        self.formats: dict[int, str] = {int(kind): fmt for kind, fmt in formats.items()}

    def header(self) -> GGUFHeader:
        if bytes(self.data[:4]) != MAGIC:
            raise UserError(f"{self.path} is not a GGUF file (bad magic); re-fetch or re-export it")
        self.at = 4
        version = self.unpack("I")
        if version & 0xFFFF == 0:  # written on a machine of the other byte order
            self.order = ">"
            version = struct.unpack(">I", struct.pack("<I", version))[0]
        if version not in VERSIONS:
            raise UserError(f"{self.path} is GGUF version {version}; versions "
                            f"{', '.join(map(str, VERSIONS))} are supported")
        tensor_count, kv_count = self.unpack("Q"), self.unpack("Q")
        fields: dict[str, Scalar | ArrayField] = {}
        for _ in range(kv_count):
            key = self.string()
            fields[key] = self.value(self.unpack("I"))
        tensors: dict[str, TensorInfo] = {}
        for _ in range(tensor_count):
            name = self.string()
            dims = tuple(self.unpack("Q") for _ in range(self.unpack("I")))
            tensors[name] = TensorInfo(dims, self.unpack("I"))
            self.at += 8  # the tensor's data offset
        return GGUFHeader(version, fields, tensors)

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(self.order + fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        raw = bytes(self.data[self.at:self.at + length])
        if len(raw) != length:
            raise IndexError("string runs past the end of the file")
        self.at += length
        return raw.decode("utf-8")

    def value(self, kind: int) -> Scalar | ArrayField:
        if kind == self.types.STRING:
            return self.string()
        if kind == self.types.ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            self.skip(item, count)
            return ArrayField(item, count)
        fmt = self.formats.get(kind)
        if fmt is None:
            raise UserError(f"{self.path}: unknown GGUF value type {kind} at byte {self.at}")
        return self.unpack(fmt)

    def skip(self, item: int, count: int) -> None:
        if item == self.types.STRING:
            for _ in range(count):
                self.at += 8 + struct.unpack_from(self.order + "Q", self.data, self.at)[0]
        elif item == self.types.ARRAY:
            for _ in range(count):
                self.value(item)
        else:
            fmt = self.formats.get(item)
            if fmt is None:
                raise UserError(f"{self.path}: unknown GGUF array type {item} at byte {self.at}")
            self.at += struct.calcsize(fmt) * count
        if self.at > len(self.data):
            raise IndexError("array runs past the end of the file")


__all__ = ["ArrayField", "GGUFHeader", "TensorInfo", "read_header"]
