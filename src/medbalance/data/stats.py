"""Class statistics of label data: how imbalanced is a dataset?

Counts come from one pass of ``np.bincount`` over the targets, a chunk of images at a time,
so memory stays at one chunk whatever the dataset's size. Accepted sources:

- a label tensor or array of any shape (a mask, a stack of masks, a vector of class labels);
- a sample dict, whose ``"target"`` is used (the samples of :mod:`medbalance.data.datasets`);
- a dataset: an :class:`~medbalance.data.datasets.ArrayDataset` is read straight from its
  target array; any other object with ``__len__`` / ``__getitem__`` returning sample dicts or
  label arrays is read item by item;
- any other iterable of the above (a list of masks, a generator of samples).

Segmentation counts pixels (voxels) per class; classification targets are scalars, so the
counts are numbers of samples per class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TASKS",
    "DatasetStats",
    "Task",
    "class_counts",
    "class_fractions",
    "dataset_stats",
]

log = logging.getLogger(__name__)

Task = Literal["segmentation", "classification"]
TASKS: tuple[str, ...] = get_args(Task)
LabelSource = Union[Tensor, np.ndarray, Mapping[str, Any], Iterable[Any]]

# Images per bincount call on an in-memory target array: large enough to amortise the call,
# small enough that the temporary masks stay a few MB.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class DatasetStats:
    """Class balance of one dataset (or split), as computed by :func:`dataset_stats`.

    Attributes:
        task: ``"segmentation"`` or ``"classification"``.
        num_images: number of samples.
        counts: per class, the number of pixels (segmentation) or samples (classification).
        class_names: one name per class.
        empty_masks: segmentation: how many images have no foreground pixel (labels other
            than 0 and ``ignore_index``); ``None`` for classification.

    Two stats of the same task and classes add up (``train + val``) to the stats of the union.
    """

    task: str
    num_images: int
    counts: tuple[int, ...]
    class_names: tuple[str, ...]
    empty_masks: int | None

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def fractions(self) -> tuple[float, ...]:
        """Per-class share of the counted pixels (or samples); sums to 1."""
        total = sum(self.counts)
        return tuple(c / total for c in self.counts)

    @property
    def absent_classes(self) -> tuple[int, ...]:
        """Indices of the classes with a zero count."""
        return tuple(i for i, c in enumerate(self.counts) if c == 0)

    @property
    def imbalance_ratio(self) -> float:
        """Largest over smallest count among the present classes (1.0 with one present class)."""
        present = [c for c in self.counts if c > 0]
        return max(present) / min(present)

    def __add__(self, other: DatasetStats) -> DatasetStats:
        if not isinstance(other, DatasetStats):
            return NotImplemented
        if (other.task, other.num_classes) != (self.task, self.num_classes):
            raise ValueError(
                f"cannot add stats of a {other.task} dataset with {other.num_classes} classes to a "
                f"{self.task} dataset with {self.num_classes} classes"
            )
        empty = None if self.empty_masks is None else self.empty_masks + (other.empty_masks or 0)
        return DatasetStats(
            task=self.task,
            num_images=self.num_images + other.num_images,
            counts=tuple(a + b for a, b in zip(self.counts, other.counts)),
            class_names=self.class_names,
            empty_masks=empty,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields and the derived quantities."""
        return {
            "task": self.task,
            "num_images": self.num_images,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "counts": list(self.counts),
            "fractions": list(self.fractions),
            "absent_classes": list(self.absent_classes),
            "imbalance_ratio": self.imbalance_ratio,
            "empty_masks": self.empty_masks,
        }


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    return int(num_classes)


def _as_labels(target: Any) -> np.ndarray:
    """A label tensor/array as an integer numpy array (no copy when it already is one)."""
    if isinstance(target, Tensor):
        target = target.detach().cpu().numpy()
    elif not isinstance(target, np.ndarray):
        target = np.asarray(target)
    if target.dtype == np.bool_:
        return target.view(np.uint8)
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"target must hold integer class labels, got dtype {target.dtype}")
    return target


def _chunks(labels: np.ndarray) -> Iterator[np.ndarray]:
    """Split a stack of samples along its first axis into pieces of about ``_CHUNK_ELEMENTS``."""
    if labels.ndim == 0:
        yield labels[None]
        return
    step = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(labels.shape[1:]))))
    for start in range(0, len(labels), step):
        yield labels[start : start + step]


def _samples(source: LabelSource) -> Iterator[np.ndarray]:
    """Yield label arrays with a leading sample axis (one or more samples each)."""
    target = getattr(source, "target", None)
    if isinstance(target, np.ndarray) and hasattr(source, "__len__") and len(target) == len(source):
        # ArrayDataset: slice the stacked targets instead of building a dict per sample.
        yield from _chunks(_as_labels(target))
        return
    if isinstance(target, list) and hasattr(source, "__len__") and len(target) == len(source):
        # a ragged ArrayDataset (native sizes): one label map at a time, no image read
        for labels in target:
            yield _as_labels(labels)[None]
        return
    if isinstance(source, (Tensor, np.ndarray)):
        yield from _chunks(_as_labels(source))
        return
    if isinstance(source, Mapping):
        if "target" not in source:
            raise ValueError(f"a sample dict must have a 'target' key, got keys {sorted(source)}")
        yield _as_labels(source["target"])[None]
        return
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        items: Iterable[Any] = (source[i] for i in range(len(source)))
    elif isinstance(source, Iterable):
        items = source
    else:
        raise TypeError(
            "source must be a label tensor/array, a sample dict, a dataset or an iterable of them, "
            f"got {type(source).__name__}"
        )
    for item in items:
        if isinstance(item, Mapping):
            yield from _samples(item)
        else:
            yield _as_labels(item)[None]


class _Counter:
    """Accumulates class counts (and, per image, whether it has foreground) over label chunks."""

    def __init__(self, num_classes: int, ignore_index: int | None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.num_images = 0
        self.empty_masks = 0

    def add(self, labels: np.ndarray, *, per_image: bool) -> None:
        valid = None if self.ignore_index is None else labels != self.ignore_index
        kept = labels if valid is None else labels[valid]
        if kept.size:
            low, high = int(kept.min()), int(kept.max())
            bad = low if low < 0 else high if high >= self.num_classes else None
            if bad is not None:
                ignore = "" if self.ignore_index is None else f" or ignore_index={self.ignore_index}"
                raise ValueError(
                    f"target has label {bad} but num_classes is {self.num_classes} "
                    f"(expected values in [0, {self.num_classes}){ignore})"
                )
            self.counts += np.bincount(kept.ravel().astype(np.intp, copy=False), minlength=self.num_classes)
        if per_image:
            self.num_images += len(labels)
            foreground = labels != 0 if valid is None else (labels != 0) & valid
            self.empty_masks += int((~foreground.reshape(len(labels), -1).any(axis=1)).sum())


def class_counts(source: LabelSource, num_classes: int, *, ignore_index: int | None = None) -> Tensor:
    """Count the elements of each class in label data.

    Args:
        source: label tensors/arrays, sample dicts, a dataset or an iterable of them (see the
            module docstring); every element is one pixel, or one sample for scalar targets.
        num_classes: ``C``; labels must lie in ``[0, C)``.
        ignore_index: label value that is not counted.

    Returns:
        ``(C,)`` int64 counts; all zero when nothing was counted.

    Raises:
        ValueError: for a label outside ``[0, C)`` or a sample dict without ``"target"``.
        TypeError: for non-integer targets.

    Example:
        >>> class_counts(torch.tensor([[0, 0, 1], [2, 0, 255]]), 3, ignore_index=255)
        tensor([3, 1, 1])
    """
    counter = _Counter(_check_num_classes(num_classes), ignore_index)
    for labels in _samples(source):
        counter.add(labels, per_image=False)
    return torch.from_numpy(counter.counts)


def class_fractions(source: LabelSource, num_classes: int, *, ignore_index: int | None = None) -> Tensor:
    """Share of each class among the counted elements: :func:`class_counts` normalised to sum 1.

    Returns:
        ``(C,)`` float64 fractions.

    Raises:
        ValueError: as :func:`class_counts`, and when no element is counted at all.

    Example:
        >>> class_fractions([torch.tensor([0, 0, 0]), torch.tensor([1])], 2)
        tensor([0.7500, 0.2500], dtype=torch.float64)
    """
    counts = class_counts(source, num_classes, ignore_index=ignore_index)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("source holds no labelled element (every target is empty or ignore_index)")
    return counts.double() / total


def dataset_stats(
    dataset: LabelSource,
    num_classes: int,
    task: Task | str,
    *,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
) -> DatasetStats:
    """Summarise the class balance of a dataset in one pass over its targets.

    Each item of ``dataset`` is one sample: a sample dict or a label map ``(*spatial)`` for
    segmentation, a scalar label for classification. A tensor/array is a stack of samples
    ``(N, *spatial)`` or ``(N,)``.

    Args:
        dataset: the samples (see the module docstring for the accepted forms).
        num_classes: ``C``; labels must lie in ``[0, C)``. Segmentation: class 0 = background.
        task: ``"segmentation"`` or ``"classification"``.
        class_names: one name per class; defaults to ``dataset.class_names`` when present,
            else ``class0, class1, ...``.
        ignore_index: label value that is not counted (nor taken as foreground).

    Returns:
        The :class:`DatasetStats`.

    Raises:
        ValueError: for a bad ``task``, a label outside ``[0, C)``, a target of the wrong rank
            for the task, a wrong number of class names, or no labelled element at all.

    Example:
        >>> masks = torch.zeros(4, 8, 8, dtype=torch.long)
        >>> masks[0, :2, :2] = 1
        >>> stats = dataset_stats(masks, 2, "segmentation")
        >>> stats.counts, stats.empty_masks, stats.imbalance_ratio
        ((252, 4), 3, 63.0)
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(repr(t) for t in TASKS)}, got {task!r}")
    num_classes = _check_num_classes(num_classes)
    names = tuple(class_names or getattr(dataset, "class_names", None) or (f"class{i}" for i in range(num_classes)))
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries but num_classes is {num_classes}")
    segmentation = task == "segmentation"
    counter = _Counter(num_classes, ignore_index)
    for labels in _samples(dataset):
        if segmentation and labels.ndim < 2:
            raise ValueError(
                f"segmentation targets must be label maps (*spatial) per sample, got a batch of shape "
                f"{labels.shape}; use task='classification' for one label per sample"
            )
        if not segmentation and labels.ndim != 1:
            raise ValueError(
                f"classification targets must be one scalar label per sample, got a batch of shape {labels.shape}"
            )
        counter.add(labels, per_image=True)
    if not counter.counts.any():
        raise ValueError(f"dataset holds no labelled element ({counter.num_images} samples, all empty or ignored)")
    stats = DatasetStats(
        task=task,
        num_images=counter.num_images,
        counts=tuple(int(c) for c in counter.counts),
        class_names=names,
        empty_masks=counter.empty_masks if segmentation else None,
    )
    log.debug("dataset stats: %s", stats)
    return stats
