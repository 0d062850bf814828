"""Functional losses: the computational core of :mod:`medbalance.losses`.

Every function takes raw ``logits`` ``(N, C, *spatial)`` (``C == 1``: binary, sigmoid;
``C >= 2``: softmax, channel 0 = background) and a ``target`` that is either an integer label
map ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a one-hot / soft float tensor of the logits'
shape (see :func:`medbalance.losses._utils.format_target`). Losses are computed in float32,
also under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medbalance.losses._utils import (
    BATCH_REDUCTIONS,
    REDUCTIONS,
    BatchReduction,
    ClassWeight,
    Reduction,
    check_choice,
    check_non_negative,
    class_weight,
    expand_binary_logits,
    float32_compute,
    format_target,
    probabilities,
    reduce_loss,
    weighted_class_mean,
)

__all__ = ["cross_entropy", "dice_loss", "dice_ce_loss", "compound_loss"]


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: ClassWeight = None,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cross entropy on logits: softmax CE for ``C >= 2``, sigmoid BCE for ``C == 1``.

    Multi-class: ``l_i = -sum_c w_c y_ic log softmax(z_i)_c``. Binary (one logit channel):
    ``l_i = -(w y_i log sigmoid(z_i) + (1 - y_i) log(1 - sigmoid(z_i)))``, never a one-channel
    softmax (which is identically zero, SPEC section 10).

    ``reduction="mean"`` follows the PyTorch anchors:

    - multi-class: the weighted mean ``sum_i l_i / sum_i sum_c w_c y_ic``, as
      :func:`torch.nn.functional.cross_entropy` for labels; a one-hot float target gives the
      same value as its label map (torch divides soft targets by the element count instead).
      Without weights the denominator is the number of counted elements.
    - binary: ``weight`` is the positive-class weight (``pos_weight`` of
      :func:`torch.nn.functional.binary_cross_entropy_with_logits`) and the mean is over the
      counted elements.

    With every element ignored the mean is 0 rather than NaN.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a float one-hot / soft
            target of the logits' shape.
        weight: ``(C,)`` class weights, one per logit channel (binary: the positive-class
            weight).
        include_background: if ``False`` (``C >= 2``), channel 0 gets weight 0: background
            elements add nothing to the loss nor to the mean's denominator; the softmax still
            covers every class. No effect for ``C == 1``.
        ignore_index: label whose elements are excluded (label targets only).
        reduction: ``"mean" | "sum" | "none"``; ``"none"`` returns ``(N, *spatial)``.

    Returns:
        The loss, float32.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
        >>> round(cross_entropy(logits, torch.tensor([0])).item(), 4)
        0.1698
    """
    check_choice("reduction", reduction, REDUCTIONS)
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        w = class_weight(weight, logits, include_background=include_background)
        logits = logits.float()
        normalizer = None
        if tgt.num_classes == 1:
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], tgt.dense()[:, 0], pos_weight=w, reduction="none")
        elif tgt.labels is not None:
            loss = -F.log_softmax(logits, dim=1).gather(1, tgt.labels.unsqueeze(1)).squeeze(1)
            if w is not None:
                normalizer = w[tgt.labels]
                loss = loss * normalizer
        else:
            y = tgt.dense()
            if w is not None:
                y = y * w.view(1, -1, *([1] * (logits.ndim - 2)))
                normalizer = y.sum(dim=1)
            loss = -(y * F.log_softmax(logits, dim=1)).sum(dim=1)
        return reduce_loss(loss, reduction, mask=tgt.mask, normalizer=normalizer)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1e-5,
    include_background: bool = True,
    weight: ClassWeight = None,
    batch_reduction: BatchReduction = "image",
    squared: bool = False,
    two_sided: bool = False,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(P G) + s) / (sum P + sum G + s)`` per class, averaged over classes.

    ``P`` are the softmax (``C >= 2``) or sigmoid (``C == 1``) probabilities and ``G`` the
    one-hot or soft target (Milletari et al., V-Net, 2016; SPEC section 2). Sums run in
    float32. A class absent from both ``P`` and ``G`` has Dice 1 (loss 0), also with
    ``smooth=0``; one absent from ``G`` only has loss ``~1``.

    The class mean is weighted, ``sum_c w_c L_c / sum_c w_c``; MONAI's ``DiceLoss`` instead
    takes ``mean_c(w_c L_c)``, which differs by the factor ``sum(w) / C``.

    Args:
        logits: ``(N, C, *spatial)`` raw scores.
        target: labels ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a float one-hot / soft
            target of the logits' shape.
        smooth: ``s``, added to numerator and denominator; ``>= 0``.
        include_background: if ``False`` (``C >= 2``) channel 0 is left out. For ``C == 1``
            the single channel is the foreground and this flag has no effect.
        weight: ``(C,)`` class weights, one per logit channel. For ``C == 1`` the weight of
            the foreground relative to the background, used only with ``two_sided``.
        batch_reduction: ``"image"`` (default, MONAI's default): Dice per image, then the mean
            over the batch; ``"batch"``: sums pooled over the whole batch before the Dice
            (nnU-Net's ``batch_dice``), so empty images do not each count as a class miss.
        squared: denominator ``sum P^2 + sum G^2`` (V-Net / MONAI ``squared_pred``).
        two_sided: binary only: average the foreground Dice with the background Dice of
            ``(1 - P, 1 - G)`` (seed 003's ``DL_2``, up to where ``s`` enters).
        ignore_index: label whose elements are removed from all sums (label targets only).
        reduction: over images, ``"mean" | "sum" | "none"`` (``"none"``: ``(N,)`` per-image
            losses). With ``batch_reduction="batch"`` the images are pooled first, so every
            reduction returns the same scalar.

    Returns:
        The loss, float32.

    Example:
        >>> target = torch.tensor([[[0, 1]]])  # (N, H, W) = (1, 1, 2)
        >>> round(dice_loss(torch.zeros(1, 2, 1, 2), target).item(), 4)  # P = 0.5 everywhere
        0.5
        >>> perfect = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])
        >>> dice_loss(perfect, target).item() < 1e-6
        True
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("batch_reduction", batch_reduction, BATCH_REDUCTIONS)
    check_non_negative("smooth", smooth)
    if two_sided and logits.shape[1] != 1:
        raise ValueError(f"two_sided applies to binary logits (C == 1), got C={logits.shape[1]}")
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        w = class_weight(weight, logits, include_background=include_background)
        truth = tgt.dense()
        if two_sided:
            probs = torch.softmax(expand_binary_logits(logits.float()), dim=1)
            truth = torch.cat([1.0 - truth, truth], dim=1)
            w = None if w is None else torch.cat([torch.ones_like(w), w])
        else:
            probs = probabilities(logits)
            if not include_background and tgt.num_classes > 1:
                probs, truth, w = probs[:, 1:], truth[:, 1:], None if w is None else w[1:]
        if tgt.mask is not None:
            keep = tgt.mask.unsqueeze(1)
            probs, truth = probs * keep, truth * keep

        dims = tuple(range(2, probs.ndim))
        if batch_reduction == "batch":
            dims = (0, *dims)
        intersection = (probs * truth).sum(dims)
        if squared:
            denominator = (probs * probs).sum(dims) + (truth * truth).sum(dims)
        else:
            denominator = probs.sum(dims) + truth.sum(dims)
        numerator, denominator = 2.0 * intersection + smooth, denominator + smooth
        # empty-vs-empty with smooth=0 is 0/0: define it as a perfect match, keep gradients finite
        dice = torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(torch.float32).tiny), 1.0)
        per_image = weighted_class_mean(1.0 - dice, w)
        if batch_reduction == "batch":
            return per_image
        return reduce_loss(per_image, reduction)


def dice_ce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    smooth: float = 1e-5,
    include_background: bool = True,
    weight: ClassWeight = None,
    batch_reduction: BatchReduction = "image",
    squared: bool = False,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """``lambda_dice * dice_loss + lambda_ce * cross_entropy`` (nnU-Net's default loss).

    ``weight``, ``include_background`` and ``ignore_index`` reach both terms (SPEC section
    10: ``include_background`` is honoured by every part). Arguments as in :func:`dice_loss`
    and :func:`cross_entropy`; ``reduction`` must be ``"mean"`` or ``"sum"`` since the terms
    have different unreduced shapes.

    Example:
        >>> logits = torch.zeros(1, 2, 4, 4)
        >>> dice_ce_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long)).item() > 0
        True
    """
    check_choice("reduction", reduction, ("mean", "sum"))
    common = dict(weight=weight, include_background=include_background, ignore_index=ignore_index, reduction=reduction)
    dice = dice_loss(logits, target, smooth=smooth, batch_reduction=batch_reduction, squared=squared, **common)
    return compound_loss([(dice, lambda_dice), (cross_entropy(logits, target, **common), lambda_ce)])


def compound_loss(terms: Sequence[tuple[Tensor, float]]) -> Tensor:
    """Weighted sum ``sum_k w_k L_k`` of scalar loss values.

    Args:
        terms: ``(loss value, weight)`` pairs; each value must be a scalar tensor.

    Raises:
        ValueError: if a term is not a scalar (a ``reduction="none"`` loss would otherwise be
            broadcast silently) or a weight is negative or not finite.

    Example:
        >>> compound_loss([(torch.tensor(0.5), 1.0), (torch.tensor(2.0), 0.25)]).item()
        1.0
    """
    if len(terms) == 0:
        raise ValueError("compound_loss needs at least one (loss, weight) term, got none")
    total: Tensor | None = None
    for index, (value, term_weight) in enumerate(terms):
        check_non_negative(f"weight of term {index}", term_weight)
        if value.ndim != 0:
            raise ValueError(
                f"term {index} of a compound loss must be a scalar, got shape {tuple(value.shape)} "
                "(use reduction='mean' or 'sum' in its loss)"
            )
        total = value * term_weight if total is None else total + value * term_weight
    assert total is not None
    return total
