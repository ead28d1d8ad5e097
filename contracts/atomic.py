"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every writer in the project goes through these helpers so crash safety is a
property of one small module rather than of each call site.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path`` (same directory, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, payload: object, *, indent: int | None = None) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=indent is not None,
                                              separators=None if indent else (",", ":")))


def write_table_atomic(table: pa.Table, path: Path, **parquet_kwargs) -> Path:
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, **parquet_kwargs))
