"""``nn.Module`` wrappers of :mod:`medbalance.losses.functional`.

Arguments are validated in ``__init__``; class weights are registered buffers (they follow
``.to(device)`` and are saved in ``state_dict``); ``forward`` never mutates the module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import Tensor, nn

from medbalance.losses import functional as LF
from medbalance.losses._utils import (
    BATCH_REDUCTIONS,
    REDUCTIONS,
    BatchReduction,
    ClassWeight,
    Reduction,
    check_choice,
    check_class_weight,
    check_ignore_index,
    check_non_negative,
)

__all__ = ["CrossEntropyLoss", "DiceLoss", "CompoundLoss", "DiceCELoss"]


class _ClassWeightedLoss(nn.Module):
    """Base of the losses sharing ``weight`` (a buffer), ``include_background``,
    ``ignore_index`` and ``reduction``; validates them once, in ``__init__``."""

    weight: Tensor | None

    def __init__(
        self,
        *,
        weight: ClassWeight,
        include_background: bool,
        ignore_index: int | None,
        reduction: Reduction,
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        check_ignore_index(ignore_index)
        self.register_buffer("weight", check_class_weight(weight))
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.reduction = reduction

    def _common(self) -> dict:
        return dict(
            weight=self.weight,
            include_background=self.include_background,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        weight = None if self.weight is None else [round(w, 4) for w in self.weight.tolist()]
        return (
            f"weight={weight}, include_background={self.include_background}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )


class CrossEntropyLoss(_ClassWeightedLoss):
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
        return LF.cross_entropy(logits, target, **self._common())


class DiceLoss(_ClassWeightedLoss):
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
        return LF.dice_loss(
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


def _default_name(loss: nn.Module) -> str:
    """``DiceLoss`` -> ``"dice"``, ``CrossEntropyLoss`` -> ``"cross_entropy"``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", type(loss).__name__).lower()
    return snake.removesuffix("_loss") or snake


class CompoundLoss(nn.Module):
    """Weighted sum of losses, ``sum_k w_k L_k`` (e.g. Dice + CE, Dice + Focal + OB).

    Each part keeps its own arguments (``include_background``, ``weight``, ...); build the
    parts with the same values to have them honoured everywhere, as :class:`DiceCELoss` and
    :func:`medbalance.losses.build_loss` do. Use :meth:`terms` to log the unweighted value
    of every part; ``forward`` is their weighted sum.

    Args:
        terms: ``(loss, weight)`` or ``(name, loss, weight)`` items; ``loss`` is an
            ``nn.Module`` mapping ``(logits, target)`` to a scalar, ``weight`` a finite
            number ``>= 0``. Default names are the snake-case class names without ``Loss``
            (``"dice"``, ``"cross_entropy"``), numbered when repeated (``"dice_2"``).

    Example:
        >>> import torch
        >>> loss = CompoundLoss([(DiceLoss(), 1.0), ("ce", CrossEntropyLoss(), 0.5)])
        >>> logits, target = torch.zeros(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> sorted(loss.terms(logits, target))
        ['ce', 'dice']
    """

    def __init__(self, terms: Sequence[tuple[nn.Module, float] | tuple[str, nn.Module, float]]) -> None:
        super().__init__()
        if len(terms) == 0:
            raise ValueError("CompoundLoss needs at least one (loss, weight) term, got none")
        losses: dict[str, nn.Module] = {}
        weights: dict[str, float] = {}
        for index, item in enumerate(terms):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise ValueError(f"term {index} must be (loss, weight) or (name, loss, weight), got {item!r}")
            name, loss, weight = item if len(item) == 3 else (None, *item)
            if not isinstance(loss, nn.Module):
                raise TypeError(f"term {index} must hold an nn.Module loss, got {type(loss).__name__}")
            check_non_negative(f"weight of term {index}", weight)
            if name is None:
                base = _default_name(loss)
                name, suffix = base, 2
                while name in losses:
                    name, suffix = f"{base}_{suffix}", suffix + 1
            elif name in losses:
                raise ValueError(f"term {index} repeats the name {name!r}; term names must be unique")
            losses[name] = loss
            weights[name] = float(weight)
        self.losses = nn.ModuleDict(losses)
        # term weights are hyper-parameters (plain floats in config and repr), not tensor state
        self.term_weights = weights

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Unweighted value of every part, by name, in the order given."""
        return {name: loss(logits, target) for name, loss in self.losses.items()}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        values = self.terms(logits, target)
        return LF.compound_loss([(values[name], self.term_weights[name]) for name in values])

    def extra_repr(self) -> str:
        return "term_weights=" + repr(self.term_weights)


class DiceCELoss(CompoundLoss):
    """``lambda_dice * DiceLoss + lambda_ce * CrossEntropyLoss`` with shared arguments.

    ``weight``, ``include_background`` and ``ignore_index`` go to both parts, so excluding the
    background is honoured by the CE too (background elements get CE weight 0; MONAI's
    ``DiceCELoss`` applies it to the Dice only). Term names: ``"dice"``, ``"ce"``.

    Args:
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        smooth, batch_reduction, squared: as in :class:`DiceLoss`.
        include_background, weight, ignore_index: passed to both parts.
        reduction: ``"mean"`` or ``"sum"``, passed to both parts.

    Example:
        >>> import torch
        >>> loss = DiceCELoss(include_background=False)
        >>> loss(torch.zeros(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).ndim
        0
    """

    def __init__(
        self,
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
    ) -> None:
        check_choice("reduction", reduction, ("mean", "sum"))
        common = dict(
            weight=weight,
            include_background=include_background,
            ignore_index=ignore_index,
            reduction=reduction,
        )
        dice = DiceLoss(smooth=smooth, batch_reduction=batch_reduction, squared=squared, **common)
        super().__init__([("dice", dice, lambda_dice), ("ce", CrossEntropyLoss(**common), lambda_ce)])
