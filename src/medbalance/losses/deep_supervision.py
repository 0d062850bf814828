"""Deep supervision: one loss applied to every output scale of a network, weighted ``1/2^i``.

Networks built with ``deep_supervision=True`` return, in training mode, a tuple of logits:
the main (full-resolution) output first, then auxiliary outputs from high to low resolution.
The engine sends such tuples here, so a recipe never special-cases them (nnU-Net's scheme:
Isensee et al., 2021; SPEC section 10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from medbalance.losses._validate import check_non_negative

__all__ = ["DeepSupervisionLoss", "deep_supervision_loss", "deep_supervision_weights", "resize_target"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's scale weights ``1/2^i`` for output ``i`` (0 = main), normalised to sum 1.

    Example:
        >>> deep_supervision_weights(3)
        [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    """
    if num_outputs < 1:
        raise ValueError(f"deep supervision needs at least one output, got {num_outputs}")
    raw = [0.5**i for i in range(num_outputs)]
    return [w / sum(raw) for w in raw]


def resize_target(target: Tensor, spatial: Sequence[int]) -> Tensor:
    """Resize a target to the spatial size of a lower-resolution output.

    Integer / bool label maps ``(N, *spatial)`` or ``(N, 1, *spatial)`` take the nearest
    label (labels must never be interpolated into non-existent classes); float one-hot / soft
    targets ``(N, C, *spatial)`` are area-averaged, so they stay in ``[0, 1]`` and keep the
    class proportions.

    Example:
        >>> resize_target(torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]]), (1, 2)).tolist()
        [[[0, 1]]]
    """
    spatial = tuple(int(s) for s in spatial)
    if target.is_floating_point():
        if tuple(target.shape[2:]) == spatial:
            return target
        return F.interpolate(target, size=spatial, mode="area")
    squeeze = target.ndim == len(spatial) + 1
    labels = target.unsqueeze(1) if squeeze else target
    if tuple(labels.shape[2:]) == spatial:
        return target
    resized = F.interpolate(labels.float(), size=spatial, mode="nearest-exact").to(target.dtype)
    return resized.squeeze(1) if squeeze else resized


def deep_supervision_loss(
    loss: LossFn,
    outputs: Sequence[Tensor],
    target: Tensor,
    *,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """``sum_i w_i loss(outputs[i], target resized to outputs[i])``.

    Args:
        loss: ``loss(logits, target) -> scalar``.
        outputs: logits ``(N, C, *spatial_i)``, main output first.
        target: the full-resolution target of ``outputs[0]`` (labels or soft, SPEC section 1).
        weights: one non-negative weight per output; default :func:`deep_supervision_weights`.

    Returns:
        The weighted sum, a scalar.

    Example:
        >>> from medbalance.losses import DiceLoss
        >>> outs = (torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 4, 4))
        >>> deep_supervision_loss(DiceLoss(), outs, torch.randint(0, 2, (2, 8, 8))).ndim
        0
    """
    if isinstance(outputs, Tensor) or len(outputs) == 0:
        raise ValueError("outputs must be a non-empty sequence of logits tensors (main output first)")
    if not isinstance(target, Tensor):
        raise ValueError(
            f"deep supervision needs a tensor target, got {type(target).__name__} "
            "(a stage whose loss takes the whole batch cannot use a deep-supervised net)"
        )
    weights = deep_supervision_weights(len(outputs)) if weights is None else list(weights)
    if len(weights) != len(outputs):
        raise ValueError(f"deep supervision got {len(outputs)} outputs but {len(weights)} weights")
    total: Tensor | None = None
    for index, (logits, w) in enumerate(zip(outputs, weights)):
        check_non_negative(f"deep supervision weight {index}", w)
        if w == 0:
            continue
        value = loss(logits, resize_target(target, logits.shape[2:])) * w
        total = value if total is None else total + value
    if total is None:
        raise ValueError("every deep supervision weight is zero (expected at least one positive weight)")
    return total


class DeepSupervisionLoss(nn.Module):
    """Module form of :func:`deep_supervision_loss`; a plain tensor input passes straight through.

    Args:
        loss: the loss applied at every scale.
        weights: per-output weights (default ``1/2^i`` normalised, fixed by the number of
            outputs seen).

    Example:
        >>> from medbalance.losses import DiceLoss
        >>> loss = DeepSupervisionLoss(DiceLoss())
        >>> loss(torch.zeros(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))).ndim
        0
    """

    def __init__(self, loss: nn.Module, *, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if weights is not None:
            for index, w in enumerate(weights):
                check_non_negative(f"deep supervision weight {index}", w)
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)
        return deep_supervision_loss(self.loss, outputs, target, weights=self.weights)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
