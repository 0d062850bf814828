"""Long-tail losses built on class counts: class-balanced softmax CE (CSCE, Cui et al., CVPR
2019) and LDAM with deferred re-weighting (Cao et al., NeurIPS 2019), seed 001."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor, nn

from medbalance.losses._reduction import REDUCTIONS, Reduction, reduce_loss
from medbalance.losses._target import float32_compute, format_target, two_class_view
from medbalance.losses._validate import check_choice, check_ignore_index, check_positive, check_progress
from medbalance.losses.ce import cross_entropy_terms
from medbalance.losses.weights import effective_number_weights

__all__ = [
    "class_balanced_cross_entropy",
    "ldam_margins",
    "ldam_loss",
    "ClassBalancedCELoss",
    "LDAMLoss",
]

ClassCounts = Union[Tensor, Sequence[float]]


def _class_counts(class_counts: ClassCounts, *, beta: float) -> Tensor:
    """Validate counts (and ``beta``) once, as :func:`effective_number_weights` does; float32 copy."""
    effective_number_weights(class_counts, beta=beta)
    counts = class_counts if isinstance(class_counts, Tensor) else torch.as_tensor(class_counts)
    return counts.detach().to(dtype=torch.float32).clone()


def _check_count_length(counts: Tensor, num_classes: int, channels: int) -> None:
    if counts.numel() != num_classes:
        binary = "; binary logits take 2 counts, background then foreground" if channels == 1 else ""
        raise ValueError(
            f"class_counts has {counts.numel()} entries but logits have {channels} channel(s) "
            f"(expected one count per class{binary})"
        )


def _fold_background(
    weight: Tensor | None, logits: Tensor, num_classes: int, include_background: bool
) -> Tensor | None:
    """Weight 0 for class 0 when the background is excluded (``C >= 2``; binary: no effect)."""
    if include_background or logits.shape[1] == 1:
        return weight
    weight = torch.ones(num_classes, device=logits.device) if weight is None else weight.clone()
    weight[0] = 0.0
    return weight


def class_balanced_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassCounts,
    beta: float = 0.9999,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Class-balanced softmax cross entropy (CSCE): ``-w_y log softmax(z)_y``.

    ``w_j = (1 - beta) / (1 - beta^{n_j})`` with ``n_j`` the number of training samples of
    class ``j`` (Cui et al., CVPR 2019; seed 001), normalised to sum to the number of classes
    as in the reference code (:func:`medbalance.losses.weights.effective_number_weights`).
    ``"mean"`` is the weighted mean ``sum_i w_yi l_i / sum_i w_yi`` of
    :func:`cross_entropy` (LDAM-DRW's ``F.cross_entropy(weight=...)``), so the normalisation
    only matters for ``"sum"`` and ``"none"``. Binary logits (``C == 1``) are treated as the
    two-class softmax ``[0, z]``, so they take 2 counts.

    Args:
        logits: ``(N, C)`` classification or ``(N, C, *spatial)`` raw scores.
        target: labels or a float one-hot / soft target (see :func:`cross_entropy`).
        class_counts: ``(C,)`` training samples (or pixels) per class; binary: 2.
        beta: in ``[0, 1)``; **Default** 0.9999.
        include_background: if ``False`` (``C >= 2``) class 0 gets weight 0.
        ignore_index: label whose elements are excluded (label targets only).
        reduction: ``"mean" | "sum" | "none"``.

    Returns:
        The loss, float32.

    Example:
        >>> logits = torch.zeros(4, 3)
        >>> round(class_balanced_cross_entropy(logits, torch.tensor([0, 1, 2, 2]), class_counts=[500, 50, 5]).item(), 4)
        1.0986
    """
    check_choice("reduction", reduction, REDUCTIONS)
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        logits2, tgt2 = two_class_view(logits.float(), tgt)
        counts = class_counts if isinstance(class_counts, Tensor) else torch.as_tensor(class_counts)
        _check_count_length(counts, tgt2.num_classes, tgt.num_classes)
        w = effective_number_weights(counts, beta=beta).to(logits.device)
        w = _fold_background(w, logits, tgt2.num_classes, include_background)
        loss, normalizer = cross_entropy_terms(logits2, tgt2, w)
        return reduce_loss(loss, reduction, mask=tgt.mask, normalizer=normalizer)


def ldam_margins(class_counts: ClassCounts, *, max_margin: float = 0.5) -> Tensor:
    """LDAM margins ``m_j ∝ n_j^{-1/4}``, rescaled so the largest (rarest class) is ``max_margin``.

    The paper writes ``m_j = C / n_j^{1/4}``; the reference code picks ``C`` through this
    rescaling (SPEC section 10).

    Example:
        >>> ldam_margins([10000, 625, 16]).tolist()
        [0.10000000149011612, 0.20000000298023224, 0.5]
    """
    counts = class_counts if isinstance(class_counts, Tensor) else torch.as_tensor(class_counts, dtype=torch.float32)
    counts = counts.to(torch.float32)
    if counts.ndim != 1 or not bool(torch.isfinite(counts).all()) or bool((counts <= 0).any()):
        raise ValueError(
            f"class_counts must be a 1-D vector of positive finite counts for LDAM (a margin per "
            f"class), got {counts.tolist()}"
        )
    check_positive("max_margin", max_margin)
    margins = counts.pow(-0.25)
    return margins * (max_margin / margins.max())


def _check_ldam_args(scale: float, drw_start: float | None) -> None:
    check_positive("scale", scale)
    if drw_start is not None:
        if isinstance(drw_start, bool) or not isinstance(drw_start, (int, float)) or not 0.0 <= drw_start <= 1.0:
            raise ValueError(f"drw_start must be None or a progress value in [0, 1], got {drw_start!r}")


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassCounts,
    max_margin: float = 0.5,
    scale: float = 30.0,
    drw_start: float | None = 0.8,
    beta: float = 0.9999,
    progress: float = 0.0,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Label-distribution-aware margin loss with deferred re-weighting (LDAM-DRW).

    ``l_i = CE(s (z_i - m ⊙ y_i), y_i)``: the true-class logit loses its class margin
    ``m_y`` (:func:`ldam_margins`), everything is multiplied by the scale ``s`` and a
    softmax cross entropy follows (Cao et al., NeurIPS 2019). DRW: once
    ``progress >= drw_start`` the CE is weighted by the effective-number weights
    ``(1 - beta) / (1 - beta^{n_j})`` normalised to sum to ``C`` (weighted mean, as the
    reference code's ``F.cross_entropy(weight=...)``). A soft target ``y`` subtracts
    ``(sum_c m_c y_c) y``, which for a one-hot target is ``m_y`` off the true-class logit.

    LDAM was designed for classification logits ``(N, C)`` from a cosine (normalised-weight)
    classifier, so ``z`` lies in ``[-1, 1]`` and ``s = 30`` sharpens it; spatial logits are
    accepted as well (element-wise, as every CE here). Binary logits are the two-class
    softmax ``[0, z]`` and take 2 counts.

    Args:
        logits: ``(N, C)`` (or ``(N, C, *spatial)``) raw scores.
        target: labels or a float one-hot / soft target.
        class_counts: ``(C,)`` positive training-sample counts per class; binary: 2.
        max_margin: the rarest class's margin; **Default** 0.5.
        scale: logit scale ``s``; **Default** 30.
        drw_start: progress from which DRW weights apply; **Default** 0.8 (epoch 160 of 200,
            SPEC section 10); ``None``: never (plain LDAM).
        beta: effective-number ``beta`` of the DRW weights; **Default** 0.9999.
        progress: training progress ``T / T_max`` in ``[0, 1]``.
        include_background: if ``False`` (``C >= 2``) class 0 gets weight 0.
        ignore_index: label whose elements are excluded (label targets only).
        reduction: ``"mean" | "sum" | "none"``.

    Returns:
        The loss, float32.

    Example:
        >>> logits = torch.tensor([[0.9, -0.9]])
        >>> plain = ldam_loss(logits, torch.tensor([0]), class_counts=[100, 100])
        >>> round(plain.item(), 4)  # CE of 30 * (0.4, -0.9)
        0.0
        >>> round(ldam_loss(logits, torch.tensor([1]), class_counts=[100, 100]).item(), 4)  # 30 * (0.9, -1.4)
        69.0
    """
    check_choice("reduction", reduction, REDUCTIONS)
    _check_ldam_args(scale, drw_start)
    progress = check_progress(progress)
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        logits2, tgt2 = two_class_view(logits.float(), tgt)
        margins = ldam_margins(class_counts, max_margin=max_margin).to(logits.device)
        _check_count_length(margins, tgt2.num_classes, tgt.num_classes)
        w = None
        if drw_start is not None and progress >= drw_start:
            w = effective_number_weights(class_counts, beta=beta).to(logits.device)
        w = _fold_background(w, logits, tgt2.num_classes, include_background)
        y = tgt2.dense()
        shift = (y * margins.view(1, -1, *([1] * (logits.ndim - 2)))).sum(dim=1, keepdim=True)
        loss, normalizer = cross_entropy_terms(scale * (logits2 - shift * y), tgt2, w)
        return reduce_loss(loss, reduction, mask=tgt.mask, normalizer=normalizer)


class _ClassCountLoss(nn.Module):
    """Base of the losses weighted by training class counts: the counts as a buffer, ``beta``,
    ``include_background``, ``ignore_index`` and ``reduction``, validated once here."""

    class_counts: Tensor

    def __init__(
        self,
        class_counts: ClassCounts,
        *,
        beta: float,
        include_background: bool,
        ignore_index: int | None,
        reduction: Reduction,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        check_ignore_index(ignore_index)
        self.register_buffer("class_counts", _class_counts(class_counts, beta=beta))
        self.beta = float(beta)
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.reduction = reduction

    def _common(self) -> dict:
        return dict(
            class_counts=self.class_counts,
            beta=self.beta,
            include_background=self.include_background,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"class_counts={self.class_counts.tolist()}, beta={self.beta}, include_background="
            f"{self.include_background}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )


class ClassBalancedCELoss(_ClassCountLoss):
    """Class-balanced softmax cross entropy (CSCE), weights from the effective number of samples.

    See :func:`medbalance.losses.functional.class_balanced_cross_entropy`.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.class_balanced_cross_entropy`, documented there;
    ``forward`` takes ``logits`` and ``target``. ``class_counts`` is kept as a buffer.

    Example:
        >>> import torch
        >>> loss = ClassBalancedCELoss([500, 50, 5])
        >>> loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2])).shape
        torch.Size([])
    """

    def __init__(
        self,
        class_counts: ClassCounts,
        *,
        beta: float = 0.9999,
        include_background: bool = True,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            class_counts,
            beta=beta,
            include_background=include_background,
            ignore_index=ignore_index,
            reduction=reduction,
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return class_balanced_cross_entropy(logits, target, **self._common())


class LDAMLoss(_ClassCountLoss):
    """LDAM loss with deferred re-weighting (LDAM-DRW); reads the ``progress`` attribute.

    See :func:`medbalance.losses.functional.ldam_loss`. ``progress`` (``T / T_max``, default
    0.0) is set from outside, by :func:`medbalance.losses.dynamic.set_progress`; ``forward``
    never changes it.

    The constructor takes the keyword arguments of :func:`medbalance.losses.functional.ldam_loss`,
    documented there; ``forward`` takes ``logits`` and ``target``. ``class_counts`` is kept as a
    buffer.

    Example:
        >>> import torch
        >>> loss = LDAMLoss([500, 50, 5], drw_start=0.8)
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
        >>> before = loss(logits, target)
        >>> loss.progress = 0.9  # usually set_progress(model_and_loss, 0.9)
        >>> bool(loss(logits, target) != before)
        True
    """

    class_counts: Tensor

    def __init__(
        self,
        class_counts: ClassCounts,
        *,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_start: float | None = 0.8,
        beta: float = 0.9999,
        include_background: bool = True,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(
            class_counts,
            beta=beta,
            include_background=include_background,
            ignore_index=ignore_index,
            reduction=reduction,
        )
        _check_ldam_args(scale, drw_start)
        ldam_margins(class_counts, max_margin=max_margin)
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self.drw_start = None if drw_start is None else float(drw_start)
        self.progress = 0.0

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return ldam_loss(
            logits,
            target,
            max_margin=self.max_margin,
            scale=self.scale,
            drw_start=self.drw_start,
            progress=self.progress,
            **self._common(),
        )

    def extra_repr(self) -> str:
        return (
            f"max_margin={self.max_margin}, scale={self.scale}, drw_start={self.drw_start}, "
            f"progress={self.progress}, {super().extra_repr()}"
        )
