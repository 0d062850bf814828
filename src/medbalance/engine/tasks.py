"""What differs between segmentation and classification: how logits become labels and scores.

The engine is task-agnostic; a task turns logits into labels and makes the
:class:`~medbalance.metrics.evaluation.Evaluator` of one evaluation pass (per-image or pooled
confusion matrices, the calibration error), which returns the score dict of
:mod:`medbalance.metrics` inside an :class:`~medbalance.metrics.evaluation.Evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from medbalance.engine.postprocess import postprocess_batch
from medbalance.metrics.evaluation import Evaluator, Scorer

__all__ = ["SegmentationTask", "ClassificationTask", "channel_argmax", "make_task"]


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=1)`` for ``(N, C, *spatial)`` logits, as a loop over the C channels.

    On CPU ``argmax(dim=1)`` reduces over the strided channel axis and was 5-15x slower than
    this loop of contiguous element-wise ops for C = 2..7 (``benchmarks/RESULTS.md``, "argmax").
    Ties go to the lowest channel, as with ``argmax``; only NaN logits may give another label
    (``argmax`` picks the NaN channel, the loop skips NaN after channel 0).

    Returns:
        int64 labels ``(N, *spatial)``.

    Example:
        >>> logits = torch.tensor([[[1.0], [3.0], [3.0]]])  # (1, 3, 1)
        >>> channel_argmax(logits)
        tensor([[1]])
    """
    best = logits[:, 0]
    labels = torch.zeros(best.shape, dtype=torch.long, device=logits.device)
    for c in range(1, logits.shape[1]):
        channel = logits[:, c]
        labels.masked_fill_(channel > best, c)
        best = torch.maximum(best, channel)
    return labels


class SegmentationTask:
    """Binary (one sigmoid channel) or multi-class (softmax) segmentation.

    Args:
        num_classes: target classes including background; 2 means binary, and the network then
            has a single output channel (SPEC section 1).
        threshold: foreground probability threshold for binary outputs.
        ignore_index: target value of pixels left out of the scores (e.g. outside DRIVE's
            field of view).
        largest_component: keep only the largest connected component of each predicted
            foreground class (:mod:`medbalance.engine.postprocess`).
        fill_holes: fill the background holes enclosed by each predicted foreground class.

    Scores are computed per image and averaged over images (SPEC 5.7: "mean over test
    images"). A network may return more channels than ``out_channels`` (dual-path's fused
    logits followed by its two paths): the first ``out_channels`` are the prediction. Scores a
    dataset adds of its own (e.g. the intra-class phantom's region recall) come from its
    ``scorers`` (:mod:`medbalance.metrics.evaluation`).
    """

    name = "segmentation"
    default_monitor = "mean_dice_fg"

    def __init__(
        self,
        num_classes: int,
        *,
        threshold: float = 0.5,
        ignore_index: int | None = None,
        largest_component: bool = False,
        fill_holes: bool = False,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.largest_component = largest_component
        self.fill_holes = fill_holes
        self.out_channels = 1 if num_classes == 2 else num_classes
        self.threshold = threshold
        self._logit_threshold = math.log(threshold / (1.0 - threshold))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits[:, : self.out_channels].float()
        return torch.sigmoid(logits) if self.out_channels == 1 else torch.softmax(logits, dim=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Labels ``(N, *spatial)`` int64 from logits ``(N, C, *spatial)``, post-processed."""
        if self.out_channels == 1:
            labels = (logits[:, 0] > self._logit_threshold).long()
        else:
            labels = channel_argmax(logits[:, : self.out_channels])
        return self.postprocess(labels)

    def postprocess(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` ``(N, *spatial)`` after the task's ``largest_component`` / ``fill_holes``."""
        return postprocess_batch(labels, largest_component=self.largest_component, fill_holes=self.fill_holes)

    def evaluator(self, scorers: Sequence[Callable[[], Scorer]] = ()) -> Evaluator:
        """A fresh accumulator of one evaluation pass: one confusion matrix per image."""
        return Evaluator(self.num_classes, per_image=True, ignore_index=self.ignore_index, scorers=scorers)


class ClassificationTask:
    """Single-label classification over ``num_classes`` classes (softmax)."""

    name = "classification"
    default_monitor = "macro_recall"

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.out_channels = num_classes

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1)

    def postprocess(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` unchanged: class labels have no geometry to post-process."""
        return labels

    def evaluator(self, scorers: Sequence[Callable[[], Scorer]] = ()) -> Evaluator:
        """A fresh accumulator of one evaluation pass: accuracy, macro precision / recall / F1 and
        per-class scores of the pooled matrix (:func:`~medbalance.metrics.classification_scores`),
        plus ``ece``: the expected calibration error over 15 bins (MiSLAS) when logits were seen."""
        return Evaluator(self.num_classes, per_image=False, probabilities=self.probabilities, scorers=scorers)


def make_task(
    kind: str,
    num_classes: int,
    *,
    threshold: float = 0.5,
    ignore_index: int | None = None,
    largest_component: bool = False,
    fill_holes: bool = False,
) -> SegmentationTask | ClassificationTask:
    if kind == "segmentation":
        return SegmentationTask(
            num_classes,
            threshold=threshold,
            ignore_index=ignore_index,
            largest_component=largest_component,
            fill_holes=fill_holes,
        )
    if kind == "classification":
        return ClassificationTask(num_classes)
    raise ValueError(f"unknown task '{kind}' (expected 'segmentation' or 'classification')")
