"""Ranking quality of a classifier: the area under the ROC curve (AUROC), binary and one-vs-rest.

MedMNIST v2 reports ACC and AUC for every set; its multi-class AUC is the one-vs-rest macro mean
(scikit-learn's ``roc_auc_score(..., multi_class="ovr")``). The AUC here is the Mann-Whitney
statistic: the probability that a random positive scores above a random negative, a tie counting
one half, which is exactly the area under the ROC curve with its tied steps drawn as diagonals.

Absent-class policy: a class with no positive or no negative in the target has no ROC curve; its
per-class AUC is NaN and the macro mean averages over the other classes (NaN when none is left).
torchmetrics instead scores such a class 0 (with a warning) and keeps it in its macro mean; the
per-class values of the classes present agree (tests/test_auroc.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["auroc", "binary_auroc", "class_aurocs"]


def binary_auroc(scores: Tensor, positive: Tensor) -> float:
    """AUROC of ``scores`` for the boolean labels ``positive`` (ties count one half).

    Args:
        scores: ``(N,)`` real scores, higher meaning more likely positive.
        positive: ``(N,)`` booleans (or 0 / 1).

    Returns:
        The AUC in ``[0, 1]``; NaN when ``positive`` holds only one value.

    Example:
        >>> round(binary_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])), 4)
        0.75
        >>> binary_auroc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1]))  # a tie: one half
        0.5
    """
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a 1-D tensor (N,), got {shape}")
    if not isinstance(positive, Tensor) or positive.shape != scores.shape:
        shape = tuple(positive.shape) if isinstance(positive, Tensor) else type(positive).__name__
        raise ValueError(f"positive must be a tensor of the shape of scores {tuple(scores.shape)}, got {shape}")
    positive = positive.detach().cpu().bool()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # average rank of each score (1-based), tied scores sharing the mean of their ranks
    _, inverse, counts = torch.unique(scores.detach().cpu().double(), return_inverse=True, return_counts=True)
    before = torch.cumsum(counts, 0) - counts
    ranks = (before + (counts + 1) / 2.0)[inverse]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def class_aurocs(probs: Tensor, target: Tensor) -> list[float]:
    """One-vs-rest AUROC of every class: ``probs[:, c]`` ranking class ``c`` against the rest.

    Args:
        probs: ``(N, C)`` class probabilities (or any per-class scores).
        target: ``(N,)`` integer labels in ``[0, C)``.

    Returns:
        ``C`` floats; NaN for a class absent from ``target`` (or the only class in it).
    """
    if not isinstance(probs, Tensor) or not probs.dtype.is_floating_point or probs.ndim != 2 or probs.shape[1] < 2:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a float tensor (N, C) with C >= 2, got {shape}")
    if not isinstance(target, Tensor) or target.dtype.is_floating_point or target.shape != probs.shape[:1]:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must be an integer tensor (N,) = ({probs.shape[0]},), got {shape}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= probs.shape[1]):
        raise ValueError(f"target must hold labels in [0, {probs.shape[1]}), got {target.min()}..{target.max()}")
    target = target.detach().cpu()
    return [binary_auroc(probs[:, c], target == c) for c in range(probs.shape[1])]


def auroc(probs: Tensor, target: Tensor) -> float:
    """AUROC of a classifier: the one-vs-rest macro mean over the classes with an ROC curve.

    With two classes and ``probs[:, 0] = 1 - probs[:, 1]`` both one-vs-rest curves are the
    binary curve of ``probs[:, 1]``, so this is the binary AUC. Absent classes: module docstring.

    Args:
        probs: ``(N, C)`` class probabilities (softmax outputs; binary: ``(1 - p, p)``).
        target: ``(N,)`` integer labels.

    Returns:
        The AUC in ``[0, 1]``, or NaN when no class has both positives and negatives.

    Example:
        >>> probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
        >>> auroc(probs, torch.tensor([0, 1, 2, 1]))
        1.0
    """
    values = [v for v in class_aurocs(probs, target) if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
