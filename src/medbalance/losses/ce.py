"""Cross entropy on logits: softmax CE for ``C >= 2``, sigmoid BCE for ``C == 1``; and seed
003's weighted CE (WCE), whose positive-term weight is computed from the batch."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medbalance.losses._base import ClassWeightedLoss
from medbalance.losses._reduction import REDUCTIONS, Reduction, reduce_loss
from medbalance.losses._target import Target, float32_compute, format_target, probabilities
from medbalance.losses._validate import ClassWeight, check_choice, check_ignore_index, class_weight

__all__ = ["cross_entropy", "weighted_cross_entropy", "CrossEntropyLoss", "WeightedCrossEntropyLoss"]

CountFrom = Literal["target", "prediction"]
COUNT_FROM: tuple[str, ...] = get_args(CountFrom)


def cross_entropy_terms(logits: Tensor, tgt: Target, weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Element-wise cross entropy and the weighted mean's denominator (package-internal core).

    Args:
        logits: float32 ``(N, C, *spatial)`` raw scores.
        tgt: the validated target of ``logits``.
        weight: ``(C,)`` validated class weights (binary: the positive-class weight or the
            ``(background, foreground)`` pair), or ``None``.

    Returns:
        ``(loss, normalizer)``: ``(N, *spatial)`` losses, already weighted, and the per-element
        weights ``sum_c w_c y_c`` to divide by for ``"mean"`` (``None``: count the elements).
    """
    if tgt.num_classes == 1:
        z, y = logits[:, 0], tgt.dense()[:, 0]
        if weight is not None and weight.numel() == 2:  # (background, foreground)
            return weight[1] * y * F.softplus(-z) + weight[0] * (1.0 - y) * F.softplus(z), None
        return F.binary_cross_entropy_with_logits(z, y, pos_weight=weight, reduction="none"), None
    log_probs = F.log_softmax(logits, dim=1)
    if tgt.labels is not None:
        loss = -log_probs.gather(1, tgt.labels.unsqueeze(1)).squeeze(1)
        if weight is None:
            return loss, None
        normalizer = weight[tgt.labels]
        return loss * normalizer, normalizer
    y = tgt.dense()
    if weight is None:
        return -(y * log_probs).sum(dim=1), None
    y = y * weight.view(1, -1, *([1] * (logits.ndim - 2)))
    return -(y * log_probs).sum(dim=1), y.sum(dim=1)


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
      :func:`torch.nn.functional.binary_cross_entropy_with_logits`), or the pair
      ``(background, foreground)`` weighing the negative and the positive term; the mean is
      over the counted elements.

    With every element ignored the mean is 0 rather than NaN.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a float one-hot / soft
            target of the logits' shape.
        weight: ``(C,)`` class weights, one per logit channel (binary: the positive-class
            weight, or the pair background, foreground).
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
        if reduction != "none" and tgt.mask is None and logits.numel() > 0:
            # torch's fused reductions give the same values with one pass and one node fewer
            if tgt.num_classes == 1 and (w is None or w.numel() == 1):
                return F.binary_cross_entropy_with_logits(
                    logits[:, 0], tgt.dense()[:, 0], pos_weight=w, reduction=reduction
                )
            if tgt.labels is not None and w is None:  # (torch's weighted mean is NaN when no weight counts)
                return F.cross_entropy(logits, tgt.labels, reduction=reduction)
        loss, normalizer = cross_entropy_terms(logits, tgt, w)
        return reduce_loss(loss, reduction, mask=tgt.mask, normalizer=normalizer)


def batch_balance_weight(logits: Tensor, tgt: Target, *, count_from: CountFrom = "target") -> Tensor:
    """Seed 003's WCE weight ``w_c = (N - n_c) / n_c`` of every foreground class, from the batch.

    ``N`` is the number of counted elements in the whole batch and ``n_c`` the target mass of
    class ``c`` (``count_from="target"``) or its summed predicted probability
    (``"prediction"``, detached: a weight, not a term to differentiate). When ``n_c`` is 0 or
    ``N`` there is nothing to balance and ``w_c = 1``; ``n_c`` is floored at one element so a
    near-empty soft class cannot blow the weight up. The background (channel 0 when
    ``C >= 2``) keeps weight 1, so for binary logits ``w`` is the positive-term weight.

    Returns:
        ``(C,)`` float32 weights (binary: ``(1,)``).
    """
    counts = tgt.dense() if count_from == "target" else probabilities(logits).detach()
    if tgt.mask is not None:
        counts = counts * tgt.mask.unsqueeze(1)
    # a tensor, not a Python float: no device sync in the training step
    total = (
        tgt.mask.sum().float()
        if tgt.mask is not None
        else torch.tensor(float(counts[:, 0].numel()), device=counts.device)
    )
    n = counts.sum(dim=(0, *range(2, counts.ndim)))
    w = torch.where((n > 0) & (n < total), (total - n) / n.clamp_min(1.0), torch.ones_like(n))
    if tgt.num_classes > 1:
        w[0] = 1.0
    return w


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    count_from: CountFrom = "prediction",
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Weighted cross entropy (WCE) with the batch-balancing weight of seed 003.

    Binary (seed 003, after Sudre et al., 2017):
    ``WCE = -1/N sum_n (w r_n log p_n + (1 - r_n) log(1 - p_n))`` with
    ``w = (N - sum_n p_n) / sum_n p_n`` (SPEC section 2): ``p_n`` is the *predicted* foreground
    probability, so the default ``count_from="prediction"`` weighs the positives by the
    predicted negative-to-positive ratio of the batch (detached). ``count_from="target"``
    counts the target instead, ``w = (N - sum_n r_n) / sum_n r_n``: the ratio of negative to
    positive elements, which is what most WCE users mean by balancing (our default before
    issue 19).
    Multi-class: every foreground class ``c`` gets ``w_c = (N - n_c) / n_c`` and the
    background 1 (for ``C == 2`` this is the binary form), then :func:`cross_entropy`'s
    weighted mean. See :func:`batch_balance_weight` for empty and all-positive batches: the
    loss stays finite when the batch has no positives.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels or a float one-hot / soft target (see :func:`cross_entropy`).
        count_from: ``"prediction"`` (default, the seed's ``sum_n p_n``) or ``"target"``:
            what ``n_c`` counts.
        include_background: if ``False`` (``C >= 2``) the background gets weight 0.
        ignore_index: label whose elements are excluded from the loss and from ``N``, ``n_c``.
        reduction: ``"mean" | "sum" | "none"``.

    Returns:
        The loss, float32.

    Example:
        >>> logits = torch.tensor([[[-1.0, -1.0, -1.0, 1.0]]])  # sum p = 3 s(-1) + s(1) = 1.54: w = 1.60
        >>> round(weighted_cross_entropy(logits, torch.tensor([[0, 0, 0, 1]])).item(), 4)
        0.3603
        >>> round(weighted_cross_entropy(logits, torch.tensor([[0, 0, 0, 1]]), count_from="target").item(), 4)
        0.4699
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("count_from", count_from, COUNT_FROM)
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        w = batch_balance_weight(logits, tgt, count_from=count_from)
        if not include_background and tgt.num_classes > 1:
            w[0] = 0.0
        loss, normalizer = cross_entropy_terms(logits.float(), tgt, w)
        return reduce_loss(loss, reduction, mask=tgt.mask, normalizer=normalizer)


class CrossEntropyLoss(ClassWeightedLoss):
    """Cross entropy on logits: softmax CE for ``C >= 2``, sigmoid BCE for ``C == 1``.

    See :func:`medbalance.losses.functional.cross_entropy` for the exact definition, the
    weighted mean and the binary ``weight`` (positive-class weight or background, foreground pair).

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.cross_entropy`, documented there; ``forward`` takes
    ``logits`` and ``target``.

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


class WeightedCrossEntropyLoss(nn.Module):
    """Weighted cross entropy (WCE) whose weights balance every batch (seed 003).

    A separate class rather than ``CrossEntropyLoss(weight="batch")``: ``weight`` stays a
    fixed per-class buffer everywhere (and ``class_weight`` in configs), while these weights
    change with every batch. See :func:`medbalance.losses.functional.weighted_cross_entropy`.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.weighted_cross_entropy`, documented there; ``forward``
    takes ``logits`` and ``target``.

    Example:
        >>> import torch
        >>> loss = WeightedCrossEntropyLoss()
        >>> loss(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)).item()  # no positives
        0.6931471824645996
    """

    def __init__(
        self,
        *,
        count_from: CountFrom = "prediction",
        include_background: bool = True,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_choice("count_from", count_from, COUNT_FROM)
        check_choice("reduction", reduction, REDUCTIONS)
        check_ignore_index(ignore_index)
        self.count_from = count_from
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return weighted_cross_entropy(
            logits,
            target,
            count_from=self.count_from,
            include_background=self.include_background,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"count_from={self.count_from!r}, include_background={self.include_background}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
