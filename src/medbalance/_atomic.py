"""Atomic file writes: a reader, or a run killed mid-write, never sees a torn file."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from medbalance.errors import RunDirError

__all__ = [
    "replace_atomically",
    "atomic_write_bytes",
    "atomic_write_text",
    "pid_alive",
    "remove_stale_temporaries",
    "guard_library_write",
]


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


def guard_library_write(write: Callable[[BinaryIO], object]) -> Callable[[BinaryIO], object]:
    """``write`` for :func:`replace_atomically`, for writers that hide a full disk's ``OSError``.

    torch's zip writer (``torch.save``, ``torch.export.save``) raises a ``RuntimeError`` such as
    "unexpected pos 704 vs 598" after the ``OSError``; it becomes an ``OSError`` that says how
    much space is left, so the user reads "No space left on device" instead of a traceback.
    """

    def guarded(fh: BinaryIO) -> None:
        try:
            write(fh)
        except RuntimeError as exc:
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(fh.name))).free
            if free < _NEARLY_FULL:
                raise OSError(errno.ENOSPC, f"No space left on device ({free} bytes free)") from None
            raise OSError(f"the write failed ({str(exc).splitlines()[0]})") from None

    return guarded


# Free bytes under which a failed write is taken for a full disk.
_NEARLY_FULL = 1 << 20


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a lock or temporary file of a dead one is stale)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files that killed writers left in ``folder``; returns them.

    A temporary file of a process that still runs is a write in progress and is kept.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp-*"):
        pid = tmp.name.rpartition(".tmp-")[2]
        if pid.isdigit() and not pid_alive(int(pid)) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    replace_atomically(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
