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
from typing import Literal, NamedTuple, Union, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "scalar_term_args",
    "two_class_view",
    "check_progress",
    "BATCH_REDUCTIONS",
    "CLASS_REDUCTIONS",
    "REDUCTIONS",
    "ClassReduction",
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
    "label_log_probs",
    "binary_margin",
    "float32_compute",
    "check_class_weight",
    "class_weight",
    "weighted_class_mean",
    "reduce_loss",
    "check_positive",
    "check_region_args",
    "binary_as_two_class",
    "two_class_weight",
    "RegionInputs",
    "region_inputs",
    "class_sums",
    "Overlap",
    "soft_overlap",
    "safe_ratio",
    "tversky_index",
    "power",
    "reduce_images",
    "overlap_loss",
]

Reduction = Literal["mean", "sum", "none"]
BatchReduction = Literal["image", "batch"]
ClassReduction = Literal["mean", "sum"]
ClassWeight = Union[Tensor, Sequence[float], None]

REDUCTIONS: tuple[str, ...] = get_args(Reduction)
BATCH_REDUCTIONS: tuple[str, ...] = get_args(BatchReduction)
CLASS_REDUCTIONS: tuple[str, ...] = get_args(ClassReduction)


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
        foreground: binary label targets (``C == 1``) with nothing ignored: the labels as a
            float32 ``(N, *spatial)`` 0/1 map, made once (the range check reads it); ``None``
            otherwise.
        ignore_index: the ``ignore_index`` the target was validated with.
    """

    num_classes: int
    labels: Tensor | None
    soft: Tensor | None
    mask: Tensor | None
    foreground: Tensor | None = None
    ignore_index: int | None = None

    def dense(self) -> Tensor:
        """The target as float32 ``(N, C, *spatial)``: one-hot for labels (for ``C == 1`` the
        0/1 foreground map), zero at ignored elements. Made once per :class:`Target`.

        Raises:
            ValueError: a label out of range, for a target formatted with ``check_range=False``
                (the one-hot encoding is its range check).
        """
        cached = self.__dict__.get("_dense")
        if cached is None:
            cached = self._make_dense()
            object.__setattr__(self, "_dense", cached)  # frozen: a cache, not a field
        return cached

    def _make_dense(self) -> Tensor:
        if self.soft is not None:
            return self.soft
        if self.foreground is not None:
            return self.foreground.unsqueeze(1)
        assert self.labels is not None
        labels = self.labels.unsqueeze(1)
        if self.num_classes == 1:
            dense = labels.float()
        else:
            # scatter_ writes a contiguous (N, C, ...) map in one pass; F.one_hot + movedim gives
            # an int64 channels-last copy that every later reduction has to re-layout
            shape = (labels.shape[0], self.num_classes, *labels.shape[2:])
            try:
                dense = torch.zeros(shape, dtype=torch.float32, device=labels.device).scatter_(1, labels, 1.0)
            except RuntimeError:  # an index out of bounds: say which label, as format_target does
                _check_label_range(self.labels, self.num_classes, self.ignore_index)
                raise
        if self.mask is not None:
            dense = dense * self.mask.unsqueeze(1)
        return dense


def format_target(
    logits: Tensor, target: Tensor | Target, *, ignore_index: int | None = None, check_range: bool = True
) -> Target:
    """Validate ``(logits, target)`` against SPEC section 1 and normalise the target.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: integer/bool labels ``(N, *spatial)`` or ``(N, 1, *spatial)`` with values in
            ``[0, C)`` (binary: ``{0, 1}``), or a float tensor of the logits' shape with values
            in ``[0, 1]``; or a :class:`Target` this function returned for logits of the same
            shape and the same ``ignore_index``, returned as it is (a compound loss validates
            the target once for all its terms).
        ignore_index: label value whose elements are excluded from the loss; only meaningful
            for label targets.
        check_range: ``False`` leaves the scan of multi-class integer labels on the CPU to the
            one-hot encoding, whose bounds check raises the same ``ValueError``: for callers
            that call :meth:`Target.dense` before anything reads the labels (a region loss).
            The scan costs 3-8% of a 7-class Dice step (``benchmarks/RESULTS.md``).

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
    if isinstance(target, Target):
        return _check_validated(logits, target, ignore_index)
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
    # binary: every loss needs the 0/1 map as floats, and float32 is checked faster than int64
    # (the conversion is monotone, so its range is the labels' range)
    foreground = labels.float() if num_classes == 1 and mask is None else None
    # on CUDA an index out of bounds in scatter_ is a device-side assert, not an exception
    one_hot_checks = not check_range and num_classes > 1 and labels.device.type == "cpu"
    if target.dtype != torch.bool and labels.numel() > 0 and not one_hot_checks:
        checked = foreground if foreground is not None else labels if mask is None else labels[mask]
        _check_label_range(checked, num_classes, ignore_index)
    return Target(
        num_classes=num_classes, labels=labels, soft=None, mask=mask, foreground=foreground, ignore_index=ignore_index
    )


def _check_validated(logits: Tensor, target: Target, ignore_index: int | None) -> Target:
    """A :class:`Target` passed on by a compound loss: it must belong to these logits."""
    shape = target.soft.shape if target.soft is not None else (target.labels.shape[0], 1, *target.labels.shape[1:])
    if target.num_classes != logits.shape[1] or shape[0] != logits.shape[0] or shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"target was validated for {target.num_classes} class(es) and shape {_shape(shape)}, "
            f"but logits have shape {_shape(logits.shape)}"
        )
    if target.ignore_index != ignore_index:
        raise ValueError(
            f"target was validated with ignore_index={target.ignore_index}, "
            f"but this loss has ignore_index={ignore_index}"
        )
    return target


def _check_label_range(labels: Tensor, num_classes: int, ignore_index: int | None) -> None:
    if labels.numel() == 0:
        return
    if labels.dtype.is_floating_point:
        # float32 amin and amax are vectorised and together faster than aminmax (torch 2.13 CPU)
        low, high = int(labels.amin()), int(labels.amax())
    else:  # int64 amin is not: aminmax
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
    # entering a disabled autocast region costs as much as a small kernel: only when it is on
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
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


def label_log_probs(logits: Tensor, labels: Tensor) -> Tensor:
    """``log p_y``, the log probability of each element's label, without a dense one-hot product.

    Args:
        logits: float32 ``(N, C, *spatial)`` raw scores; ``C == 1`` is binary (sigmoid).
        labels: ``(N, *spatial)`` int64 labels in ``[0, max(C, 2))``; binary labels may also
            be the float32 0/1 map (:attr:`Target.foreground`).

    Returns:
        ``(N, *spatial)`` float32 ``log softmax(z)_y``; binary: ``log sigmoid(z)`` for label 1 and
        ``log sigmoid(-z) = log(1 - sigmoid(z))`` for label 0, the two-class softmax of
        :func:`expand_binary_logits` without building it.

    Example:
        >>> label_log_probs(torch.zeros(1, 1, 2), torch.tensor([[0, 1]])).exp().tolist()
        [[0.5, 0.5]]
    """
    if logits.shape[1] == 1:
        return F.logsigmoid(binary_margin(logits, labels))
    return F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)


def binary_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``m = z (2 y - 1)`` of binary logits ``(N, 1, *spatial)`` and labels ``(N, *spatial)``
    (int64, or the float32 0/1 map): ``p_y = sigmoid(m)`` and ``1 - p_y = sigmoid(-m)``.

    Example:
        >>> binary_margin(torch.tensor([[[2.0, 2.0]]]), torch.tensor([[1, 0]])).tolist()
        [[2.0, -2.0]]
    """
    # z * (+-1) rather than torch.where: the same values, and where is slow on CPU
    return logits[:, 0] * (2.0 * labels - 1.0)


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
    if reduction == "mean" and mask is None and normalizer is None and loss.numel() > 0:
        return loss.mean()
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


# ---------------------------------------------------------------------------------------------
# Region (overlap) losses: Dice, IoU, Tversky, focal Tversky, generalized Dice, sensitivity-
# specificity and exponential-logarithmic share the per-class soft sums below.


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number ``> 0`` (e.g. an exponent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_region_args(*, smooth: float, batch_reduction: str, reduction: str) -> None:
    """Validate the arguments every region loss shares."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("batch_reduction", batch_reduction, BATCH_REDUCTIONS)
    check_non_negative("smooth", smooth)


def two_class_weight(weight: Tensor | None) -> Tensor | None:
    """A validated binary weight as the pair ``(background, foreground)``: a positive-class weight
    ``w`` becomes ``(1, w)``, a pair stays as it is."""
    if weight is None or weight.numel() == 2:
        return weight
    return torch.cat([torch.ones_like(weight), weight])


def binary_as_two_class(truth: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Write a binary target ``G`` ``(N, 1, ...)`` as the pair ``(1 - G, G)`` and its weight as
    :func:`two_class_weight`'s pair; pairs with :func:`expand_binary_logits`."""
    return torch.cat([1.0 - truth, truth], dim=1), two_class_weight(weight)


def two_class_view(logits: Tensor, tgt: Target) -> tuple[Tensor, Target]:
    """Binary inputs (``C == 1``) as background/foreground softmax inputs; others unchanged.

    ``softmax([0, z]) == [1 - sigmoid(z), sigmoid(z)]``, so losses defined per class (focal,
    class-balanced CE, LDAM) take one formula for both cases (package-internal helper).
    """
    if tgt.num_classes != 1:
        return logits, tgt
    soft = None if tgt.soft is None else binary_as_two_class(tgt.soft, None)[0]
    return expand_binary_logits(logits), Target(num_classes=2, labels=tgt.labels, soft=soft, mask=tgt.mask)


@dataclass(frozen=True)
class RegionInputs:
    """Probabilities and target of a region loss, restricted to the classes that count.

    Attributes:
        target: the validated :class:`Target`.
        probs: ``(N, K, *spatial)`` float32 probabilities, zero at ignored elements.
        truth: ``(N, K, *spatial)`` float32 target, zero at ignored elements.
        weight: ``(K,)`` class weights, ``None`` when every class weighs 1.
        keep: ``(N, 1, *spatial)`` bool, ``True`` where the element counts; ``None`` when no
            element is ignored.
    """

    target: Target
    probs: Tensor
    truth: Tensor
    weight: Tensor | None
    keep: Tensor | None


def region_inputs(
    logits: Tensor,
    target: Tensor,
    *,
    weight: ClassWeight,
    include_background: bool,
    ignore_index: int | None,
    two_sided: bool = False,
) -> RegionInputs:
    """Validate a region loss's input and gather the ``K`` classes it sums over.

    ``K = C`` (binary: the single foreground channel), ``C - 1`` with
    ``include_background=False``, or 2 with ``two_sided`` (binary only: background
    ``(1 - P, 1 - G)`` and foreground ``(P, G)``, background weight 1).
    """
    tgt = format_target(logits, target, ignore_index=ignore_index, check_range=False)
    w = class_weight(weight, logits, include_background=include_background)
    if two_sided and tgt.num_classes != 1:
        raise ValueError(f"two_sided applies to binary logits (C == 1), got C={tgt.num_classes}")
    # the probabilities before the one-hot map (which also checks the labels' range, see
    # format_target's check_range): 1-11% faster for Dice / IoU / GDL (benchmarks/RESULTS.md)
    if two_sided:
        probs = torch.softmax(expand_binary_logits(logits.float()), dim=1)
        truth, w = binary_as_two_class(tgt.dense(), w)
    else:
        probs = probabilities(logits)
        truth = tgt.dense()
        if not include_background and tgt.num_classes > 1:
            probs, truth, w = probs[:, 1:], truth[:, 1:], None if w is None else w[1:]
        elif w is not None and w.numel() > truth.shape[1]:  # a binary (background, foreground) pair
            w = w[1:]
    keep = None if tgt.mask is None else tgt.mask.unsqueeze(1)
    if keep is not None:
        probs, truth = probs * keep, truth * keep
    return RegionInputs(target=tgt, probs=probs, truth=truth, weight=w, keep=keep)


def class_sums(values: Tensor, batch_reduction: str) -> Tensor:
    """Sum ``(N, K, *spatial)`` over space: ``(N, K)`` per image (``"image"``), or ``(1, K)``
    pooled over the batch (``"batch"``). Without spatial axes each sample is its own image."""
    spatial = tuple(range(2, values.ndim))
    if batch_reduction == "batch":
        return values.sum(dim=(0, *spatial)).unsqueeze(0)
    # sum(dim=()) would sum over every axis
    return values.sum(dim=spatial) if spatial else values


class Overlap(NamedTuple):
    """Per-class soft sums ``TP = sum P G``, ``sum P`` and ``sum G``, ``(N, K)`` or ``(1, K)``.

    ``FP = sum P - TP`` and ``FN = sum G - TP``; the losses combine the three sums directly
    (``2 TP + FP + FN = sum P + sum G``), fewer operations than through ``FP`` and ``FN``.
    """

    tp: Tensor
    pred: Tensor
    truth: Tensor


def soft_overlap(region: RegionInputs, batch_reduction: str, *, squared: bool = False) -> Overlap:
    """Per-class soft sums ``TP = sum P G``, ``sum P`` and ``sum G``.

    ``FP = sum P - TP = sum P (1 - G)`` and ``FN = sum (1 - P) G`` (MONAI's decoupled form, also
    right for soft targets). With ``squared``, ``sum P^2`` and ``sum G^2`` stand for ``sum P``
    and ``sum G``, so that ``2 TP + FP + FN = sum P^2 + sum G^2`` (V-Net; MONAI ``squared_pred``).
    """
    probs, truth = region.probs, region.truth
    tp = class_sums(probs * truth, batch_reduction)
    if squared:
        probs, truth = probs * probs, truth * truth
    return Overlap(tp, class_sums(probs, batch_reduction), class_sums(truth, batch_reduction))


def safe_ratio(numerator: Tensor, denominator: Tensor, *, empty: float) -> Tensor:
    """``numerator / denominator``, and ``empty`` where the denominator is 0 (finite gradients)."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(torch.float32).tiny), empty)


def tversky_index(overlap: Overlap, *, alpha: float, beta: float, smooth: float) -> Tensor:
    """``(TP + s) / (TP + alpha FP + beta FN + s)``; 1 for a class absent from ``P`` and ``G``.

    ``alpha = beta = 1/2`` with ``s / 2`` is Dice ``(2 TP + s) / (2 TP + FP + FN + s)``,
    ``alpha = beta = 1`` is IoU.
    """
    tp, pred, truth = overlap
    # TP + alpha FP + beta FN + s = (1 - alpha - beta) TP + alpha sum P + (beta sum G + s): the
    # target side needs no gradient, and a zero coefficient (Dice) drops a term; every
    # operation on the prediction side is a node of the backward pass
    denominator = torch.add(truth * beta + smooth, pred, alpha=alpha)
    if alpha + beta != 1.0:
        denominator = torch.add(denominator, tp, alpha=1.0 - alpha - beta)
    if smooth > 0:  # the denominator is at least s: no class is empty, no where() needed
        return (tp + smooth) / denominator
    return safe_ratio(tp, denominator, empty=1.0)


def power(values: Tensor, gamma: float) -> Tensor:
    """``values ** gamma`` for ``values >= 0``: clamped to the smallest normal float first, so
    that a perfect prediction (``values == 0``) has gradient 0, not ``inf`` (``gamma < 1``)."""
    return values.clamp_min(torch.finfo(torch.float32).tiny).pow(gamma)


def reduce_images(per_image: Tensor, batch_reduction: str, reduction: str) -> Tensor:
    """Reduce ``(M,)`` per-image losses; a pooled batch (``M == 1``) gives its scalar whatever
    ``reduction`` is."""
    if batch_reduction == "batch":
        return per_image[0]
    return reduce_loss(per_image, reduction)


def overlap_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: float,
    beta: float,
    smooth: float,
    gamma: float = 1.0,
    squared: bool = False,
    two_sided: bool = False,
    class_reduction: str = "mean",
    include_background: bool,
    weight: ClassWeight,
    batch_reduction: str,
    ignore_index: int | None,
    reduction: str,
) -> Tensor:
    """``(1 - T_k)^gamma`` with ``T_k`` the Tversky index of class ``k``, weighted class mean (or,
    with ``class_reduction="sum"``, the weighted sum ``sum_k w_k L_k``) per image, reduced over
    images: the one implementation of Dice, IoU, Tversky and focal Tversky. Their public
    functions validate and document the arguments."""
    with float32_compute(logits):
        region = region_inputs(
            logits,
            target,
            weight=weight,
            include_background=include_background,
            ignore_index=ignore_index,
            two_sided=two_sided,
        )
        index = tversky_index(
            soft_overlap(region, batch_reduction, squared=squared), alpha=alpha, beta=beta, smooth=smooth
        )
        if (
            gamma == 1.0
            and class_reduction == "mean"
            and region.weight is None
            and index.numel() > 0
            and (reduction == "mean" or batch_reduction == "batch")
        ):
            # the mean over images of class means is the mean over all (image, class) pairs
            return 1.0 - index.mean()
        per_class = 1.0 - index if gamma == 1.0 else power(1.0 - index, gamma)
        if class_reduction == "sum":
            per_image = (per_class if region.weight is None else per_class * region.weight).sum(dim=-1)
        else:
            per_image = weighted_class_mean(per_class, region.weight)
        return reduce_images(per_image, batch_reduction, reduction)


def check_progress(progress: float) -> float:
    """Validate training progress ``T / T_max`` (a number in ``[0, 1]``) and return it as a float."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be a number in [0, 1] (T / T_max), got {progress!r}")
    return float(progress)


def scalar_term_args(reduction: str, **shared: object) -> dict:
    """The arguments every term of a sum of losses receives, ``reduction`` included.

    The terms are added as scalars, so ``reduction`` must be ``"mean"`` or ``"sum"``: the
    unreduced shapes of different terms would broadcast silently.
    """
    check_choice("reduction", reduction, ("mean", "sum"))
    return {**shared, "reduction": reduction}
