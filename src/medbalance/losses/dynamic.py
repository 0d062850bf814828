"""Dynamic losses of seed 001 (eq. 19-20): ``theta * first + (1 - theta) * second`` with
``theta = 1 - progress^2``, the DFLCE / DFLCSCE instances, and :func:`set_progress`.

Convention for everything that depends on training progress: a module holds a float
attribute ``progress`` (``T / T_max`` in ``[0, 1]``, default 0.0) that the training engine
sets through :func:`set_progress`; ``forward`` only reads it. Functional forms take
``progress=`` as a keyword.
"""

from __future__ import annotations

from torch import Tensor, nn

from medbalance.losses._reduction import Reduction, scalar_term_args
from medbalance.losses._validate import ClassWeight, check_progress
from medbalance.losses.balanced import (
    ClassBalancedCELoss,
    ClassCounts,
    class_balanced_cross_entropy,
)
from medbalance.losses.ce import CrossEntropyLoss, cross_entropy
from medbalance.losses.compound import compound_loss
from medbalance.losses.focal import Alpha, FocalLoss, focal_loss

__all__ = [
    "dynamic_theta",
    "dynamic_loss",
    "dflce_loss",
    "dflcsce_loss",
    "set_progress",
    "DynamicLoss",
    "DFLCELoss",
    "DFLCSCELoss",
]


def dynamic_theta(progress: float) -> float:
    """``theta = 1 - progress^2``: 1 at the start of training, 0 at the end (seed 001).

    Example:
        >>> dynamic_theta(0.5)
        0.75
    """
    return 1.0 - check_progress(progress) ** 2


def dynamic_loss(first: Tensor, second: Tensor, *, progress: float) -> Tensor:
    """``theta * first + (1 - theta) * second`` of two scalar loss values, ``theta = 1 - progress^2``.

    Seed 001 eq. 19-20, written as a weighted sum (the paper's signs are garbled; SPEC
    section 2): training starts on ``first`` and ends on ``second``.

    Args:
        first: scalar loss weighted by ``theta`` (Focal in DFLCE / DFLCSCE).
        second: scalar loss weighted by ``1 - theta`` (CE / CSCE).
        progress: ``T / T_max`` in ``[0, 1]`` (epoch or iteration).

    Example:
        >>> dynamic_loss(torch.tensor(1.0), torch.tensor(3.0), progress=0.5).item()
        1.5
    """
    theta = dynamic_theta(progress)
    return compound_loss([(first, theta), (second, 1.0 - theta)])


def set_progress(module: nn.Module, value: float) -> None:
    """Set ``progress = value`` on ``module`` and every submodule that has a ``progress`` attribute.

    The engine calls this each step (or epoch) with ``T / T_max``; losses read it in
    ``forward`` and never change it.

    Raises:
        ValueError: if ``value`` is not a number in ``[0, 1]``.

    Example:
        >>> loss = DFLCELoss()
        >>> set_progress(loss, 0.5)
        >>> loss.progress
        0.5
    """
    value = check_progress(value)
    for sub in module.modules():
        if hasattr(sub, "progress"):
            sub.progress = value


class DynamicLoss(nn.Module):
    """``theta * first + (1 - theta) * second`` with ``theta = 1 - progress^2`` (seed 001).

    DFLCE (Focal -> CE) and DFLCSCE (Focal -> CSCE) are instances: :class:`DFLCELoss`,
    :class:`DFLCSCELoss`. ``progress`` (default 0.0) is set by :func:`set_progress`, which
    also reaches progress-aware parts (e.g. :class:`~medbalance.losses.balanced.LDAMLoss`).

    Args:
        first: loss module weighted by ``theta`` (dominant early in training).
        second: loss module weighted by ``1 - theta`` (dominant late).

    Example:
        >>> import torch
        >>> loss = DynamicLoss(FocalLoss(), CrossEntropyLoss())
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
        >>> set_progress(loss, 1.0)
        >>> bool(loss(logits, target) == CrossEntropyLoss()(logits, target))
        True
    """

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        for name, part in (("first", first), ("second", second)):
            if not isinstance(part, nn.Module):
                raise TypeError(f"{name} must be an nn.Module loss, got {type(part).__name__}")
        self.first = first
        self.second = second
        self.progress = 0.0

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Unweighted values of both parts, ``{"first": ..., "second": ...}``, for logging."""
        return {"first": self.first(logits, target), "second": self.second(logits, target)}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        values = self.terms(logits, target)
        return dynamic_loss(values["first"], values["second"], progress=self.progress)

    def extra_repr(self) -> str:
        return f"progress={self.progress}"


def dflce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    progress: float = 0.0,
    gamma: float = 2.0,
    alpha: Alpha = None,
    weight: ClassWeight = None,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """DFLCE (seed 001 eq. 19): ``theta * focal_loss + (1 - theta) * cross_entropy``.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels or a float one-hot / soft target, as for :func:`cross_entropy`.
        progress: training progress ``T / T_max`` in ``[0, 1]``; ``theta = 1 - progress^2``.
        gamma, alpha: of the focal term, as in :func:`focal_loss`.
        weight, include_background, ignore_index: passed to both terms.
        reduction: ``"mean"`` or ``"sum"``, passed to both terms.

    Returns:
        The weighted sum, a scalar.

    Example:
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
        >>> bool(dflce_loss(logits, target, progress=0.0) == focal_loss(logits, target))
        True
    """
    common = scalar_term_args(
        reduction, weight=weight, include_background=include_background, ignore_index=ignore_index
    )
    first = focal_loss(logits, target, gamma=gamma, alpha=alpha, **common)
    return dynamic_loss(first, cross_entropy(logits, target, **common), progress=progress)


def dflcsce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: ClassCounts,
    progress: float = 0.0,
    beta: float = 0.9999,
    gamma: float = 2.0,
    alpha: Alpha = None,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """DFLCSCE (seed 001 eq. 20): ``theta * focal_loss + (1 - theta) * class_balanced_cross_entropy``.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels or a float one-hot / soft target, as for :func:`cross_entropy`.
        class_counts: ``(C,)`` training samples per class (binary: 2) of the CSCE term.
        progress: training progress ``T / T_max`` in ``[0, 1]``; ``theta = 1 - progress^2``.
        beta: effective-number ``beta`` of the CSCE term (**Default** 0.9999).
        gamma, alpha: of the focal term, as in :func:`focal_loss`.
        include_background, ignore_index: passed to both terms.
        reduction: ``"mean"`` or ``"sum"``, passed to both terms.

    Returns:
        The weighted sum, a scalar.

    Example:
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
        >>> value = dflcsce_loss(logits, target, class_counts=[500, 50, 5], progress=0.5)
        >>> value.shape
        torch.Size([])
    """
    common = scalar_term_args(reduction, include_background=include_background, ignore_index=ignore_index)
    first = focal_loss(logits, target, gamma=gamma, alpha=alpha, **common)
    second = class_balanced_cross_entropy(logits, target, class_counts=class_counts, beta=beta, **common)
    return dynamic_loss(first, second, progress=progress)


class DFLCELoss(DynamicLoss):
    """DFLCE: Focal loss early, cross entropy late (seed 001 eq. 19); see :func:`dflce_loss`.

    Term names: ``"first"`` (focal), ``"second"`` (CE).

    The constructor takes the keyword arguments of :func:`medbalance.losses.functional.dflce_loss`,
    documented there; ``forward`` takes ``logits`` and ``target``.

    Example:
        >>> import torch
        >>> loss = DFLCELoss(gamma=2.0)
        >>> loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2])).ndim
        0
    """

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
        common = scalar_term_args(
            reduction, weight=weight, include_background=include_background, ignore_index=ignore_index
        )
        super().__init__(FocalLoss(gamma=gamma, alpha=alpha, **common), CrossEntropyLoss(**common))


class DFLCSCELoss(DynamicLoss):
    """DFLCSCE: Focal loss early, class-balanced CE late (seed 001 eq. 20); see :func:`dflcsce_loss`.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.dflcsce_loss`, documented there; ``forward`` takes
    ``logits`` and ``target``.

    Example:
        >>> import torch
        >>> loss = DFLCSCELoss([500, 50, 5])
        >>> loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 2])).ndim
        0
    """

    def __init__(
        self,
        class_counts: ClassCounts,
        *,
        beta: float = 0.9999,
        gamma: float = 2.0,
        alpha: Alpha = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        common = scalar_term_args(reduction, include_background=include_background, ignore_index=ignore_index)
        super().__init__(
            FocalLoss(gamma=gamma, alpha=alpha, **common),
            ClassBalancedCELoss(class_counts, beta=beta, **common),
        )
