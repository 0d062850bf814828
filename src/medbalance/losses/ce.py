"""Cross entropy on logits: softmax CE for ``C >= 2``, sigmoid BCE for ``C == 1``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from medbalance.losses._base import ClassWeightedLoss
from medbalance.losses._utils import (
    REDUCTIONS,
    ClassWeight,
    Reduction,
    check_choice,
    class_weight,
    float32_compute,
    format_target,
    reduce_loss,
)

__all__ = ["cross_entropy", "CrossEntropyLoss"]


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


class CrossEntropyLoss(ClassWeightedLoss):
    """Cross entropy on logits: softmax CE for ``C >= 2``, sigmoid BCE for ``C == 1``.

    See :func:`medbalance.losses.functional.cross_entropy` for the exact definition, the
    weighted mean and the binary ``weight`` (positive-class weight).

    Args:
        weight: ``(C,)`` class weights, one per logit channel (binary: the positive-class
            weight).
        include_background: if ``False`` (``C >= 2``) background elements get weight 0.
        ignore_index: label whose elements are excluded (label targets only).
        reduction: ``"mean" | "sum" | "none"``.

    Shape:
        - logits: ``(N, C, *spatial)`` or ``(N, C)``.
        - target: ``(N, *spatial)`` / ``(N, 1, *spatial)`` integer labels, or float of the
          logits' shape (one-hot or soft).
        - output: scalar, or ``(N, *spatial)`` for ``reduction="none"``.

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss(weight=[0.2, 1.0, 1.0])
        >>> loss(torch.zeros(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        weight: ClassWeight = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            weight=weight,
            include_background=include_background,
            ignore_index=ignore_index,
            reduction=reduction,
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(logits, target, **self._common())
