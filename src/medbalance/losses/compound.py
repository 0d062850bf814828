"""Weighted sums of losses: :class:`CompoundLoss` and the named combinations (Dice + CE,
Dice + Focal)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import Tensor, nn

from medbalance.losses._reduction import BatchReduction, ClassReduction, Reduction, scalar_term_args
from medbalance.losses._target import Target, format_target
from medbalance.losses._validate import ClassWeight, check_non_negative
from medbalance.losses.ce import CrossEntropyLoss, cross_entropy
from medbalance.losses.dice import DiceLoss, dice_loss
from medbalance.losses.focal import Alpha, FocalLoss, focal_loss

__all__ = ["compound_loss", "dice_ce_loss", "dice_focal_loss", "CompoundLoss", "DiceCELoss", "DiceFocalLoss"]


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
        # a unit weight multiplies nothing: skipping it spares a node of the backward pass
        weighted = value if term_weight == 1.0 else value * term_weight
        total = weighted if total is None else total + weighted
    assert total is not None
    return total


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
    10: ``include_background`` is honoured by every part).

    Args:
        logits: ``(N, C, *spatial)`` raw scores.
        target: labels or a float one-hot / soft target, as for :func:`dice_loss`.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        smooth, batch_reduction, squared: of the Dice term, as in :func:`dice_loss`.
        include_background, weight, ignore_index: passed to both terms.
        reduction: ``"mean"`` or ``"sum"``, passed to both terms (their unreduced shapes differ).

    Returns:
        The weighted sum, a scalar.

    Example:
        >>> logits = torch.zeros(1, 2, 4, 4)
        >>> dice_ce_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long)).item() > 0
        True
    """
    common = scalar_term_args(
        reduction, weight=weight, include_background=include_background, ignore_index=ignore_index
    )
    target = _shared_target(logits, target, ignore_index)
    dice = dice_loss(logits, target, smooth=smooth, batch_reduction=batch_reduction, squared=squared, **common)
    return compound_loss([(dice, lambda_dice), (cross_entropy(logits, target, **common), lambda_ce)])


def dice_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    lambda_dice: float = 1.0,
    lambda_focal: float = 1.0,
    gamma: float = 2.0,
    alpha: Alpha = None,
    smooth: float = 1e-5,
    include_background: bool = True,
    weight: ClassWeight = None,
    batch_reduction: BatchReduction = "image",
    squared: bool = False,
    class_reduction: ClassReduction = "mean",
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """``lambda_dice * dice_loss + lambda_focal * focal_loss`` (AnatomyNet; seed 003's Dice + Focal).

    ``class_reduction="sum"`` is AnatomyNet's and seed 003's ``C - sum_c Dice_c``; ``"mean"``,
    the default, divides it by ``C`` (see :class:`DiceFocalLoss`).

    Args:
        logits: ``(N, C, *spatial)`` raw scores.
        target: labels or a float one-hot / soft target, as for :func:`dice_loss`.
        lambda_dice: weight of the Dice term.
        lambda_focal: weight of the focal term.
        gamma, alpha: of the focal term, as in :func:`focal_loss`.
        smooth, batch_reduction, squared, class_reduction: of the Dice term, as in :func:`dice_loss`.
        include_background, weight, ignore_index: passed to both terms.
        reduction: ``"mean"`` or ``"sum"``, passed to both terms (their unreduced shapes differ).

    Returns:
        The weighted sum, a scalar.

    Example:
        >>> logits = torch.zeros(1, 2, 4, 4)
        >>> dice_focal_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long)).item() > 0
        True
    """
    common = scalar_term_args(
        reduction, weight=weight, include_background=include_background, ignore_index=ignore_index
    )
    target = _shared_target(logits, target, ignore_index)
    dice = dice_loss(
        logits,
        target,
        smooth=smooth,
        batch_reduction=batch_reduction,
        squared=squared,
        class_reduction=class_reduction,
        **common,
    )
    focal = focal_loss(logits, target, gamma=gamma, alpha=alpha, **common)
    return compound_loss([(dice, lambda_dice), (focal, lambda_focal)])


def _shared_target(logits: Tensor, target: Tensor, ignore_index: int | None) -> Target:
    """The target validated once for the Dice term and its partner: its one-hot map, which the
    Dice needs anyway, is made first and checks the labels' range (``check_range=False``)."""
    shared = format_target(logits, target, ignore_index=ignore_index, check_range=False)
    shared.dense()
    return shared


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
        return compound_loss([(values[name], self.term_weights[name]) for name in values])

    def extra_repr(self) -> str:
        return "term_weights=" + repr(self.term_weights)


class _SharedTargetLoss(CompoundLoss):
    """A compound of medbalance losses sharing ``ignore_index``: the target is validated once
    and the :class:`~medbalance.losses._target.Target` handed to every part."""

    def __init__(self, terms: Sequence, *, ignore_index: int | None) -> None:
        super().__init__(terms)
        self.ignore_index = ignore_index

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        return super().terms(logits, _shared_target(logits, target, self.ignore_index))


class DiceCELoss(_SharedTargetLoss):
    """``lambda_dice * DiceLoss + lambda_ce * CrossEntropyLoss`` with shared arguments.

    ``weight``, ``include_background`` and ``ignore_index`` go to both parts, so excluding the
    background is honoured by the CE too (background elements get CE weight 0; MONAI's
    ``DiceCELoss`` applies it to the Dice only). Term names: ``"dice"``, ``"ce"``.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.dice_ce_loss`, documented there; ``forward`` takes
    ``logits`` and ``target``.

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
        common = scalar_term_args(
            reduction, weight=weight, include_background=include_background, ignore_index=ignore_index
        )
        dice = DiceLoss(smooth=smooth, batch_reduction=batch_reduction, squared=squared, **common)
        super().__init__(
            [("dice", dice, lambda_dice), ("ce", CrossEntropyLoss(**common), lambda_ce)], ignore_index=ignore_index
        )


class DiceFocalLoss(_SharedTargetLoss):
    """``lambda_dice * DiceLoss + lambda_focal * FocalLoss`` with shared arguments.

    ``weight``, ``include_background`` and ``ignore_index`` go to both parts. Unlike MONAI's
    ``DiceFocalLoss`` (always a sigmoid focal term), the focal part is softmax for ``C >= 2``
    like the Dice. Term names: ``"dice"``, ``"focal"``.

    AnatomyNet (Zhu et al. 2019) and seed 003 write ``L = C - sum_c Dice_c + lambda L_Focal``:
    the Dice term *summed* over the classes, with the focal term summed over the classes
    per pixel and averaged over the pixels (as :class:`FocalLoss` does). That is
    ``class_reduction="sum"``; the default ``"mean"`` averages the Dice over the classes
    (MONAI, nnU-Net), which shrinks the Dice's share of the balance by the factor ``C``.
    The experiments (loss study, reuse background) build Dice + Focal as separate ``dice``
    and ``focal`` terms and so use the mean unless a spec sets ``class_reduction: sum``.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.dice_focal_loss`, documented there; ``forward`` takes
    ``logits`` and ``target``.

    Example:
        >>> import torch
        >>> loss = DiceFocalLoss(lambda_focal=2.0, gamma=2.0)
        >>> loss(torch.zeros(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))).ndim
        0
    """

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        gamma: float = 2.0,
        alpha: Alpha = None,
        smooth: float = 1e-5,
        include_background: bool = True,
        weight: ClassWeight = None,
        batch_reduction: BatchReduction = "image",
        squared: bool = False,
        class_reduction: ClassReduction = "mean",
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        common = scalar_term_args(
            reduction, weight=weight, include_background=include_background, ignore_index=ignore_index
        )
        dice = DiceLoss(
            smooth=smooth, batch_reduction=batch_reduction, squared=squared, class_reduction=class_reduction, **common
        )
        focal = FocalLoss(gamma=gamma, alpha=alpha, **common)
        super().__init__([("dice", dice, lambda_dice), ("focal", focal, lambda_focal)], ignore_index=ignore_index)
