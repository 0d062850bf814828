"""``train.log``: the log lines of a training run, plus each epoch's validation loss and per-class scores.

:class:`TrainLog` attaches a :class:`logging.FileHandler` to the ``medbalance`` logger for the
duration of :func:`medbalance.engine.run.train`, so the file holds what the terminal showed
(at the level the caller configured: ``--quiet`` keeps warnings only). The per-epoch detail
goes through :data:`EPOCHS`, a logger that does not propagate, so it reaches the file but not
the terminal. A resumed run appends to the file; the lines that mark a resumed run
(:data:`RESUMED`) and a stop by the non-finite guard (:data:`NAN_GUARD`) are what the report
reads to warn about them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from medbalance.errors import TrainingError

__all__ = ["EPOCHS", "NAN_GUARD", "PER_CLASS_SCORES", "RESUMED", "TrainLog", "log_epoch", "per_class_columns"]

#: Logger of the per-epoch validation detail: the file only, never the terminal.
EPOCHS = logging.getLogger("medbalance.epochs")
EPOCHS.propagate = False
EPOCHS.setLevel(logging.INFO)

#: Start of the line written when a run is resumed.
RESUMED = "=== resumed"
#: Start of the line written when the non-finite guard stopped the run.
NAN_GUARD = "non-finite guard stopped the run:"
#: Per-class score lists written to ``history.csv`` (``val_<score>/<class>``) and ``train.log``.
PER_CLASS_SCORES = ("dice", "recall", "f1")
_FORMAT = "%(asctime)s %(message)s"


def per_class_columns(scores: Mapping, class_names: Sequence[str]) -> dict[str, float]:
    """The per-class score lists of ``scores`` as ``history.csv`` columns ``val_<score>/<class>``.

    Example:
        >>> per_class_columns({"dice": [0.9, 0.5], "mean_dice": 0.7}, ["background", "tumour"])
        {'val_dice/background': 0.9, 'val_dice/tumour': 0.5}
    """
    return {
        f"val_{key}/{name}": float(value)
        for key in PER_CLASS_SCORES
        if isinstance(scores.get(key), list) and len(scores[key]) == len(class_names)
        for name, value in zip(class_names, scores[key])
    }


def log_epoch(epoch: int, scores: Mapping, class_names: Sequence[str]) -> None:
    """Write epoch ``epoch``'s validation loss and per-class scores to ``train.log`` (not the terminal)."""
    parts = [f"epoch {epoch} validation:"]
    if isinstance(scores.get("loss"), float):
        parts.append(f"loss {scores['loss']:.4f}")
    for key in PER_CLASS_SCORES:
        values = scores.get(key)
        if isinstance(values, list) and len(values) == len(class_names):
            shown = ", ".join(f"{n} {'nan' if math.isnan(v) else f'{v:.4f}'}" for n, v in zip(class_names, values))
            parts.append(f"{key} [{shown}]")
    EPOCHS.info("  ".join(parts))


class _Held(logging.Handler):
    """Keeps the records logged before the run folder exists (reading and checking the data)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TrainLog:
    """Context of one ``train()`` call: :meth:`open` starts ``RUN/train.log`` once the folder exists.

    Lines logged earlier in the call (the data being read) are held and written first. On
    leaving, an error that stopped the run is written to the file (only there: the CLI prints
    it), then the handler is removed and closed.
    """

    def __init__(self) -> None:
        self.handler: logging.FileHandler | None = None
        self._held = _Held()

    def open(self, run_dir: Path, *, resumed: bool) -> None:
        """Append to ``run_dir/train.log`` from now on (a resumed run continues its file)."""
        self.handler = logging.FileHandler(Path(run_dir) / "train.log", mode="a", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        logging.getLogger("medbalance").removeHandler(self._held)
        for logger in (logging.getLogger("medbalance"), EPOCHS):
            logger.addHandler(self.handler)
        EPOCHS.info(f"{RESUMED} {run_dir} ===" if resumed else f"=== training {run_dir} ===")
        for record in self._held.records:
            self.handler.handle(record)
        self._held.records.clear()

    def __enter__(self) -> TrainLog:
        logging.getLogger("medbalance").addHandler(self._held)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        logging.getLogger("medbalance").removeHandler(self._held)
        if self.handler is None:
            return
        if exc is not None:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            EPOCHS.error(f"{NAN_GUARD} {first}" if isinstance(exc, TrainingError) else f"stopped: {first}")
        for logger in (logging.getLogger("medbalance"), EPOCHS):
            logger.removeHandler(self.handler)
        self.handler.close()
        self.handler = None
