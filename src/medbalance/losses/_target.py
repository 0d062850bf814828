"""The target contract of every loss in :mod:`medbalance.losses`.

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from medbalance.losses._validate import _shape, check_ignore_index, two_class_weight

__all__ = [
    "check_logits",
    "Target",
    "format_target",
    "float32_compute",
    "probabilities",
    "label_log_probs",
    "binary_margin",
    "expand_binary_logits",
    "binary_as_two_class",
    "two_class_view",
]


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
