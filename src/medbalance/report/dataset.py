"""What ``medbalance inspect`` measures beyond class counts, and its report with plots.

Segmentation: the foreground fraction of every image (how many images are almost empty)
and the size of every connected object per class (are the rare classes rare because their
objects are small or because they are few). Classification: the effective number of
samples per class (Cui et al., CVPR 2019). :func:`write_dataset_report` turns these and
:class:`~medbalance.data.stats.DatasetStats` into ``report.html`` / ``report.md`` with PNGs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medbalance._atomic import atomic_write_text
from medbalance.data.stats import DatasetStats
from medbalance.losses.weights import effective_numbers
from medbalance.report import plots
from medbalance.report.html import ASSETS, ReportPage

__all__ = [
    "DatasetShape",
    "foreground_fractions",
    "measure",
    "object_sizes",
    "write_dataset_report",
]


def _targets(datasets: Sequence) -> list[np.ndarray | list[np.ndarray]]:
    # a ragged dataset (native sizes) keeps its list of label maps
    return [ds.target if isinstance(ds.target, list) else np.asarray(ds.target) for ds in datasets]


def _ignore(datasets: Sequence) -> int | None:
    values = {getattr(ds, "ignore_index", None) for ds in datasets}
    return values.pop() if len(values) == 1 else None


def foreground_fractions(targets: np.ndarray | Sequence[np.ndarray], *, ignore_index: int | None = None) -> np.ndarray:
    """Per image, the share of its counted pixels that are foreground (label > 0).

    Args:
        targets: integer label maps ``(N, *spatial)``, or a list of maps of different shapes.
        ignore_index: a label that is neither counted nor foreground.

    Returns:
        float64 ``(N,)``; an image with no counted pixel has fraction 0.

    Example:
        >>> m = np.zeros((2, 2, 2), int); m[0, 0] = 1
        >>> foreground_fractions(m).tolist()
        [0.5, 0.0]
    """
    if isinstance(targets, list):
        return np.concatenate([foreground_fractions(t[None], ignore_index=ignore_index) for t in targets] or [[]])
    targets = np.asarray(targets)
    if targets.ndim < 2:
        raise ValueError(f"targets must be label maps (N, *spatial), got shape {targets.shape}")
    flat = targets.reshape(len(targets), -1)
    counted = np.ones_like(flat, dtype=bool) if ignore_index is None else flat != ignore_index
    fg = ((flat > 0) & counted).sum(axis=1)
    return fg / np.maximum(counted.sum(axis=1), 1)


def object_sizes(targets: np.ndarray | Sequence[np.ndarray], num_classes: int) -> list[np.ndarray]:
    """Pixel sizes of the connected objects (4-connectivity) of every class, per image.

    ``targets`` may also be a list of 2D maps of different shapes (native sizes).

    All images of one class go through a single SimpleITK labelling: they are stacked into
    one tall 2D image with a background row between neighbours, so objects never merge
    across images.

    Args:
        targets: integer label maps ``(N, H, W)``.
        num_classes: ``C``; class 0 (background) gets an empty array.

    Returns:
        ``C`` int64 arrays of object sizes in pixels.

    Example:
        >>> m = np.zeros((2, 4, 4), int); m[0, :2, :2] = 1; m[1, 3, 3] = 1; m[1, 0, 0] = 2
        >>> [s.tolist() for s in object_sizes(m, 3)]
        [[], [4, 1], [1]]
    """
    import SimpleITK as sitk

    if isinstance(targets, list):
        parts = [object_sizes(np.asarray(t)[None], num_classes) for t in targets]
        return [np.concatenate(sizes) for sizes in zip(*parts)] if parts else [np.zeros(0, np.int64)] * num_classes
    targets = np.asarray(targets)
    if targets.ndim != 3:
        raise ValueError(f"targets must be 2D label maps (N, H, W), got shape {targets.shape}")
    n, h, w = targets.shape
    sizes = [np.zeros(0, np.int64)]
    for c in range(1, num_classes):
        tall = np.zeros((n, h + 1, w), np.uint8)
        tall[:, :h] = targets == c
        labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(tall.reshape(-1, w))))
        sizes.append(np.bincount(labelled.ravel())[1:].astype(np.int64))
    return sizes


@dataclass
class DatasetShape:
    """The measurements beyond class counts (:func:`measure`).

    Attributes:
        class_names: one name per class.
        effective_numbers: classification: per class ``(1 - beta^n) / (1 - beta)``.
        fractions: segmentation: foreground fraction per image.
        sizes: segmentation: per class, the pixel sizes of its connected objects.
    """

    class_names: tuple[str, ...]
    effective_numbers: np.ndarray | None = None
    fractions: np.ndarray | None = None
    sizes: list[np.ndarray] | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary: ``effective_numbers``, or ``foreground_fraction`` (``min``,
        ``median``, ``mean``, ``max``, ``below_1_percent``) and ``object_sizes`` per foreground
        class (``count``, ``median``, ``min``, ``max`` pixels)."""
        out: dict = {}
        if self.effective_numbers is not None:
            out["effective_numbers"] = self.effective_numbers.tolist()
        if self.fractions is not None:
            f = self.fractions
            out["foreground_fraction"] = {
                "min": float(f.min()),
                "median": float(np.median(f)),
                "mean": float(f.mean()),
                "max": float(f.max()),
                "below_1_percent": int((f < 0.01).sum()),
            }
        if self.sizes is not None:
            out["object_sizes"] = {
                self.class_names[c]: (
                    {"count": len(s), "median": float(np.median(s)), "min": int(s.min()), "max": int(s.max())}
                    if len(s)
                    else {"count": 0}
                )
                for c, s in enumerate(self.sizes)
                if c > 0
            }
        return out


def measure(stats: DatasetStats, datasets: Sequence, *, beta: float) -> DatasetShape:
    """Effective numbers (classification), or foreground fractions and object sizes (2D segmentation).

    Args:
        stats: the class statistics of ``datasets``.
        datasets: the inspected datasets (each with a ``target`` array).
        beta: of the effective numbers.
    """
    if stats.task == "classification":
        return DatasetShape(stats.class_names, effective_numbers=effective_numbers(stats.counts, beta=beta).numpy())
    targets = _targets(datasets)
    ignore = _ignore(datasets)
    fractions = np.concatenate([foreground_fractions(t, ignore_index=ignore) for t in targets])
    dims = {m.ndim for t in targets for m in (t if isinstance(t, list) else t[:1])}
    if dims != {2}:  # volumes: 2D objects are not defined
        return DatasetShape(stats.class_names, fractions=fractions)
    sizes = [np.concatenate(parts) for parts in zip(*(object_sizes(t, stats.num_classes) for t in targets))]
    return DatasetShape(stats.class_names, fractions=fractions, sizes=sizes)


def write_dataset_report(
    out: str | Path,
    stats: DatasetStats,
    shape: DatasetShape,
    weights: Mapping[str, Sequence[float]],
    *,
    source: str,
    split: str,
    beta: float,
    effective_weights: Sequence[float] | None = None,
) -> Path:
    """Write ``out/report.html``, ``out/report.md``, ``out/stats.json`` and the plots in ``out/report/``.

    Args:
        out: the folder (created).
        stats: the class statistics.
        shape: :func:`measure` of the same data.
        weights: scheme name -> class weights.
        source, split: what was inspected, for the title.
        beta: of the effective numbers (classification).
        effective_weights: the effective-number class weights (classification).

    Returns:
        The path of ``report.html``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    assets = out / ASSETS
    names = list(stats.class_names)
    classification = stats.task == "classification"
    unit = "samples" if classification else "pixels"
    page = ReportPage(f"medbalance dataset report: {source} ({split})")
    facts = [
        f"task: {stats.task}",
        f"images: {stats.num_images}",
        f"classes: {stats.num_classes}",
        f"imbalance ratio (largest / smallest present class): {stats.imbalance_ratio:.1f}",
    ]
    if stats.empty_masks is not None:
        facts.append(f"images whose mask has no foreground: {stats.empty_masks} of {stats.num_images}")
    if stats.absent_classes:
        facts.append("absent classes: " + ", ".join(names[i] for i in stats.absent_classes))
    page.items(facts)
    page.heading("Class counts")
    rows = [[n, stats.counts[i], 100 * stats.fractions[i]] for i, n in enumerate(names)]
    header = ["class", unit, "percent"]
    if classification:
        rows = [r + [float(shape.effective_numbers[i])] for i, r in enumerate(rows)]
        header.append(f"effective number (beta {beta:g})")
    page.table(header, rows)
    page.figure(plots.plot_class_counts(stats.counts, names, assets / "class_counts.png", unit=unit), "class counts")
    summary = shape.to_dict()
    if shape.fractions is not None:
        fg = summary["foreground_fraction"]
        page.heading("Foreground per image")
        page.para(
            f"Median foreground fraction {fg['median']:.4f} (min {fg['min']:.4f}, max {fg['max']:.4f}); "
            f"{fg['below_1_percent']} of {stats.num_images} images have less than 1 % foreground."
        )
        path = plots.plot_histogram(
            shape.fractions,
            assets / "foreground_fraction.png",
            title="foreground fraction per image",
            xlabel="foreground pixels / image pixels",
        )
        page.figure(path, "histogram of the per-image foreground fraction")
    if shape.sizes is not None:
        page.heading("Object sizes")
        sizes = summary["object_sizes"]
        page.table(
            ["class", "objects", "median px", "min px", "max px"],
            [[n, s["count"], s.get("median", "-"), s.get("min", "-"), s.get("max", "-")] for n, s in sizes.items()],
        )
        flat = np.concatenate(shape.sizes[1:]) if len(shape.sizes) > 1 else np.zeros(0)
        path = plots.plot_histogram(
            flat,
            assets / "object_sizes.png",
            title="connected object sizes (all foreground classes)",
            xlabel="pixels (log scale)",
            log_x=True,
        )
        page.figure(path, "histogram of object sizes")
    page.heading("Class weights")
    all_weights = dict(weights)
    if effective_weights is not None:
        all_weights[f"effective_number (beta {beta:g})"] = list(effective_weights)
    page.table(["class", *all_weights], [[n, *(w[i] for w in all_weights.values())] for i, n in enumerate(names)])
    page.figure(plots.plot_weights(all_weights, names, assets / "weights.png"), "the class weights of every scheme")
    record = {"source": source, "split": split, **stats.to_dict(), **summary, "weights": all_weights}
    atomic_write_text(out / "stats.json", json.dumps(record, indent=1))
    return page.write(out)
