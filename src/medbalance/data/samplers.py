"""Batch samplers for imbalanced data: uniform, class-balanced, reversed (BBN), foreground
(nnU-Net) and bilateral (two samplers, one batch each per step).

Each public name is a *factory* ``f(dataset, batch_size, generator) -> batch sampler`` that a
:class:`medbalance.engine.Stage` takes as ``sampler=``; the engine re-seeds ``generator`` per
epoch, so a resumed run draws the same batches. ``foreground(fraction)`` and
``bilateral(first, second)`` build such factories. Every sampler yields ``len(dataset) //
batch_size`` batches per epoch (at least one), like uniform shuffling with ``drop_last``.

Class membership comes from ``dataset.target``: the label of each sample (classification) or
the classes present in each label map (segmentation), so weighted samplers work for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = [
    "BatchSamplerFactory",
    "uniform",
    "class_balanced",
    "reversed_sampler",
    "foreground",
    "bilateral",
    "class_presence",
    "SAMPLERS",
]

BatchSamplerFactory = Callable[[object, int, torch.Generator], Sampler]


def class_presence(dataset) -> np.ndarray:
    """Boolean ``(N, num_classes)``: which classes each sample contains (its label, or its pixels)."""
    target = np.asarray(dataset.target)
    n, num_classes = len(target), int(dataset.num_classes)
    if target.ndim == 1:
        presence = np.zeros((n, num_classes), dtype=bool)
        presence[np.arange(n), target] = True
        return presence
    flat = target.reshape(n, -1)
    # One bincount over (sample, class) codes instead of a loop of np.unique.
    codes = (np.arange(n)[:, None] * num_classes + flat).ravel()
    return np.bincount(codes, minlength=n * num_classes).reshape(n, num_classes) > 0


def _num_batches(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


class _WeightedBatches(Sampler):
    """Batches of indices drawn with replacement in proportion to per-sample weights."""

    def __init__(self, weights: np.ndarray, batch_size: int, generator: torch.Generator) -> None:
        if not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError("sampler weights must be finite with a positive sum")
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.batch_size, self.generator = batch_size, generator
        self.batches = _num_batches(len(weights), batch_size)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        drawn = torch.multinomial(
            self.weights, self.batches * self.batch_size, replacement=True, generator=self.generator
        )
        yield from drawn.view(self.batches, self.batch_size).tolist()


class _ShuffledBatches(Sampler):
    """A fresh permutation per epoch, cut into batches (the last partial batch dropped)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __len__(self) -> int:
        return _num_batches(self.n, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for b in range(len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def uniform(dataset, batch_size: int, generator: torch.Generator) -> Sampler:
    """Instance-balanced: every sample once per epoch in a random order (BBN's conventional branch)."""
    return _ShuffledBatches(len(dataset), batch_size, generator)


def _class_weights_per_sample(dataset, class_prob: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    presence = class_presence(dataset)
    counts = presence.sum(0).astype(np.float64)
    present = counts > 0
    p_class = np.zeros_like(counts)
    p_class[present] = class_prob(counts[present])
    p_class /= p_class.sum()
    # P(sample) = sum over its classes of P(class) * P(sample | class), the latter uniform.
    per_class = np.divide(p_class, counts, out=np.zeros_like(counts), where=present)
    return presence @ per_class


def class_balanced(dataset, batch_size: int, generator: torch.Generator) -> Sampler:
    """A class uniformly among those present, then a sample of it (MiSLAS stage 2, class-aware)."""
    return _WeightedBatches(_class_weights_per_sample(dataset, np.ones_like), batch_size, generator)


def reversed_sampler(dataset, batch_size: int, generator: torch.Generator) -> Sampler:
    """Class ``i`` with probability proportional to ``N_max / N_i``, then a sample of it (BBN).

    Example:
        >>> from medbalance.data.datasets import ArrayDataset
        >>> labels = np.r_[np.zeros(1800), np.ones(200)].astype(int)  # 9 : 1
        >>> ds = ArrayDataset(np.zeros((2000, 1, 1, 1)), labels, num_classes=2)
        >>> batches = reversed_sampler(ds, 1000, torch.Generator().manual_seed(0))
        >>> share = np.mean([labels[i] for b in batches for i in b])
        >>> bool(0.85 < share < 0.95)  # class 1 drawn with probability 9 / (1 + 9)
        True
    """
    return _WeightedBatches(_class_weights_per_sample(dataset, lambda n: n.max() / n), batch_size, generator)


class _ForegroundBatches(Sampler):
    def __init__(self, dataset, batch_size: int, generator: torch.Generator, fraction: float) -> None:
        presence = class_presence(dataset)
        if presence.shape[1] < 2 or np.asarray(dataset.target).ndim == 1:
            raise ValueError("the foreground sampler needs segmentation label maps with a foreground class")
        # Images that contain each foreground class present in the training set.
        self.holders = [torch.as_tensor(np.flatnonzero(col)) for col in presence[:, 1:].T if col.any()]
        self.forced = 0 if not self.holders else max(1 if fraction > 0 else 0, round(fraction * batch_size))
        self.uniform = _ShuffledBatches(len(dataset), batch_size, generator)
        self.generator = generator

    def __len__(self) -> int:
        return len(self.uniform)

    def __iter__(self) -> Iterator[list[int]]:
        g = self.generator
        for batch in self.uniform:
            keep = batch[: len(batch) - self.forced]
            classes = torch.randint(len(self.holders), (self.forced,), generator=g).tolist()
            forced = [int(self.holders[c][torch.randint(len(self.holders[c]), (1,), generator=g)]) for c in classes]
            yield keep + forced


def foreground(fraction: float = 0.33) -> BatchSamplerFactory:
    """nnU-Net's foreground oversampling at image level.

    The last ``round(fraction * batch_size)`` items of each batch (at least one when
    ``fraction > 0``) are images that contain a foreground class, the class drawn uniformly
    among the foreground classes of the training set; the rest are shuffled as usual. On a
    dataset where every image holds every class this changes nothing, by design.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")

    def factory(dataset, batch_size: int, generator: torch.Generator) -> Sampler:
        return _ForegroundBatches(dataset, batch_size, generator, fraction)

    return factory


class _PairedBatches(Sampler):
    def __init__(self, first: Sampler, second: Sampler) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return min(len(self.first), len(self.second))

    def __iter__(self) -> Iterator[list[int]]:
        for a, b in zip(self.first, self.second):
            yield a + b


def bilateral(
    first: BatchSamplerFactory = uniform, second: BatchSamplerFactory = reversed_sampler
) -> BatchSamplerFactory:
    """Batches of ``2 * batch_size``: one batch of ``first`` then one of ``second`` (BBN).

    The model receives both halves in one batch and splits them (``batch[:B]``, ``batch[B:]``).
    """

    def factory(dataset, batch_size: int, generator: torch.Generator) -> Sampler:
        return _PairedBatches(first(dataset, batch_size, generator), second(dataset, batch_size, generator))

    return factory


SAMPLERS: dict[str, BatchSamplerFactory] = {
    "uniform": uniform,
    "class_balanced": class_balanced,
    "reversed": reversed_sampler,
    "foreground": foreground(),
}
