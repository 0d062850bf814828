"""In-memory datasets that yield the batch dictionaries the engine consumes.

A sample is a dict: ``image`` float32 ``(C_in, *spatial)``, ``target`` int64 (a label map
``(*spatial)`` for segmentation, a scalar for classification) and ``index`` (position in the
split, so predictions can be named and traced back). Extra per-sample arrays (for instance the
phantom's majority/minority ``regions``) ride along under their own keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "Splits"]


class ArrayDataset(Dataset):
    """Samples held as numpy arrays (decoded once, sliced without copies).

    Args:
        images: float array ``(N, C_in, *spatial)``.
        target: integer array ``(N, *spatial)`` (segmentation) or ``(N,)`` (classification).
        num_classes: number of target classes (2 for binary segmentation).
        class_names: one name per class.
        names: optional file stem per sample, used to name predictions.
        extras: further per-sample arrays with a leading ``N`` axis.
    """

    def __init__(
        self,
        images: np.ndarray,
        target: np.ndarray,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if images.ndim < 3:
            raise ValueError(f"images must be (N, C_in, *spatial), got shape {tuple(images.shape)}")
        if len(images) != len(target):
            raise ValueError(f"images and target differ in length: {len(images)} vs {len(target)}")
        low, high = (int(target.min()), int(target.max())) if target.size else (0, 0)
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"target has label {low if low < 0 else high} but num_classes is {num_classes} "
                f"(expected values in [0, {num_classes}))"
            )
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.target = np.ascontiguousarray(target, dtype=np.int64)
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names or (f"class{i}" for i in range(num_classes)))
        self.names = list(names) if names is not None else [f"{i:05d}" for i in range(len(images))]
        self.extras = {k: np.ascontiguousarray(v) for k, v in (extras or {}).items()}

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = {
            "image": torch.from_numpy(self.images[i]),
            "target": torch.as_tensor(self.target[i]),
            "index": torch.as_tensor(i),
        }
        for key, value in self.extras.items():
            sample[key] = torch.as_tensor(value[i])
        return sample

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ArrayDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(
            self.images[idx],
            self.target[idx],
            num_classes=self.num_classes,
            class_names=self.class_names,
            names=[self.names[i] for i in idx],
            extras={k: v[idx] for k, v in self.extras.items()},
        )


@dataclass
class Splits:
    """Train / validation / test datasets of one run, and how they were drawn."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset | None
    info: dict = field(default_factory=dict)
