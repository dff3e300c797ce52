"""A file of named numpy columns that processes memory-map and share. No torch.

A COCO-sized split parsed into Python objects takes gigabytes, and every DataLoader worker forked from
it copies the pages of each object it touches (reading an object writes its reference count). Flat
numpy columns do not have that problem: a worker reading ``array[a:b]`` writes nothing in the array's
buffer. Memory-mapped from a file they are not even in the parent's private memory: every process on
the node reads the same page cache.

Layout: ``MAGIC`` (8 bytes), the header's length (uint64, little-endian), the header (UTF-8 JSON:
``{"format", "meta", "columns": {name: [dtype, shape, offset]}, "size"}``), then each column's raw
bytes at a 64-byte aligned offset. ``meta`` is any JSON the caller stores with the columns.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from oanet.errors import DataError
from oanet.fileio import atomic_open

MAGIC = b"OANETCOL"
FORMAT = 1
ALIGN = 64
_PREFIX = struct.Struct("<8sQ")

# A column is an array, or a sequence of bytes stored back to back as one uint8 column (so a large
# ragged column is streamed to the file without being joined in memory first).
Column = Union[np.ndarray, Sequence[bytes]]


class CorruptFileError(DataError):
    """The file is not a complete column file of this format: not ours, truncated or from another version."""


def _describe(column: Column) -> tuple[str, list, int]:
    """``(dtype, shape, number of bytes)`` of a column as it will be stored."""
    if isinstance(column, np.ndarray):
        return column.dtype.str, list(column.shape), column.nbytes
    total = sum(len(chunk) for chunk in column)
    return np.dtype(np.uint8).str, [total], total


def _layout(columns: Mapping[str, Column], meta: Any) -> tuple[bytes, dict]:
    """The header bytes and each column's ``[dtype, shape, offset]``, offsets counted from the file start."""
    described = {name: _describe(column) for name, column in columns.items()}
    # The header's length shifts the offsets, and the offsets change the header's length: iterate.
    header_len = 0
    while True:
        offset = _align(_PREFIX.size + header_len)
        table = {}
        for name, (dtype, shape, nbytes) in described.items():
            table[name] = [dtype, shape, offset]
            offset = _align(offset + nbytes)
        header = json.dumps({"format": FORMAT, "meta": meta, "columns": table, "size": offset}).encode()
        if len(header) == header_len:
            return header, table
        header_len = len(header)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_columns(path: str | Path, columns: Mapping[str, Column], meta: Any = None) -> Path:
    """Write ``columns`` and ``meta`` to ``path`` atomically (a reader sees the old file or the whole new one)."""
    path = Path(path)
    header, table = _layout(columns, meta)
    with atomic_open(path) as f:
        f.write(_PREFIX.pack(MAGIC, len(header)))
        f.write(header)
        for name, column in columns.items():
            f.write(b"\0" * (table[name][2] - f.tell()))
            if isinstance(column, np.ndarray):
                f.write(np.ascontiguousarray(column).data)
            else:
                for chunk in column:
                    f.write(chunk)
        f.write(b"\0" * (_align(f.tell()) - f.tell()))
    return path


def read_columns(path: str | Path) -> tuple[dict[str, np.ndarray], Any]:
    """``(columns, meta)`` of a file from :func:`write_columns`; the columns are read-only views of one
    shared memory map. CorruptFileError naming the file when it is not a complete file of this format."""
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < _PREFIX.size:
            raise CorruptFileError(f"{path}: not an oanet column file (too short)")
        f.seek(0)
        magic, header_len = _PREFIX.unpack(f.read(_PREFIX.size))
        if magic != MAGIC or header_len > size - _PREFIX.size:
            raise CorruptFileError(f"{path}: not an oanet column file")
        try:
            header = json.loads(f.read(header_len))
            table, meta, declared = header["columns"], header["meta"], header["size"]
        except (ValueError, KeyError, TypeError):
            raise CorruptFileError(f"{path}: unreadable header") from None
        if header.get("format") != FORMAT:
            raise CorruptFileError(f"{path}: column file format {header.get('format')!r}, expected {FORMAT}")
        if declared != size:
            raise CorruptFileError(f"{path}: {size} bytes, the header says {declared} (truncated?)")
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    columns = {}
    try:
        for name, (dtype, shape, offset) in table.items():
            dtype = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            if offset + count * dtype.itemsize > size:
                raise ValueError(f"column {name} ends past the end of the file")
            columns[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
    except (ValueError, TypeError) as exc:
        raise CorruptFileError(f"{path}: bad column table ({exc})") from None
    return columns, meta
