"""Class-weight functions: turn class frequencies into per-class loss weights.

Two families:

- :func:`class_weights`: the six schemes of seed 002 section 4.4 (SPEC section 3), mapping
  class *fractions* (class 0 = background) to weights that sum to 1. They were designed for
  the per-class ``alpha`` of the focal loss on nuclei segmentation.
- :func:`effective_number_weights`: the class-balanced weights of Cui et al., "Class-Balanced
  Loss Based on Effective Number of Samples", CVPR 2019, ``(1 - beta) / (1 - beta^n_j)``
  normalised to sum to the number of classes, as used by CSCE and LDAM-DRW (seed 001).

Both return a float32 ``(C,)`` tensor that can be passed as ``weight=`` to any loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Union, get_args

import numpy as np
import torch
from torch import Tensor

from medbalance._suggest import did_you_mean

__all__ = [
    "CLASS_WEIGHT_SCHEMES",
    "ClassWeightScheme",
    "class_weights",
    "effective_number_weights",
    "effective_numbers",
    "weight_function",
]

ClassWeightScheme = Literal[
    "uniform",
    "inverse",
    "exp_increasing",
    "exp_decreasing",
    "exp_decreasing_fg",
    "exp_decreasing_fg_nobg",
]
CLASS_WEIGHT_SCHEMES: tuple[str, ...] = get_args(ClassWeightScheme)
"""Scheme names of :func:`class_weights`, in the seed's numbering 1-6."""

Frequencies = Union[Tensor, np.ndarray, Sequence[float]]


def _as_frequencies(name: str, values: Frequencies) -> Tensor:
    """Validate a 1-D vector of non-negative finite frequencies; return it as float64 (CPU)."""
    if isinstance(values, Tensor):
        if values.dtype.is_complex or values.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        freq = values.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            freq = torch.as_tensor(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a 1-D sequence of numbers, got {values!r}") from exc
    if freq.ndim != 1 or freq.numel() == 0:
        shape = tuple(freq.shape)
        raise ValueError(f"{name} must be a non-empty 1-D vector with one entry per class, got shape {shape}")
    if not bool(torch.isfinite(freq).all()):
        raise ValueError(f"{name} must be finite, got {freq.tolist()}")
    if bool((freq < 0).any()):
        raise ValueError(f"{name} must be non-negative, got {freq.tolist()}")
    if not bool((freq > 0).any()):
        raise ValueError(f"{name} is zero for every class (expected at least one present class)")
    return freq


def _output_device(values: Frequencies) -> torch.device:
    return values.device if isinstance(values, Tensor) else torch.device("cpu")


def class_weights(fractions: Frequencies, scheme: ClassWeightScheme | str = "inverse") -> Tensor:
    """Per-class weights from class frequencies by one of seed 002's six weight functions.

    ``fractions`` may be fractions or raw counts: any non-negative vector is first divided by
    its sum, so ``class_weights([900, 100], s) == class_weights([0.9, 0.1], s)``. With
    ``p_i`` the fraction of class ``i`` (class 0 = background), ``q_i = p_i / sum_{j>0} p_j``
    the share of the foreground and ``e`` Euler's number, the raw weights are

    ========================== ========================================================
    scheme                     raw weight ``w_i``
    ========================== ========================================================
    ``uniform``                ``1``
    ``inverse``                ``1 / (C p_i)`` (balanced; ``sum_j M_j / (C M_i)``)
    ``exp_increasing``         ``exp(e p_i)``
    ``exp_decreasing``         ``exp(-e p_i)``
    ``exp_decreasing_fg``      ``exp(-e p_0)`` for the background, ``exp(-e q_i)`` else
    ``exp_decreasing_fg_nobg`` ``0`` for the background, ``exp(-e q_i)`` else
    ========================== ========================================================

    and the result is normalised to sum to 1 (SPEC section 3).

    Absent classes (``p_i == 0``): ``inverse`` gives them weight 0, since ``1 / 0`` has no
    useful value and a class with no pixels contributes nothing to a loss anyway; the other
    schemes apply their formula as written (``exp(0) = 1``). The ``_fg`` schemes need a
    background plus at least one foreground class; when there are no foreground pixels at all,
    every ``q_i`` is taken as 0.

    Args:
        fractions: ``(C,)`` class fractions or counts, as a list, numpy array or tensor.
        scheme: one of :data:`CLASS_WEIGHT_SCHEMES`.

    Returns:
        ``(C,)`` float32 weights summing to 1, on ``fractions``' device when it is a tensor.

    Raises:
        ValueError: for an unknown scheme, a vector that is not 1-D, negative, non-finite or
            all zero, or fewer than 2 classes under an ``_fg`` scheme.

    Example:
        >>> class_weights([0.8, 0.15, 0.05], "inverse")
        tensor([0.0448, 0.2388, 0.7164])
        >>> class_weights([80, 15, 5], "exp_decreasing_fg_nobg")
        tensor([0.0000, 0.2044, 0.7956])
    """
    _check_scheme(scheme)
    freq = _as_frequencies("fractions", fractions)
    p = freq / freq.sum()
    num_classes = p.numel()
    if scheme in _FOREGROUND_SCHEMES:
        if num_classes < 2:
            raise ValueError(
                f"scheme {scheme!r} needs a background and at least one foreground class, got {num_classes} class"
            )
        foreground = p[1:]
        total_fg = foreground.sum()
        q = foreground / total_fg if total_fg > 0 else torch.zeros_like(foreground)
        background = weight_function("exp_decreasing", p[:1]) if scheme == "exp_decreasing_fg" else torch.zeros(1)
        raw = torch.cat([background.to(p.dtype), weight_function("exp_decreasing", q)])
    else:
        raw = weight_function(scheme, p, num_classes=num_classes)
    return (raw / raw.sum()).to(device=_output_device(fractions), dtype=torch.float32)


_FOREGROUND_SCHEMES = ("exp_decreasing_fg", "exp_decreasing_fg_nobg")


def _check_scheme(scheme: str) -> None:
    if scheme not in CLASS_WEIGHT_SCHEMES:
        hint = did_you_mean(str(scheme), CLASS_WEIGHT_SCHEMES)
        raise ValueError(f"unknown class-weight scheme {scheme!r} ({hint}known: {', '.join(CLASS_WEIGHT_SCHEMES)})")


def weight_function(
    scheme: ClassWeightScheme | str,
    fraction: Frequencies,
    *,
    num_classes: int = 2,
    background_fraction: float | None = None,
) -> Tensor:
    """The raw (not normalised) weight seed 002's function ``scheme`` gives a class of pixel fraction ``x``.

    The curves of seed 002's figure 4.3: ``uniform`` 1, ``inverse`` ``1 / (C x)`` (0 at
    ``x = 0``), ``exp_increasing`` ``exp(e x)``, ``exp_decreasing`` ``exp(-e x)``. For the
    ``_fg`` schemes ``x`` is a *foreground* class's fraction of all pixels, and its weight
    ``exp(-e q)`` uses its share of the foreground ``q = x / (1 - background_fraction)`` (0
    when there is no foreground); their background weight is ``exp_decreasing``'s (function 5)
    or 0 (function 6). :func:`class_weights` normalises these to sum 1.

    Args:
        scheme: one of :data:`CLASS_WEIGHT_SCHEMES`.
        fraction: class fractions ``x`` in ``[0, 1]``, any shape.
        num_classes: ``C`` of ``inverse``.
        background_fraction: ``p_0``, required by the ``_fg`` schemes.

    Returns:
        float64 weights of ``fraction``'s shape (CPU).

    Example:
        >>> weight_function("exp_decreasing", [0.0, 1.0])
        tensor([1.0000, 0.0660], dtype=torch.float64)
        >>> weight_function("exp_decreasing_fg", [0.05], background_fraction=0.9)  # q = 0.5
        tensor([0.2569], dtype=torch.float64)
    """
    _check_scheme(scheme)
    x = torch.as_tensor(np.asarray(fraction, dtype=np.float64)) if not isinstance(fraction, Tensor) else fraction
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError(f"fraction must hold values in [0, 1], got {x.tolist()}")
    if scheme == "uniform":
        return torch.ones_like(x)
    if scheme == "inverse":
        num_classes = _positive_int("num_classes", num_classes)
        return torch.where(x > 0, 1.0 / (num_classes * x.clamp_min(torch.finfo(x.dtype).tiny)), torch.zeros_like(x))
    if scheme == "exp_increasing":
        return torch.exp(math.e * x)
    if scheme == "exp_decreasing":
        return torch.exp(-math.e * x)
    if background_fraction is None or not 0.0 <= float(background_fraction) <= 1.0:
        raise ValueError(f"scheme {scheme!r} needs background_fraction in [0, 1], got {background_fraction!r}")
    total_fg = 1.0 - float(background_fraction)
    q = x / total_fg if total_fg > 0 else torch.zeros_like(x)
    return torch.exp(-math.e * q)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_beta(beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")


def effective_numbers(counts: Frequencies, *, beta: float) -> Tensor:
    """Effective number of samples per class, ``E_j = (1 - beta^{n_j}) / (1 - beta)`` (Cui et al., CVPR 2019).

    ``beta = 0`` gives 1 for every present class (each class counts once), ``beta -> 1``
    approaches ``n_j``; an absent class (``n_j == 0``) has ``E_j = 0``.

    Args:
        counts: ``(C,)`` non-negative sample (or pixel) counts per class; need not be integers.
        beta: hyper-parameter in ``[0, 1)``.

    Returns:
        ``(C,)`` float64 effective numbers (CPU).

    Raises:
        ValueError: if ``beta`` is not in ``[0, 1)`` or ``counts`` is not a 1-D,
            non-negative, finite vector with a positive entry.

    Example:
        >>> effective_numbers([1000, 10, 0], beta=0.99).round(decimals=2).tolist()
        [100.0, 9.56, 0.0]
    """
    _check_beta(beta)
    n = _as_frequencies("counts", counts)
    if beta == 0.0:
        return (n > 0).to(torch.float64)
    # 1 - beta^n = -expm1(n log beta): exact for beta near 1, where the direct form cancels
    return -torch.expm1(n * math.log(beta)) / (1.0 - beta)


def effective_number_weights(counts: Frequencies, *, beta: float = 0.9999) -> Tensor:
    """Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019).

    ``w_j = 1 / E_j = (1 - beta) / (1 - beta^{n_j})`` (:func:`effective_numbers`), rescaled so
    that the weights sum to ``C`` (the normalisation of the LDAM-DRW and CB-loss reference code,
    so the mean weight is 1).
    ``beta = 0`` gives uniform weights, ``beta -> 1`` approaches inverse frequency. Classes
    with ``n_j == 0`` get weight 0 (their raw weight is infinite and they never occur in a
    loss); the present classes still sum to ``C``.

    Args:
        counts: ``(C,)`` non-negative sample (or pixel) counts per class; need not be integers.
        beta: hyper-parameter in ``[0, 1)``; **Default** 0.9999 as in seed 001 / SPEC section 10.

    Returns:
        ``(C,)`` float32 weights summing to ``C``, on ``counts``' device when it is a tensor.

    Raises:
        ValueError: if ``beta`` is not in ``[0, 1)`` or ``counts`` is not a 1-D,
            non-negative, finite vector with a positive entry.

    Example:
        >>> effective_number_weights([1000, 100, 10], beta=0.999)
        tensor([0.0422, 0.2800, 2.6778])
    """
    effective = effective_numbers(counts, beta=beta)
    raw = torch.where(effective > 0, 1.0 / effective.clamp_min(torch.finfo(effective.dtype).tiny), 0.0)
    weights = raw * (effective.numel() / raw.sum())
    return weights.to(device=_output_device(counts), dtype=torch.float32)
