"""Reader for CTranslate2 ``model.bin`` files (no ctranslate2 needed at run time).

Format (little-endian; as written by ``ctranslate2.specs.ModelSpec._serialize`` and read by
``ctranslate2::models::Model::load``), where ``str`` is ``uint16 n`` then ``n`` bytes
holding UTF-8 text and a trailing NUL:

    uint32 binary_version                      (6 today; 1..6 read here)
    str spec_name, uint32 spec_revision        (binary_version >= 2)
    uint32 num_variables, then per variable:
        str name; uint8 rank; uint32 dims[rank];
        binary_version >= 4: uint8 dtype_id; uint32 num_bytes
        binary_version <  4: uint8 item_size; uint32 num_items
        bytes data (row-major)
    uint32 num_aliases, then (str alias, str target) pairs   (binary_version >= 3)

dtype ids follow ``ctranslate2::DataType``: 0 float32, 1 int8, 2 int16, 3 int32,
4 float16, 5 bfloat16. Quantized weights come with ``<name>_scale``: int8 rows are stored
as ``round(w * scale[row])`` and int16 tensors as ``round(w * scale)``; :func:`read_ct2`
returns them dequantized to float32 (``w = q / scale``).

A model may be split into byte-wise parts (``model.bin.part1``, ``model.bin.part2``): pass
all paths in order; they are streamed as one file, never joined in memory.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence

import numpy as np

DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: read as uint16 and widened by hand
}
_ITEM_SIZE_DTYPES = {4: 0, 2: 4, 1: 1}  # binary_version < 4: float32, float16, int8


class CT2FormatError(ValueError):
    """A CTranslate2 model file is truncated or malformed."""


@dataclasses.dataclass
class CT2Model:
    """Contents of a ``model.bin``: header fields and the named tensors (float32 for floats)."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _PartsReader:
    """Sequential reader over one or more files read back to back (a split model.bin)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]
        missing = [os.fspath(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"CTranslate2 model file(s) not found: {missing}")
        self._index = 0
        self._file: Optional[BinaryIO] = open(self.paths[0], "rb")
        self.offset = 0

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _next_file(self) -> bool:
        self.close()
        self._index += 1
        if self._index >= len(self.paths):
            return False
        self._file = open(self.paths[self._index], "rb")
        return True

    def read(self, n: int, what: str) -> bytes:
        chunks, need = [], n
        while need > 0 and self._file is not None:
            data = self._file.read(need)
            chunks.append(data)
            need -= len(data)
            if need > 0 and not self._next_file():
                break
        out = b"".join(chunks)
        if len(out) != n:
            raise CT2FormatError(
                f"{self.name}: truncated at byte {self.offset} while reading {what} "
                f"(wanted {n} bytes, got {len(out)})")
        self.offset += n
        return out

    def skip(self, n: int, what: str) -> None:
        need = n
        while need > 0 and self._file is not None:
            here = self._file.tell()
            end = self._file.seek(0, os.SEEK_END)
            step = min(need, end - here)
            self._file.seek(here + step)
            need -= step
            if need > 0 and not self._next_file():
                break
        if need:
            raise CT2FormatError(f"{self.name}: truncated at byte {self.offset} while skipping {what}")
        self.offset += n

    def at_end(self) -> bool:
        while self._file is not None:
            here = self._file.tell()
            if self._file.seek(0, os.SEEK_END) > here:
                self._file.seek(here)
                return False
            if not self._next_file():
                break
        return True

    @property
    def name(self) -> str:
        return " + ".join(os.fspath(p) for p in self.paths)

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.uint("H", f"length of {what}")
        raw = self.read(n, what)
        if n == 0 or raw[-1:] != b"\0":
            raise CT2FormatError(f"{self.name}: {what} at byte {self.offset - n} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def _decode(raw: bytes, dtype_id: int, dims: tuple[int, ...], name: str, source: str) -> np.ndarray:
    if dtype_id not in DTYPES:
        raise CT2FormatError(f"{source}: variable {name!r} has unknown dtype id {dtype_id} "
                             f"(known: {sorted(DTYPES)})")
    if dtype_id == 5:
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        arr = bits.view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=DTYPES[dtype_id])
    if arr.size != int(np.prod(dims, dtype=np.int64)):
        raise CT2FormatError(f"{source}: variable {name!r} holds {arr.size} items, "
                             f"its shape {dims} needs {int(np.prod(dims))}")
    arr = arr.reshape(dims)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    return arr


def read_ct2(paths: str | os.PathLike | Sequence[str | os.PathLike],
             keep: Optional[Callable[[str], bool]] = None, dequantize: bool = True) -> CT2Model:
    """Reads a CTranslate2 ``model.bin`` (or its parts, in order) -> :class:`CT2Model`.

    Args:
      paths: one path, or the parts of a split file in order.
      keep: predicate on variable names; others are skipped without being read (their
        ``_scale`` companions are kept whenever the variable is).
      dequantize: divide int8 / int16 weights by their ``<name>_scale`` (then dropped).

    Raises:
      CT2FormatError: truncated file, bad string, unknown dtype, size/shape mismatch,
        trailing bytes, or an alias to a missing variable.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    reader = _PartsReader([Path(p) for p in paths])
    src = reader.name
    want = (lambda name: True) if keep is None else (
        lambda name: keep(name) or (name.endswith("_scale") and keep(name[:-len("_scale")])))
    try:
        version = reader.uint("I", "binary version")
        if not 1 <= version <= 6:
            raise CT2FormatError(f"{src}: binary version {version} is not supported (expected 1..6); "
                                 f"is this a CTranslate2 model.bin?")
        spec_name, revision = "", 1
        if version >= 2:
            spec_name = reader.string("spec name")
            revision = reader.uint("I", "spec revision")
        num_vars = reader.uint("I", "variable count")
        variables: dict[str, np.ndarray] = {}
        for i in range(num_vars):
            name = reader.string(f"name of variable {i}")
            rank = reader.uint("B", f"rank of {name!r}")
            dims = struct.unpack(f"<{rank}I", reader.read(4 * rank, f"shape of {name!r}"))
            if version >= 4:
                dtype_id = reader.uint("B", f"dtype of {name!r}")
                num_bytes = reader.uint("I", f"byte count of {name!r}")
            else:
                item_size = reader.uint("B", f"item size of {name!r}")
                if item_size not in _ITEM_SIZE_DTYPES:
                    raise CT2FormatError(f"{src}: variable {name!r} has item size {item_size}")
                dtype_id = _ITEM_SIZE_DTYPES[item_size]
                num_bytes = reader.uint("I", f"item count of {name!r}") * item_size
            if want(name):
                variables[name] = _decode(reader.read(num_bytes, f"data of {name!r}"), dtype_id,
                                          tuple(dims), name, src)
            else:
                reader.skip(num_bytes, f"data of {name!r}")
        aliases: dict[str, str] = {}
        if version >= 3:
            for i in range(reader.uint("I", "alias count")):
                alias = reader.string(f"alias {i}")
                aliases[alias] = reader.string(f"target of alias {alias!r}")
        if not reader.at_end():
            raise CT2FormatError(f"{src}: trailing bytes after byte {reader.offset} (corrupt or "
                                 f"parts in the wrong order?)")
    finally:
        reader.close()

    for alias, target in aliases.items():
        if want(alias):
            if target not in variables:
                raise CT2FormatError(f"{src}: alias {alias!r} points to missing variable {target!r}")
            variables[alias] = variables[target]
            if target + "_scale" in variables:
                variables[alias + "_scale"] = variables[target + "_scale"]
    if dequantize:
        for name in [n for n in variables if n + "_scale" in variables]:
            q, scale = variables[name], variables.pop(name + "_scale").astype(np.float32)
            if q.dtype == np.int8:
                if scale.shape != q.shape[:1]:
                    raise CT2FormatError(f"{src}: {name}_scale has shape {scale.shape}, expected "
                                         f"{q.shape[:1]} for int8 weight {q.shape}")
                variables[name] = q.astype(np.float32) / scale.reshape((-1,) + (1,) * (q.ndim - 1))
            elif q.dtype == np.int16:
                variables[name] = q.astype(np.float32) / scale
            else:
                variables[name] = q
    return CT2Model(version, spec_name, revision, variables, aliases)
