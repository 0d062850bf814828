"""What differs between segmentation and classification: how logits become labels and scores.

The engine is task-agnostic; a task turns logits into labels, accumulates the confusion
statistics of one evaluation pass and turns them into the score dict of
:mod:`medbalance.metrics`.
"""

from __future__ import annotations

import math

import torch

from medbalance.metrics import (
    classification_scores,
    confusion_matrix,
    expected_calibration_error,
    segmentation_scores,
)

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

    Scores are computed per image and averaged over images (SPEC 5.7: "mean over test
    images"). A network may return more channels than ``out_channels`` (dual-path's fused
    logits followed by its two paths): the first ``out_channels`` are the prediction. When a
    batch carries ``regions`` (the intra-class phantom's 1 = majority, 2 = minority map) the
    recall of each sub-region is reported too.
    """

    name = "segmentation"
    default_monitor = "mean_dice_fg"

    def __init__(self, num_classes: int, *, threshold: float = 0.5, ignore_index: int | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.out_channels = 1 if num_classes == 2 else num_classes
        self.threshold = threshold
        self._logit_threshold = math.log(threshold / (1.0 - threshold))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits[:, : self.out_channels].float()
        return torch.sigmoid(logits) if self.out_channels == 1 else torch.softmax(logits, dim=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Labels ``(N, *spatial)`` int64 from logits ``(N, C, *spatial)``."""
        if self.out_channels == 1:
            return (logits[:, 0] > self._logit_threshold).long()
        return channel_argmax(logits[:, : self.out_channels])

    def new_state(self) -> dict:
        return {"cm": [], "region_hits": None}

    def update(self, state: dict, preds: torch.Tensor, batch: dict, logits: torch.Tensor | None = None) -> None:
        cm = confusion_matrix(preds, batch["target"], self.num_classes, ignore_index=self.ignore_index, per_image=True)
        state["cm"].append(cm.cpu())
        regions = batch.get("regions")
        if regions is not None:
            fg = (preds > 0).long()
            hits = torch.stack([torch.stack([(fg * (regions == r)).sum(), (regions == r).sum()]) for r in (1, 2)])
            state["region_hits"] = hits.cpu() if state["region_hits"] is None else state["region_hits"] + hits.cpu()

    def scores(self, state: dict) -> dict:
        cm = (
            torch.cat(state["cm"])
            if state["cm"]
            else torch.zeros(0, self.num_classes, self.num_classes, dtype=torch.long)
        )
        out = segmentation_scores(cm)
        hits = state["region_hits"]
        if hits is not None:
            for name, (hit, total) in zip(("majority", "minority"), hits.tolist()):
                out[f"recall_{name}"] = hit / total if total else float("nan")
        return out


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

    def new_state(self) -> dict:
        return {"cm": torch.zeros(self.num_classes, self.num_classes, dtype=torch.long), "probs": [], "target": []}

    def update(self, state: dict, preds: torch.Tensor, batch: dict, logits: torch.Tensor | None = None) -> None:
        state["cm"] += confusion_matrix(preds, batch["target"], self.num_classes).cpu()
        if logits is not None:  # for the calibration error
            state["probs"].append(self.probabilities(logits).cpu())
            state["target"].append(batch["target"].cpu())

    def scores(self, state: dict) -> dict:
        """Accuracy, macro precision / recall / F1 and per-class scores (:func:`classification_scores`),
        plus ``ece``: the expected calibration error over 15 bins (MiSLAS) when logits were seen."""
        out = classification_scores(state["cm"])
        if state["probs"]:
            out["ece"] = expected_calibration_error(torch.cat(state["probs"]), torch.cat(state["target"]))
        return out


def make_task(
    kind: str, num_classes: int, *, threshold: float = 0.5, ignore_index: int | None = None
) -> SegmentationTask | ClassificationTask:
    if kind == "segmentation":
        return SegmentationTask(num_classes, threshold=threshold, ignore_index=ignore_index)
    if kind == "classification":
        return ClassificationTask(num_classes)
    raise ValueError(f"unknown task '{kind}' (expected 'segmentation' or 'classification')")
