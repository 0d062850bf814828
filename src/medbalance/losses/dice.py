"""Soft Dice loss (Milletari et al., V-Net, 2016), with seed 003's two-sided binary form."""

from __future__ import annotations

from torch import Tensor

from medbalance.losses._reduction import CLASS_REDUCTIONS, BatchReduction, ClassReduction, Reduction
from medbalance.losses._region_core import check_region_args, overlap_loss
from medbalance.losses._validate import ClassWeight, check_choice
from medbalance.losses.region import RegionLoss

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
    class_reduction: ClassReduction = "mean",
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
    ``class_reduction="sum"`` gives ``sum_c w_c L_c`` (unweighted: ``C - sum_c Dice_c``), the
    Dice term of AnatomyNet's Dice + Focal as seed 003 writes it.

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
        class_reduction: ``"mean"`` (default) or ``"sum"`` over the counted classes.
        ignore_index: label whose elements are removed from all sums (label targets only).
        reduction: over images, ``"mean" | "sum" | "none"`` (``"none"``: ``(N,)`` per-image
            losses). With ``batch_reduction="batch"`` the images are pooled first, so every
            reduction returns the same scalar.

    Returns:
        The loss, float32.

    Example:
        >>> import torch
        >>> target = torch.tensor([[[0, 1]]])  # (N, H, W) = (1, 1, 2)
        >>> round(dice_loss(torch.zeros(1, 2, 1, 2), target).item(), 4)  # P = 0.5 everywhere
        0.5
        >>> perfect = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])
        >>> dice_loss(perfect, target).item() < 1e-6
        True
    """
    check_region_args(smooth=smooth, batch_reduction=batch_reduction, reduction=reduction)
    check_choice("class_reduction", class_reduction, CLASS_REDUCTIONS)
    # (2 TP + s) / (2 TP + FP + FN + s) is the Tversky index at alpha = beta = 1/2 with s / 2
    return overlap_loss(
        logits,
        target,
        alpha=0.5,
        beta=0.5,
        smooth=0.5 * smooth,
        squared=squared,
        two_sided=two_sided,
        class_reduction=class_reduction,
        include_background=include_background,
        weight=weight,
        batch_reduction=batch_reduction,
        ignore_index=ignore_index,
        reduction=reduction,
    )


class DiceLoss(RegionLoss):
    """Soft Dice loss ``1 - (2 sum(P G) + s) / (sum P + sum G + s)``, mean over classes.

    See :func:`medbalance.losses.functional.dice_loss` for the definition, empty classes and
    the weighted class mean.

    The constructor takes the keyword arguments of :func:`medbalance.losses.functional.dice_loss`,
    documented there; ``forward`` takes ``logits`` and ``target``.

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
        class_reduction: ClassReduction = "mean",
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            smooth=smooth,
            include_background=include_background,
            weight=weight,
            batch_reduction=batch_reduction,
            ignore_index=ignore_index,
            reduction=reduction,
        )
        check_choice("class_reduction", class_reduction, CLASS_REDUCTIONS)
        self.squared = squared
        self.two_sided = two_sided
        self.class_reduction = class_reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(
            logits,
            target,
            squared=self.squared,
            two_sided=self.two_sided,
            class_reduction=self.class_reduction,
            **self._common(),
        )

    def extra_repr(self) -> str:
        return (
            f"squared={self.squared}, two_sided={self.two_sided}, class_reduction={self.class_reduction!r}, "
            + super().extra_repr()
        )
