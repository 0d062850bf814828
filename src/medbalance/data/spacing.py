"""Resampling to a target spacing (``data.spacing``), as nnU-Net trains and predicts.

A run with ``data.spacing: median`` (or ``[sy, sx]`` / ``[sz, sy, sx]``) resamples its
*training* cases once, when the splits are built, to one spacing; validation, ``evaluate`` and
``predict`` resample each native image to that spacing, infer there, and resample the logits
back to the image's own shape before the argmax (:func:`medbalance.engine.engine.infer_logits`),
so scores and masks are always at native geometry against the original masks.

Spacings are in array axis order (``(dy, dx)`` / ``(dz, dy, dx)``); data without a spacing
(PNG, JPEG) has 1 per axis, so ``spacing: [4, 4]`` on it trains at a quarter of the pixels
per side. Interpolators (``scipy.ndimage.zoom`` with ``grid_mode=True``: pixel edges aligned,
as ``torch`` ``align_corners=False``; edges extended):

- images: cubic spline (order 3, nnU-Net's in-plane order) in every axis, rounded and clipped
  back to their stored integer dtype so the fitted normalisation applies unchanged;
- label maps: nearest neighbour (exact at integer factors; nnU-Net uses one-hot linear);
- logits back to the native shape: linear (nnU-Net's order 1), with ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "ANISOTROPY",
    "median_spacing",
    "resampled_shape",
    "resample_image",
    "resample_labels",
    "resample_logits",
    "resample_dataset",
]

#: nnU-Net's anisotropy threshold: an axis whose median spacing is this many times the largest
#: other one (and whose median size is this many times smaller) is "out of plane".
ANISOTROPY = 3.0


def median_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """nnU-Net's target spacing of a training set: the median spacing per axis.

    When the largest median spacing exceeds :data:`ANISOTROPY` times every other axis's *and*
    that axis's median size times :data:`ANISOTROPY` is below every other axis's median size
    (thick slices, few of them), that axis takes the 10th percentile of its spacings instead,
    but never less than the largest other axis's median spacing (then that plus 1e-5).

    Args:
        spacings: one spacing per training case, in array axis order.
        shapes: the spatial shape of each case, same order.

    Raises:
        ValueError: no cases, or spacings / shapes of different lengths.

    Example:
        >>> median_spacing([(1.0, 0.5), (2.0, 0.5), (3.0, 1.0)], [(10, 10)] * 3)
        (2.0, 0.5)
        >>> median_spacing([(10.0, 1.0, 1.0), (4.0, 1.0, 1.0), (10.0, 1.0, 1.0)], [(10, 200, 200)] * 3)
        (5.2, 1.0, 1.0)
    """
    if not len(spacings) or len(spacings) != len(shapes):
        raise ValueError(f"expected one spacing per case, found {len(spacings)} spacings and {len(shapes)} shapes")
    spacing = np.asarray(spacings, dtype=np.float64)
    target = np.percentile(spacing, 50, axis=0)
    sizes = np.percentile(np.asarray(shapes, dtype=np.float64), 50, axis=0)
    if len(target) > 1:
        worst = int(np.argmax(target))
        others = [i for i in range(len(target)) if i != worst]
        largest_other = max(target[i] for i in others)
        thick = target[worst] > ANISOTROPY * largest_other
        few = sizes[worst] * ANISOTROPY < min(sizes[i] for i in others)
        if thick and few:
            low = float(np.percentile(spacing[:, worst], 10))
            target[worst] = low if low >= largest_other else largest_other + 1e-5
    return tuple(round(float(s), 10) for s in target)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The shape of an image of ``shape`` and ``spacing`` resampled to ``target`` (at least 1 per axis).

    Example:
        >>> resampled_shape((540, 800), (1.0, 1.0), (4.0, 4.0))
        (135, 200)
    """
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _zoom(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    factors = [new / old for new, old in zip(shape, array.shape)]
    # zoom's output shape is round(old * new / old) = new; grid_mode aligns pixel edges, not centres
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def resample_image(image: np.ndarray, shape: Sequence[int], *, order: int = 3) -> np.ndarray:
    """``image`` ``(C, *spatial)`` resampled to the spatial ``shape`` (cubic spline by default).

    Integer images are rounded and clipped back to their dtype; float images stay float32.

    Example:
        >>> resample_image(np.full((1, 4, 6), 7, np.uint8), (2, 3)).tolist()
        [[[7, 7, 7], [7, 7, 7]]]
    """
    shape = tuple(int(s) for s in shape)
    if tuple(image.shape[1:]) == shape:
        return image
    channels = [_zoom(np.asarray(c, dtype=np.float32), shape, order) for c in image]
    out = np.stack(channels)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out.astype(np.float32, copy=False)


def resample_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A label map ``(*spatial)`` resampled to ``shape`` by nearest neighbour (dtype kept).

    Example:
        >>> resample_labels(np.array([[0, 1], [2, 3]], np.uint8), (4, 4))[::2, ::2].tolist()
        [[0, 1], [2, 3]]
    """
    shape = tuple(int(s) for s in shape)
    if tuple(labels.shape) == shape:
        return labels
    return _zoom(np.asarray(labels), shape, 0)


def resample_logits(logits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Logits ``(N, C, *spatial)`` resampled linearly to the spatial ``shape`` (on their device)."""
    shape = tuple(int(s) for s in shape)
    if tuple(logits.shape[2:]) == shape:
        return logits
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(logits.float(), size=shape, mode=mode, align_corners=False).to(logits.dtype)


def resample_dataset(data, target: Sequence[float]):
    """An :class:`~medbalance.data.datasets.ArrayDataset` with every case resampled to ``target``.

    Images by :func:`resample_image`, label maps and per-pixel extras by :func:`resample_labels`;
    the spacing becomes ``target``. Names, classes, ``ignore_index`` and normalisation are kept.
    """
    from medbalance.data.datasets import ArrayDataset

    target = tuple(float(t) for t in target)
    shapes = [resampled_shape(data.shape(i), data.spacing_of(i), target) for i in range(len(data))]
    images = [resample_image(np.asarray(data.images[i]), s) for i, s in enumerate(shapes)]
    labels = [resample_labels(np.asarray(data.target[i]), s) for i, s in enumerate(shapes)]
    extras = {
        key: [
            resample_labels(np.asarray(v[i]), s) if np.ndim(v[i]) == len(s) else np.asarray(v[i])
            for i, s in enumerate(shapes)
        ]
        for key, v in data.extras.items()
    }
    return ArrayDataset(
        images,
        labels,
        num_classes=data.num_classes,
        class_names=data.class_names,
        names=data.names,
        extras=extras,
        ignore_index=data.ignore_index,
        spacing=[target] * len(data),
        normalization=data.normalization,
        scorers=data.scorers,
    )
