"""Online bootstrapping (hard-pixel) cross entropy of seed 002 (eq. 2.3-2.4), with the per-class
share of the selected pixels as a diagnostic (seed 002 table 4.14)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from medbalance.losses._base import ClassWeightedLoss
from medbalance.losses._reduction import REDUCTIONS, Reduction, reduce_loss
from medbalance.losses._target import Target, float32_compute, format_target, probabilities, two_class_view
from medbalance.losses._validate import ClassWeight, check_choice, class_weight
from medbalance.losses.ce import cross_entropy_terms

__all__ = ["online_bootstrapping_loss", "hard_pixel_fractions", "OnlineBootstrappingLoss"]

_LOG2_E = 1.0 / math.log(2.0)


def _check_hard_num(hard_num: int) -> None:
    if isinstance(hard_num, bool) or not isinstance(hard_num, int) or hard_num < 1:
        raise ValueError(f"hard_num must be an int >= 1 (hard pixels kept per image), got {hard_num!r}")


def _hardness(logits: Tensor, tgt: Target, unweighted_ce: Tensor | None = None) -> Tensor:
    """Per-pixel score ordered as seed 002's ``d = (1/C) sum_c |p_c - y_c|``, ``(N, *spatial)``.

    For a label target ``d = 2 (1 - p_y) / C`` is decreasing in ``p_y``, as is the unweighted
    cross entropy ``-log p_y``: the same order, from the loss already computed (and more
    resolution near ``p_y = 1``). Soft targets use ``d`` itself.
    """
    if tgt.labels is None:
        return (probabilities(logits) - tgt.dense()).abs().mean(dim=1)
    if unweighted_ce is None:
        unweighted_ce = cross_entropy_terms(logits, tgt, None)[0]
    return unweighted_ce.detach()


def _order_statistics(hardness: Tensor, mask: Tensor | None, hard_num: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per image, the ``k``-th and ``(k+1)``-th largest hardness, ``k = min(hard_num, pixels)``.

    Returns:
        ``(flat, kth, next)``: the hardness ``(N, S)`` (ignored pixels at -1, below any real
        score), the ``k``-th largest ``(N, 1)`` and the ``(k+1)``-th largest ``(N, 1)``
        (``None`` when ``k == S``).
    """
    # Integer selection is the faster one, and the int32 bit patterns of floats >= +0.0 order
    # like the floats. -0.0 (a CE of exactly 0) orders below them all: comparisons are made on
    # the floats, where -0.0 == +0.0 is a tie. Ignored pixels at -1.0 must order below -0.0,
    # so with a mask -0.0 becomes +0.0 first (+ 0.0).
    flat = hardness.reshape(hardness.shape[0], -1)
    if mask is not None:
        flat = (flat + 0.0).masked_fill(~mask.reshape(flat.shape), -1.0)
    kth, after, _ = _largest(flat.view(torch.int32), min(hard_num, flat.shape[1]))
    return flat, kth.view(torch.float32), None if after is None else after.view(torch.float32)


def _largest(bits: Tensor, k: int) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`_largest_by_partition` on the CPU, :func:`_largest_by_topk` elsewhere."""
    return (_largest_by_partition if bits.device.type == "cpu" else _largest_by_topk)(bits, k)


def _largest_by_partition(bits: Tensor, k: int) -> tuple[Tensor, Tensor | None, Tensor]:
    """Per row of a CPU tensor ``(N, S)``: the k-th largest ``(N, 1)``, the (k+1)-th largest
    ``(N, 1)`` (``None``: ``k == S``) and the ``k`` largest ``(N, k)``, in no particular order.

    numpy's introselect is ~20x faster than ``torch.topk`` / ``kthvalue`` on CPU (torch 2.13);
    one partition point plus a max beats partitioning around two.
    """
    column = bits.shape[1] - k
    part = torch.from_numpy(np.partition(bits.numpy(), column, axis=1))
    after = None if column == 0 else part[:, :column].amax(dim=1, keepdim=True)
    return part[:, column : column + 1], after, part[:, column:]


def _largest_by_topk(bits: Tensor, k: int) -> tuple[Tensor, Tensor | None, Tensor]:
    """As :func:`_largest_by_partition`, on any device."""
    top = bits.topk(min(k + 1, bits.shape[1]), dim=1).values
    return top[:, k - 1 : k], None if k == bits.shape[1] else top[:, k : k + 1], top[:, :k]


def _select_hard(hardness: Tensor, mask: Tensor | None, hard_num: int) -> Tensor:
    """``(N, *spatial)`` bool: per image the ``hard_num`` counted pixels of largest hardness.

    Ties at the threshold are broken in favour of the lower flat index (a stable descending
    sort), so the selection is deterministic.
    """
    with torch.no_grad():
        flat, kth, after = _order_statistics(hardness, mask, hard_num)
        selected = flat >= kth
        if after is not None and bool((after == kth).any()):  # more tied pixels than places
            above = flat > kth
            places = min(hard_num, flat.shape[1]) - above.sum(dim=1, keepdim=True)
            tied = flat == kth
            selected = above | (tied & (tied.cumsum(dim=1) <= places))
        selected = selected.view_as(hardness)
        return selected if mask is None else selected & mask


def _mean_of_hardest(loss: Tensor, hard_num: int, reduction: str) -> Tensor:
    """Sum (``"sum"``) or mean (``"mean"``) over the ``hard_num`` largest of each image's
    ``loss`` ``(N, *spatial)``, when the loss is its own hardness and nothing is ignored.

    With ``t`` the ``(k+1)``-th largest value of an image below a strictly larger ``k``-th,
    ``sum_i max(l_i - t, 0) + k t`` is the sum of its ``k`` largest and its gradient is 1 on
    exactly those ``k`` pixels: float arithmetic only, no selection mask (comparisons, masks
    and ``where`` are several times slower than a float pass on CPU).
    """
    flat, kth, after = _order_statistics(loss.detach(), None, hard_num)
    if after is None:
        kept = loss.sum()
        count = flat.numel()
    elif bool((after == kth).any()):  # ties across the threshold: the index rule decides
        kept = (loss * _select_hard(loss.detach(), None, hard_num)).sum()
        count = flat.shape[0] * hard_num
    else:
        k = min(hard_num, flat.shape[1])
        kept = torch.relu(loss.reshape(flat.shape) - after).sum() + k * after.sum()
        count = flat.shape[0] * k
    return kept if reduction == "sum" else kept / count


def _binary_mean_of_hardest(logits: Tensor, foreground: Tensor, hard_num: int, reduction: str) -> Tensor | None:
    """:func:`_mean_of_hardest` of the binary cross entropy of logits ``(N, 1, *spatial)`` and
    their 0/1 ``foreground`` map, without the loss of every pixel: ``None`` when an image keeps
    all its pixels, pixels tie across the threshold or a kept loss overflows float32 (the
    caller then takes the general path).

    The loss of a 0/1 label is ``log1p(u)`` with ``u = exp(z (1 - 2 y))``. ``u`` is >= 0 and
    increasing in the loss, so it ranks the pixels (as int32 bits, like
    :func:`_order_statistics`) and the loss is taken at the kept pixels only. A strict
    threshold on ``u`` keeps exactly the pixels above it in the loss, since rounding never
    reverses an order. The gradient is ``sigmoid(z) - y`` on the kept pixels, 0 elsewhere.
    On a CPU this takes 0.8-0.85x the general path's time (``benchmarks/RESULTS.md``).
    """
    with torch.no_grad():
        # u = 2^(z (1 - 2 y) log2 e): torch 2.13's exp is 3-4x slower than exp2 on CPU
        odds = torch.addcmul(logits, logits, foreground, value=-2.0).mul_(_LOG2_E).exp2_()
        odds = odds.reshape(logits.shape[0], -1)
        k = min(hard_num, odds.shape[1])
        if k == odds.shape[1]:
            return None
        kth, after, top = (v.view(torch.float32) for v in _largest(odds.view(torch.int32), k))
        scale = 1.0 if reduction == "sum" else 1.0 / top.numel()
        value = torch.log1p(top).sum() * scale
        # one host sync for both exits: ties at the threshold, or a kept loss above ~88 (u overflows)
        if not bool((kth > after).all() & torch.isfinite(value)):
            return None
    return _KeptBinaryCE.apply(logits, foreground, odds, after, value, scale)


class _KeptBinaryCE(torch.autograd.Function):
    """The binary cross entropy ``value`` of the pixels whose ``odds`` exceed their image's
    threshold ``after``, summed and times ``scale``, differentiable in the logits (see
    :func:`_binary_mean_of_hardest`)."""

    @staticmethod
    def forward(ctx, logits, foreground, odds, after, value, scale):  # noqa: ANN001, ANN205
        ctx.save_for_backward(logits, foreground, odds, after)
        ctx.scale = scale
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        logits, foreground, odds, after = ctx.saved_tensors
        # a comparison written as float 1/0: one pass, 5x faster than a bool mask and a multiply
        kept = torch.gt(odds, after, out=torch.empty_like(odds)).view_as(logits)
        grad_logits = torch.sigmoid(logits).sub_(foreground).mul_(kept).mul_(grad * ctx.scale)
        return grad_logits, None, None, None, None, None


def online_bootstrapping_loss(
    logits: Tensor,
    target: Tensor,
    *,
    hard_num: int = 4096,
    weight: ClassWeight = None,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Online bootstrapping loss (OB): cross entropy over the hardest pixels of each image.

    Per image, every pixel gets the distance ``d = (1/C) sum_c |p_c - y_c|`` between its
    probabilities and its (one-hot or soft) target (seed 002 eq. 2.4; for binary logits
    ``d = |p - y|``, the same as over the two classes); the ``hard_num`` pixels with the
    largest ``d`` are kept (all of them when the image has fewer) and the loss is
    :func:`cross_entropy` over those only (eq. 2.3): ``"mean"`` divides by the number of kept
    pixels in the batch (weighted as :func:`cross_entropy` when ``weight`` is given).
    Ignored pixels are never kept. Pixels tied at the threshold are kept in flat index order
    (lowest first, a stable sort by decreasing ``d``), so the selection is deterministic. It is
    not differentiated. Classification logits ``(N, C)`` have one "pixel" per image, so OB
    reduces to cross entropy there.

    Args:
        logits: ``(N, C, *spatial)`` or ``(N, C)`` raw scores.
        target: labels ``(N, *spatial)`` / ``(N, 1, *spatial)`` or a float one-hot / soft
            target of the logits' shape.
        hard_num: pixels kept per image; **Default** 4096 (seed 002's best on CoNIC 256 x 256;
            1024 on MoNuSAC).
        weight: ``(C,)`` class weights, as in :func:`cross_entropy`.
        include_background: if ``False`` (``C >= 2``) kept background pixels get weight 0;
            the selection still looks at every class.
        ignore_index: label whose elements are excluded (label targets only).
        reduction: ``"mean" | "sum" | "none"``; ``"none"`` returns ``(N, *spatial)`` with 0 at
            pixels not kept.

    Returns:
        The loss, float32.

    Example:
        >>> from medbalance.losses.ce import cross_entropy
        >>> logits = torch.randn(2, 3, 16, 16)
        >>> target = torch.randint(0, 3, (2, 16, 16))
        >>> ob = online_bootstrapping_loss(logits, target, hard_num=32)
        >>> bool(ob > cross_entropy(logits, target))  # the hardest pixels cost more
        True
    """
    check_choice("reduction", reduction, REDUCTIONS)
    _check_hard_num(hard_num)
    with float32_compute(logits):
        tgt = format_target(logits, target, ignore_index=ignore_index)
        w = class_weight(weight, logits, include_background=include_background)
        logits = logits.float()
        if logits.numel() == 0:  # no pixel to keep: the mean over nothing is 0, as for cross_entropy
            loss, normalizer = cross_entropy_terms(logits, tgt, w)
            return reduce_loss(loss, reduction, mask=tgt.mask, normalizer=normalizer)
        threshold_path = w is None and tgt.labels is not None and tgt.mask is None and reduction != "none"
        if threshold_path and tgt.num_classes == 1:
            kept = _binary_mean_of_hardest(logits, tgt.dense(), hard_num, reduction)
            if kept is not None:
                return kept
        loss, normalizer = cross_entropy_terms(logits, tgt, w)
        if threshold_path:
            # the unweighted label loss is its own hardness, and every image keeps k pixels
            return _mean_of_hardest(loss, hard_num, reduction)
        hardness = _hardness(logits, tgt, unweighted_ce=loss if w is None else None)
        selected = _select_hard(hardness, tgt.mask, hard_num)
        return reduce_loss(loss, reduction, mask=selected, normalizer=normalizer)


def hard_pixel_fractions(
    logits: Tensor,
    target: Tensor,
    *,
    hard_num: int = 4096,
    ignore_index: int | None = None,
) -> Tensor:
    """Share of each class among the pixels :func:`online_bootstrapping_loss` keeps (seed 002
    table 4.14).

    A pixel counts for its target class (a soft target splits it by its target values).

    Args:
        logits: ``(N, C, *spatial)`` raw scores.
        target: as in :func:`online_bootstrapping_loss`.
        hard_num: pixels kept per image.
        ignore_index: label whose elements are never kept.

    Returns:
        ``(K,)`` float32 fractions summing to 1 (all 0 when nothing is kept), ``K = C``, or 2
        (background, foreground) for binary logits.

    Example:
        >>> logits = torch.zeros(1, 1, 4, 4)
        >>> target = torch.zeros(1, 4, 4, dtype=torch.long)
        >>> target[0, 0, :2] = 1  # 2 positives; p = 0.5 everywhere, so all pixels tie at d = 0.5
        >>> hard_pixel_fractions(logits, target, hard_num=16).tolist()
        [0.875, 0.125]
    """
    _check_hard_num(hard_num)
    with float32_compute(logits), torch.no_grad():
        tgt = format_target(logits, target, ignore_index=ignore_index)
        logits = logits.float()
        _, tgt2 = two_class_view(logits, tgt)
        if logits.numel() == 0:
            return torch.zeros(tgt2.num_classes, device=logits.device)
        selected = _select_hard(_hardness(logits, tgt), tgt.mask, hard_num).unsqueeze(1)
        per_class = (tgt2.dense() * selected).transpose(0, 1).reshape(tgt2.num_classes, -1).sum(dim=1)
        total = per_class.sum()
        return per_class / total if total > 0 else per_class


class OnlineBootstrappingLoss(ClassWeightedLoss):
    """Online bootstrapping loss: cross entropy over the ``hard_num`` hardest pixels per image.

    See :func:`medbalance.losses.functional.online_bootstrapping_loss`.

    The constructor takes the keyword arguments of
    :func:`medbalance.losses.functional.online_bootstrapping_loss`, documented there; ``forward``
    takes ``logits`` and ``target``.

    Shape:
        - logits: ``(N, C, *spatial)`` or ``(N, C)``.
        - target: ``(N, *spatial)`` / ``(N, 1, *spatial)`` integer labels, or float of the
          logits' shape.
        - output: scalar, or ``(N, *spatial)`` for ``reduction="none"``.

    Example:
        >>> import torch
        >>> loss = OnlineBootstrappingLoss(hard_num=64)
        >>> logits, target = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
        >>> loss(logits, target).shape, loss.hard_pixel_fractions(logits, target).shape
        (torch.Size([]), torch.Size([3]))
    """

    def __init__(
        self,
        *,
        hard_num: int = 4096,
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
        _check_hard_num(hard_num)
        self.hard_num = hard_num

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return online_bootstrapping_loss(logits, target, hard_num=self.hard_num, **self._common())

    def hard_pixel_fractions(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-class share of the pixels this loss keeps; see :func:`hard_pixel_fractions`."""
        return hard_pixel_fractions(logits, target, hard_num=self.hard_num, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f"hard_num={self.hard_num}, " + super().extra_repr()
