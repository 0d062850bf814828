"""Argument validation shared by every loss: the one place where a scalar argument, an
``ignore_index`` or a class-weight vector is checked, so every loss raises the same one-line error
for the same mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

__all__ = [
    "ClassWeight",
    "check_choice",
    "check_non_negative",
    "check_positive",
    "check_ignore_index",
    "check_progress",
    "check_class_weight",
    "class_weight",
    "two_class_weight",
]

ClassWeight = Union[Tensor, Sequence[float], None]


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``.

    Example:
        >>> check_choice("reduction", "avg", ("mean", "sum", "none"))
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


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number ``> 0`` (e.g. an exponent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_ignore_index(ignore_index: int | None) -> None:
    """Raise ``TypeError`` unless ``ignore_index`` is an int or ``None``."""
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")


def check_progress(progress: float) -> float:
    """Validate training progress ``T / T_max`` (a number in ``[0, 1]``) and return it as a float."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be a number in [0, 1] (T / T_max), got {progress!r}")
    return float(progress)


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


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
    no effect; they take one weight (the positive class, background 1) or two (background,
    foreground: a class-weight scheme's pair keeps its normalisation, see
    :func:`two_class_weight`).

    Args:
        weight: ``(C,)`` non-negative class weights, or ``None``.
        logits: ``(N, C, *spatial)`` logits the weights refer to.
        include_background: whether channel 0 counts.

    Returns:
        ``(C,)`` float32 weights on the logits' device, or ``None`` when every class weighs 1.
    """
    num_classes = logits.shape[1]
    w = check_class_weight(weight)
    if w is not None and w.numel() != num_classes and not (num_classes == 1 and w.numel() == 2):
        if num_classes == 1:
            expected = "binary logits take one weight, for the positive class, or two: background, foreground"
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


def two_class_weight(weight: Tensor | None) -> Tensor | None:
    """A validated binary weight as the pair ``(background, foreground)``: a positive-class weight
    ``w`` becomes ``(1, w)``, a pair stays as it is."""
    if weight is None or weight.numel() == 2:
        return weight
    return torch.cat([torch.ones_like(weight), weight])
