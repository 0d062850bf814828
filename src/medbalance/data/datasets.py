"""In-memory datasets that yield the batch dictionaries the engine consumes.

A sample is a dict: ``image`` float32 ``(C_in, *spatial)``, ``target`` int64 (a label map
``(*spatial)`` for segmentation, a scalar for classification) and ``index`` (position in the
split, so predictions can be named and traced back). Extra per-sample arrays (for instance the
phantom's majority/minority ``regions``) ride along under their own keys.

Images keep their own geometry: a dataset holds either one stacked array (every sample the same
shape: phantoms, resized data, classification) or a list of arrays of different shapes (real
images at native resolution). Stored images may be integer (``uint8``, ``int16``: the decoded
files as they are, a quarter of float32's memory); a :class:`~medbalance.data.normalization.Normalization`
turns them into the network's float32 input when a sample is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "Splits", "as_dataset"]


def _as_arrays(arrays, dtype=None) -> np.ndarray | list[np.ndarray]:
    """One stacked array, or a list when the arrays differ in shape (ragged)."""
    if isinstance(arrays, np.ndarray):
        return np.ascontiguousarray(arrays, dtype=dtype) if dtype is not None else arrays
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return arrays


def _integer(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.integer)


class ArrayDataset(Dataset):
    """Samples held as numpy arrays (decoded once, sliced without copies).

    Args:
        images: ``(N, C_in, *spatial)`` array, or a sequence of ``(C_in, *spatial_i)`` arrays of
            different shapes. Float images are used as they are; integer images (raw pixel
            values) need ``normalization``.
        target: integer array ``(N, *spatial)`` or a sequence of ``(*spatial_i)`` label maps
            (segmentation), or ``(N,)`` labels (classification).
        num_classes: number of target classes (2 for binary segmentation).
        class_names: one name per class.
        names: optional file stem per sample, used to name predictions.
        extras: further per-sample arrays with a leading ``N`` axis (or sequences, like ``target``).
        ignore_index: target value of pixels that are neither trained on nor scored (e.g.
            outside DRIVE's field of view); it may lie outside ``[0, num_classes)``.
        spacing: physical size of a pixel / voxel per sample, in array axis order
            (``(dy, dx)`` or ``(dz, dy, dx)``); ``None``: 1 per axis.
        normalization: maps a stored image to float32 network input (per-dataset statistics).
        scorers: extra scores of this dataset's evaluation passes: factories of scorers
            (:mod:`medbalance.metrics.evaluation`, e.g. the intra-class phantom's
            :class:`~medbalance.metrics.evaluation.RegionRecall`); kept by subsets and copies.

    Example:
        >>> ds = ArrayDataset([np.zeros((1, 4, 6), np.uint8), np.ones((1, 5, 3), np.uint8)],
        ...                   [np.zeros((4, 6), np.uint8), np.ones((5, 3), np.uint8)], num_classes=2)
        >>> ds.ragged, ds.shape(1), ds[1]["image"].dtype
        (True, (5, 3), torch.float32)
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        target: np.ndarray | Sequence[np.ndarray],
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        extras: Mapping[str, np.ndarray | Sequence[np.ndarray]] | None = None,
        ignore_index: int | None = None,
        spacing: Sequence[Sequence[float]] | None = None,
        normalization=None,
        scorers: Sequence[Callable[[], object]] = (),
    ) -> None:
        stacked = isinstance(images, np.ndarray)
        float_images = stacked and not np.issubdtype(images.dtype, np.integer) and normalization is None
        self.images = _as_arrays(images, np.float32 if float_images else None)
        self.target = _as_arrays(target, None)
        if isinstance(self.target, np.ndarray) and (self.target.ndim == 1 or not _integer(self.target)):
            self.target = np.ascontiguousarray(self.target, dtype=np.int64)
        elif isinstance(self.target, list) and not all(_integer(t) for t in self.target):
            self.target = [np.asarray(t, dtype=np.int64) for t in self.target]
        if len(self.images) and self.images[0].ndim < 2:
            raise ValueError(f"images must be (N, C_in, *spatial), got a sample of shape {self.images[0].shape}")
        if len(self.images) != len(self.target):
            raise ValueError(f"images and target differ in length: {len(self.images)} vs {len(self.target)}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._check_labels()
        self.class_names = tuple(class_names or (f"class{i}" for i in range(num_classes)))
        self.names = list(names) if names is not None else [f"{i:05d}" for i in range(len(self.images))]
        self.extras = {k: _as_arrays(v) for k, v in (extras or {}).items()}
        self.spacing = [tuple(float(s) for s in sp) for sp in spacing] if spacing is not None else None
        self.normalization = normalization
        self.scorers = tuple(scorers)

    def _check_labels(self) -> None:
        low, high = None, None
        for t in self.target if self.ragged else [self.target]:
            t = np.asarray(t)
            if t.size == 0:
                continue
            if self.ignore_index is not None:
                t = t[t != self.ignore_index]
                if t.size == 0:
                    continue
            lo, hi = int(t.min()), int(t.max())
            low, high = lo if low is None else min(low, lo), hi if high is None else max(high, hi)
        if low is not None and (low < 0 or high >= self.num_classes):
            raise ValueError(
                f"target has label {low if low < 0 else high} but num_classes is {self.num_classes} "
                f"(expected values in [0, {self.num_classes}))"
            )

    @property
    def ragged(self) -> bool:
        """Whether the samples differ in shape (held as a list, batched one at a time)."""
        return isinstance(self.images, list)

    @property
    def in_channels(self) -> int:
        return int(self.images[0].shape[0]) if len(self.images) else 0

    @property
    def spatial_dims(self) -> int:
        return int(self.images[0].ndim - 1) if len(self.images) else 2

    def shape(self, i: int) -> tuple[int, ...]:
        """Spatial shape of sample ``i``."""
        return tuple(self.images[i].shape[1:])

    def spacing_of(self, i: int) -> tuple[float, ...]:
        """Pixel / voxel spacing of sample ``i`` in array axis order (1 per axis when unknown)."""
        return self.spacing[i] if self.spacing is not None else (1.0,) * (self.images[i].ndim - 1)

    def image(self, i: int) -> np.ndarray:
        """Sample ``i``'s image as float32 network input (normalised)."""
        image = self.images[i]
        if self.normalization is not None:
            return self.normalization(image)
        return image if image.dtype == np.float32 else image.astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = {
            "image": torch.from_numpy(self.image(i)),
            "target": torch.as_tensor(np.asarray(self.target[i]), dtype=torch.int64),
            "index": torch.as_tensor(i),
        }
        if self.spacing is not None:  # inference resamples by it to a run's target spacing
            sample["spacing"] = torch.as_tensor(self.spacing[i], dtype=torch.float32)  # MPS has no float64
        for key, value in self.extras.items():
            sample[key] = torch.as_tensor(np.asarray(value[i]))
        return sample

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ArrayDataset":
        idx = np.asarray(indices, dtype=np.int64)

        def take(arrays):
            return arrays[idx] if isinstance(arrays, np.ndarray) else [arrays[i] for i in idx]

        return ArrayDataset(
            take(self.images),
            take(self.target),
            num_classes=self.num_classes,
            class_names=self.class_names,
            names=[self.names[i] for i in idx],
            extras={k: take(v) for k, v in self.extras.items()},
            ignore_index=self.ignore_index,
            spacing=[self.spacing[i] for i in idx] if self.spacing is not None else None,
            normalization=self.normalization,
            scorers=self.scorers,
        )

    def with_extras(self, **extras: np.ndarray | Sequence[np.ndarray]) -> "ArrayDataset":
        """The same samples with further per-sample arrays (e.g. dual-path's weight maps)."""
        out = self.subset(np.arange(len(self)))
        out.extras.update({k: _as_arrays(v) for k, v in extras.items()})
        return out

    def with_normalization(self, normalization) -> "ArrayDataset":
        """The same samples read through ``normalization``."""
        out = self.subset(np.arange(len(self)))
        out.normalization = normalization
        return out


def as_dataset(data, *, num_classes: int | None = None, class_names: Sequence[str] | None = None) -> ArrayDataset:
    """Any map-style dataset of samples as an :class:`ArrayDataset` (read once).

    A sample is an ``(image, target)`` tuple, a MONAI-style dict ``{"image", "label"}`` or a
    dict ``{"image", "target"}``. ``image``: array or tensor ``(C_in, *spatial)``, stored
    values (e.g. ``uint8``) or floats already normalised. ``target``: a label map
    ``(*spatial)`` or ``(1, *spatial)`` (MONAI's channel-first label) for segmentation, or an
    integer class (classification; ``uint8`` images are then scaled to ``[0, 1]``).

    Args:
        data: an :class:`ArrayDataset` (returned as it is) or a sequence of samples.
        num_classes: classes (default: the largest label + 1, at least 2).
        class_names: one name per class.

    Example:
        >>> pairs = [(np.zeros((1, 4, 4), np.float32), np.eye(4, dtype=np.uint8)) for _ in range(3)]
        >>> ds = as_dataset(pairs)
        >>> len(ds), ds.num_classes, ds[0]["target"].shape
        (3, 2, torch.Size([4, 4]))
        >>> as_dataset([{"image": np.ones((1, 3, 3)), "label": np.ones((1, 3, 3))}]).shape(0)
        (3, 3)
    """
    if isinstance(data, ArrayDataset):
        return data
    images, targets = [], []
    for i in range(len(data)):
        sample = data[i]
        if isinstance(sample, Mapping):
            key = "label" if "label" in sample else "target"
            if "image" not in sample or key not in sample:
                raise ValueError(f"sample {i} is a dict without 'image' and 'label' (or 'target'): {sorted(sample)}")
            image, target = sample["image"], sample[key]
        elif isinstance(sample, (tuple, list)) and len(sample) == 2:
            image, target = sample
        else:
            raise ValueError(f"sample {i} is neither an (image, target) pair nor a dict with 'image' and 'label'")
        image = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
        target = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
        if target.ndim == image.ndim and target.shape[0] == 1:  # MONAI: (1, *spatial)
            target = target[0]
        if target.ndim and target.shape != image.shape[1:]:
            raise ValueError(
                f"sample {i}: image {image.shape} is (C_in, *spatial) but the label map is {target.shape}, "
                f"expected {image.shape[1:]}"
            )
        if not target.ndim and image.ndim < 2:
            raise ValueError(f"sample {i}: image of shape {image.shape}, expected (C_in, *spatial)")
        images.append(image if np.issubdtype(image.dtype, np.integer) else image.astype(np.float32))
        targets.append(target.astype(np.int64))
    if not images:
        raise ValueError("the dataset is empty")
    if not targets[0].ndim:  # classification: float images (no per-dataset normalisation)
        targets = np.asarray(targets, dtype=np.int64)
        images = [im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im.astype(np.float32) for im in images]
    highest = max(int(np.max(t)) for t in targets) if len(targets) else 0
    num_classes = num_classes or max(2, highest + 1)
    same = len({im.shape for im in images}) == 1 and len({im.dtype for im in images}) == 1
    return ArrayDataset(
        np.stack(images) if same and not np.issubdtype(images[0].dtype, np.integer) else images,
        targets,
        num_classes=num_classes,
        class_names=class_names,
    )


@dataclass
class Splits:
    """Train / validation / test datasets of one run, and how they were drawn."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset | None
    info: dict = field(default_factory=dict)
