"""Confusion-matrix metrics for segmentation and classification (functional core).

Every score here is derived from one integer confusion matrix whose rows are the true
(target) class and whose columns are the predicted class, as in torchmetrics. The matrix
is additive over pixels and images, so it can be accumulated batch by batch
(:class:`medbalance.metrics.ConfusionMatrix`) and summed across processes.

For a class ``c``: ``TP = cm[c, c]``, ``FP = cm[:, c].sum() - TP`` and
``FN = cm[c, :].sum() - TP``.

**Empty cases** (SPEC section 10). A class absent from both the prediction and the target
of an image (or of the whole matrix) forms an *empty pair*: Dice, IoU, precision and recall
of that pair are 1.0 (nothing to find, nothing falsely found), the pair is skipped from every
average, and the number of such pairs is reported. A class present on one side only scores
0: predicted but absent from the target gives Dice = IoU = precision = recall = 0; present
but never predicted (missed) gives Dice = IoU = recall = 0 and precision 0 (the 0/0 is
defined as 0). No score is ever NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["classification_scores", "confusion_matrix", "segmentation_scores"]


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (binary segmentation uses 2: background and "
            f"foreground), found {num_classes!r}"
        )


def _check_ignore_index(ignore_index: int | None) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"ignore_index must be an int or None, found {ignore_index!r}")


def _check_label_tensor(name: str, labels: Any) -> None:
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer labels, found {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f"{name} must hold integer class labels (e.g. logits.argmax(1)), found dtype {labels.dtype}")
    if labels.ndim == 0:
        raise ValueError(f"{name} must have shape (N,) or (N, *spatial), found a 0-d tensor")


def _check_range(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Raise if a label (ignored positions already filled with 0) leaves ``[0, num_classes)``."""
    if target.numel() == 0:
        return
    # one host sync for all four bounds
    t_low, t_high, p_low, p_high = torch.stack([*torch.aminmax(target), *torch.aminmax(preds)]).tolist()
    for name, low, high, allowed in (
        ("target", t_low, t_high, "" if ignore_index is None else f" or ignore_index={ignore_index}"),
        ("preds", p_low, p_high, ""),
    ):
        bad = high if high >= num_classes else low if low < 0 else None
        if bad is not None:
            raise ValueError(
                f"{name} has label {bad} but num_classes is {num_classes} "
                f"(expected values in [0, {num_classes}){allowed})"
            )


def confusion_matrix(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    per_image: bool = False,
) -> Tensor:
    """Count (true class, predicted class) pairs with a single ``torch.bincount``.

    Args:
        preds: Predicted labels, shape ``(N,)`` (classification) or ``(N, *spatial)``
            (segmentation, 1 to 3 spatial dims), any integer or bool dtype.
        target: True labels with the shape of ``preds``; values in ``[0, num_classes)``
            or ``ignore_index``.
        num_classes: Number of classes ``C`` including background (binary segmentation: 2).
        ignore_index: Target value whose positions are left out of the matrix (whatever
            ``preds`` holds there). If it lies in ``[0, C)`` that class's row stays zero.
        per_image: Return one matrix per sample, ``(N, C, C)``, for "mean over images" scores.

    Returns:
        int64 tensor ``(C, C)`` (or ``(N, C, C)``) on the device of the inputs; rows are the
        target class and columns the predicted class (torchmetrics convention).

    Raises:
        ValueError: non-tensor or float inputs, shape mismatch, or a label outside
            ``[0, C)`` that is not ``ignore_index``; the message names the offending value.

    Example:
        >>> target = torch.tensor([[0, 1], [1, 2]])
        >>> preds = torch.tensor([[0, 1], [2, 2]])
        >>> confusion_matrix(preds, target, 3)
        tensor([[1, 0, 0],
                [0, 1, 1],
                [0, 0, 1]])
        >>> confusion_matrix(preds, target, 3, per_image=True).shape
        torch.Size([2, 3, 3])
    """
    _check_num_classes(num_classes)
    _check_ignore_index(ignore_index)
    _check_label_tensor("preds", preds)
    _check_label_tensor("target", target)
    if preds.shape != target.shape:
        raise ValueError(
            f"preds and target must have the same shape, found preds {tuple(preds.shape)} "
            f"and target {tuple(target.shape)}"
        )
    preds, target = preds.long(), target.long()
    ignored = None if ignore_index is None else target == ignore_index
    if ignored is not None:
        # masked_fill rather than boolean indexing: no data-dependent shapes, about 2x faster
        target, preds = target.masked_fill(ignored, 0), preds.masked_fill(ignored, 0)
    _check_range(preds, target, num_classes, ignore_index)

    cells = num_classes * num_classes
    num_images = target.shape[0] if per_image else 1
    index = target * num_classes + preds
    if per_image:
        offsets = torch.arange(num_images, device=index.device) * cells
        index = index + offsets.view(-1, *([1] * (index.ndim - 1)))
    if ignored is not None:
        index = index.masked_fill(ignored, num_images * cells)  # an overflow bin, dropped below
    counts = torch.bincount(index.reshape(-1), minlength=num_images * cells + 1)[: num_images * cells]
    return counts.view(num_images, num_classes, num_classes) if per_image else counts.view(num_classes, num_classes)


def _check_cm(cm: Any, *, allow_batched: bool) -> Tensor:
    """Validate a confusion matrix and return it as float64 ``(N, C, C)``."""
    shapes = "(C, C) or (N, C, C)" if allow_batched else "(C, C)"
    if not isinstance(cm, Tensor):
        raise ValueError(f"cm must be a torch.Tensor of shape {shapes}, found {type(cm).__name__}")
    if cm.ndim not in ((2, 3) if allow_batched else (2,)) or cm.shape[-1] != cm.shape[-2] or cm.shape[-1] < 2:
        hint = "" if allow_batched or cm.ndim != 3 else " (sum a per-image matrix over dim 0 first)"
        raise ValueError(f"cm must have shape {shapes} with C >= 2, found {tuple(cm.shape)}{hint}")
    if cm.dtype.is_complex or cm.dtype == torch.bool:
        raise ValueError(f"cm must hold counts (integer or float dtype), found dtype {cm.dtype}")
    counts = cm.detach().to(torch.float64)
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("cm must hold finite non-negative counts, found a negative or non-finite entry")
    if counts.sum() == 0:
        raise ValueError("cm is empty: no pixel or sample was counted (no update, or everything ignore_index)")
    return counts if counts.ndim == 3 else counts.unsqueeze(0)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0/0 defined as 0 (callers guarantee ``0 <= num <= den``)."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of ``values[mask]``; 1.0 when nothing is selected (only empty pairs remain)."""
    return float(values[mask].mean()) if bool(mask.any()) else 1.0


def segmentation_scores(cm: Tensor) -> dict[str, Any]:
    """Per-class and mean Dice, IoU, precision and recall from a confusion matrix.

    Two averaging modes, chosen by the shape of ``cm``:

    * ``(C, C)`` -- *dataset level*: the scores of the summed matrix (every pixel of the
      dataset pooled), what seed 002 reports.
    * ``(N, C, C)`` (from ``confusion_matrix(..., per_image=True)``) -- *mean over images*:
      each (image, class) pair is scored, then each class is averaged over the images in
      which it is present in the target or the prediction, what seed 000 reports.

    Empty pairs (a class absent from both prediction and target of an image, or of the
    whole matrix) score 1.0 for Dice, IoU, precision and recall and are skipped from the
    averages over images; a class with no non-empty pair anywhere keeps 1.0 in the
    per-class lists, is listed in ``absent_classes`` and is skipped from the means over
    classes. A class present on one side only scores 0. If every class is skipped a mean is
    1.0. The dataset-level means equal torchmetrics' ``average="macro"`` (which also skips
    classes absent from both sides); torchmetrics' per-class values of an absent class are 0
    where ours are 1.0.

    Args:
        cm: Confusion matrix ``(C, C)`` or ``(N, C, C)``, rows = target class, columns =
            predicted class; integer or float counts (e.g. after an all-reduce).

    Returns:
        A JSON-serialisable dict:

        * ``dice``, ``iou``, ``precision``, ``recall``: per-class lists of length ``C``;
        * ``mean_dice``, ``mean_iou``, ``mean_precision`` (seed 002's "mAP"),
          ``mean_recall``: mean of the per-class values over the classes, background
          included (per-image mode: classes are averaged over images first);
        * ``mean_dice_fg``, ``mean_iou_fg``, ``mean_precision_fg``, ``mean_recall_fg``:
          mean over classes ``1..C-1`` (for binary segmentation, ``C = 2``, the foreground
          score);
        * ``pixel_accuracy``: correct / counted pixels (per-image mode: averaged over the
          images with at least one counted pixel);
        * ``num_images``: ``N`` (per-image mode only);
        * ``empty_pairs``: number of (image, class) pairs absent from both sides (dataset
          level: number of classes absent from both); ``empty_per_class``: the same per class;
          ``absent_classes``: classes with no non-empty pair, skipped from the means.

    Raises:
        ValueError: if ``cm`` is not a square non-negative matrix or counts nothing.

    Example:
        >>> target = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
        >>> preds = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0]])
        >>> scores = segmentation_scores(confusion_matrix(preds, target, 2, per_image=True))
        >>> round(scores["mean_dice_fg"], 4), scores["empty_pairs"], scores["num_images"]
        (0.8, 1, 2)
    """
    per_image = isinstance(cm, Tensor) and cm.ndim == 3
    counts = _check_cm(cm, allow_batched=True)
    tp = counts.diagonal(dim1=-2, dim2=-1)  # (N, C)
    true_count = counts.sum(-1)
    pred_count = counts.sum(-2)
    present = (true_count + pred_count) > 0
    num_present = present.sum(0)
    scored = num_present > 0

    def per_class(num: Tensor, den: Tensor) -> Tensor:
        # empty pairs give 0/0 = 0, so the sum runs over the present pairs only
        mean = _ratio(num, den).sum(0) / num_present.clamp_min(1)
        return torch.where(scored, mean, torch.ones_like(mean))

    values = {
        "dice": per_class(2 * tp, true_count + pred_count),
        "iou": per_class(tp, true_count + pred_count - tp),
        "precision": per_class(tp, pred_count),
        "recall": per_class(tp, true_count),
    }
    scores: dict[str, Any] = {name: value.tolist() for name, value in values.items()}
    for name, value in values.items():
        scores[f"mean_{name}"] = _masked_mean(value, scored)
    for name, value in values.items():
        scores[f"mean_{name}_fg"] = _masked_mean(value[1:], scored[1:])

    pixels = counts.sum((-2, -1))
    scores["pixel_accuracy"] = _masked_mean(_ratio(tp.sum(-1), pixels), pixels > 0)
    if per_image:
        scores["num_images"] = counts.shape[0]
    empty = (~present).sum(0)
    scores["empty_pairs"] = int(empty.sum())
    scores["empty_per_class"] = empty.tolist()
    scores["absent_classes"] = torch.nonzero(~scored).flatten().tolist()
    return scores


def classification_scores(cm: Tensor) -> dict[str, Any]:
    """Accuracy and macro precision / recall / F1 from a ``(C, C)`` confusion matrix.

    Per class ``c``: precision ``TP / (TP + FP)``, recall (sensitivity) ``TP / (TP + FN)``,
    F1 ``2 TP / (2 TP + FP + FN)``; a 0/0 is 0 (so a class never predicted scores precision
    0). The macro means average over the classes present in the target (``support > 0``)
    only; absent classes keep 0 in the per-class lists and are listed in
    ``absent_classes``. ``macro_recall`` is therefore the balanced accuracy. This differs
    from torchmetrics' ``average="macro"``, which skips only classes absent from both the
    target and the prediction (a predicted-but-absent class enters its mean with 0).

    Args:
        cm: Confusion matrix ``(C, C)``, rows = target class, columns = predicted class.

    Returns:
        A JSON-serialisable dict: ``accuracy`` (micro, correct / all samples),
        ``macro_precision``, ``macro_recall``, ``macro_f1``, per-class lists ``precision``,
        ``recall``, ``f1`` (floats) and ``support`` (true samples per class),
        ``num_samples`` and ``absent_classes``.

    Raises:
        ValueError: if ``cm`` is not a non-negative ``(C, C)`` matrix or counts nothing.

    Example:
        >>> target = torch.tensor([0, 0, 0, 1, 1, 2])
        >>> preds = torch.tensor([0, 0, 1, 1, 1, 1])
        >>> scores = classification_scores(confusion_matrix(preds, target, 3))
        >>> round(scores["accuracy"], 4), round(scores["macro_recall"], 4), scores["precision"][2]
        (0.6667, 0.5556, 0.0)
    """
    counts = _check_cm(cm, allow_batched=False)[0]
    tp = counts.diagonal()
    support = counts.sum(1)
    predicted = counts.sum(0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / counts.sum()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": [round(s) for s in support.tolist()],
        "num_samples": round(float(counts.sum())),
        "absent_classes": torch.nonzero(~present).flatten().tolist(),
    }
