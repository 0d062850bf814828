"""Run folders: a new timestamped folder per run, never overwritten."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from medbalance._atomic import atomic_write_text, pid_alive
from medbalance._paths import check_name, resolve_inside
from medbalance.errors import RunDirError

__all__ = ["RunDirError", "create_run_dir", "run_lock", "HistoryLog"]

log = logging.getLogger(__name__)

LOCK_NAME = ".medbalance.lock"


def create_run_dir(parent: str | Path, name: str, *, stamp: bool = True, run: bool = True) -> Path:
    """Create ``parent/<name>-<YYYYmmdd-HHMMSS>[-k]`` and its sub-folders; never reuse one.

    ``stamp=False`` creates exactly ``parent/<name>`` (a cross-validation fold), refused if it
    exists; ``run=False`` leaves out the run sub-folders (``checkpoints/``, ``predictions/``).
    """
    parent = Path(parent)
    check_name(name, key="name")
    if parent.exists() and not parent.is_dir():
        raise RunDirError(f"output folder '{parent}' is a file; expected a folder (or a path to create)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create output folder '{parent}': {exc.strerror}") from None
    time_stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000 if stamp else 1):
        folder = parent / ((f"{name}-{time_stamp}" + (f"-{k}" if k else "")) if stamp else name)
        resolve_inside(parent, folder, what="run folder")  # a dangling link named like the run
        try:
            folder.mkdir()
        except FileExistsError:
            if stamp:
                continue
            raise RunDirError(f"run folder '{folder}' already exists; nothing is overwritten") from None
        except OSError as exc:
            raise RunDirError(f"cannot create run folder in '{parent}': {exc.strerror}") from None
        if run:
            (folder / "checkpoints").mkdir()
            (folder / "predictions").mkdir()
        return folder
    raise RunDirError(f"'{parent}' already holds 1000 runs named '{name}-{time_stamp}'")


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``RUN_DIR/.medbalance.lock`` (``pid host``) while a run is resumed; a second holder is refused.

    A lock left by a process of this machine that no longer runs (a kill -9) is stale and taken
    over; one from another machine is refused, since its process cannot be checked from here.

    Raises:
        RunDirError: another live process holds the lock.
    """
    path = Path(run_dir) / LOCK_NAME
    mine = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = path.read_text(encoding="utf-8", errors="replace").split()
            pid = int(owner[0]) if owner and owner[0].isdigit() else -1
            host = owner[1] if len(owner) > 1 else ""
            if host != socket.gethostname() or pid_alive(pid):
                raise RunDirError(
                    f"'{run_dir}' is in use by process {' on '.join(owner[:2]) or '?'} (lock file '{path}'); "
                    "wait for it, or delete the lock file if that process is gone"
                ) from None
            log.info("removing the stale lock of process %d in %s", pid, run_dir)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(mine + "\n")
        break
    else:
        raise RunDirError(f"cannot take the lock file '{path}': another process keeps creating it")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8").split()[:2] == mine.split():
                path.unlink()


class HistoryLog:
    """``history.csv``: one row per epoch, rewritten atomically so a kill never tears it.

    With ``path=None`` the rows are only kept in memory.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[dict] = []
        if self.path is not None and self.path.exists():
            try:
                with open(self.path, newline="") as fh:
                    self.rows = list(csv.DictReader(fh))
                epochs = [int(r["epoch"]) for r in self.rows]
            except (KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as exc:
                what = "not a history.csv with an 'epoch' column"
                raise RunDirError(f"cannot read '{self.path}': {what} ({exc})") from None
            if epochs != sorted(set(epochs)):
                raise RunDirError(f"cannot use '{self.path}': its epochs {epochs} are not increasing")

    def truncate(self, epochs_done: int) -> None:
        """Drop rows past the checkpoint a resumed run restarts from; never a row it implies."""
        self.rows = [r for r in self.rows if int(r["epoch"]) <= epochs_done]
        self._write()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        fields: list[str] = []
        for row in self.rows:
            fields += [k for k in row if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
