"""Reductions shared by every loss: over elements, over classes and over images."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from medbalance.losses._validate import check_choice

__all__ = [
    "Reduction",
    "BatchReduction",
    "ClassReduction",
    "REDUCTIONS",
    "BATCH_REDUCTIONS",
    "CLASS_REDUCTIONS",
    "weighted_class_mean",
    "reduce_loss",
    "reduce_images",
    "scalar_term_args",
]

Reduction = Literal["mean", "sum", "none"]
BatchReduction = Literal["image", "batch"]
ClassReduction = Literal["mean", "sum"]

REDUCTIONS: tuple[str, ...] = get_args(Reduction)
BATCH_REDUCTIONS: tuple[str, ...] = get_args(BatchReduction)
CLASS_REDUCTIONS: tuple[str, ...] = get_args(ClassReduction)


def weighted_class_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Mean over the last (class) axis, weighted as ``sum_c w_c v_c / sum_c w_c``."""
    if weight is None:
        return values.mean(dim=-1)
    return (values * weight).sum(dim=-1) / weight.sum()


def reduce_loss(
    loss: Tensor,
    reduction: str,
    *,
    mask: Tensor | None = None,
    normalizer: Tensor | None = None,
) -> Tensor:
    """Reduce element-wise losses.

    ``"mean"`` divides the (masked) sum by the number of counted elements, or by the summed
    ``normalizer`` (per-element weights) when given; with nothing to count it returns 0 (still
    attached to the graph) instead of torch's NaN.

    Args:
        loss: element-wise loss of any shape; already multiplied by any weights.
        reduction: ``"mean" | "sum" | "none"``.
        mask: bool tensor of ``loss``' shape, ``True`` where the element counts.
        normalizer: per-element weights of ``loss``' shape used as the mean's denominator.

    Returns:
        A scalar, or ``loss`` with ignored elements set to 0 for ``"none"``.
    """
    if mask is not None:
        loss = loss * mask
        if normalizer is not None:
            normalizer = normalizer * mask
    if reduction == "none":
        return loss
    if reduction == "mean" and mask is None and normalizer is None and loss.numel() > 0:
        return loss.mean()
    total = loss.sum()
    if reduction == "sum":
        return total
    if normalizer is not None:
        count = normalizer.sum()
    elif mask is not None:
        count = mask.sum().float()
    else:
        count = torch.tensor(float(loss.numel()), device=loss.device)
    return torch.where(count > 0, total / count.clamp_min(torch.finfo(torch.float32).tiny), total * 0.0)


def reduce_images(per_image: Tensor, batch_reduction: str, reduction: str) -> Tensor:
    """Reduce ``(M,)`` per-image losses; a pooled batch (``M == 1``) gives its scalar whatever
    ``reduction`` is."""
    if batch_reduction == "batch":
        return per_image[0]
    return reduce_loss(per_image, reduction)


def scalar_term_args(reduction: str, **shared: object) -> dict:
    """The arguments every term of a sum of losses receives, ``reduction`` included.

    The terms are added as scalars, so ``reduction`` must be ``"mean"`` or ``"sum"``: the
    unreduced shapes of different terms would broadcast silently.
    """
    check_choice("reduction", reduction, ("mean", "sum"))
    return {**shared, "reduction": reduction}
