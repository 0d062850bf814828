"""Soft Dice loss (Milletari et al., V-Net, 2016), with seed 003's two-sided binary form."""

from __future__ import annotations

import torch
from torch import Tensor

from medbalance.losses._base import ClassWeightedLoss
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

__all__ = ["dice_loss", "DiceLoss"]


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


class DiceLoss(ClassWeightedLoss):
    """Soft Dice loss ``1 - (2 sum(P G) + s) / (sum P + sum G + s)``, mean over classes.

    See :func:`medbalance.losses.functional.dice_loss` for the definition, empty classes and
    the weighted class mean.

    Args:
        smooth: ``s`` (``>= 0``), added to numerator and denominator.
        include_background: if ``False`` (``C >= 2``) channel 0 is left out.
        weight: ``(C,)`` class weights, one per logit channel.
        batch_reduction: ``"image"`` (default): Dice per image then averaged; ``"batch"``:
            sums pooled over the batch (nnU-Net ``batch_dice``).
        squared: squared terms in the denominator (V-Net).
        two_sided: binary only, also average in the background Dice (seed 003 ``DL_2``).
        ignore_index: label whose elements are removed from all sums.
        reduction: over images, ``"mean" | "sum" | "none"``.

    Shape:
        - logits: ``(N, C, *spatial)``.
        - target: ``(N, *spatial)`` / ``(N, 1, *spatial)`` integer labels, or float of the
          logits' shape (one-hot or soft).
        - output: scalar, or ``(N,)`` for ``reduction="none"`` with ``batch_reduction="image"``.

    Example:
        >>> import torch
        >>> loss = DiceLoss(include_background=False, batch_reduction="batch")
        >>> float(loss(torch.zeros(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))) > 0
        True
    """

    def __init__(
        self,
        *,
        smooth: float = 1e-5,
        include_background: bool = True,
        weight: ClassWeight = None,
        batch_reduction: BatchReduction = "image",
        squared: bool = False,
        two_sided: bool = False,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            weight=weight,
            include_background=include_background,
            ignore_index=ignore_index,
            reduction=reduction,
        )
        check_non_negative("smooth", smooth)
        check_choice("batch_reduction", batch_reduction, BATCH_REDUCTIONS)
        self.smooth = float(smooth)
        self.batch_reduction = batch_reduction
        self.squared = squared
        self.two_sided = two_sided

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(
            logits,
            target,
            smooth=self.smooth,
            batch_reduction=self.batch_reduction,
            squared=self.squared,
            two_sided=self.two_sided,
            **self._common(),
        )

    def extra_repr(self) -> str:
        return (
            f"smooth={self.smooth}, batch_reduction={self.batch_reduction!r}, squared={self.squared}, "
            f"two_sided={self.two_sided}, " + super().extra_repr()
        )
