"""Run folders: a new timestamped folder per run, never overwritten."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from medbalance._atomic import atomic_write_text
from medbalance.errors import RunDirError

__all__ = ["RunDirError", "create_run_dir", "HistoryLog"]


def create_run_dir(parent: str | Path, name: str) -> Path:
    """Create ``parent/<name>-<YYYYmmdd-HHMMSS>[-k]`` and its sub-folders; never reuse one."""
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise RunDirError(f"output folder '{parent}' is a file; expected a folder (or a path to create)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create output folder '{parent}': {exc.strerror}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        run = parent / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            run.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create run folder in '{parent}': {exc.strerror}") from None
        (run / "checkpoints").mkdir()
        (run / "predictions").mkdir()
        return run
    raise RunDirError(f"'{parent}' already holds 1000 runs named '{name}-{stamp}'")


class HistoryLog:
    """``history.csv``: one row per epoch, rewritten atomically so a kill never tears it.

    With ``path=None`` the rows are only kept in memory.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[dict] = []
        if self.path is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                self.rows = list(csv.DictReader(fh))

    def truncate(self, epochs_done: int) -> None:
        """Drop rows past the checkpoint a resumed run restarts from."""
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
