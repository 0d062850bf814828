"""Per-case evaluation table: overlap and surface scores per (case, class), at native resolution.

Each case is one label map (2D or 3D) with its own pixel spacing. One confusion matrix per case
(:func:`medbalance.metrics.confusion_matrix`) gives Dice, IoU, precision and recall with the
formulas of :func:`medbalance.metrics.segmentation_scores`; the surface metrics (HD95 and
normalised surface Dice at ``tolerance`` physical units) come from
:mod:`medbalance.metrics.surface`. Pixels whose target is ``ignore_index`` are left out of every
score: out of the matrix, and cleared from both masks before the borders are taken.

**Empty ground truth.** A class absent from a case's target forms an *empty pair*, scored by the
``empty`` policy, the same for every metric except HD95:

* ``"skip"``: NaN (left out of the means over cases);
* ``"one"``: 1.0 if the prediction is empty too, else 0.0;
* ``"zero"``: 0.0.

HD95 of an empty pair is always NaN. A class present in the target but never predicted (a
*missed* pair) scores 0 for Dice, IoU, precision, recall and NSD and NaN for HD95 (undefined:
no predicted border). NaN values are left out of the means; the summary reports how many
values each mean has (``<metric>_n``), and the number of empty and missed pairs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbalance._atomic import atomic_write_text
from medbalance.metrics.functional import _check_ignore_index, _check_num_classes, confusion_matrix, segmentation_scores
from medbalance.metrics.surface import (
    _as_spacing,
    _check_tolerance,
    _hausdorff,
    _surface_dice,
    surface_distances,
)

__all__ = ["CaseTable"]

log = logging.getLogger(__name__)

EMPTY_POLICIES = ("skip", "one", "zero")
OVERLAP_METRICS = ("dice", "iou", "precision", "recall")
SURFACE_METRICS = ("hd95", "nsd")


def _to_numpy(name: str, labels: Any) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels, found dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be one case, 2D (H, W) or 3D (D, H, W), found shape {array.shape}")
    return np.ascontiguousarray(array)  # torch.from_numpy refuses negative strides (flipped views)


def _nanmean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, population std and count of the non-NaN ``values`` (NaN, NaN, 0 if none)."""
    kept = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if kept.size == 0:
        return math.nan, math.nan, 0
    return float(kept.mean()), float(kept.std()), int(kept.size)


def _json_safe(value: Any) -> Any:
    """NaN -> None (``null``), recursively, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class CaseTable:
    """Accumulate per-case, per-class scores and summarise them over a dataset.

    Args:
        num_classes: Number of classes ``C`` including background.
        class_names: One name per class (default ``"0"``, ``"1"``, ...), used in the rows.
        include_background: Score class 0 too.
        ignore_index: Target value whose pixels are left out of every score (e.g. outside a
            field-of-view mask). If it is a class index, that class is not scored.
        tolerance: NSD tolerance, in the physical units of ``spacing`` (e.g. mm).
        empty: Policy for a class absent from a case's target: ``"skip"``, ``"one"`` or
            ``"zero"`` (module docstring).
        surface: Compute HD95 and NSD (the costly part); without, the rows have no such columns.

    Attributes:
        rows: One dict per (case, scored class), in update order (see :meth:`update`).
        cm: int64 ``(C, C)`` confusion matrix summed over the cases (the pooled scores).
        classes: The scored class indices; ``metrics``: the score names of a row.

    Example:
        >>> table = CaseTable(2, class_names=["bg", "vessel"], tolerance=1.0)
        >>> target = np.zeros((6, 6), np.int64); target[1:4, 1:4] = 1
        >>> labels = np.zeros((6, 6), np.int64); labels[1:4, 2:5] = 1
        >>> row = table.update("case0", labels, target, spacing=(0.5, 0.5))[0]
        >>> row["class"], round(row["dice"], 4), row["hd95"], row["nsd"]
        ('vessel', 0.6667, 0.5, 1.0)
        >>> table.summary()["pooled"]["vessel"]["dice"] == row["dice"]
        True
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_names: Sequence[str] | None = None,
        include_background: bool = False,
        ignore_index: int | None = None,
        tolerance: float = 1.0,
        empty: str = "skip",
        surface: bool = True,
    ) -> None:
        _check_num_classes(num_classes)
        _check_ignore_index(ignore_index)
        _check_tolerance(tolerance)
        if class_names is not None and (isinstance(class_names, str) or len(class_names) != num_classes):
            raise ValueError(f"class_names must list {num_classes} names (num_classes), found {class_names!r}")
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {EMPTY_POLICIES}, found {empty!r}")
        self.num_classes = num_classes
        self.class_names = [str(c) for c in range(num_classes)] if class_names is None else list(map(str, class_names))
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.tolerance = float(tolerance)
        self.empty = empty
        self.surface = surface
        self.classes = [c for c in range(0 if include_background else 1, num_classes) if c != ignore_index]
        self.metrics = OVERLAP_METRICS + (SURFACE_METRICS if surface else ())
        self.rows: list[dict[str, Any]] = []
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)  # summed over cases: pooled scores
        self._cases: set[str] = set()

    def _empty_pair(self, pred_count: int) -> dict[str, float]:
        """Scores of a class absent from the target, by the ``empty`` policy."""
        value = {"skip": math.nan, "one": 1.0 if pred_count == 0 else 0.0, "zero": 0.0}[self.empty]
        scores = {name: value for name in self.metrics}
        if self.surface:
            scores["hd95"] = math.nan
        return scores

    def update(
        self, name: str, labels: Any, target: Any, *, spacing: float | Sequence[float] | None = None
    ) -> list[dict[str, Any]]:
        """Score one case and add its rows.

        Args:
            name: Case identifier, unique in the table.
            labels: Predicted labels ``(H, W)`` or ``(D, H, W)``, numpy or torch, values in
                ``[0, C)``.
            target: True labels, same shape, values in ``[0, C)`` or ``ignore_index``.
            spacing: Pixel size per array axis (or one number) for HD95 and NSD; ``None`` means 1.

        Returns:
            The case's rows (also kept in :attr:`rows`): one dict per scored class with
            ``case``, ``class_index``, ``class``, ``target_pixels``, ``pred_pixels`` (outside
            ``ignore_index``) and the scores.

        Raises:
            ValueError: duplicate ``name``, non-integer or mismatched arrays, a label outside
                ``[0, C)``, a bad spacing, or a case with every pixel ignored.
        """
        name = str(name)
        if name in self._cases:
            raise ValueError(f"name must be unique, found case {name!r} twice")
        labels, target = _to_numpy("labels", labels), _to_numpy("target", target)
        if labels.shape != target.shape:
            raise ValueError(f"labels and target must have the same shape, found {labels.shape} and {target.shape}")
        sampling = _as_spacing(spacing, labels.ndim)
        try:
            cm = confusion_matrix(
                torch.from_numpy(labels), torch.from_numpy(target), self.num_classes, ignore_index=self.ignore_index
            ).numpy()
        except ValueError as exc:
            raise ValueError(f"case {name!r}: {exc}") from None
        if cm.sum() == 0:
            raise ValueError(f"case {name!r} has no pixel outside ignore_index={self.ignore_index}")
        scores = segmentation_scores(torch.from_numpy(cm))
        valid = None if self.ignore_index is None else target != self.ignore_index

        rows = []
        for c in self.classes:
            target_count, pred_count = int(cm[c].sum()), int(cm[:, c].sum())
            row: dict[str, Any] = {
                "case": name,
                "class_index": c,
                "class": self.class_names[c],
                "target_pixels": target_count,
                "pred_pixels": pred_count,
            }
            if target_count == 0:
                row.update(self._empty_pair(pred_count))
            else:
                row.update({metric: scores[metric][c] for metric in OVERLAP_METRICS})
                if self.surface:
                    pred_mask = labels == c if valid is None else (labels == c) & valid
                    distances = surface_distances(pred_mask, target == c, spacing=sampling)
                    row["hd95"] = _hausdorff(distances, 95.0)
                    row["nsd"] = _surface_dice(distances, self.tolerance)
            rows.append(row)
        self._cases.add(name)
        self.cm += cm
        self.rows += rows
        return rows

    def summary(self) -> dict[str, Any]:
        """Dataset-level scores: per-class means over cases and pooled scores.

        Returns:
            A JSON-serialisable dict (NaN where a mean has no value):

            * ``num_cases``, ``classes`` (scored class names), ``empty`` (the policy),
              ``tolerance``, ``ignore_index``, ``include_background``;
            * ``empty_pairs``: (case, class) pairs with the class absent from the target;
              ``empty_pairs_predicted``: those of them with a non-empty prediction;
              ``missed_pairs``: pairs present in the target but not predicted;
            * ``per_class``: for each class name, ``<metric>`` (mean over cases, NaN rows
              left out), ``<metric>_std`` (population std), ``<metric>_n`` (rows averaged)
              and the class's ``empty_pairs``, ``empty_pairs_predicted``, ``missed_pairs``;
            * ``mean``: for each metric, the mean over classes of the per-class means;
            * ``pooled``: for each class name, Dice, IoU, precision and recall of the confusion
              matrix summed over all cases (every pixel pooled); a class absent from the whole
              target set is scored by the ``empty`` policy;
            * ``pooled_mean``: for each of those metrics, the mean over classes.

        Raises:
            ValueError: if no case was added.
        """
        if not self.rows:
            raise ValueError("CaseTable is empty: add cases with update() before summary() or write()")
        pooled_scores = segmentation_scores(torch.from_numpy(self.cm))
        per_class: dict[str, dict[str, Any]] = {}
        pooled: dict[str, dict[str, float]] = {}
        for c in self.classes:
            rows = [row for row in self.rows if row["class_index"] == c]
            stats: dict[str, Any] = {}
            for metric in self.metrics:
                mean, std, count = _nanmean_std([row[metric] for row in rows])
                stats.update({metric: mean, f"{metric}_std": std, f"{metric}_n": count})
            empty = [row for row in rows if row["target_pixels"] == 0]
            stats["empty_pairs"] = len(empty)
            stats["empty_pairs_predicted"] = sum(row["pred_pixels"] > 0 for row in empty)
            stats["missed_pairs"] = sum(row["target_pixels"] > 0 and row["pred_pixels"] == 0 for row in rows)
            per_class[self.class_names[c]] = stats
            if self.cm[c].sum() == 0:
                pooled_class = self._empty_pair(int(self.cm[:, c].sum()))
                pooled[self.class_names[c]] = {metric: pooled_class[metric] for metric in OVERLAP_METRICS}
            else:
                pooled[self.class_names[c]] = {metric: pooled_scores[metric][c] for metric in OVERLAP_METRICS}

        def over_classes(table: dict[str, dict[str, Any]], metrics: Sequence[str]) -> dict[str, float]:
            return {metric: _nanmean_std([stats[metric] for stats in table.values()])[0] for metric in metrics}

        return {
            "num_cases": len(self._cases),
            "classes": [self.class_names[c] for c in self.classes],
            "empty": self.empty,
            "tolerance": self.tolerance,
            "ignore_index": self.ignore_index,
            "include_background": self.include_background,
            "empty_pairs": sum(stats["empty_pairs"] for stats in per_class.values()),
            "empty_pairs_predicted": sum(stats["empty_pairs_predicted"] for stats in per_class.values()),
            "missed_pairs": sum(stats["missed_pairs"] for stats in per_class.values()),
            "per_class": per_class,
            "mean": over_classes(per_class, self.metrics),
            "pooled": pooled,
            "pooled_mean": over_classes(pooled, OVERLAP_METRICS),
        }

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``cases.csv`` (one row per case and class) and ``cases.json`` (rows and summary).

        Each file is written atomically; neither is written if either exists. In the CSV a NaN
        is written ``nan``; in the JSON it is ``null``.

        Args:
            folder: Destination folder, created if missing (e.g. ``evaluations/<name>``).

        Returns:
            The paths of the CSV and the JSON file.

        Raises:
            FileExistsError: ``cases.csv`` or ``cases.json`` already exists (named).
            ValueError: if no case was added.
        """
        folder = Path(folder)
        paths = folder / "cases.csv", folder / "cases.json"
        for path in paths:
            if path.exists():
                raise FileExistsError(f"'{path}' already exists; refusing to overwrite an evaluation")
        summary = self.summary()
        columns = ["case", "class_index", "class", "target_pixels", "pred_pixels", *self.metrics]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        document = {"summary": summary, "rows": self.rows}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths[0], buffer.getvalue())
        atomic_write_text(paths[1], json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")
        log.info("wrote %d rows (%d cases) to %s", len(self.rows), summary["num_cases"], folder)
        return paths

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, cases={len(self._cases)}, empty={self.empty!r}, "
            f"tolerance={self.tolerance}, ignore_index={self.ignore_index}, surface={self.surface})"
        )
