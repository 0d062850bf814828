"""Calibration of a classifier: expected calibration error (ECE) and the reliability-diagram bins.

MiSLAS (Zhong et al., CVPR 2021), a baseline of seed 001, reports ECE with 15 equal-width
confidence bins (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["calibration_bins", "expected_calibration_error"]


def _check(probs: Any, target: Any, num_bins: int) -> tuple[Tensor, Tensor]:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    if not isinstance(probs, Tensor) or not probs.dtype.is_floating_point or probs.ndim != 2 or probs.shape[1] < 2:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a float tensor (N, C) with C >= 2 (softmax outputs), got {shape}")
    if not isinstance(target, Tensor) or target.dtype.is_floating_point or target.shape != probs.shape[:1]:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must be an integer tensor (N,) = ({probs.shape[0]},), got {shape}")
    if probs.numel() and (bool((probs < 0).any()) or bool((probs > 1).any())):
        raise ValueError("probs must hold probabilities in [0, 1] (apply a softmax to logits first)")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= probs.shape[1]):
        raise ValueError(f"target must hold labels in [0, {probs.shape[1]}), got {target.min()}..{target.max()}")
    return probs, target


def calibration_bins(probs: Tensor, target: Tensor, *, num_bins: int = 15) -> dict[str, Tensor]:
    """Per confidence bin: sample count, mean confidence and accuracy (a reliability diagram's data).

    The confidence of a sample is its largest probability and it is correct when that class
    is the target. Bin ``b`` (``b = 0 .. num_bins - 1``) holds the confidences in
    ``(b / B, (b + 1) / B]`` (Guo et al.'s code and MiSLAS's; a confidence of exactly 0 goes
    to the first bin).

    Args:
        probs: ``(N, C)`` class probabilities (softmax outputs; binary: ``(1 - p, p)``).
        target: ``(N,)`` integer labels.
        num_bins: ``B``, equal-width bins over ``[0, 1]``.

    Returns:
        ``{"edges": (B + 1,), "count": (B,), "confidence": (B,), "accuracy": (B,)}``, float64
        on the CPU; empty bins have confidence and accuracy 0.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
        >>> bins = calibration_bins(probs, torch.tensor([0, 1, 1]), num_bins=2)
        >>> bins["count"].tolist(), bins["accuracy"].tolist()
        ([0.0, 3.0], [0.0, 0.6666666666666666])
    """
    probs, target = _check(probs, target, num_bins)
    confidence, predicted = probs.detach().double().cpu().max(dim=1)
    correct = (predicted == target.cpu()).double()
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    # (lower, upper]: the index of the first edge >= the confidence, less one
    index = (torch.searchsorted(edges, confidence, side="left") - 1).clamp(0, num_bins - 1)
    count = torch.bincount(index, minlength=num_bins).double()
    per = count.clamp_min(1.0)
    return {
        "edges": edges,
        "count": count,
        "confidence": torch.bincount(index, weights=confidence, minlength=num_bins) / per,
        "accuracy": torch.bincount(index, weights=correct, minlength=num_bins) / per,
    }


def expected_calibration_error(probs: Tensor, target: Tensor, *, num_bins: int = 15) -> float:
    """Expected calibration error ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over equal-width bins.

    See :func:`calibration_bins` for the bins. Equals torchmetrics'
    ``multiclass_calibration_error(probs, target, num_classes, n_bins=num_bins, norm="l1")``
    except for a confidence exactly on an inner edge (torchmetrics' bins are closed on the left).

    Args:
        probs: ``(N, C)`` class probabilities.
        target: ``(N,)`` integer labels.
        num_bins: ``B`` (**Default** 15, as MiSLAS).

    Returns:
        The ECE in ``[0, 1]``; 0 for no samples.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1, 1]), num_bins=2), 4)  # |2/3 - 0.7667|
        0.1
    """
    bins = calibration_bins(probs, target, num_bins=num_bins)
    total = float(bins["count"].sum())
    if total == 0:
        return 0.0
    return float((bins["count"] * (bins["accuracy"] - bins["confidence"]).abs()).sum() / total)
