"""Native geometry in the engine: the patch size of a run, its stream of patch batches, and
augmentation in the DataLoader workers.

A run on native-size images trains on random patches (:class:`medbalance.data.patches.PatchDataset`)
and infers with a sliding window of the same size
(:func:`medbalance.engine.sliding_window.sliding_window_inference`). This module decides the
patch size (``patch_size: auto``), turns an epoch into the indices of the patch stream, and
augments each batch where it is collated, so with ``num_workers > 0`` sampling and
augmentation run beside the training step instead of before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

__all__ = ["PATCH_CAP", "resolve_patch_size", "StreamBatches", "Numbered", "AugmentingCollate", "CaseNormalizer"]

#: Largest side ``patch_size: auto`` picks, per spatial dimensionality (CPU-sized: nnU-Net
#: picks larger patches for a GPU's memory).
PATCH_CAP = {2: 128, 3: 64}
# Sides are multiples of this (four poolings of the default U-Net).
_DIVISOR = 16


def resolve_patch_size(setting, shapes: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
    """The patch size a run trains on, from the config's ``patch_size`` and the training shapes.

    Args:
        setting: ``"auto"``, ``None`` (whole images), an int (a cube / square) or one side per axis.
        shapes: spatial shape of every training image.

    Returns:
        ``None`` for whole images, else one side per spatial axis. ``auto`` gives whole images
        when every image has one shape within :data:`PATCH_CAP`, else the median shape rounded
        down to a multiple of 16 and clipped to the cap (at least 16).

    Raises:
        ValueError: a patch of another dimensionality than the images, or a side below 1.

    Example:
        >>> resolve_patch_size("auto", [(584, 565), (584, 565)])
        (128, 128)
        >>> resolve_patch_size("auto", [(96, 96)] * 3) is None
        True
        >>> resolve_patch_size(64, [(100, 80, 90)])
        (64, 64, 64)
    """
    if not shapes:
        raise ValueError("cannot choose a patch size without training images")
    dims = len(shapes[0])
    if setting is None:
        return None
    if setting == "auto":
        cap = PATCH_CAP.get(dims, 64)
        uniform = all(tuple(s) == tuple(shapes[0]) for s in shapes)
        if uniform and max(shapes[0]) <= cap:
            return None
        median = np.median(np.asarray(shapes), axis=0)
        return tuple(int(min(cap, max(_DIVISOR, m // _DIVISOR * _DIVISOR))) for m in median)
    sides = (int(setting),) * dims if isinstance(setting, int) else tuple(int(s) for s in setting)
    if len(sides) != dims:
        raise ValueError(f"patch_size {list(sides)} has {len(sides)} sides but the images have {dims} spatial axes")
    if min(sides) < 1:
        raise ValueError(f"patch_size must be positive, found {list(sides)}")
    return sides


class StreamBatches(Sampler):
    """One epoch of a patch stream: ``steps`` batches of consecutive stream indices.

    Process ``rank`` of ``world`` takes every ``world``-th block of ``batch_size`` indices, so
    the processes train on disjoint patches and each block keeps the sampler's per-batch
    structure (the forced foreground positions). The epoch comes from ``epoch()`` when the
    loader is iterated (the engine's epoch counter), so a resumed run draws the same patches.
    """

    def __init__(
        self,
        epoch_indices: Callable[[int], range],
        steps: int,
        batch_size: int,
        epoch: Callable[[], int],
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.epoch_indices, self.steps, self.batch_size, self.epoch = epoch_indices, steps, batch_size, epoch
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        indices = self.epoch_indices(self.epoch())
        for step in range(self.steps):
            start = (step * self.world + self.rank) * self.batch_size
            yield list(indices[start : start + self.batch_size])


class Numbered(Dataset):
    """A patch stream whose samples also carry their stream index (``"stream"``), which
    seeds their batch's augmentation; ``len`` and ``epoch_indices`` are the stream's.

    A list of indices (a :class:`StreamBatches` batch, with the loader's ``batch_size=None``)
    gives their whole batch at once (:meth:`~medbalance.data.patches.PatchDataset.batch`).
    """

    def __init__(self, stream) -> None:
        self.stream = stream

    def __len__(self) -> int:
        return len(self.stream)

    def epoch_indices(self, epoch: int) -> range:
        return self.stream.epoch_indices(epoch)

    def __getitem__(self, k: int | list[int]) -> dict:
        if isinstance(k, list):
            return {**self.stream.batch(k), "stream": torch.as_tensor(k)}
        return {**self.stream[k], "stream": torch.as_tensor(k)}


class AugmentingCollate:
    """``default_collate`` (unless given a batch already) followed by the run's
    :class:`~medbalance.data.augment.Augment`.

    The generator is seeded by the run's seed and the batch's first stream index, so a batch
    is augmented the same way in any worker, with any number of workers, and after a resume.
    """

    def __init__(self, augment, seed: int) -> None:
        self.augment, self.seed = augment, seed

    def __call__(self, samples: list[dict] | dict) -> dict:
        batch = samples if isinstance(samples, dict) else default_collate(samples)
        if not self.augment.enabled:
            return batch
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(batch["stream"][0]) + 7)
        return self.augment(batch, generator)


class CaseNormalizer:
    """``(case index, patch) -> float32`` for a patch stream: each case's fixed normalisation
    (a per-image z-score uses the whole image's statistics, not the patch's). Picklable, for workers."""

    def __init__(self, data) -> None:
        norm = data.normalization
        self.per_case = [norm.for_image(data.images[i]) if norm is not None else None for i in range(len(data))]

    def __call__(self, case: int, patch: np.ndarray) -> np.ndarray:
        norm = self.per_case[case]
        return norm(patch) if norm is not None else np.asarray(patch, dtype=np.float32)
