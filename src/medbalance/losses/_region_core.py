"""The core of the region (overlap) losses: Dice, IoU, Tversky, focal Tversky, generalized Dice,
sensitivity-specificity and exponential-logarithmic share the per-class soft sums below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from medbalance.losses._reduction import BATCH_REDUCTIONS, REDUCTIONS, reduce_images, weighted_class_mean
from medbalance.losses._target import (
    Target,
    binary_as_two_class,
    expand_binary_logits,
    float32_compute,
    format_target,
    probabilities,
)
from medbalance.losses._validate import ClassWeight, check_choice, check_non_negative, class_weight

__all__ = [
    "check_region_args",
    "RegionInputs",
    "region_inputs",
    "class_sums",
    "Overlap",
    "soft_overlap",
    "safe_ratio",
    "tversky_index",
    "power",
    "overlap_loss",
]


def check_region_args(*, smooth: float, batch_reduction: str, reduction: str) -> None:
    """Validate the arguments every region loss shares."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("batch_reduction", batch_reduction, BATCH_REDUCTIONS)
    check_non_negative("smooth", smooth)


@dataclass(frozen=True)
class RegionInputs:
    """Probabilities and target of a region loss, restricted to the classes that count.

    Attributes:
        target: the validated :class:`Target`.
        probs: ``(N, K, *spatial)`` float32 probabilities, zero at ignored elements.
        truth: ``(N, K, *spatial)`` float32 target, zero at ignored elements.
        weight: ``(K,)`` class weights, ``None`` when every class weighs 1.
        keep: ``(N, 1, *spatial)`` bool, ``True`` where the element counts; ``None`` when no
            element is ignored.
    """

    target: Target
    probs: Tensor
    truth: Tensor
    weight: Tensor | None
    keep: Tensor | None


def region_inputs(
    logits: Tensor,
    target: Tensor,
    *,
    weight: ClassWeight,
    include_background: bool,
    ignore_index: int | None,
    two_sided: bool = False,
) -> RegionInputs:
    """Validate a region loss's input and gather the ``K`` classes it sums over.

    ``K = C`` (binary: the single foreground channel), ``C - 1`` with
    ``include_background=False``, or 2 with ``two_sided`` (binary only: background
    ``(1 - P, 1 - G)`` and foreground ``(P, G)``, background weight 1).
    """
    tgt = format_target(logits, target, ignore_index=ignore_index, check_range=False)
    w = class_weight(weight, logits, include_background=include_background)
    if two_sided and tgt.num_classes != 1:
        raise ValueError(f"two_sided applies to binary logits (C == 1), got C={tgt.num_classes}")
    # the probabilities before the one-hot map (which also checks the labels' range, see
    # format_target's check_range): 1-11% faster for Dice / IoU / GDL (benchmarks/RESULTS.md)
    if two_sided:
        probs = torch.softmax(expand_binary_logits(logits.float()), dim=1)
        truth, w = binary_as_two_class(tgt.dense(), w)
    else:
        probs = probabilities(logits)
        truth = tgt.dense()
        if not include_background and tgt.num_classes > 1:
            probs, truth, w = probs[:, 1:], truth[:, 1:], None if w is None else w[1:]
        elif w is not None and w.numel() > truth.shape[1]:  # a binary (background, foreground) pair
            w = w[1:]
    keep = None if tgt.mask is None else tgt.mask.unsqueeze(1)
    if keep is not None:
        probs, truth = probs * keep, truth * keep
    return RegionInputs(target=tgt, probs=probs, truth=truth, weight=w, keep=keep)


def class_sums(values: Tensor, batch_reduction: str) -> Tensor:
    """Sum ``(N, K, *spatial)`` over space: ``(N, K)`` per image (``"image"``), or ``(1, K)``
    pooled over the batch (``"batch"``). Without spatial axes each sample is its own image."""
    spatial = tuple(range(2, values.ndim))
    if batch_reduction == "batch":
        return values.sum(dim=(0, *spatial)).unsqueeze(0)
    # sum(dim=()) would sum over every axis
    return values.sum(dim=spatial) if spatial else values


class Overlap(NamedTuple):
    """Per-class soft sums ``TP = sum P G``, ``sum P`` and ``sum G``, ``(N, K)`` or ``(1, K)``.

    ``FP = sum P - TP`` and ``FN = sum G - TP``; the losses combine the three sums directly
    (``2 TP + FP + FN = sum P + sum G``), fewer operations than through ``FP`` and ``FN``.
    """

    tp: Tensor
    pred: Tensor
    truth: Tensor


def soft_overlap(region: RegionInputs, batch_reduction: str, *, squared: bool = False) -> Overlap:
    """Per-class soft sums ``TP = sum P G``, ``sum P`` and ``sum G``.

    ``FP = sum P - TP = sum P (1 - G)`` and ``FN = sum (1 - P) G`` (MONAI's decoupled form, also
    right for soft targets). With ``squared``, ``sum P^2`` and ``sum G^2`` stand for ``sum P``
    and ``sum G``, so that ``2 TP + FP + FN = sum P^2 + sum G^2`` (V-Net; MONAI ``squared_pred``).
    """
    probs, truth = region.probs, region.truth
    tp = class_sums(probs * truth, batch_reduction)
    if squared:
        probs, truth = probs * probs, truth * truth
    return Overlap(tp, class_sums(probs, batch_reduction), class_sums(truth, batch_reduction))


def safe_ratio(numerator: Tensor, denominator: Tensor, *, empty: float) -> Tensor:
    """``numerator / denominator``, and ``empty`` where the denominator is 0 (finite gradients)."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(torch.float32).tiny), empty)


def tversky_index(overlap: Overlap, *, alpha: float, beta: float, smooth: float) -> Tensor:
    """``(TP + s) / (TP + alpha FP + beta FN + s)``; 1 for a class absent from ``P`` and ``G``.

    ``alpha = beta = 1/2`` with ``s / 2`` is Dice ``(2 TP + s) / (2 TP + FP + FN + s)``,
    ``alpha = beta = 1`` is IoU.
    """
    tp, pred, truth = overlap
    # TP + alpha FP + beta FN + s = (1 - alpha - beta) TP + alpha sum P + (beta sum G + s): the
    # target side needs no gradient, and a zero coefficient (Dice) drops a term; every
    # operation on the prediction side is a node of the backward pass
    denominator = torch.add(truth * beta + smooth, pred, alpha=alpha)
    if alpha + beta != 1.0:
        denominator = torch.add(denominator, tp, alpha=1.0 - alpha - beta)
    if smooth > 0:  # the denominator is at least s: no class is empty, no where() needed
        return (tp + smooth) / denominator
    return safe_ratio(tp, denominator, empty=1.0)


def power(values: Tensor, gamma: float) -> Tensor:
    """``values ** gamma`` for ``values >= 0``: clamped to the smallest normal float first, so
    that a perfect prediction (``values == 0``) has gradient 0, not ``inf`` (``gamma < 1``)."""
    return values.clamp_min(torch.finfo(torch.float32).tiny).pow(gamma)


def overlap_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: float,
    beta: float,
    smooth: float,
    gamma: float = 1.0,
    squared: bool = False,
    two_sided: bool = False,
    class_reduction: str = "mean",
    include_background: bool,
    weight: ClassWeight,
    batch_reduction: str,
    ignore_index: int | None,
    reduction: str,
) -> Tensor:
    """``(1 - T_k)^gamma`` with ``T_k`` the Tversky index of class ``k``, weighted class mean (or,
    with ``class_reduction="sum"``, the weighted sum ``sum_k w_k L_k``) per image, reduced over
    images: the one implementation of Dice, IoU, Tversky and focal Tversky. Their public
    functions validate and document the arguments."""
    with float32_compute(logits):
        region = region_inputs(
            logits,
            target,
            weight=weight,
            include_background=include_background,
            ignore_index=ignore_index,
            two_sided=two_sided,
        )
        index = tversky_index(
            soft_overlap(region, batch_reduction, squared=squared), alpha=alpha, beta=beta, smooth=smooth
        )
        if (
            gamma == 1.0
            and class_reduction == "mean"
            and region.weight is None
            and index.numel() > 0
            and (reduction == "mean" or batch_reduction == "batch")
        ):
            # the mean over images of class means is the mean over all (image, class) pairs
            return 1.0 - index.mean()
        per_class = 1.0 - index if gamma == 1.0 else power(1.0 - index, gamma)
        if class_reduction == "sum":
            per_image = (per_class if region.weight is None else per_class * region.weight).sum(dim=-1)
        else:
            per_image = weighted_class_mean(per_class, region.weight)
        return reduce_images(per_image, batch_reduction, reduction)
