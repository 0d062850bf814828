"""Base class of the loss modules sharing ``weight``, ``include_background``, ``ignore_index``
and ``reduction``: arguments validated once in ``__init__``, class weights as buffers."""

from __future__ import annotations

from torch import Tensor, nn

from medbalance.losses._reduction import REDUCTIONS, Reduction
from medbalance.losses._validate import ClassWeight, check_choice, check_class_weight, check_ignore_index

__all__ = ["ClassWeightedLoss"]


class ClassWeightedLoss(nn.Module):
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
