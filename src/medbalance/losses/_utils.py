"""Shared validation and target formatting for every loss in :mod:`medbalance.losses`.

All losses follow one tensor convention (SPEC section 1):

- ``logits``: float ``(N, C, *spatial)`` raw scores, or ``(N, C)`` for classification.
  ``C == 1`` is binary (sigmoid), ``C >= 2`` multi-class (softmax, channel 0 = background).
- ``target``: an integer (or bool) label map ``(N, *spatial)`` or ``(N, 1, *spatial)`` with
  values in ``[0, C)`` (binary: ``{0, 1}``), optionally holding ``ignore_index``; or a float
  tensor of exactly the logits' shape holding one-hot or soft targets in ``[0, 1]``.

The helpers here are the only place where those rules are checked, so every loss raises the
same one-line ``ValueError`` for the same mistake.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BATCH_REDUCTIONS",
    "REDUCTIONS",
    "ClassWeight",
    "Reduction",
    "BatchReduction",
    "Target",
    "check_choice",
    "check_ignore_index",
    "check_non_negative",
    "check_logits",
    "format_target",
    "probabilities",
    "expand_binary_logits",
    "float32_compute",
    "check_class_weight",
    "class_weight",
    "weighted_class_mean",
    "reduce_loss",
]

Reduction = Literal["mean", "sum", "none"]
BatchReduction = Literal["image", "batch"]
ClassWeight = Union[Tensor, Sequence[float], None]

REDUCTIONS: tuple[str, ...] = get_args(Reduction)
BATCH_REDUCTIONS: tuple[str, ...] = get_args(BatchReduction)


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``.

    Example:
        >>> check_choice("reduction", "avg", REDUCTIONS)
        Traceback (most recent call last):
        ...
        ValueError: reduction must be one of 'mean', 'sum', 'none', got 'avg'
    """
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number ``>= 0`` (e.g. ``smooth``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_ignore_index(ignore_index: int | None) -> None:
    """Raise ``TypeError`` unless ``ignore_index`` is an int or ``None``."""
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def check_logits(logits: Tensor) -> None:
    """Check that ``logits`` is a floating tensor ``(N, C, *spatial)`` with ``C >= 1``."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating-point tensor of raw scores, got dtype {logits.dtype}")
    if logits.ndim < 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, C, *spatial) or (N, C) with C >= 1, got {_shape(logits.shape)}")


@dataclass(frozen=True)
class Target:
    """A validated target in the forms losses consume.

    Attributes:
        num_classes: ``C``, the number of logit channels (1 for binary).
        labels: ``(N, *spatial)`` int64 class indices for label targets (ignored positions
            hold 0), ``None`` for float targets.
        soft: the float target ``(N, C, *spatial)`` as given (float32), ``None`` for label
            targets.
        mask: ``(N, *spatial)`` bool, ``True`` where the element counts; ``None`` when no
            element is ignored.
    """

    num_classes: int
    labels: Tensor | None
    soft: Tensor | None
    mask: Tensor | None

    def dense(self) -> Tensor:
        """The target as float32 ``(N, C, *spatial)``: one-hot for labels (for ``C == 1`` the
        0/1 foreground map), zero at ignored elements."""
        if self.soft is not None:
            return self.soft
        assert self.labels is not None
        if self.num_classes == 1:
            dense = self.labels.unsqueeze(1).float()
        else:
            dense = F.one_hot(self.labels, self.num_classes).movedim(-1, 1).float()
        if self.mask is not None:
            dense = dense * self.mask.unsqueeze(1)
        return dense


def format_target(logits: Tensor, target: Tensor, *, ignore_index: int | None = None) -> Target:
    """Validate ``(logits, target)`` against SPEC section 1 and normalise the target.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: integer/bool labels ``(N, *spatial)`` or ``(N, 1, *spatial)`` with values in
            ``[0, C)`` (binary: ``{0, 1}``), or a float tensor of the logits' shape with values
            in ``[0, 1]``.
        ignore_index: label value whose elements are excluded from the loss; only meaningful
            for label targets.

    Returns:
        The validated :class:`Target`.

    Raises:
        TypeError: if a dtype is wrong.
        ValueError: on a shape mismatch, an out-of-range label or soft value, or an
            ``ignore_index`` given with a float target.

    Example:
        >>> logits = torch.zeros(2, 3, 4, 4)
        >>> format_target(logits, torch.full((2, 4, 4), 7))
        Traceback (most recent call last):
        ...
        ValueError: target has label 7 but logits have 3 classes (expected values in [0, 3))
    """
    check_logits(logits)
    check_ignore_index(ignore_index)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    num_classes = logits.shape[1]
    if target.dtype.is_floating_point:
        return _format_soft_target(logits, target, ignore_index)
    if target.dtype.is_complex:
        raise TypeError(f"target must be an integer, bool or float tensor, got dtype {target.dtype}")

    label_shape = (logits.shape[0], *logits.shape[2:])
    if target.shape == (logits.shape[0], 1, *logits.shape[2:]):
        target = target.squeeze(1)
    elif target.shape != label_shape:
        expected = _shape(label_shape)
        expected_ch = _shape((logits.shape[0], 1, *logits.shape[2:]))
        raise ValueError(
            f"target label map must have shape {expected} or {expected_ch} to match logits "
            f"{_shape(logits.shape)}, got {_shape(target.shape)}"
        )
    labels = target.long()
    mask = None
    if ignore_index is not None:
        keep = labels != ignore_index
        if not bool(keep.all()):
            mask = keep
            labels = torch.where(keep, labels, torch.zeros_like(labels))
    if target.dtype != torch.bool and labels.numel() > 0:
        _check_label_range(labels if mask is None else labels[mask], num_classes, ignore_index)
    return Target(num_classes=num_classes, labels=labels, soft=None, mask=mask)


def _check_label_range(labels: Tensor, num_classes: int, ignore_index: int | None) -> None:
    if labels.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(labels))
    bad = low if low < 0 else high if high >= max(num_classes, 2) else None
    if bad is None:
        return
    ignore = "" if ignore_index is None else f" or ignore_index={ignore_index}"
    if num_classes == 1:
        raise ValueError(
            f"target has label {bad} but logits have 1 channel (binary: expected values in {{0, 1}}{ignore})"
        )
    raise ValueError(
        f"target has label {bad} but logits have {num_classes} classes (expected values in [0, {num_classes}){ignore})"
    )


def _format_soft_target(logits: Tensor, target: Tensor, ignore_index: int | None) -> Target:
    if target.shape != logits.shape:
        raise ValueError(
            f"float target must have the logits' shape {_shape(logits.shape)} (one-hot or soft, one "
            f"channel per class), got {_shape(target.shape)}; pass an integer tensor for a label map"
        )
    if ignore_index is not None:
        raise ValueError(
            f"ignore_index={ignore_index} needs an integer label target, got a float target of dtype {target.dtype}"
        )
    soft = target.float()
    if soft.numel() > 0:
        if not bool(torch.isfinite(soft).all()):
            raise ValueError("target contains NaN or inf (expected one-hot or soft values in [0, 1])")
        low, high = (float(v) for v in torch.aminmax(soft))
        if low < 0.0 or high > 1.0:
            raise ValueError(f"target has values in [{low:g}, {high:g}] (expected one-hot or soft values in [0, 1])")
    return Target(num_classes=logits.shape[1], labels=None, soft=soft, mask=None)


def float32_compute(logits: Tensor) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``logits``' device so losses run in float32.

    Inside it, call ``logits.float()``: half-precision softmax and the large sums of region
    losses overflow or lose the small classes (SPEC section 10).
    """
    device_type = logits.device.type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def probabilities(logits: Tensor) -> Tensor:
    """Class probabilities in float32: sigmoid for ``C == 1``, softmax over channels otherwise.

    Args:
        logits: ``(N, C, *spatial)`` raw scores of any float dtype.

    Returns:
        ``(N, C, *spatial)`` float32 probabilities.

    Example:
        >>> probabilities(torch.zeros(1, 1, 2)).tolist()
        [[[0.5, 0.5]]]
    """
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def expand_binary_logits(logits: Tensor) -> Tensor:
    """Write a binary logit ``z`` ``(N, 1, *spatial)`` as two-class logits ``(N, 2, *spatial)``.

    ``softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]`` exactly, so a loss written for the
    softmax case serves the background/foreground pair of a binary problem.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"expand_binary_logits needs binary logits (N, 1, ...), got {_shape(logits.shape)}")
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


def check_class_weight(weight: ClassWeight) -> Tensor | None:
    """Validate a class-weight vector without knowing ``C`` (module ``__init__``).

    Returns:
        The weights as a float32 1-D tensor, or ``None``.

    Raises:
        ValueError: if the weights are not 1-D, contain negative or non-finite values, or are
            all zero.
    """
    if weight is None:
        return None
    w = weight if isinstance(weight, Tensor) else torch.as_tensor(weight, dtype=torch.float32)
    # clone: a module buffer must not alias a tensor the caller may still modify
    w = w.detach().to(dtype=torch.float32).clone()
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"weight must be a 1-D sequence with one weight per class, got shape {_shape(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"weight must hold finite non-negative values, got {w.tolist()}")
    if not bool((w > 0).any()):
        raise ValueError("weight is zero for every class (expected at least one positive weight)")
    return w


def class_weight(weight: ClassWeight, logits: Tensor, *, include_background: bool = True) -> Tensor | None:
    """Validate ``weight`` against ``logits`` and fold in ``include_background``.

    There is always one weight per logit channel, background included (SPEC section 10): a
    length mismatch raises instead of guessing whether the background was left out. For
    ``C >= 2``, ``include_background=False`` sets the background weight to zero. For binary
    logits (``C == 1``) the single channel is the foreground and ``include_background`` has
    no effect.

    Args:
        weight: ``(C,)`` non-negative class weights, or ``None``.
        logits: ``(N, C, *spatial)`` logits the weights refer to.
        include_background: whether channel 0 counts.

    Returns:
        ``(C,)`` float32 weights on the logits' device, or ``None`` when every class weighs 1.
    """
    num_classes = logits.shape[1]
    w = check_class_weight(weight)
    if w is not None and w.numel() != num_classes:
        if num_classes == 1:
            expected = "binary logits take one weight, for the positive class"
        else:
            expected = "one weight per channel, background included; include_background=False drops it"
        raise ValueError(
            f"weight has {w.numel()} entries but logits have {num_classes} channel(s) (expected {expected})"
        )
    if include_background or num_classes == 1:
        return None if w is None else w.to(logits.device)
    w = torch.ones(num_classes, dtype=torch.float32) if w is None else w.clone()
    w[0] = 0.0
    if not bool((w > 0).any()):
        raise ValueError("weight is zero for every foreground class and include_background=False leaves no class")
    return w.to(logits.device)


def weighted_class_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Mean over the last (class) axis, weighted as ``sum_c w_c v_c / sum_c w_c``."""
    if weight is None:
        return values.mean(dim=-1)
    return (values * weight).sum(dim=-1) / weight.sum()


def reduce_loss(
    loss: Tensor,
    reduction: str,
    *,
    mask: Tensor | None = None,
    normalizer: Tensor | None = None,
) -> Tensor:
    """Reduce element-wise losses.

    ``"mean"`` divides the (masked) sum by the number of counted elements, or by the summed
    ``normalizer`` (per-element weights) when given; with nothing to count it returns 0 (still
    attached to the graph) instead of torch's NaN.

    Args:
        loss: element-wise loss of any shape; already multiplied by any weights.
        reduction: ``"mean" | "sum" | "none"``.
        mask: bool tensor of ``loss``' shape, ``True`` where the element counts.
        normalizer: per-element weights of ``loss``' shape used as the mean's denominator.

    Returns:
        A scalar, or ``loss`` with ignored elements set to 0 for ``"none"``.
    """
    if mask is not None:
        loss = loss * mask
        if normalizer is not None:
            normalizer = normalizer * mask
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if normalizer is not None:
        count = normalizer.sum()
    elif mask is not None:
        count = mask.sum().float()
    else:
        count = torch.tensor(float(loss.numel()), device=loss.device)
    return torch.where(count > 0, total / count.clamp_min(torch.finfo(torch.float32).tiny), total * 0.0)
