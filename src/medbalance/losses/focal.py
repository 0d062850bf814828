"""Focal loss (Lin et al., ICCV 2017): binary sigmoid form of seed 003 and multi-class softmax
form of seed 002 (eq. 2.2), one formula for both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from medbalance.losses._base import ClassWeightedLoss
from medbalance.losses._reduction import REDUCTIONS, Reduction, reduce_loss
from medbalance.losses._target import binary_margin, float32_compute, format_target, label_log_probs, two_class_view
from medbalance.losses._validate import ClassWeight, check_choice, check_non_negative, class_weight, two_class_weight

__all__ = ["focal_loss", "FocalLoss"]

Alpha = Union[float, Sequence[float], Tensor, None]


def check_alpha(alpha: Alpha) -> float | Tensor | None:
    """Validate ``alpha``: ``None``, a scalar in ``[0, 1]`` or a 1-D vector of finite values ``>= 0``.

    Returns:
        The scalar as a float, the vector as a float32 tensor (a copy), or ``None``.
    """
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] when a scalar (weight of the positive class), got {alpha!r}")
        return float(alpha)
    vector = alpha if isinstance(alpha, Tensor) else torch.as_tensor(alpha, dtype=torch.float32)
    vector = vector.detach().to(dtype=torch.float32).clone()
    if vector.ndim != 1 or vector.numel() == 0:
        raise ValueError(
            f"alpha must be a scalar or a 1-D sequence with one value per class, got shape {tuple(vector.shape)}"
        )
    if not bool(torch.isfinite(vector).all()) or bool((vector < 0).any()):
        raise ValueError(f"alpha must hold finite non-negative values, got {vector.tolist()}")
    return vector


def _alpha_per_class(alpha: float | Tensor | None, num_classes: int, device: torch.device) -> Tensor | None:
    """``alpha`` as one factor per class of the two-class view (``K = max(C, 2)`` classes)."""
    if alpha is None:
        return None
    if isinstance(alpha, float):
        # the binary convention: 1 - alpha for the background, alpha for every other class
        return torch.tensor([1.0 - alpha] + [alpha] * (num_classes - 1), device=device)
    if alpha.numel() != num_classes:
        binary = " (binary logits: 2 values, background then foreground, or a scalar)" if num_classes == 2 else ""
        raise ValueError(
            f"alpha has {alpha.numel()} entries but the loss has {num_classes} classes{binary}; "
            "alpha is never renormalised or broadcast"
        )
    return alpha.to(device)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: Alpha = None,
    weight: ClassWeight = None,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Focal loss ``l_i = -sum_k a_k w_k y_ik (1 - p_ik)^gamma log p_ik`` on logits.

    Multi-class (``C >= 2``, softmax): seed 002 eq. 2.2, ``-alpha_y (1 - p_y)^gamma log p_y``,
    written over the target distribution so soft targets work. Binary (``C == 1``, sigmoid):
    seed 003's ``-(alpha y (1 - p)^gamma log p + (1 - alpha)(1 - y) p^gamma log(1 - p))``,
    which is the same formula over the two classes (background ``1 - p``, foreground ``p``).
    With ``gamma = 0`` and no ``alpha`` it is :func:`cross_entropy` (unweighted).

    ``alpha`` is used exactly as given, never renormalised: ``None`` (all 1); a scalar
    ``a`` in ``[0, 1]`` gives the background ``1 - a`` and every other class ``a`` (binary:
    ``a`` on positives, as seed 003 with 0.25; MONAI's softmax convention); a sequence gives
    one factor per class (``C`` values; binary: 2, background first), e.g. from
    :func:`medbalance.losses.weights.class_weights`. ``weight`` multiplies as well, one per
    logit channel (binary: the positive class), like :func:`cross_entropy`'s.
    ``reduction="mean"`` is the plain mean over counted elements: ``alpha`` and ``weight``
    scale the loss, they are not normalised away (MONAI, torchvision).

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a float one-hot / soft
            target of the logits' shape.
        gamma: focusing exponent ``>= 0``; **Default** 2.
        alpha: class balance factor: ``None``, a scalar in ``[0, 1]`` or one value per class.
        weight: ``(C,)`` class weights, one per logit channel (binary: the positive class, or the
            pair background, foreground).
        include_background: if ``False`` (``C >= 2``) the background term gets weight 0 (the
            softmax still covers every class). No effect for ``C == 1``.
        ignore_index: label whose elements are excluded (label targets only).
        reduction: ``"mean" | "sum" | "none"``; ``"none"`` returns ``(N, *spatial)``.

    Returns:
        The loss, float32.

    Example:
        >>> from medbalance.losses.ce import cross_entropy
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
        >>> bool(focal_loss(logits, torch.tensor([0]), gamma=0.0) == cross_entropy(logits, torch.tensor([0])))
        True
        >>> round(focal_loss(torch.zeros(1, 1), torch.tensor([1]), alpha=0.25).item(), 4)  # 0.25 * 0.5^2 * log 2
        0.0433
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_non_negative("gamma", gamma)
    alpha = check_alpha(alpha)
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        w = class_weight(weight, logits, include_background=include_background)
        # the two-class view (binary: background, foreground) fixes one factor per class
        factor = _alpha_per_class(alpha, max(tgt.num_classes, 2), logits.device)
        if w is not None:
            w2 = two_class_weight(w) if tgt.num_classes == 1 else w
            factor = w2 if factor is None else factor * w2
        modulation = None
        if tgt.labels is not None:
            # a one-hot target keeps only the true class's term: no dense (N, C, ...) product
            # binary: the float 0/1 map spares label_log_probs an int64 -> float conversion
            labels = tgt.labels if tgt.foreground is None else tgt.foreground
            if tgt.num_classes == 1:
                # p_t = sigmoid(m), m = z (2 y - 1): 1 - p_t = sigmoid(-m) exactly, and sigmoid
                # is 3x faster than expm1 on CPU (forward and backward)
                margin = binary_margin(logits.float(), labels)
                log_p, modulation = F.logsigmoid(margin), torch.sigmoid(-margin)
            else:
                log_p = label_log_probs(logits.float(), labels)
            y = None if factor is None else factor[tgt.labels]
        else:
            logits2, tgt2 = two_class_view(logits.float(), tgt)
            log_p = F.log_softmax(logits2, dim=1)
            y = tgt2.dense()
            if factor is not None:
                y = y * factor.view(1, -1, *([1] * (logits.ndim - 2)))
        if modulation is None:
            # (1 - p) = -expm1(log p) keeps its digits near p = 1
            modulation = -torch.expm1(log_p)
        if gamma < 1.0:
            # the floor keeps gamma < 1 gradients finite at p = 1 (x^gamma is smooth at 0 otherwise,
            # and the clamp's backward costs as much as the rest of the loss on CPU)
            modulation = modulation.clamp_min(torch.finfo(torch.float32).tiny)
        modulation = modulation**gamma
        term = modulation * log_p if y is None else y * modulation * log_p
        loss = -(term if tgt.labels is not None else term.sum(dim=1))
        return reduce_loss(loss, reduction, mask=tgt.mask)


class FocalLoss(ClassWeightedLoss):
    """Focal loss on logits: sigmoid for ``C == 1``, softmax with per-class ``alpha`` for ``C >= 2``.

    See :func:`medbalance.losses.functional.focal_loss` for the definition and how ``alpha``
    and ``weight`` enter (never renormalised).

    The constructor takes the keyword arguments of :func:`medbalance.losses.functional.focal_loss`,
    documented there; ``forward`` takes ``logits`` and ``target``. A per-class ``alpha`` is kept as
    a buffer.

    Shape:
        - logits: ``(N, C, *spatial)`` or ``(N, C)``.
        - target: ``(N, *spatial)`` / ``(N, 1, *spatial)`` integer labels, or float of the
          logits' shape (one-hot or soft).
        - output: scalar, or ``(N, *spatial)`` for ``reduction="none"``.

    Example:
        >>> import torch
        >>> loss = FocalLoss(gamma=2.0, alpha=[0.1, 0.3, 0.6])
        >>> loss(torch.zeros(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).shape
        torch.Size([])
    """

    alpha_vector: Tensor | None

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: Alpha = None,
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
        check_non_negative("gamma", gamma)
        self.gamma = float(gamma)
        checked = check_alpha(alpha)
        # a per-class alpha is tensor state (moves with .to()); a scalar stays a hyper-parameter
        self.alpha_scalar = checked if isinstance(checked, float) else None
        self.register_buffer("alpha_vector", checked if isinstance(checked, Tensor) else None)

    @property
    def alpha(self) -> float | Tensor | None:
        return self.alpha_scalar if self.alpha_vector is None else self.alpha_vector

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha, **self._common())

    def extra_repr(self) -> str:
        alpha = self.alpha if self.alpha_vector is None else [round(a, 4) for a in self.alpha_vector.tolist()]
        return f"gamma={self.gamma}, alpha={alpha}, " + super().extra_repr()
