"""Label-aware smoothing (MiSLAS, Zhong et al., CVPR 2021): cross entropy against a smoothed
target whose smoothing grows with the class size, so head classes are pushed to be less
over-confident than tail classes (SPEC section 10)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medbalance.losses._reduction import REDUCTIONS, Reduction
from medbalance.losses._target import float32_compute, format_target
from medbalance.losses._validate import check_choice
from medbalance.losses.ce import cross_entropy

__all__ = ["LabelAwareSmoothingLoss", "label_aware_smoothing", "label_aware_epsilons"]

ClassCounts = Union[Tensor, Sequence[float]]


def label_aware_epsilons(class_counts: ClassCounts, *, head_eps: float = 0.3, tail_eps: float = 0.0) -> Tensor:
    """Per-class smoothing ``eps_y = eps_t + (eps_h - eps_t) sin(pi (n_y - n_min) / (2 (n_max - n_min)))``.

    The "concave" schedule of MiSLAS: the largest class gets ``head_eps``, the smallest
    ``tail_eps``. When every class has the same size, each gets ``head_eps``.

    Args:
        class_counts: ``(C,)`` training samples per class, positive.
        head_eps: smoothing of the largest class (**Default** 0.3, MiSLAS).
        tail_eps: smoothing of the smallest class (**Default** 0.0).

    Raises:
        ValueError: counts not a positive 1-D vector, or an ``eps`` outside ``[0, 1]``.

    Example:
        >>> [round(e, 4) for e in label_aware_epsilons([1000, 100, 10]).tolist()]
        [0.3, 0.0427, 0.0]
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    if counts.ndim != 1 or counts.numel() < 2 or not bool(torch.isfinite(counts).all()) or bool((counts <= 0).any()):
        raise ValueError(f"class_counts must be a 1-D vector of at least 2 positive counts, got {counts.tolist()}")
    for name, eps in (("head_eps", head_eps), ("tail_eps", tail_eps)):
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {eps!r}")
    low, high = counts.min(), counts.max()
    if high == low:
        return torch.full_like(counts, float(head_eps))
    return tail_eps + (head_eps - tail_eps) * torch.sin(math.pi * (counts - low) / (2 * (high - low)))


def label_aware_smoothing(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassCounts,
    head_eps: float = 0.3,
    tail_eps: float = 0.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cross entropy against ``(1 - eps_y) onehot(y) + eps_y / C``, ``eps_y`` from :func:`label_aware_epsilons`.

    MiSLAS uses it in its second stage (classifier re-training). With equal ``eps`` for every
    class this is ordinary label smoothing.

    Args:
        logits: ``(N, C)`` or ``(N, C, *spatial)`` raw scores, ``C >= 2``.
        target: ``(N,)`` or ``(N, *spatial)`` integer labels.
        class_counts: ``(C,)`` training samples per class.
        head_eps: smoothing of the largest class (**Default** 0.3).
        tail_eps: smoothing of the smallest class (**Default** 0.0).
        reduction: ``"mean" | "sum" | "none"``.

    Returns:
        The loss, float32.

    Raises:
        ValueError: binary (one-channel) logits, a count vector of the wrong length, bad labels.

    Example:
        >>> logits, target = torch.zeros(2, 3), torch.tensor([0, 2])
        >>> round(label_aware_smoothing(logits, target, class_counts=[500, 50, 5]).item(), 4)  # log 3
        1.0986
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if logits.ndim < 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C, *spatial) with C >= 2, got {tuple(logits.shape)}")
    eps = label_aware_epsilons(class_counts, head_eps=head_eps, tail_eps=tail_eps).to(logits.device)
    if eps.numel() != logits.shape[1]:
        raise ValueError(f"class_counts has {eps.numel()} entries but logits have {logits.shape[1]} classes")
    with float32_compute(logits):
        labels = format_target(logits, target).labels
        if labels is None:
            raise TypeError(f"target must hold integer labels, got dtype {target.dtype}")
        e = eps[labels].unsqueeze(1)
        onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).float()
        soft = (1.0 - e) * onehot + e / logits.shape[1]
        return cross_entropy(logits.float(), soft, reduction=reduction)


class LabelAwareSmoothingLoss(nn.Module):
    """Label-aware smoothing loss of MiSLAS; see :func:`label_aware_smoothing`.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.label_aware_smoothing`, documented there; ``forward`` takes
    ``logits`` and ``target``. ``class_counts`` is kept as a buffer.

    Example:
        >>> loss = LabelAwareSmoothingLoss([500, 50, 5])
        >>> loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2])).ndim
        0
    """

    class_counts: Tensor

    def __init__(
        self, class_counts: ClassCounts, *, head_eps: float = 0.3, tail_eps: float = 0.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        label_aware_epsilons(class_counts, head_eps=head_eps, tail_eps=tail_eps)
        self.register_buffer("class_counts", torch.as_tensor(class_counts, dtype=torch.float32).clone())
        self.head_eps, self.tail_eps, self.reduction = float(head_eps), float(tail_eps), reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return label_aware_smoothing(
            logits,
            target,
            class_counts=self.class_counts,
            head_eps=self.head_eps,
            tail_eps=self.tail_eps,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"class_counts={self.class_counts.tolist()}, head_eps={self.head_eps}, tail_eps={self.tail_eps}, "
            f"reduction={self.reduction!r}"
        )
