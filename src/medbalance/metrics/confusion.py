"""Stateful confusion-matrix accumulator (thin wrapper over :mod:`.functional`)."""

from __future__ import annotations

import torch
from torch import Tensor

from medbalance.metrics.functional import _check_ignore_index, _check_num_classes, confusion_matrix

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Accumulate a confusion matrix over batches.

    The whole state is one int64 tensor, :attr:`cm`: ``(C, C)`` (summed over every pixel /
    sample seen) or, with ``per_image=True``, ``(N_seen, C, C)`` (one matrix per image, in
    update order). To synchronise across processes, all-reduce (sum) ``cm`` in summed
    mode, or all-gather and concatenate it along dim 0 in per-image mode, and assign the
    result back to ``cm``. The state follows the device of the first batch.

    Args:
        num_classes: Number of classes ``C`` including background.
        ignore_index: Target value left out of the counts.
        per_image: Keep one matrix per image (for "mean over images" segmentation scores).

    Example:
        >>> from medbalance.metrics import segmentation_scores
        >>> metric = ConfusionMatrix(2, per_image=True)
        >>> metric.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
        >>> metric.update(torch.tensor([[0, 0, 0]]), torch.tensor([[0, 0, 0]]))
        >>> metric.compute().shape
        torch.Size([2, 2, 2])
        >>> round(segmentation_scores(metric.compute())["mean_dice_fg"], 4)
        0.6667
    """

    cm: Tensor

    def __init__(self, num_classes: int, *, ignore_index: int | None = None, per_image: bool = False) -> None:
        _check_num_classes(num_classes)
        _check_ignore_index(ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_image = per_image
        self.cm = self._empty(torch.device("cpu"))

    def _empty(self, device: torch.device) -> Tensor:
        shape = (0, self.num_classes, self.num_classes) if self.per_image else (self.num_classes, self.num_classes)
        return torch.zeros(shape, dtype=torch.int64, device=device)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of integer labels, shapes as in :func:`confusion_matrix`."""
        batch = confusion_matrix(
            preds, target, self.num_classes, ignore_index=self.ignore_index, per_image=self.per_image
        )
        state = self.cm.to(batch.device)
        self.cm = torch.cat([state, batch]) if self.per_image else state + batch

    def compute(self) -> Tensor:
        """Return a copy of the accumulated matrix, to pass to the ``*_scores`` functions."""
        return self.cm.clone()

    def reset(self) -> None:
        """Zero the state (keeping its device)."""
        self.cm = self._empty(self.cm.device)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"per_image={self.per_image})"
        )
