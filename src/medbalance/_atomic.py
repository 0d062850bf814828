"""Atomic file writes: a reader, or a run killed mid-write, never sees a torn file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from medbalance.errors import RunDirError

__all__ = ["replace_atomically", "atomic_write_bytes", "atomic_write_text"]


def replace_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``.

    Raises:
        RunDirError: the file cannot be written (no space left, read-only folder, ...); the
            previous ``path``, if any, is left as it was.
    """
    # Write beside the target, flush to disk, then rename: a reader (or a kill -9) sees either
    # the old complete file or the new complete file, never a torn one.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise RunDirError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    replace_atomically(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
