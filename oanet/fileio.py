"""Atomic file writes: a reader, or a run killed half-way, sees the old file or the new one, never half.

Write to a temporary file in the same folder, then ``os.replace`` it over the target (atomic on POSIX
and Windows). No torch here.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO, Iterator


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the process's umask (``0o666 & ~umask``); for files
    made by ``mkstemp``, which are 0600 whatever the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the parent folder must exist. Returns the path."""
    path = Path(path)
    # pid + thread id: concurrent writers (DataLoader workers, ranks, threads) never share a temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_json(path: str | Path, what: str = "") -> Any:
    """Parsed JSON; errors name the file and, with ``what`` (e.g. "prediction"), its role: a missing
    file is a FileNotFoundError, a truncated or corrupt one a DataError, never a bare JSONDecodeError.
    Every JSON that oanet reads back (its own outputs and the user's annotations) goes through here."""
    from oanet.errors import DataError

    path = Path(path)
    role = f"{what} JSON" if what else "JSON file"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {role} not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = f"malformed {what} JSON" if what else "not valid JSON"
        raise DataError(f"{path}: {kind} ({exc}); delete or restore it") from None


def write_json_atomic(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """``data`` as JSON at ``path``, written atomically (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent)
    return atomic_write_bytes(path, (text + ("\n" if indent is not None else "")).encode())


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to stream into; it replaces ``path`` when the block ends, and is removed when
    the block raises (for outputs too large to hold as one ``bytes``). The parent folder must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
