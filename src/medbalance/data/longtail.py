"""Long-tailed subsets of classification datasets by imbalance ratio, and balanced evaluation sets.

Seed 001 (SPEC section 6) trains on long-tailed subsets of real datasets at imbalance ratios
``IR = N_max / N_min`` of 10, 50 and 100 and tests on balanced sets. Class ``i`` in order of
original size keeps ``N_i = N_max * IR^(-i / (C - 1))`` samples (never more than it has), with
``N_max`` the size of the largest class. The draw is seeded and nested: with one seed, the
IR-100 subset lies inside the IR-50 subset, which lies inside the IR-10 subset. The chosen
indices go into ``Splits.info["longtail"]`` so a run folder records exactly what it trained on
(SPEC section 10 pitfall).
"""

from __future__ import annotations

import logging

import numpy as np

from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.phantoms import longtail_counts

__all__ = ["balanced_indices", "longtail_indices", "longtail_splits", "longtail_targets"]

log = logging.getLogger(__name__)


def _labels(target: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, int]:
    target = np.asarray(target)
    if target.ndim != 1 or not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"target must be a 1-D array of integer class labels, got {target.dtype} {target.shape}")
    if target.size and target.min() < 0:
        raise ValueError(f"target has label {int(target.min())} (expected values >= 0)")
    found = int(target.max()) + 1 if target.size else 0
    if num_classes is None:
        num_classes = found
    elif found > num_classes:
        raise ValueError(
            f"target has label {found - 1} but num_classes is {num_classes} (expected values in [0, {num_classes}))"
        )
    return target, num_classes


def _take_per_class(target: np.ndarray, keep: np.ndarray, seed: int) -> np.ndarray:
    """Sorted indices: the first ``keep[c]`` samples of class ``c`` in one seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(target))
    rank = np.empty(len(target), np.int64)  # position of each sample among its class, in `order`
    for c in range(len(keep)):
        members = order[target[order] == c]
        rank[members] = np.arange(len(members))
    return np.flatnonzero(rank < keep[target]) if len(target) else np.zeros(0, np.int64)


def longtail_targets(counts: np.ndarray | list[int], imbalance_ratio: float, *, n_max: int | None = None) -> list[int]:
    """Per-class sizes of a long-tailed subset of classes with ``counts`` samples.

    Classes are ranked by size (largest first, ties by label); rank ``i`` of the ``K``
    non-empty classes gets ``min(counts, N_max * IR^(-i / (K - 1)))`` (rounded half up, at
    least 1), where ``N_max`` is the largest count, or ``n_max`` when smaller (a cheaper
    subset with the same ratio). Empty classes stay empty.

    Example:
        >>> longtail_targets([50, 400, 120], 100)
        [4, 400, 40]
        >>> longtail_targets([50, 400, 120], 10, n_max=100)
        [10, 100, 32]
    """
    if n_max is not None and (isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1):
        raise ValueError(f"n_max must be a positive int or None, got {n_max!r}")
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts > 0)
    out = np.zeros_like(counts)
    if len(present) == 0:
        return out.tolist()
    ranked = present[np.argsort(-counts[present], kind="stable")]
    if len(ranked) == 1:
        out[ranked] = counts[ranked] if n_max is None else min(int(counts[ranked[0]]), int(n_max))
        return out.tolist()
    head = int(counts[ranked[0]]) if n_max is None else min(int(counts[ranked[0]]), int(n_max))
    target = longtail_counts(len(ranked), head, float(imbalance_ratio))
    out[ranked] = np.minimum(counts[ranked], target)
    return out.tolist()


def longtail_indices(
    target: np.ndarray,
    imbalance_ratio: float,
    *,
    num_classes: int | None = None,
    n_max: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Sorted indices of a seeded long-tailed subset of labelled samples (SPEC section 6).

    Args:
        target: ``(N,)`` integer class labels.
        imbalance_ratio: ``IR = N_max / N_min >= 1`` of the subset.
        num_classes: number of classes (default: ``max(target) + 1``).
        n_max: cap on the largest class (see :func:`longtail_targets`).
        seed: which samples of each class are kept; subsets of one seed are nested across ratios.

    Returns:
        int64 indices into ``target``, ascending; class sizes follow :func:`longtail_targets`.

    Raises:
        ValueError: for labels out of range or an imbalance ratio below 1.

    Example:
        >>> target = np.repeat([0, 1, 2], [30, 100, 60])
        >>> np.bincount(target[longtail_indices(target, 10, seed=0)]).tolist()
        [10, 100, 32]
    """
    target, num_classes = _labels(target, num_classes)
    counts = np.bincount(target, minlength=num_classes)
    keep = np.asarray(longtail_targets(counts, imbalance_ratio, n_max=n_max))
    return _take_per_class(target, keep, seed)


def balanced_indices(
    target: np.ndarray, *, num_classes: int | None = None, per_class: int | None = None, seed: int = 0
) -> np.ndarray:
    """Sorted indices of a class-balanced subset: ``per_class`` samples of every present class.

    Args:
        target: ``(N,)`` integer class labels.
        num_classes: number of classes (default: ``max(target) + 1``).
        per_class: samples per class (default: the size of the smallest present class); a
            class with fewer keeps all of its samples.
        seed: which samples are kept.

    Example:
        >>> target = np.repeat([0, 1], [5, 12])
        >>> np.bincount(target[balanced_indices(target)]).tolist()
        [5, 5]
    """
    target, num_classes = _labels(target, num_classes)
    counts = np.bincount(target, minlength=num_classes)
    if per_class is None:
        present = counts[counts > 0]
        per_class = int(present.min()) if len(present) else 0
    elif isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive int or None, got {per_class!r}")
    return _take_per_class(target, np.minimum(counts, per_class), seed)


def longtail_splits(
    splits: Splits,
    imbalance_ratio: float | None,
    *,
    n_max: int | None = None,
    seed: int = 0,
    balanced_test: bool = True,
) -> Splits:
    """The long-tail protocol of seed 001: a long-tailed training set, balanced val and test sets.

    With ``imbalance_ratio=None`` the splits come back unchanged.

    Args:
        splits: the source splits (classification).
        imbalance_ratio: ``IR`` of the training subset (:func:`longtail_indices`), or ``None``.
        n_max: cap on the largest training class (``None``: all of it).
        seed: seeds every subset drawn.
        balanced_test: subsample the test split to balanced classes too; ``False`` keeps it
            whole, the same images for every seed (paired comparisons of methods).

    Returns:
        New splits; ``info["longtail"]`` holds the ratio asked for, the ratio reached, the
        training class counts and the kept indices of each split (into the source splits).

    Example:
        >>> from medbalance.data.datasets import ArrayDataset
        >>> def data(counts):
        ...     y = np.repeat(np.arange(len(counts)), counts)
        ...     return ArrayDataset(np.zeros((len(y), 1, 2, 2)), y, num_classes=len(counts))
        >>> out = longtail_splits(Splits(data([200, 90, 40]), data([9, 3, 5]), data([30, 20, 25])), 20)
        >>> out.info["longtail"]["train_counts"], len(out.val), len(out.test)
        ([200, 45, 10], 9, 60)
    """
    if imbalance_ratio is None:
        return splits
    num_classes = splits.train.num_classes
    kept = {
        "train": longtail_indices(splits.train.target, imbalance_ratio, num_classes=num_classes, n_max=n_max, seed=seed)
    }
    for name in ("val", "test") if balanced_test else ("val",):
        data: ArrayDataset | None = getattr(splits, name)
        if data is not None:
            kept[name] = balanced_indices(data.target, num_classes=num_classes, seed=seed)
    train = splits.train.subset(kept["train"])
    counts = np.bincount(train.target, minlength=num_classes)
    reached = float(counts.max() / counts[counts > 0].min())
    if not np.isclose(reached, imbalance_ratio, rtol=0.05):
        log.warning("long-tail subset reaches IR %.1f, not %.1f (classes too small)", reached, imbalance_ratio)
    info = dict(splits.info)
    info["longtail"] = {
        "imbalance_ratio": float(imbalance_ratio),
        "imbalance_ratio_reached": reached,
        "n_max": n_max,
        "seed": int(seed),
        "train_counts": counts.tolist(),
        **{f"{name}_indices": idx.tolist() for name, idx in kept.items()},
    }
    return Splits(
        train,
        splits.val.subset(kept["val"]),
        splits.test.subset(kept["test"]) if "test" in kept else splits.test,
        info=info,
    )
